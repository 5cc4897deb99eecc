"""Resident memory of a folder run against the number of images explained.

    .venv/bin/python benchmarks/memory.py [--images 500] [--batch_size 8]

Makes N synthetic JPEG photos of varied sizes (320x240 to 800x600) in a temporary folder,
runs `inference.py --image=<folder>` on them in a child process, samples the child's VmRSS
every 0.1 s and counts finished images from results.jsonl. Prints RSS after the first two
batches, at every 100 images and at the peak, and writes benchmarks/memory_results.json.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTPUT = os.path.join(ROOT, "benchmarks", "memory_results.json")


def make_photos(folder: str, n: int) -> None:
    rng = np.random.RandomState(0)
    for i in range(n):
        w = int(rng.randint(320, 801))
        h = int(w * rng.uniform(0.6, 0.9))
        small = rng.randint(0, 256, (8, 8, 3)).astype(np.uint8)  # smooth random colour field
        Image.fromarray(small).resize((w, h), Image.BICUBIC).save(
            os.path.join(folder, "photo%04d.jpg" % i), quality=85)


def rss_mb(pid: int) -> float:
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def finished(path: str) -> int:
    try:
        with open(path) as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--output", default=OUTPUT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        photos, out = os.path.join(work, "photos"), os.path.join(work, "out")
        os.makedirs(photos)
        make_photos(photos, args.images)
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "inference.py"), "--image=%s" % photos,
                                 "--output_dir=%s" % out, "--batch_size=%d" % args.batch_size, "--quiet"],
                                stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        samples = []  # (seconds, images finished, RSS MB)
        while proc.poll() is None:
            try:
                samples.append((time.perf_counter() - start, finished(os.path.join(out, "results.jsonl")),
                                rss_mb(proc.pid)))
            except OSError:
                break
            time.sleep(0.1)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit("inference.py failed with status %d" % proc.returncode)
        total = finished(os.path.join(out, "results.jsonl"))

    def rss_at(count: int) -> float:
        return max([r for _, n, r in samples if n <= count] or [0.0])

    warm = min(2 * args.batch_size, total)
    marks = sorted({n for n in [warm, 50] + list(range(100, total + 1, 100)) + [total] if n <= total})
    report = {
        "images": total, "batch_size": args.batch_size, "seconds": round(seconds, 1),
        "peak_rss_mb": round(max(r for _, _, r in samples), 1),
        "rss_mb_after_first_two_batches": round(rss_at(warm), 1),
        # highest RSS seen while at most N images had finished
        "rss_mb_by_images": {str(n): round(rss_at(n), 1) for n in marks},
    }
    report["growth_mb_after_first_two_batches"] = round(
        report["peak_rss_mb"] - report["rss_mb_after_first_two_batches"], 1)
    if total >= 100:
        report["growth_mb_after_100_images"] = round(report["peak_rss_mb"] - rss_at(100), 1)
    with open(args.output, "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
