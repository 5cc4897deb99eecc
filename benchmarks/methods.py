"""Speed of each method (MobileNet V1, 224x224 JPEGs cut from the example photos), and side by
side with pytorch-grad-cam's implementation of the same CAM method on the same weights.

    .venv/bin/python benchmarks/methods.py [--images=8] [--slow_images=2] [--methods=a,b] [--output=FILE]

a. The closed-form CAM methods (gradcam++, xgradcam, layercam, hirescam, eigencam) all together
   against Grad-CAM alone: the explanation (batch 8, one network pass) and every method's map,
   best of 3; they reuse the one backward pass, so the ratio is their numpy cost.
b. Per method, images/s of explain + the map, here and, when benchmarks/.venv-torch exists
   (make bench sets it up), pytorch-grad-cam 1.5.7 on the PyTorch MobileNet V1 of
   benchmarks/peer_pytorch_grad_cam.py, both at batch 8; Score-CAM and Ablation-CAM (a forward
   pass per channel, per image on both sides) at batch 1 on ``--slow_images`` images.
c. Integrated gradients (32 steps) and SmoothGrad (25 samples of guided backprop), images/s.

Prints one JSON line per row and a summary line; writes the rows to ``--output``.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import Dict, List

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from ggcam import methods as methods_mod  # noqa: E402
from ggcam.explainer import Explainer  # noqa: E402
from ggcam.io import decoding  # noqa: E402
from ggcam.targets import Target  # noqa: E402
from speed import TORCH_PYTHON, best_time, make_inputs, torch_peer  # noqa: E402

CLOSED_FORM = ("gradcam++", "xgradcam", "layercam", "hirescam", "eigencam")
PEER = ("gradcam", "gradcam++", "eigencam", "scorecam", "ablationcam")
SLOW = ("scorecam", "ablationcam")


def job(ex: Explainer, photos: List[np.ndarray], batch: int) -> None:
    """Explain the photos in batches and make every method's map."""
    for start in range(0, len(photos), batch):
        chunk = photos[start:start + batch]
        for per_image in ex.explain_photos(chunk, [[Target.best()]] * len(chunk)):
            for e in per_image:
                e.maps()


def ours(photos: List[np.ndarray], methods, batch: int, repeats: int, options=None) -> float:
    """Seconds per image of ``job`` (best of ``repeats``, after a warm-up)."""
    with Explainer(methods=list(methods), method_options=options) as ex:
        job(ex, photos[:1], 1)
        return best_time(lambda: job(ex, photos, batch), repeats) / len(photos)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--slow_images", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default=",".join(PEER),
                        help="part b's methods, among %s (default: all)" % ", ".join(PEER))
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    peer_methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in peer_methods if m not in PEER]
    if unknown:
        parser.error("--methods: unknown %s (choose among %s)" % (", ".join(unknown), ", ".join(PEER)))
    rows = []  # type: List[Dict]

    def emit(**row):
        rows.append(row)
        print(json.dumps(row))
        sys.stdout.flush()

    with tempfile.TemporaryDirectory() as folder:
        paths = make_inputs(folder, args.images)
        photos = [decoding.load_image(p) for p in paths]
        alone = ours(photos, ["gradcam"], 8, args.repeats)
        together = ours(photos, ("gradcam",) + CLOSED_FORM, 8, args.repeats)
        emit(part="a", methods="gradcam", batch=8, images_per_s=1 / alone)
        emit(part="a", methods="gradcam+" + "+".join(CLOSED_FORM), batch=8, images_per_s=1 / together,
             ratio_to_gradcam=together / alone)
        for name in peer_methods:
            n, batch = (args.slow_images, 1) if name in SLOW else (args.images, 8)
            seconds = ours(photos[:n], [name], batch, 1 if name in SLOW else args.repeats)
            emit(part="b", tool="ours", method=name, images=n, batch=batch, images_per_s=1 / seconds)
        if os.path.exists(TORCH_PYTHON):
            torch_peer(paths[:1], [1], 1, folder)  # exports the weights into folder
            script = os.path.join(HERE, "peer_pytorch_grad_cam.py")
            for name in peer_methods:
                n = args.slow_images if name in SLOW else args.images
                sub = os.path.join(folder, name)
                os.makedirs(sub)
                for p in paths[:n]:
                    os.link(p, os.path.join(sub, os.path.basename(p)))
                run = subprocess.run([TORCH_PYTHON, script, "--weights=%s" % os.path.join(folder, "weights.npz"),
                                      "--images=%s" % sub, "--methods=%s" % name,
                                      "--batches=%d" % (1 if name in SLOW else 8)],
                                     stdout=subprocess.PIPE, universal_newlines=True, check=True)
                peer = [json.loads(l) for l in run.stdout.splitlines() if l.startswith("{")][-1]
                mine = [r for r in rows if r.get("method") == name and r.get("tool") == "ours"][-1]
                emit(part="b", tool="pytorch-grad-cam", method=name, images=n, images_per_s=peer["images_per_s"],
                     ours_vs_peer=mine["images_per_s"] / peer["images_per_s"])
        else:
            print("no %s: pytorch-grad-cam not timed (make bench sets it up)" % TORCH_PYTHON, file=sys.stderr)
        ig = ours(photos[:args.slow_images * 2], ["integrated_gradients"], 1, 1)  # 32 steps
        emit(part="c", method="integrated_gradients", steps=32, images_per_s=1 / ig)
        smooth = ours(photos[:args.slow_images * 2], ["guided_backprop"], 1, 1, methods_mod.Options(smoothgrad=25))
        emit(part="c", method="guided_backprop_smoothgrad", samples=25, images_per_s=1 / smooth)
    ratios = {r["method"]: round(r["ours_vs_peer"], 2) for r in rows if "ours_vs_peer" in r}
    print("closed_form_cams_vs_gradcam=%.3f %s" % (together / alone,
                                                   " ".join("%s_vs_pytorch_grad_cam=%s" % kv for kv in ratios.items())))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
