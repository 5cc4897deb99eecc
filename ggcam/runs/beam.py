"""Guided Grad-CAM over datasets that outgrow one machine: an Apache Beam pipeline.

    listed images ─┐
    remote globs ──┴─ one per file ─ folder stems ─┐      earlier rows (results-*.jsonl, read by a ParDo)
                                                   Plan (by file): skip complete outputs, keep other rows
                                 owners of folder names (by file-name stem) ─┤
                                                   ExplainBatch (by batch key): decode, explain, save;
                                                       one graph per worker process; bad image: failed rows
    all rows ─ write_shard (by shard) ─ finish: results-SSSSS-of-NNNNN.jsonl, results.csv,
               metrics_summary.{csv,json} (--metrics), this run's counters (RUN_FILE)

Built from Create, ParDo (Map, FlatMap), GroupByKey (CoGroupByKey) and Flatten only, with one
output per ParDo, no side inputs, no ``beam.io`` transform and no output from ``finish_bundle``,
every branch ending in the one last step: that is what Beam's Dask runner translates (it
computes only the last step's lineage), and every other runner runs it alike. The counters come
from the rows (RUN_FILE), since not every runner has metrics.

The rules are the command line's: ``naming.folder_names`` and ``folder.explanation_folder``
name the folders, ``folder.make_row`` and ``results.COLUMNS`` make the rows,
``Explanation.encoded_files`` the files, ``explanation.is_complete`` decides what a re-run
skips. Every file goes through Beam's ``FileSystems`` (local paths, ``gs://``, ``s3://`` with
Beam's extras), written to a temporary name and renamed. Importing this module loads Beam but
no TensorFlow; ExplainBatch loads it in the workers.
"""
import csv
import io
import json
import os
import posixpath
import re
import sys
import tempfile
import threading
import time
import uuid
import zlib
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from ggcam import methods as methods_mod
from ggcam.methods.base import Method
from ggcam.runs import folder as folder_run
from ggcam.runs import naming
from ggcam.io import decoding
from ggcam.runs import results as results_mod
from ggcam.explanation import file_record, is_complete
from ggcam.targets import Target

COUNTERS = ("ok", "failed", "skipped", "kept")  # explained now; failed now; complete already; other rows kept
SHARD_PREFIX = "results"
SHARD_SUFFIX = ".jsonl"
SHARD_RE = re.compile(r"^results-(\d{5,})-of-(\d{5,})\.jsonl$")
SUMMARY_FILE = "metrics_summary"
RUN_FILE = ".beam_run.json"  # this run's counters, written last by finish(), read by the driver
ROWS_PER_SHARD = 20000
BASELINE_MAPS = ("random",)  # --metric_maps beside the methods made
DEFAULT_METRIC_MAPS = ("guided_gradcam",)


# ----------------------------------------------------------------------------- settings and paths

class Settings:
    """What every worker needs to know; small and picklable."""

    def __init__(self, out_root: str, model_kwargs: Dict, layer: Optional[str] = None,
                 guided_relu6: str = "exact", fusion: str = "paper", max_side: int = decoding.DEFAULT_MAX_SIDE,
                 save_raw: bool = False, overwrite: bool = False, max_batch_size: int = 8,
                 metric_maps: Sequence[str] = (), metric_steps: int = 16,
                 methods: Sequence[Union[str, Method]] = methods_mod.DEFAULT, run_id: str = ""):
        # methods: names or Method objects (configured ones, as the command line makes them)
        self.out_root, self.model_kwargs, self.layer = out_root, dict(model_kwargs), layer
        self.guided_relu6, self.fusion, self.max_side = guided_relu6, fusion, max_side
        self.save_raw, self.overwrite = save_raw, overwrite
        self.max_batch_size = max_batch_size
        self.metric_maps, self.metric_steps = tuple(metric_maps), metric_steps
        self.methods = tuple(methods)
        self.run_id = run_id or uuid.uuid4().hex  # names this run's RUN_FILE

    def model_key(self) -> str:
        """What the model made from these settings depends on (a worker keeps one per key)."""
        methods = [m if isinstance(m, str) else "%s:%r" % (m.name, sorted(vars(m).items())) for m in self.methods]
        return json.dumps([sorted(self.model_kwargs.items()), self.layer, self.guided_relu6, self.fusion,
                           self.max_side, methods], sort_keys=True, default=str)

    @property
    def metric_columns(self) -> List[str]:
        return metric_columns(self.metric_maps)


def metric_columns(maps: Sequence[str]) -> List[str]:
    """The results columns ``--metrics`` adds: deletion and insertion AUC of each map."""
    return ["%s_auc_%s" % (kind, m) for m in maps for kind in ("deletion", "insertion")]


def is_remote(path: str) -> bool:
    """A URL of one of Beam's file systems (gs://, s3://, ...) rather than a local path."""
    return "://" in path


def real_path(path: str) -> str:
    """A file's identity: its real path, or the URL itself."""
    return path if is_remote(path) else os.path.realpath(path)


def _open(path: str):
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to a temporary name in the same folder, then rename it into place."""
    folder, name = posixpath.split(path) if is_remote(path) else os.path.split(path)
    tmp = FileSystems.join(folder, ".tmp-%s-%s" % (uuid.uuid4().hex[:12], name))
    try:
        with FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            f.write(data)
        FileSystems.rename([tmp], [path])
    except BaseException:
        try:
            FileSystems.delete([tmp])
        except Exception:  # nothing to clean up, or the file system is gone
            pass
        raise


# ----------------------------------------------------------------------------- the job list

def job(path: str, targets: Sequence[Target]) -> Dict:
    """An image to explain: as given, where workers read it (absolute, or the URL), its identity."""
    return {"path": path, "read": path if is_remote(path) else os.path.abspath(path),
            "real": real_path(path), "targets": [t.key for t in targets]}


def match_remote(spec: str, targets: Sequence[str]) -> Iterable[Dict]:
    """Jobs for a remote --image: a glob, a folder (ending in '/': its image files) or one file."""
    keys = list(targets)
    if spec.endswith("/"):
        pattern, images_only = spec + "*", True
    elif any(c in spec for c in naming.GLOB_CHARS):
        pattern, images_only = spec, False
    else:
        yield {"path": spec, "read": spec, "real": spec, "targets": keys}
        return
    for result in FileSystems.match([pattern]):
        for meta in result.metadata_list:
            if meta.path.endswith("/") or (images_only and not meta.path.lower().endswith(naming.IMAGE_EXTENSIONS)):
                continue
            yield {"path": meta.path, "read": meta.path, "real": meta.path, "targets": keys}


def merge_same_file(item: Tuple[str, Iterable[Dict]]) -> Dict:
    """One job per file (several names of one file are one image), its targets in first-seen order."""
    _, jobs = item
    jobs = list(jobs)
    first = dict(jobs[0])
    for other in jobs[1:]:
        first["targets"] += [t for t in other["targets"] if t not in first["targets"]]
    return first


def _stem(path: str) -> str:
    return naming.folder_names([path])[path]


def assign_stems(item: Tuple[str, Iterable[Dict]]) -> Iterable[Dict]:
    """``naming.folder_names`` over the files sharing a file-name stem (what it depends on)."""
    _, jobs = item
    jobs = list(jobs)
    stems = naming.folder_names([j["path"] for j in jobs])
    for j in jobs:
        yield dict(j, stem=stems[j["path"]])


def row_real(row: Dict) -> str:
    """The identity of an earlier row's file: its real path as recorded, or the URL."""
    return row.get("real_path") or real_path(row["path"])


def parse_row(line: str) -> Iterable[Dict]:
    """A results row from a JSONL line; a damaged line loses that row only (the image is redone)."""
    try:
        row = json.loads(line) if line.strip() else None
    except ValueError:
        return
    if isinstance(row, dict) and row.get("path") and row.get("target"):
        yield row


def prior_shards(out_root: str) -> List[str]:
    """The newest complete set of an earlier run's results-SSSSS-of-NNNNN.jsonl shards."""
    pattern = FileSystems.join(out_root, "%s-*-of-*%s" % (SHARD_PREFIX, SHARD_SUFFIX))
    try:
        found = [m for r in FileSystems.match([pattern]) for m in r.metadata_list]
    except Exception:  # nothing there yet (some file systems raise instead of matching nothing)
        return []
    sets = {}
    for meta in found:
        m = SHARD_RE.match(posixpath.basename(meta.path))
        if m:
            sets.setdefault(int(m.group(2)), {})[int(m.group(1))] = meta
    complete = [(max(x.last_updated_in_seconds for x in shards.values()), n, shards)
                for n, shards in sets.items() if set(shards) == set(range(n))]
    if not complete:
        return []
    _, _, shards = max(complete, key=lambda c: (c[0], c[1]))
    return [shards[i].path for i in sorted(shards)]


def remove_stale_shards(written: List[str], out_root: str) -> None:
    """Delete results shards of earlier runs with another shard count than this run's."""
    counts = {int(m.group(2)) for m in (SHARD_RE.match(posixpath.basename(p)) for p in written) if m}
    if len(counts) != 1:
        return
    pattern = FileSystems.join(out_root, "%s-*-of-*%s" % (SHARD_PREFIX, SHARD_SUFFIX))
    stale = [meta.path for r in FileSystems.match([pattern]) for meta in r.metadata_list
             if SHARD_RE.match(posixpath.basename(meta.path))
             and int(SHARD_RE.match(posixpath.basename(meta.path)).group(2)) not in counts]
    if stale:
        FileSystems.delete(stale)


# ----------------------------------------------------------------------------- rows

def _row(j: Dict, target_key: str, **kwargs) -> Dict:
    """``folder.make_row`` with the identity the driver computed (workers may run elsewhere)."""
    row = folder_run.make_row(j["path"], Target.from_key(target_key), **kwargs)
    row["real_path"] = j["real"]
    return row


def failed_rows(j: Dict, error: str, seconds: float = 0.0) -> List[Dict]:
    share = seconds / max(1, len(j["targets"]))
    return [_row(j, key, error=error, seconds=share) for key in j["targets"]]


def json_line(row: Dict) -> str:
    return json.dumps(row, sort_keys=True)


def csv_header(extra: Sequence[str] = ()) -> str:
    return _csv_line(list(results_mod.COLUMNS) + list(extra))


def csv_line(row: Dict, extra: Sequence[str] = ()) -> str:
    flat = results_mod.csv_row(row)
    values = [flat.get(c, "") for c in results_mod.COLUMNS]
    values += ["%.6f" % row[c] if isinstance(row.get(c), float) else row.get(c, "") for c in extra]
    return _csv_line(values)


def _csv_line(values: Sequence) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(values)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- confidence intervals

# Student's t, 0.975 quantile, for 1..30 degrees of freedom.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)
_Z975 = 1.959964


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (a table up to 30, then
    the Cornish-Fisher expansion, within 1e-4; it tends to the normal 1.96)."""
    if df < 1:
        raise ValueError("degrees of freedom must be at least 1")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    g1 = (z ** 3 + z) / 4.0
    g2 = (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96.0
    g3 = (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384.0
    return z + g1 / df + g2 / df ** 2 + g3 / df ** 3


def mean_ci(n: int, total: float, total_sq: float) -> Dict:
    """Mean and 95% confidence interval of the mean from a count, sum and sum of squares:
    mean +- t(0.975, n - 1) * s / sqrt(n), s the sample standard deviation."""
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "ci95_low": None, "ci95_high": None}
    mean = total / n
    if n == 1:
        return {"n": 1, "mean": mean, "std": None, "ci95_low": None, "ci95_high": None}
    std = max(0.0, (total_sq - n * mean * mean) / (n - 1)) ** 0.5
    half = t975(n - 1) * std / n ** 0.5
    return {"n": n, "mean": mean, "std": std, "ci95_low": mean - half, "ci95_high": mean + half}


def summary_rows(sums: Dict[str, List[float]], maps: Sequence[str]) -> List[Dict]:
    rows = []
    for m in maps:
        for kind in ("deletion", "insertion"):
            stats = mean_ci(*sums["%s_auc_%s" % (kind, m)])
            rows.append(dict(map=m, measure="%s_auc" % kind, **stats))
    return rows


def write_summary(sums: Dict[str, List[float]], out_root: str, maps: Sequence[str]) -> None:
    """metrics_summary.json and .csv: per map and measure, n, mean, std and the 95% CI."""
    rows = summary_rows(sums, maps)
    doc = {"confidence": 0.95, "interval": "mean +- t(0.975, n-1) * std / sqrt(n)", "rows": rows}
    write_atomic(FileSystems.join(out_root, SUMMARY_FILE + ".json"), json.dumps(doc, indent=1).encode())
    fields = ["map", "measure", "n", "mean", "std", "ci95_low", "ci95_high"]
    lines = [_csv_line(fields)] + [_csv_line(["" if r[f] is None else ("%.6f" % r[f] if isinstance(r[f], float)
                                                                        else r[f]) for f in fields]) for r in rows]
    write_atomic(FileSystems.join(out_root, SUMMARY_FILE + ".csv"), ("\n".join(lines) + "\n").encode())


# ----------------------------------------------------------------------------- the steps

def read_rows(path: str) -> Iterable[Dict]:
    """The rows of an earlier run's results shard (read here rather than by ``beam.io``, which
    not every runner translates)."""
    with _open(path) as f:
        data = f.read().decode("utf-8")
    for line in data.splitlines():
        yield from parse_row(line)


def finished(settings: Settings, row: Dict) -> bool:
    """Whether an earlier ok row's files are all there, as recorded (and its metrics, if asked)."""
    if settings.overwrite or row.get("status") != "ok" or not row.get("folder"):
        return False
    if any(not isinstance(row.get(c), (int, float)) for c in settings.metric_columns):
        return False
    folder = FileSystems.join(settings.out_root, row["folder"])
    return is_complete(folder, row.get("files"), settings.save_raw, open_file=_open, methods=settings.methods)


def plan(item: Tuple[str, Dict[str, Iterable]], settings: Settings) -> Iterable[Dict]:
    """Per file: ``{"todo": job}`` with the targets left to explain; earlier rows that are
    complete (``skipped``) or belong to no target of this run (``kept``) as ``{"origin", "row"}``."""
    _, grouped = item
    jobs, latest = list(grouped["jobs"]), {}
    for row in grouped.get("prior", ()):
        latest[row["target"]] = row
    if jobs:
        j, todo = jobs[0], []
        for key in j["targets"]:
            row = latest.pop(key, None)
            if row is not None and finished(settings, row):
                yield {"origin": "skipped", "row": row}
            else:
                todo.append(key)
        if todo:
            yield {"todo": dict(j, targets=todo)}
    for row in latest.values():
        yield {"origin": "kept", "row": row}


def with_owners(item: Tuple[str, Dict[str, Iterable]]) -> Iterable[Dict]:
    """Jobs of one file-name stem, each given the folders earlier rows of that stem own
    (folder -> real path): ``explanation_folder`` then never reuses another file's folder."""
    _, grouped = item
    owners = dict(grouped.get("owners", ()))
    for j in grouped["jobs"]:
        yield dict(j, owners=owners)


def read_photo(j: Dict, max_side: int) -> np.ndarray:
    """The photo as the command line reads it (``decoding.load_image``); a remote one is
    copied to a temporary local file first. ImageError names the path as given."""
    try:
        if not is_remote(j["read"]):
            return decoding.load_image(j["read"], max_side)
        try:
            with _open(j["read"]) as f:
                data = f.read()
        except Exception as exc:
            raise decoding.ImageError("image not readable: %s (%s)" % (j["read"], str(exc).splitlines()[0]))
        suffix = os.path.splitext(posixpath.basename(j["read"]))[1]
        with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
            tmp.write(data)
            tmp.flush()
            try:
                return decoding.load_image(tmp.name, max_side)
            except decoding.ImageError as exc:
                raise decoding.ImageError(str(exc).replace(tmp.name, j["read"]))
    except decoding.ImageError as exc:
        raise decoding.ImageError(str(exc).replace(j["read"], j["path"]))


# One model per worker process and settings, built on the first batch that needs it and shared
# by the process's threads (a runner may run several bundles at once), with the lock its runs take.
_MODELS = {}  # type: Dict[str, Tuple[object, threading.Lock]]
_MODELS_LOCK = threading.Lock()


def model_for(settings: Settings):
    """(the process's Explainer for ``settings``, the lock its runs take, whether this call built it)."""
    key = settings.model_key()
    with _MODELS_LOCK:
        if key in _MODELS:
            return _MODELS[key] + (False,)
        from ggcam.explainer import Explainer  # TensorFlow loads here, in the worker
        _MODELS[key] = (Explainer(layer=settings.layer, guided_relu6=settings.guided_relu6, fusion=settings.fusion,
                                  max_side=settings.max_side, methods=settings.methods, **settings.model_kwargs),
                        threading.Lock())
        return _MODELS[key] + (True,)


class ExplainBatch(beam.DoFn):
    """(batch key, jobs) -> ``{"origin": "ok" | "failed", "row"}`` per target: each photo decoded
    (a bad one gives failed rows, never a failed pipeline), explained in graph runs of at most
    ``max_batch_size`` photos, its files written, its row made; ``{"origin": "graph"}`` once when
    this process built the model. Everything is emitted from ``process``."""

    def __init__(self, settings: Settings):
        self.s = settings

    def process(self, item):
        _, jobs = item
        jobs = sorted(jobs, key=lambda j: j["real"])  # the same batches on every runner
        decoded = []
        for j in jobs:
            t0 = time.perf_counter()
            try:
                decoded.append((j, read_photo(j, self.s.max_side), time.perf_counter() - t0))
            except Exception as exc:  # ImageError, and whatever else a broken file may raise
                message = str(exc) if isinstance(exc, decoding.ImageError) else "%s: %s" % (j["path"], exc)
                print("error: %s" % message, file=sys.stderr)
                for row in failed_rows(j, message, time.perf_counter() - t0):
                    yield {"origin": "failed", "row": row}
        if not decoded:
            return
        model, lock, built = model_for(self.s)  # a model that cannot be made fails the pipeline, in one line
        if built:
            yield {"origin": "graph"}
        size = max(1, self.s.max_batch_size)
        for start in range(0, len(decoded), size):
            yield from self.explain(model, lock, decoded[start:start + size])

    def explain(self, model, lock: threading.Lock, batch) -> Iterable[Dict]:
        t0 = time.perf_counter()
        targets = [[Target.from_key(k) for k in j["targets"]] for j, _, _ in batch]
        with lock:
            try:
                outcomes = model.explain_photos([p for _, p, _ in batch], targets, [j["path"] for j, _, _ in batch])
            except Exception:  # one bad photo must not fail the others: explain them one by one
                outcomes = []
                for (j, photo, _), ts in zip(batch, targets):
                    try:
                        outcomes.append(model.explain_photos([photo], [ts], [j["path"]])[0])
                    except Exception as exc:
                        outcomes.append(exc)
        share = (time.perf_counter() - t0) / max(1, sum(len(t) for t in targets))
        for (j, photo, decode_seconds), outcome in zip(batch, outcomes):
            if isinstance(outcome, Exception):
                message = str(outcome).strip().splitlines()[0] if str(outcome).strip() else type(outcome).__name__
                message = "%s: %s" % (j["path"], message)
                print("error: %s" % message, file=sys.stderr)
                for row in failed_rows(j, message):
                    yield {"origin": "failed", "row": row}
                continue
            owners = dict(j.get("owners") or {})  # this image's folders, over the earlier runs'
            for key, e in zip(j["targets"], outcome):
                yield self.save(model, j, key, e, photo, owners, decode_seconds / len(j["targets"]) + share)

    def save(self, model, j: Dict, key: str, e, photo: np.ndarray, owners: Dict[str, str], seconds: float) -> Dict:
        t1 = time.perf_counter()
        folder = folder_run.explanation_folder(j["stem"], j["path"], e.label, owners, real=j["real"])
        try:
            scores = self.faithfulness(model, photo, e, j["path"])
            record = {}
            target_dir = FileSystems.join(self.s.out_root, folder)
            for name, blob in e.encoded_files(self.s.save_raw):
                write_atomic(FileSystems.join(target_dir, name), blob)
                record[name] = file_record(blob)
            row = _row(j, key, folder=folder, result=e, seconds=seconds + time.perf_counter() - t1, files=record)
            row.update(scores)
            return {"origin": "ok", "row": row}
        except Exception as exc:  # OSError (BeamIOError), ValueError (NaN), anything: a failed row
            message = "%s: %s" % (j["path"], str(exc).strip().splitlines()[0] if str(exc).strip()
                                  else type(exc).__name__)
            print("error: %s" % message, file=sys.stderr)
            return {"origin": "failed", "row": _row(j, key, folder=folder, error=message)}

    def faithfulness(self, model, photo: np.ndarray, e, path: str) -> Dict[str, float]:
        """Deletion and insertion AUC of each --metric_maps map (``evaluate.py``'s measure: the
        model-sized input, grey deletion, blurred insertion, ``--metric_steps`` steps)."""
        if not self.s.metric_maps:
            return {}
        import cv2
        from ggcam.evaluation import checks as evaluation
        from ggcam.evaluation import metrics
        from ggcam.explanation import scores as model_scores
        image = model.graph.resize(photo.astype(np.float32) / 255.0)
        maps = e.input_maps(image.shape[:2])
        seed = zlib.crc32(("%s|%s" % (path, e.requested.key)).encode()) & 0x7FFFFFFF
        maps["random"] = np.random.RandomState(seed).random_sample(image.shape[:2])
        blurred = cv2.GaussianBlur(image, (0, 0), evaluation.BLUR_SIGMA)

        def predict(batch: np.ndarray) -> np.ndarray:
            return model_scores(model.graph.logits(batch), model.graph.model.output_function)[:, e.label]

        out = {}
        for m in self.s.metric_maps:
            scores = metrics.deletion_insertion(image, maps[m], predict, blurred, evaluation.GREY, self.s.metric_steps)
            out["deletion_auc_" + m] = scores["deletion_auc"]
            out["insertion_auc_" + m] = scores["insertion_auc"]
        return out


def shard_name(out_root: str, index: int, count: int) -> str:
    return FileSystems.join(out_root, "%s-%05d-of-%05d%s" % (SHARD_PREFIX, index, count, SHARD_SUFFIX))


def shard_of(item: Dict, count: int) -> int:
    """A row's shard: by a checksum of its file and target, so a re-run puts it in the same one."""
    row = item.get("row")
    if row is None:
        return 0
    return zlib.crc32(("%s|%s" % (row_real(row), row["target"])).encode("utf-8")) % count


def metric_sums(rows: Iterable[Dict], columns: Sequence[str]) -> Dict[str, List[float]]:
    """Per metric column: count, sum and sum of squares over the ok rows that have it."""
    sums = {c: [0, 0.0, 0.0] for c in columns}
    for row in rows:
        if row.get("status") != "ok":
            continue
        for c in columns:
            v = row.get(c)
            if isinstance(v, (int, float)) and np.isfinite(v):
                sums[c][0] += 1
                sums[c][1] += float(v)
                sums[c][2] += float(v) * float(v)
    return sums


def no_counts() -> Dict[str, int]:
    """COUNTERS and ``graphs`` (graph builds), all 0."""
    return dict({name: 0 for name in COUNTERS}, graphs=0)


def write_shard(item: Tuple[int, Iterable[Dict]], settings: Settings, count: int) -> Dict:
    """One results shard written atomically; returns what Finish needs: its index, the counts of
    its rows by origin, the graph builds and its metric sums."""
    index, items = item
    counts = no_counts()
    rows = []
    for it in items:
        if it["origin"] == "graph":
            counts["graphs"] += 1
        else:
            counts[it["origin"]] += 1
            rows.append(it["row"])
    rows.sort(key=lambda r: (r["path"], r["target"]))
    data = "".join(json_line(r) + "\n" for r in rows).encode("utf-8")
    write_atomic(shard_name(settings.out_root, index, count), data)
    return {"index": index, "counts": counts, "sums": metric_sums(rows, settings.metric_columns)}


def finish(item: Tuple[None, Iterable[Dict]], settings: Settings, count: int) -> Dict:
    """The last step, after every shard: empty shards for indices no row fell into (so the set is
    complete), results.csv merged from the shards, the metrics summary, stale shards of other
    counts removed, and RUN_FILE with this run's counters. Returns the counters."""
    _, done = item
    done = list(done)
    written = {d["index"] for d in done}
    for index in range(count):
        if index not in written:
            write_atomic(shard_name(settings.out_root, index, count), b"")
    names = [shard_name(settings.out_root, i, count) for i in range(count)]
    extra = settings.metric_columns
    lines = [csv_header(extra)]
    for name in names:
        lines += [csv_line(r, extra) for r in read_rows(name)]
    write_atomic(FileSystems.join(settings.out_root, results_mod.CSV_FILE), ("\n".join(lines) + "\n").encode("utf-8"))
    if settings.metric_maps:
        sums = {c: [0, 0.0, 0.0] for c in extra}
        for d in done:
            for c in extra:
                for i in range(3):
                    sums[c][i] += d["sums"][c][i]
        write_summary(sums, settings.out_root, settings.metric_maps)
    remove_stale_shards(names, settings.out_root)
    counts = no_counts()
    for d in done:
        for k, v in d["counts"].items():
            counts[k] += v
    doc = {"run": settings.run_id, "counts": counts}
    write_atomic(FileSystems.join(settings.out_root, RUN_FILE), json.dumps(doc).encode("utf-8"))
    return counts


# ----------------------------------------------------------------------------- the pipeline

def batch_count(jobs: Sequence[Dict], remote_specs: Sequence[str], settings: Settings) -> int:
    """Batch keys the images are spread over: about one graph run's photos each (the workers
    list remote patterns, so their share is a guess)."""
    return max(1, -(-len(jobs) // max(1, settings.max_batch_size))) + (64 if remote_specs else 0)


def shard_count(jobs: Sequence[Dict], remote_specs: Sequence[str], targets: Sequence[str]) -> int:
    """Results shards: one per ROWS_PER_SHARD rows expected (earlier rows kept are not counted)."""
    rows = sum(len(j["targets"]) for j in jobs) + (ROWS_PER_SHARD if remote_specs else 0) * max(1, len(targets))
    return max(1, -(-rows // ROWS_PER_SHARD))


def build(p: beam.Pipeline, jobs: Sequence[Dict], remote_specs: Sequence[str], remote_targets: Sequence[str],
          settings: Settings, prior_files: Sequence[str], num_shards: int = 0):
    """Add the pipeline to ``p``. jobs: ``job()`` dicts of local images (the driver listed them
    with the command line's rules); remote_specs: URLs matched by the workers, each explained
    for ``remote_targets``; prior_files: the earlier run's results shards; num_shards: results
    shards to write (0: ``shard_count``). Returns the last step's output: this run's counters."""
    num_shards = int(num_shards) or shard_count(jobs, remote_specs, remote_targets)
    num_batches = batch_count(jobs, remote_specs, settings)
    # No empty Create (an empty branch is left out): the Dask runner splits each into partitions.
    images = p | "ListedImages" >> beam.Create(list(jobs))
    if remote_specs:
        remote = (p | "RemoteSpecs" >> beam.Create(list(remote_specs))
                  | "MatchRemote" >> beam.FlatMap(match_remote, list(remote_targets)))
        images = (images, remote) | "AllImages" >> beam.Flatten()
    images = (images
              | "ByFile" >> beam.Map(lambda j: (j["real"], j))
              | "OnePerFile" >> beam.GroupByKey()
              | "MergeTargets" >> beam.Map(merge_same_file)
              | "ByStem" >> beam.Map(lambda j: (_stem(j["path"]), j))
              | "SameStem" >> beam.GroupByKey()
              | "FolderStems" >> beam.FlatMap(assign_stems)
              | "KeyImages" >> beam.Map(lambda j: (j["real"], j)))
    to_plan, owner_sets = {"jobs": images}, {}
    if prior_files:
        prior = (p | "EarlierShards" >> beam.Create(list(prior_files))
                 | "ReadEarlier" >> beam.FlatMap(read_rows))
        to_plan["prior"] = prior | "KeyEarlier" >> beam.Map(lambda r: (row_real(r), r))
        owner_sets["owners"] = prior | "FolderOwners" >> beam.FlatMap(
            lambda r: [(_stem(r["path"]), (r["folder"], row_real(r)))] if r.get("folder") else [])
    planned = to_plan | "JoinEarlier" >> beam.CoGroupByKey() | "Plan" >> beam.FlatMap(plan, settings)
    todo = planned | "ToExplain" >> beam.FlatMap(lambda x: [x["todo"]] if "todo" in x else [])
    carried = planned | "Carried" >> beam.FlatMap(lambda x: [] if "todo" in x else [x])
    explained = (dict(owner_sets, jobs=todo | "TodoByStem" >> beam.Map(lambda j: (_stem(j["path"]), j)))
                 | "JoinOwners" >> beam.CoGroupByKey()
                 | "WithOwners" >> beam.FlatMap(with_owners)
                 | "ByBatch" >> beam.Map(lambda j: (zlib.crc32(j["real"].encode("utf-8")) % num_batches, j))
                 | "Batches" >> beam.GroupByKey()
                 | "Explain" >> beam.ParDo(ExplainBatch(settings)))
    return ((carried, explained) | "AllRows" >> beam.Flatten()
            | "ByShard" >> beam.Map(lambda x: (shard_of(x, num_shards), x))
            | "Shards" >> beam.GroupByKey()
            | "WriteShards" >> beam.Map(write_shard, settings, num_shards)
            | "Together" >> beam.Map(lambda d: (None, d))
            | "AllShards" >> beam.GroupByKey()
            | "Finish" >> beam.Map(finish, settings, num_shards))


def read_counters(out_root: str, run_id: str) -> Optional[Dict[str, int]]:
    """This run's counters from RUN_FILE (None when absent or another run's)."""
    try:
        with _open(FileSystems.join(out_root, RUN_FILE)) as f:
            doc = json.loads(f.read().decode("utf-8"))
    except Exception:
        return None
    return doc.get("counts") if doc.get("run") == run_id else None


def read_summary(out_root: str) -> Optional[Dict]:
    try:
        with _open(FileSystems.join(out_root, SUMMARY_FILE + ".json")) as f:
            return json.loads(f.read().decode("utf-8"))
    except Exception:
        return None
