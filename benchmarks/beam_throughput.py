"""Throughput of the Beam pipeline (DirectRunner, 2 worker processes) next to the command line.

    python benchmarks/beam_throughput.py [--images 200] [--in_memory] [--dask]

Cuts N photos (224x224 to 480x360, at random places and sizes) from the example images into
a temporary folder as JPEGs, then, one after the other in one run, times from process start
to exit:

- the command line's folder run: ``inference.py --image=<folder>`` (one process, batches of 8);
- ``beam_explain.py --image=<folder>`` on the DirectRunner in multi_processing mode with 2
  worker processes (graph runs of at most 8 images);
- with ``--in_memory``, also the DirectRunner's default in_memory mode (1 worker, in-process);
- with ``--dask``, also the Dask runner on a Dask cluster started for it on this machine (a
  scheduler and 2 single-threaded workers, scripts/dask_cluster.py; its start is not timed).

Each writes the same five pictures and input.jpg per image into a fresh output folder. Prints
a table and writes benchmarks/beam_throughput.json.
"""
import argparse
import contextlib
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTPUT = os.path.join(ROOT, "benchmarks", "beam_throughput.json")
SOURCES = ("chelsea.png", "coffee.png", "cat_and_coffee.png")


def make_photos(folder: str, n: int, seed: int = 0) -> None:
    """n JPEG crops of the example photos, sizes 224x224 to 480x360."""
    rng = np.random.RandomState(seed)
    sources = [Image.open(os.path.join(ROOT, "images", name)).convert("RGB") for name in SOURCES]
    for i in range(n):
        src = sources[i % len(sources)]
        w = int(rng.randint(224, 481))
        h = int(min(max(224, w * rng.uniform(0.7, 1.0)), 360))
        scale = max(w / src.width, h / src.height, 1.0)
        if scale > 1.0:
            src = src.resize((int(np.ceil(src.width * scale)), int(np.ceil(src.height * scale))), Image.BICUBIC)
        x, y = int(rng.randint(0, src.width - w + 1)), int(rng.randint(0, src.height - h + 1))
        src.crop((x, y, x + w, y + h)).save(os.path.join(folder, "photo%04d.jpg" % i), quality=90)


def timed(cmd, label: str) -> dict:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit("%s failed (exit %d):\n%s" % (label, done.returncode, done.stderr[-2000:]))
    return {"seconds": seconds, "stdout": done.stdout.strip().splitlines()[-1:]}


def count_rows(out: str) -> int:
    import csv
    with open(os.path.join(out, "results.csv"), newline="") as f:
        return sum(1 for r in csv.DictReader(f) if r["status"] == "ok")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--in_memory", action="store_true", help="also time the DirectRunner's in_memory mode")
    parser.add_argument("--dask", action="store_true", help="also time the Dask runner on a local 2-worker cluster")
    parser.add_argument("--output", default=OUTPUT)
    args = parser.parse_args()
    py = sys.executable
    runs = [("command line folder run (inference.py, batch 8)", "cli",
             [py, "inference.py", "--quiet"]),
            ("Beam DirectRunner, multi_processing, 2 workers", "beam_mp2",
             [py, "beam_explain.py", "--direct_running_mode=multi_processing", "--direct_num_workers=2"])]
    if args.in_memory:
        runs.append(("Beam DirectRunner, in_memory, 1 worker", "beam_mem",
                     [py, "beam_explain.py", "--direct_running_mode=in_memory"]))
    rows = []
    cluster = contextlib.ExitStack()
    if args.dask:
        sys.path.insert(0, os.path.join(ROOT, "scripts"))
        import dask_cluster
        address = cluster.enter_context(dask_cluster.local_cluster(workers=2))
        runs.append(("Beam DaskRunner, local cluster, 2 workers", "beam_dask",
                     [py, "beam_explain.py", "--runner=DaskRunner", "--dask_client_address=%s" % address]))
    with cluster, tempfile.TemporaryDirectory() as work:
        photos = os.path.join(work, "photos")
        os.makedirs(photos)
        make_photos(photos, args.images)
        for label, key, cmd in runs:
            out = os.path.join(work, key)
            print("running: %s ..." % label, file=sys.stderr, flush=True)
            r = timed(cmd + ["--image=%s" % photos, "--output_dir=%s" % out], label)
            explained = count_rows(out)
            if explained != args.images:
                sys.exit("%s explained %d of %d images" % (label, explained, args.images))
            rows.append({"run": label, "key": key, "images": args.images, "seconds": round(r["seconds"], 2),
                         "images_per_s": round(args.images / r["seconds"], 2),
                         "ms_per_image": round(1000.0 * r["seconds"] / args.images, 1)})
    report = {"date": datetime.date.today().isoformat(), "machine": "%s, %d cores" % (platform.processor() or
                                                                                    platform.machine(), os.cpu_count()),
              "python": platform.python_version(), "rows": rows,
              "note": "wall clock from process start to exit: graph builds, decoding, network, six files per image"}
    with open(args.output, "w") as f:
        json.dump(report, f, indent=1)
    print("| run | images | seconds | images/s | ms/image |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| %s | %d | %.1f | %.2f | %.0f |" % (r["run"], r["images"], r["seconds"], r["images_per_s"],
                                                    r["ms_per_image"]))
    base = {r["key"]: r for r in rows}
    for key in ("beam_mp2", "beam_dask"):
        if "cli" in base and key in base:
            print("%s_vs_cli=%.2f" % (key, base[key]["images_per_s"] / base["cli"]["images_per_s"]))


if __name__ == "__main__":
    main()
