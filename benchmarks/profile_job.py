"""Where the time goes: the full job split into its stages, and the cold start of the CLI.

    .venv/bin/python benchmarks/profile_job.py [--images 32] [--batch 8] [--repeats 3]

1. Batch path, as ``make bench`` times it (224x224 JPEGs, no resize), and the single-image
   path (``images/chelsea.png``, 451x300: resize in the graph and the photo-size adjoint):
   each stage timed on its own, in the order ``Explanation`` runs them, best of --repeats,
   ms per image. The stages call the project's own functions (ggcam.core.gradcam, ggcam.io), so the
   figures follow the code.
2. Cold start: ``inference.py`` on one image in a new process, with each phase stamped
   (``GGCAM_PROFILE_COLD=1`` makes inference.py print the stamps), next to a new
   ``python -c "import tensorflow"``, paired run by run.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from typing import Callable, Dict, List

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import gradcam as gc  # noqa: E402
from ggcam import explanation  # noqa: E402
from ggcam.io import decoding, encoding, safe_files  # noqa: E402
from ggcam.explainer import Explainer  # noqa: E402
from ggcam.targets import Target  # noqa: E402
from speed import make_inputs  # noqa: E402


class Stages:
    """Accumulates seconds per stage name over one pass of the job."""

    def __init__(self):
        self.seconds = OrderedDict()  # type: Dict[str, float]

    def __call__(self, name: str, fn: Callable, *args):
        start = time.perf_counter()
        value = fn(*args)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        return value


def job(ex: Explainer, paths: List[str], batch: int, pictures, folder: str) -> "OrderedDict[str, float]":
    """One pass of the full job over ``paths``, stage by stage; returns seconds per stage."""
    t = Stages()
    graph = ex.graph
    size = tuple(graph.input_size)
    for start in range(0, len(paths), batch):
        photos = [t("decode", decoding.load_image, p) for p in paths[start:start + batch]]
        floats = [t("to float", lambda p: p.astype(np.float32) / 255.0, p) for p in photos]
        images = np.stack([f if f.shape[:2] == size else t("resize (graph)", graph.resize, f) for f in floats])
        feeds = graph.target_feeds([Target.best()] * len(images))
        out = t("network pass", graph._feed_runs, graph.fetches, images, feeds)
        for k, photo in enumerate(photos):
            g = out["guided_backprop"][k]
            if photo.shape[:2] != g.shape[:2]:
                g = t("photo-size adjoint (graph)", graph.photo_gradient, g, photo.shape)
            raw = {n: out[n][k] for n in ("logits", "conv_activations", "conv_gradient", "guided_backprop")}
            t("finite checks", lambda: [np.all(np.isfinite(v)) for v in list(raw.values()) + [g]])
            cam = t("CAM", gc.compute_cam, raw["conv_activations"], raw["conv_gradient"])
            cam_picture = t("CAM upsample", gc.cam_image, cam, g.shape[0], g.shape[1])
            fused = t("fusion", gc.fuse, g, cam_picture)
            t("display scaling: percentile", lambda: (gc.abs_percentile(g, gc.DISPLAY_PERCENTILE),
                                                      gc.abs_percentile(fused, gc.DISPLAY_PERCENTILE)))
            gbp_scaled, ggc_scaled = t("display scaling: total", lambda: (gc.scale_signed(g), gc.scale_signed(fused)))
            made = {}
            if "guided_backprop" in pictures:
                made["guided_backprop"] = t("to uint8", gc.to_uint8, gbp_scaled)
            if "guided_gradcam" in pictures:
                made["guided_gradcam"] = t("to uint8", gc.to_uint8, ggc_scaled)
            if "gradcam" in pictures:
                made["gradcam"] = t("colour map", gc.heatmap, cam_picture)
            if "overlay" in pictures:
                made["overlay"] = t("overlay (colour map + blend)", gc.overlay, photo, cam_picture)
            if "panel" in pictures:
                made["panel"] = t("panel", gc.panel, [photo] + [made[n] for n in explanation.PICTURES[:4]],
                                  ["Predicted"] + [gc.TITLES[n] for n in explanation.PICTURES[:4]])
            files = [(explanation.INPUT_FILE, t("encode input.jpg", encoding.encode_picture, photo, ".jpg"))] \
                if "panel" in pictures else []
            files += [(n + ".png", t("encode PNG", encoding.encode_picture, made[n])) for n in pictures]
            sub = os.path.join(folder, "%d" % (start + k))
            os.makedirs(sub, exist_ok=True)
            for name, blob in files:
                t("write (atomic)", safe_files.atomic_write_bytes, os.path.join(sub, name), blob)
    return t.seconds


def best_stages(fn: Callable[[], Dict[str, float]], repeats: int) -> Dict[str, float]:
    runs = [fn() for _ in range(repeats)]
    return OrderedDict((k, min(r[k] for r in runs)) for k in runs[0])


def print_stages(title: str, stages: Dict[str, float], n: int) -> None:
    network = stages["network pass"]
    total = sum(v for k, v in stages.items() if k != "display scaling: percentile")
    print("\n%s (ms per image; share of the network pass)" % title)
    for name, seconds in stages.items():
        note = "  (part of the total below)" if name == "display scaling: percentile" else ""
        print("  %-32s %7.2f  %5.1f%%%s" % (name, 1000 * seconds / n, 100 * seconds / network, note))
    print("  %-32s %7.2f  %5.1f%%" % ("sum", 1000 * total / n, 100 * total / network))


def cold_start(image: str, repeats: int) -> None:
    """Phases of a new inference.py process, next to a new `import tensorflow`, paired."""
    env = dict(os.environ, GGCAM_PROFILE_COLD="1")
    rows = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import tensorflow"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        tf_import = time.perf_counter() - start
        with tempfile.TemporaryDirectory() as out:
            start, wall = time.perf_counter(), time.time()
            run = subprocess.run([sys.executable, os.path.join(ROOT, "inference.py"), "--image=%s" % image,
                                  "--output_dir=%s" % out, "--top_k=0"], env=env, check=True,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, universal_newlines=True)
            total = time.perf_counter() - start
        stamps = [l.split()[1:] for l in run.stderr.splitlines() if l.startswith("ggcam-profile ")]
        rows.append((tf_import, total, [(name, float(s) - wall) for name, s in stamps]))
    print("\ncold start, %d paired runs (seconds since the process started; phase = since the previous stamp)" % repeats)
    for tf_import, total, stamps in rows:
        previous, parts = 0.0, []
        for name, s in stamps:
            parts.append("%s %.2f" % (name, s - previous))
            previous = s
        print("  import tensorflow alone %.2f | inference.py %.2f: %s" % (tf_import, total, ", ".join(parts)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    chelsea = os.path.join(ROOT, "images", "chelsea.png")
    with tempfile.TemporaryDirectory() as folder, Explainer() as ex:
        paths = make_inputs(folder, args.images)
        for pictures, label in ((("overlay", "guided_backprop", "guided_gradcam"), "3 pictures"),
                                (explanation.PICTURES, "5 pictures + input.jpg")):
            job(ex, paths[:args.batch], args.batch, pictures, folder)  # warm-up
            stages = best_stages(lambda: job(ex, paths, args.batch, pictures, folder), args.repeats)
            print_stages("batch path, batch %d, %s" % (args.batch, label), stages, len(paths))
        job(ex, [chelsea], 1, explanation.PICTURES, folder)
        stages = best_stages(lambda: job(ex, [chelsea], 1, explanation.PICTURES, folder), max(args.repeats, 5))
        print_stages("single image (chelsea.png 451x300), 5 pictures + input.jpg", stages, 1)
    cold_start(chelsea, args.repeats)


if __name__ == "__main__":
    main()
