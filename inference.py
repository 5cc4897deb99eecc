"""Explain a MobileNet V1 decision with Grad-CAM, guided backprop and Guided Grad-CAM.

    python inference.py --image=cat.jpg --label=282

Writes gradcam.png, guided_backprop.png, guided_gradcam.png, overlay.png and panel.png
(and raw.npz with --save_raw) to --output_dir, at the photo's resolution.
"""
import argparse
import os
import sys
from typing import Dict, List, Optional

import numpy as np

import gradcam as gc
import guided_relu
import image_io
import labels as labels_mod

EXIT_RUNTIME, EXIT_USAGE = 1, 2

PICTURES = ("gradcam", "guided_backprop", "guided_gradcam", "overlay", "panel")
RAW_FILE = "raw.npz"


class UsageError(Exception):
    """Bad command-line input; exits with status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        raise UsageError("%s (see --help)" % message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(description="Guided Grad-CAM for TF-slim MobileNet V1 (TensorFlow 1.15).")
    p.add_argument("--image", required=True, help="photo to explain (any format Pillow reads)")
    p.add_argument("--label", type=int, default=None,
                   help="class to explain, 0..1000 in the 1001-class numbering "
                        "(0 = background, 282 = tabby cat); default: the top-1 class")
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint prefix (default: checkpoints/mobilenet_v1_1.0_224.ckpt)")
    p.add_argument("--output_dir", default=None,
                   help="folder for the pictures (default: ./<image name>_<class index>)")
    p.add_argument("--top_k", type=int, default=5,
                   help="print the K best classes: index, name, logit, probability (0: none)")
    p.add_argument("--guided_relu6", choices=guided_relu.RULES, default="exact",
                   help="exact: true ReLU6 derivative (no gradient through saturated units); "
                        "seed: the seed's rule (gradient also passes where output = 6); "
                        "plain: no guidance, the vanilla gradient")
    p.add_argument("--fusion", choices=gc.FUSIONS, default="paper",
                   help="paper: raw guided gradient x CAM, then scaled for display; "
                        "seed: min-max normalised guided gradient x CAM")
    p.add_argument("--max_side", type=int, default=image_io.DEFAULT_MAX_SIDE,
                   help="shrink photos longer than this many pixels first (default: %(default)s)")
    p.add_argument("--save_raw", action="store_true", help="also write raw.npz (see README)")
    p.add_argument("--show", action="store_true", help="open the panel in an image viewer")
    return p


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities [K] from logits [K]."""
    z = np.exp(logits - logits.max())
    return z / z.sum()


def top_classes(logits: np.ndarray, names: List[str], k: int) -> List[str]:
    """Lines 'index  name  logit  probability' for the k largest logits [1001]."""
    probs = softmax(logits.astype(np.float64))
    order = np.argsort(-logits)[:k]
    return ["%4d  %-40s logit %7.3f  p %.4f" % (i, names[i][:40], logits[i], probs[i])
            for i in order]


def raw_arrays(result: Dict[str, np.ndarray], i: int = 0) -> Dict[str, np.ndarray]:
    """The public raw.npz arrays of image ``i`` of a ``GuidedGradCamGraph.run`` batch."""
    acts, grad = result["conv_activations"][i], result["conv_gradient"][i]
    return {
        "logits": result["logits"][i].astype(np.float32),
        "label": np.asarray(int(result["label"][i])),
        "conv_activations": acts.astype(np.float32),
        "conv_gradient": grad.astype(np.float32),
        "guided_backprop": result["guided_backprop"][i].astype(np.float32),
        "cam": gc.compute_cam(acts, grad),
    }


def pictures(photo: np.ndarray, result: Dict[str, np.ndarray], caption: str,
             fusion: str = "paper", i: int = 0) -> Dict[str, np.ndarray]:
    """uint8 RGB pictures at the photo's size (see PICTURES) for image ``i`` of a batch."""
    cam, gbp, ggc = gc.gradcam(result["conv_activations"][i], result["conv_gradient"][i],
                               result["guided_backprop_image"][i], fusion=fusion)
    out = {
        "gradcam": gc.heatmap(cam),
        "guided_backprop": gc.to_uint8(gbp),
        "guided_gradcam": gc.to_uint8(ggc),
        "overlay": gc.overlay(photo, cam),
    }
    out["panel"] = gc.panel(
        [photo, out["gradcam"], out["guided_backprop"], out["guided_gradcam"], out["overlay"]],
        [caption, "Grad-CAM", "Guided Backprop", "Guided Grad-CAM", "Overlay"])
    return out


def run(args: argparse.Namespace) -> int:
    if args.label is not None and not 0 <= args.label < labels_mod.NUM_CLASSES:
        raise UsageError("--label must be in 0..%d, got %d" % (labels_mod.NUM_CLASSES - 1, args.label))
    if args.top_k < 0:
        raise UsageError("--top_k must be >= 0")
    if args.max_side < 32:
        raise UsageError("--max_side must be at least 32")
    names = labels_mod.load_labels()
    photo = image_io.load_image(args.image, args.max_side)
    # Fail on an unwritable destination before the expensive part.
    image_io.check_writable(args.output_dir or ".")

    import explainer  # TensorFlow loads only once the input is known to be usable
    kwargs = {"guided_relu6": args.guided_relu6}
    if args.checkpoint:
        kwargs["checkpoint"] = args.checkpoint
    with explainer.GuidedGradCamGraph(**kwargs) as graph:
        label = explainer.PREDICTED if args.label is None else args.label
        result = graph.run(photo[None].astype(np.float32) / 255.0, [label])
    target = int(result["label"][0])
    logits = result["logits"][0]
    for line in top_classes(logits, names, args.top_k):
        print(line)
    kind = "Target" if args.label is not None else "Predicted"
    caption = "%s: %s" % (kind, names[target].split(",")[0])
    outputs = pictures(photo, result, caption, args.fusion)
    if not all(np.isfinite(v).all() for v in result.values()):
        raise RuntimeError("the network produced NaN or infinite values")

    out_dir = args.output_dir or "%s_%d" % (os.path.splitext(os.path.basename(args.image))[0], target)
    image_io.ensure_writable_dir(out_dir)
    for name in PICTURES:
        image_io.save_picture(os.path.join(out_dir, name + ".png"), outputs[name])
    if args.save_raw:
        image_io.save_arrays(os.path.join(out_dir, RAW_FILE), raw_arrays(result))
    print("explained class %d (%s), logit %.3f; pictures in %s"
          % (target, names[target], logits[target], out_dir))
    if args.show:
        show(os.path.join(out_dir, "panel.png"))
    return 0


def show(path: str) -> None:
    """Open a picture in the system's viewer, or say why it cannot be shown."""
    from PIL import Image, ImageShow
    headless = sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if headless or not ImageShow.show(Image.open(path), title=os.path.basename(path)):
        print("warning: --show: no display or image viewer available; the panel is %s" % path,
              file=sys.stderr)


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    try:
        return run(build_parser().parse_args(argv))
    except UsageError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # every other failure is reported in one line, no traceback
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print("error: %s" % message, file=sys.stderr)
        return EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
