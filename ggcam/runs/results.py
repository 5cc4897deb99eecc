"""results.csv and results.jsonl of a folder run: one row per image and target."""
import csv
import io
import json
import os
from typing import Dict, List

from ggcam.io.safe_files import atomic_write_text

CSV_FILE, JSONL_FILE = "results.csv", "results.jsonl"
FILES = (CSV_FILE, JSONL_FILE)
TOP_K = 5
COLUMNS = (["path", "target", "target_index", "target_name", "probability"]
           + ["top%d_%s" % (r, f) for r in range(1, TOP_K + 1) for f in ("index", "name", "probability")]
           + ["status", "error", "seconds", "folder"])


def csv_row(row: Dict) -> Dict:
    flat = {k: row.get(k, "") for k in COLUMNS if not k.startswith("top")}
    for r, entry in enumerate(row.get("top5") or [], start=1):
        flat["top%d_index" % r] = entry["index"]
        flat["top%d_name" % r] = entry["name"]
        flat["top%d_probability" % r] = "%.6f" % entry["probability"] if entry["probability"] is not None else ""
    if isinstance(flat.get("probability"), float):
        flat["probability"] = "%.6f" % flat["probability"]
    if isinstance(flat.get("seconds"), float):
        flat["seconds"] = "%.3f" % flat["seconds"]
    return flat


def write(folder: str, rows: List[Dict]) -> None:
    """Rewrite both files, each atomically, so they are always complete and valid."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(csv_row(row))
    atomic_write_text(os.path.join(folder, CSV_FILE), buffer.getvalue())
    lines = "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)
    atomic_write_text(os.path.join(folder, JSONL_FILE), lines)


def read(folder: str) -> List[Dict]:
    """Rows of an earlier run's results.jsonl; empty when there is none or it is unreadable."""
    path = os.path.join(folder, JSONL_FILE)
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line) if line.strip() else None
                except ValueError:
                    continue  # a damaged line loses that row only; the image is redone
                if isinstance(row, dict):
                    rows.append(row)
    except (OSError, UnicodeDecodeError):
        return []
    return rows
