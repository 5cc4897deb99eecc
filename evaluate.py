"""Can these explanations be trusted? Sanity checks and faithfulness scores, measured.

    python evaluate.py --image=images --output_dir=evaluation [--boxes=boxes.json]

a. Model randomisation (Adebayo et al., NeurIPS 2018), cascading from the logits down to
   Conv2d_0 and one layer at a time: the layer's weights (and biases) are replaced in the
   existing graph by Gaussian draws with the trained tensor's standard deviation, the maps are
   recomputed and compared with the originals (Spearman rank correlation of absolute values,
   SSIM). The trained weights are restored afterwards.
b. Class sensitivity: the same comparison between the maps for the top-1 class and for a
   low-ranked class (--low_rank, default the 500th best).
c. Deletion and insertion (Petsiuk et al., BMVC 2018): pixels of the 224x224 model input are
   removed (set to grey) or inserted (into a blurred copy) in order of a map's importance; the
   area under the target-class probability curve is reported for Grad-CAM, guided backprop,
   Guided Grad-CAM, the plain gradient and a random map.
d. Pointing game (Zhang et al., 2016) with --boxes: a hit when the map's maximum lies within
   15 px of a box of the class.

Writes CSV files, report.md (Markdown tables), randomization.png (similarity against
randomised depth) and randomization_strip.png (the maps as layers are randomised).
"""
import argparse
import csv
import io
import json
import os
import sys
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

import gradcam as gc
import image_io
import labels as labels_mod
import metrics
from inference import UsageError, _Parser, expand_images, run_cli

MAP_METHODS = ("gradcam", "guided_backprop", "guided_gradcam")
BASELINE_METHODS = ("gradient", "random")
TITLES = {"gradcam": "Grad-CAM", "guided_backprop": "Guided Backprop", "guided_gradcam": "Guided Grad-CAM",
          "gradient": "Gradient", "random": "Random"}
STRIP_LAYERS = ("Logits", "Conv2d_13_pointwise", "Conv2d_11_pointwise", "Conv2d_7_pointwise",
                "Conv2d_3_pointwise", "Conv2d_0")
BLUR_SIGMA = 5.0   # insertion baseline, as in Petsiuk et al.
GREY = 0.5         # deletion baseline: 0 in the model's [-1, 1] range


# ----------------------------------------------------------------------------- maps

def maps_224(out: Dict, i: int) -> Dict[str, np.ndarray]:
    """Maps of image i of a graph run, on the 224x224 model input: gradcam [224, 224]
    (upsampled CAM / max), guided_backprop [224, 224, 3], guided_gradcam (their product)."""
    gbp = out["guided_backprop"][i]
    cam = gc.normalize_max(gc.upsample(gc.compute_cam(out["conv_activations"][i], out["conv_gradient"][i]),
                                       gbp.shape[0], gbp.shape[1]))
    return {"gradcam": cam, "guided_backprop": gbp, "guided_gradcam": gbp * cam[..., None]}


def compare(original: Dict[str, np.ndarray], other: Dict[str, np.ndarray]) -> Dict[str, Tuple[float, float]]:
    """method -> (Spearman of absolute values, SSIM) between two sets of maps."""
    return {m: (metrics.spearman(original[m], other[m]), metrics.ssim(original[m], other[m]))
            for m in MAP_METHODS}


# ----------------------------------------------------------------------------- a. randomisation

def layer_variables(graph) -> "OrderedDict[str, list]":
    """Layer name -> its weight (and bias) variables, from the logits down to Conv2d_0."""
    variables = {v.op.name: v for v in graph.graph.get_collection("variables")}
    layers = OrderedDict()
    layers["Logits"] = [variables["MobilenetV1/Logits/Conv2d_1c_1x1/weights"],
                        variables["MobilenetV1/Logits/Conv2d_1c_1x1/biases"]]
    for i in range(13, 0, -1):
        layers["Conv2d_%d_pointwise" % i] = [variables["MobilenetV1/Conv2d_%d_pointwise/weights" % i]]
        layers["Conv2d_%d_depthwise" % i] = [variables["MobilenetV1/Conv2d_%d_depthwise/depthwise_weights" % i]]
    layers["Conv2d_0"] = [variables["MobilenetV1/Conv2d_0/weights"]]
    return layers


class WeightRandomizer:
    """Re-initialises layers of a live graph in place (``Variable.load`` feeds the existing
    initializer ops, so nothing is added to the finalized graph) and restores them."""

    def __init__(self, graph, seed: int = 0):
        self.graph, self.rng = graph, np.random.RandomState(seed)
        self.layers = layer_variables(graph)
        self.trained = {v.op.name: graph.session.run(v) for vs in self.layers.values() for v in vs}

    def randomize(self, layer: str) -> None:
        for v in self.layers[layer]:
            value = self.trained[v.op.name]
            v.load(self.rng.normal(0.0, value.std(), value.shape).astype(np.float32), self.graph.session)

    def restore(self, layers: Optional[Sequence[str]] = None) -> None:
        for layer in layers if layers is not None else list(self.layers):
            for v in self.layers[layer]:
                v.load(self.trained[v.op.name], self.graph.session)


def randomization(graph, images: np.ndarray, labels: np.ndarray, seed: int = 0
                  ) -> Tuple[List[Dict], Dict[str, Dict[str, np.ndarray]]]:
    """Rows (mode, depth, layer, image, method, spearman, ssim) for cascading and independent
    randomisation, and the first image's cascading maps at STRIP_LAYERS (plus "original")."""
    def run() -> List[Dict[str, np.ndarray]]:
        out = graph.run(images, labels, photo_gradient=False)
        return [maps_224(out, i) for i in range(len(images))]

    original = run()
    randomizer = WeightRandomizer(graph, seed)
    rows, strip = [], {"original": original[0]}
    try:
        for mode in ("cascading", "independent"):
            for depth, layer in enumerate(randomizer.layers, start=1):
                randomizer.randomize(layer)
                current = run()
                if mode == "independent":
                    randomizer.restore([layer])
                elif layer in STRIP_LAYERS:
                    strip[layer] = current[0]
                for i, (before, after) in enumerate(zip(original, current)):
                    for method, (rho, s) in compare(before, after).items():
                        rows.append({"mode": mode, "depth": depth, "layer": layer, "image": i,
                                     "method": method, "spearman": rho, "ssim": s})
            randomizer.restore()
    finally:
        randomizer.restore()
    return rows, strip


# ----------------------------------------------------------------------------- b. class sensitivity

def class_sensitivity(graph, images: np.ndarray, low_rank: int) -> List[Dict]:
    """Rows comparing each image's maps for its top-1 class and its low_rank-th best class."""
    n = len(images)
    out = graph.run(np.concatenate([images, images]), [-1] * n + [-low_rank] * n, photo_gradient=False)
    rows = []
    for i in range(n):
        for method, (rho, s) in compare(maps_224(out, i), maps_224(out, n + i)).items():
            rows.append({"image": i, "top1": int(out["label"][i]), "other": int(out["label"][n + i]),
                         "method": method, "spearman": rho, "ssim": s})
    return rows


# ----------------------------------------------------------------------------- c. deletion / insertion

def faithfulness(graph, plain_graph, images: np.ndarray, out: Dict, steps: int, seed: int = 0) -> List[Dict]:
    """Deletion / insertion AUCs per image and method, for each image's top-1 class.

    out: ``graph.run(images, None, photo_gradient=False)`` of the trained model."""
    plain = plain_graph.run(images, out["label"], photo_gradient=False)
    rng = np.random.RandomState(seed)
    rows = []
    for i, image in enumerate(images):
        target = int(out["label"][i])
        maps = maps_224(out, i)
        maps["gradient"] = plain["guided_backprop"][i]
        maps["random"] = rng.random_sample(image.shape[:2])
        blurred = cv2.GaussianBlur(image, (0, 0), BLUR_SIGMA)

        def predict(batch: np.ndarray) -> np.ndarray:
            logits = graph.logits(batch).astype(np.float64)
            z = np.exp(logits - logits.max(axis=1, keepdims=True))
            return (z / z.sum(axis=1, keepdims=True))[:, target]

        for method in MAP_METHODS + BASELINE_METHODS:
            scores = metrics.deletion_insertion(image, maps[method], predict, blurred, GREY, steps)
            rows.append({"image": i, "target": target, "method": method,
                         "deletion_auc": scores["deletion_auc"], "insertion_auc": scores["insertion_auc"]})
    return rows


# ----------------------------------------------------------------------------- d. pointing game

def read_boxes(path: str, names: List[str]) -> Dict[str, Dict[int, List[List[float]]]]:
    """{image: {class index: [[x0, y0, x1, y1], ...]}} from JSON with class indices or names."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        boxes = {}
        for image, classes in raw.items():
            boxes[image] = {}
            for label, entries in classes.items():
                entries = [[float(v) for v in box] for box in entries]
                if any(len(b) != 4 or b[2] < b[0] or b[3] < b[1] for b in entries):
                    raise ValueError("%s / %s: each box must be [x0, y0, x1, y1]" % (image, label))
                boxes[image][labels_mod.resolve(label, names)] = entries
        return boxes
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise UsageError("--boxes %s: %s" % (path, exc))


def pointing_game(graph, plain_graph, photos: Dict[str, np.ndarray], boxes: Dict, seed: int = 0) -> List[Dict]:
    """One row per image, class and method: whether the map's peak hits a box (15 px)."""
    rng = np.random.RandomState(seed)
    rows = []
    for key, classes in boxes.items():
        photo = photos[key].astype(np.float32) / 255.0
        for label, class_boxes in classes.items():
            out = graph.run([photo], [label])
            plain = plain_graph.run([photo], [label])
            gbp = out["guided_backprop_image"][0]
            cam = gc.upsample(gc.compute_cam(out["conv_activations"][0], out["conv_gradient"][0]),
                              gbp.shape[0], gbp.shape[1])
            maps = {"gradcam": cam, "guided_backprop": gbp, "guided_gradcam": gbp * gc.normalize_max(cam)[..., None],
                    "gradient": plain["guided_backprop_image"][0], "random": rng.random_sample(gbp.shape[:2])}
            for method, saliency in maps.items():
                x, y = metrics.peak(saliency)
                rows.append({"image": key, "label": label, "method": method, "peak_x": x, "peak_y": y,
                             "hit": int(metrics.pointing_hit(saliency, class_boxes))})
    return rows


# ----------------------------------------------------------------------------- reports

def write_csv(path: str, rows: List[Dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("%.4f" % v if isinstance(v, float) else v) for k, v in row.items()})
    image_io.atomic_write_text(path, buffer.getvalue())


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    def cell(v):
        return "%.3f" % v if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def summarize(rows: List[Dict], group: Sequence[str], values: Sequence[str]) -> List[List]:
    """Mean of ``values`` per distinct combination of ``group`` keys, in first-seen order."""
    groups = OrderedDict()
    for row in rows:
        groups.setdefault(tuple(row[g] for g in group), []).append([row[v] for v in values])
    return [list(k) + [float(np.mean(np.asarray(v)[:, j])) for j in range(len(values))]
            for k, v in groups.items()]


def randomization_table(rows: List[Dict], mode: str) -> str:
    header = ["depth", "randomised"] + ["%s %s" % (TITLES[m], s) for m in MAP_METHODS for s in ("rho", "SSIM")]
    table = OrderedDict()
    for depth, layer, method, rho, s in summarize([r for r in rows if r["mode"] == mode],
                                                  ("depth", "layer", "method"), ("spearman", "ssim")):
        table.setdefault((depth, layer), {})[method] = (rho, s)
    body = [[d, l] + [v for m in MAP_METHODS for v in cols[m]] for (d, l), cols in table.items()]
    return markdown_table(header, body)


def plot_randomization(rows: List[Dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), sharey=True)
    for ax, mode in zip(axes, ("cascading", "independent")):
        for method, colour in zip(MAP_METHODS, ("tab:red", "tab:blue", "tab:purple")):
            stats = summarize([r for r in rows if r["mode"] == mode and r["method"] == method],
                              ("depth", "layer"), ("spearman", "ssim"))
            depths = [s[0] for s in stats]
            ax.plot(depths, [s[2] for s in stats], "-o", color=colour, ms=3, label="%s, Spearman" % TITLES[method])
            ax.plot(depths, [s[3] for s in stats], "--", color=colour, label="%s, SSIM" % TITLES[method])
            ax.set_xticks(depths)
            ax.set_xticklabels([s[1].replace("Conv2d_", "").replace("_pointwise", "pw").replace("_depthwise", "dw")
                                for s in stats], rotation=90, fontsize=7)
        ax.set_title("%s randomisation (logits -> Conv2d_0)" % mode)
        ax.set_xlabel("randomised layer")
        ax.axhline(0, color="grey", lw=0.5)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("similarity to the trained model's map")
    axes[0].set_ylim(-1.02, 1.02)
    axes[1].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    image_io.atomic_write_bytes(path, buffer.getvalue())


def _display(method: str, saliency: np.ndarray) -> np.ndarray:
    if method == "gradcam":
        return gc.heatmap(gc.normalize_max(saliency))
    score = metrics.importance(saliency)
    # |gradient| clipped at its 99th percentile, so a few extreme pixels do not hide the rest
    return gc.to_uint8(gc.normalize_max(np.minimum(score, np.percentile(score, 99))))


def strip_picture(image: np.ndarray, strip: Dict[str, Dict[str, np.ndarray]]) -> np.ndarray:
    """Rows per method: the 224x224 input, the trained model's map, then the maps after
    cascading randomisation down to each of STRIP_LAYERS."""
    columns = ["original"] + [l for l in STRIP_LAYERS if l in strip]
    rows = []
    for method in MAP_METHODS:
        pictures = [image] + [_display(method, strip[col][method]) for col in columns]
        captions = ["input", "%s: trained" % TITLES[method]] + ["up to %s" % c for c in columns[1:]]
        rows.append(gc.panel(pictures, captions, height=160))
    return np.concatenate(rows, axis=0)


def report(out_dir: str, paths: List[str], names: List[str], random_rows, cls_rows, di_rows, pg_rows) -> str:
    parts = ["# Explanation sanity checks and faithfulness", "",
             "Images: " + ", ".join("%d `%s`" % (i, p) for i, p in enumerate(paths)), ""]
    if random_rows:
        parts += ["## a. Model randomisation", "",
                  "Mean over images of the similarity between each map and the trained model's map "
                  "(Spearman rank correlation of absolute values, rho; SSIM). 1 = unchanged.", "",
                  "### Cascading (all layers from the logits down to the named one randomised)", "",
                  randomization_table(random_rows, "cascading"), "",
                  "### Independent (only the named layer randomised)", "",
                  randomization_table(random_rows, "independent"), "",
                  "![similarity against randomised depth](randomization.png)", "",
                  "![maps as layers are randomised](randomization_strip.png)", ""]
    if cls_rows:
        parts += ["## b. Class sensitivity", "",
                  "Similarity between the maps for the top-1 class and for a low-ranked class "
                  "(1 = the map ignores the class).", "",
                  markdown_table(["image", "top-1", "other class"] + ["%s rho" % TITLES[m] for m in MAP_METHODS]
                                 + ["%s SSIM" % TITLES[m] for m in MAP_METHODS],
                                 [[i, names[t][:24], names[o][:24]] +
                                  [r["spearman"] for r in rows] + [r["ssim"] for r in rows]
                                  for (i, t, o), rows in _by_image(cls_rows)]), ""]
    if di_rows:
        parts += ["## c. Deletion and insertion", "",
                  "Area under the target-class probability curve as pixels are deleted (to grey; lower "
                  "is better) or inserted (into a blurred copy; higher is better), mean over images.", "",
                  markdown_table(["method", "deletion AUC", "insertion AUC"],
                                 [[TITLES[m], d, ins] for m, d, ins in summarize(di_rows, ("method",),
                                                                                 ("deletion_auc", "insertion_auc"))]), ""]
    if pg_rows:
        parts += ["## d. Pointing game", "", "Share of (image, class) pairs whose map peak lies within 15 px of a box.", "",
                  markdown_table(["method", "hit rate", "pairs"],
                                 [[TITLES[m], rate, sum(1 for r in pg_rows if r["method"] == m)]
                                  for m, rate in summarize(pg_rows, ("method",), ("hit",))]), ""]
    text = "\n".join(parts)
    image_io.atomic_write_text(os.path.join(out_dir, "report.md"), text)
    return text


def _by_image(rows: List[Dict]):
    groups = OrderedDict()
    for r in rows:
        groups.setdefault((r["image"], r["top1"], r["other"]), []).append(r)
    return groups.items()


# ----------------------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    p = _Parser(description="Sanity checks and faithfulness scores for Grad-CAM, guided backprop and "
                            "Guided Grad-CAM on MobileNet V1.")
    p.add_argument("--image", action="append", required=True,
                   help="photo, folder, quoted glob or @list.txt, as for inference.py; repeatable")
    p.add_argument("--output_dir", default="evaluation", help="where tables and plots go (default: %(default)s)")
    p.add_argument("--checkpoint", default=None, help="checkpoint prefix")
    p.add_argument("--boxes", default=None,
                   help="JSON {image: {class: [[x0, y0, x1, y1], ...]}} in photo pixels (image as given "
                        "to --image or its file name; class as index or name) for the pointing game")
    p.add_argument("--checks", default="randomization,class,deletion",
                   help="comma-separated subset of randomization, class, deletion (default: all; "
                        "the pointing game runs when --boxes is given)")
    p.add_argument("--steps", type=int, default=16, help="deletion / insertion steps (default: %(default)s)")
    p.add_argument("--low_rank", type=int, default=500,
                   help="class sensitivity: compare with the K-th best class (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (re-initialisation, random map)")
    return p


def run(args: argparse.Namespace) -> int:
    checks = [c.strip() for c in args.checks.split(",") if c.strip()]
    unknown = set(checks) - {"randomization", "class", "deletion"}
    if unknown:
        raise UsageError("unknown --checks: %s" % ", ".join(sorted(unknown)))
    if not 2 <= args.low_rank <= labels_mod.NUM_CLASSES:
        raise UsageError("--low_rank must be in 2..%d" % labels_mod.NUM_CLASSES)
    if args.steps < 2:
        raise UsageError("--steps must be at least 2")
    names = labels_mod.load_labels()
    boxes = read_boxes(args.boxes, names) if args.boxes else {}
    paths, _ = expand_images(args.image)
    by_name = {os.path.basename(p): p for p in paths}
    for key in boxes:
        if key not in paths and key not in by_name:
            raise UsageError("--boxes names %s, which is not among the images" % key)
    # As in inference.py: a bad image is reported and left out, the others are evaluated.
    photos, failed = OrderedDict(), []
    for p in paths:
        try:
            photos[p] = image_io.load_image(p)
        except image_io.ImageError as exc:
            print("error: %s" % exc, file=sys.stderr)
            failed.append(p)
    if not photos:
        raise image_io.ImageError("no usable image among %d: nothing to evaluate" % len(paths))
    for key in list(boxes):
        if photos.get(key, photos.get(by_name.get(key))) is None:
            print("note: --boxes: %s failed to load; the pointing game leaves it out" % key, file=sys.stderr)
            del boxes[key]
    paths = list(photos)
    image_io.check_writable(args.output_dir)
    image_io.ensure_writable_dir(args.output_dir)

    import explainer
    kwargs = {"checkpoint": args.checkpoint} if args.checkpoint else {}
    with explainer.GuidedGradCamGraph(**kwargs) as graph, \
            explainer.GuidedGradCamGraph(guided_relu6="plain", **kwargs) as plain_graph:
        images = np.stack([graph.resize(p.astype(np.float32) / 255.0) for p in photos.values()])
        trained = graph.run(images, None, photo_gradient=False)
        random_rows, strip = (randomization(graph, images, trained["label"], args.seed)
                              if "randomization" in checks else ([], {}))
        cls_rows = class_sensitivity(graph, images, args.low_rank) if "class" in checks else []
        di_rows = (faithfulness(graph, plain_graph, images, trained, args.steps, args.seed)
                   if "deletion" in checks else [])
        pg_rows = pointing_game(graph, plain_graph, {k: photos.get(k, photos.get(by_name.get(k))) for k in boxes},
                                boxes, args.seed) if boxes else []

    out = args.output_dir
    for name, rows in (("randomization", random_rows), ("class_sensitivity", cls_rows),
                       ("deletion_insertion", di_rows), ("pointing_game", pg_rows)):
        if rows:
            write_csv(os.path.join(out, name + ".csv"), rows)
    if random_rows:
        plot_randomization(random_rows, os.path.join(out, "randomization.png"))
        image_io.save_picture(os.path.join(out, "randomization_strip.png"), strip_picture(images[0], strip))
    print(report(out, paths, names, random_rows, cls_rows, di_rows, pg_rows))
    if failed:
        print("%d of %d image(s) could not be read and were left out" % (len(failed), len(failed) + len(paths)),
              file=sys.stderr)
    return 1 if failed else 0


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    return run_cli(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
