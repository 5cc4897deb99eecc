"""Can these explanations be trusted? Sanity checks and faithfulness scores, measured.

a. Model randomisation (Adebayo et al., NeurIPS 2018), cascading from the logits down to the
   first layer and one layer at a time, over the layers ``Model.randomization_layers()``
   names: the layer's weights (and biases) are replaced in the existing graph by Gaussian
   draws with the trained tensor's standard deviation, the maps are recomputed and compared
   with the originals (Spearman rank correlation of absolute values, SSIM). The trained
   weights are restored afterwards. A frozen graph's weights are constants: the check does
   not apply there.
b. Class sensitivity: the same comparison between the maps for the best class and for a
   low-ranked class.
c. Deletion and insertion (Petsiuk et al., BMVC 2018): pixels of the model-sized input are
   removed (set to grey) or inserted (into a blurred copy) in order of a map's importance; the
   area under the target-class probability curve is reported for Grad-CAM, guided backprop,
   Guided Grad-CAM, the plain gradient and a random map.
d. Pointing game (Zhang et al., 2016) with boxes: a hit when the map's maximum lies within
   15 px of a box of the class.

``evaluate`` runs them and writes CSV files, report.md (Markdown tables), randomization.png
(similarity against randomised depth) and randomization_strip.png (the maps as layers are
randomised). Importing this module loads no TensorFlow; ``evaluate`` does.
"""
import csv
import io
import json
import os
import sys
from collections import OrderedDict
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from ggcam import labels as labels_mod
from ggcam import methods as methods_mod
from ggcam import outputs as out_names
from ggcam.core import gradcam as gc
from ggcam.errors import OptionsError
from ggcam.io import decoding, safe_files
from ggcam.engine.weights import not_applicable, short_names  # noqa: F401  (short_names: the reports')
from ggcam.evaluation import metrics
from ggcam.explanation import scores as model_scores
from ggcam.methods.base import Method
from ggcam.targets import Target

CHECKS = ("randomization", "class", "deletion")
MAP_METHODS = methods_mod.DEFAULT  # what is checked unless told otherwise
BASELINE_METHODS = ("gradient", "random")
BASELINE_TITLES = {"gradient": "Gradient", "random": "Random"}
SANITY_RHO = 0.5  # a map whose rank correlation stays at or above this is insensitive (summary verdicts)
STRIP_COLUMNS = 6     # layers shown in randomization_strip.png, evenly spaced, first and last included
BLUR_SIGMA = 5.0      # insertion baseline, as in Petsiuk et al.
GREY = 0.5            # deletion baseline: mid-grey in the [0, 1] image the model is fed
DEFAULT_LOW_RANK = 500


# ----------------------------------------------------------------------------- maps

def method_list(methods: Optional[Sequence[Union[str, Method]]] = None) -> List[Method]:
    """The methods checked (``ggcam.methods``): ``methods`` by name or as objects, default ``MAP_METHODS``."""
    chosen = MAP_METHODS if methods is None else methods
    return methods_mod.resolve(chosen)


def title(name: str) -> str:
    """What a person reads for a method or baseline name."""
    return BASELINE_TITLES.get(name) or methods_mod.get(name).title


def maps(out: Dict, i: int, methods: Optional[Sequence[Method]] = None, graph=None,
         image: Optional[np.ndarray] = None, photo_size: Optional[Tuple[int, int]] = None
         ) -> Dict[str, np.ndarray]:
    """Maps of image i of a graph run, before display scaling (``Method.compute``), by method
    name: at the model's input size, or at ``photo_size`` (H, W) from the run's photo gradients.
    Methods with graph work run it on ``graph`` for the model-sized ``image`` [h, w, 3] in [0, 1]
    the run was given."""
    chosen = method_list(methods)
    model_sized = methods_mod.example(out, i, photo_size=False)
    arrays = model_sized if photo_size is None else methods_mod.example(out, i, photo_size=True)
    if methods_mod.has_graph_work(chosen):
        arrays.update(methods_mod.graph_work(chosen, graph, image, Target.of(int(out[out_names.LABEL][i])),
                                             model_sized))
    size = photo_size or (graph.input_size if graph is not None else arrays[out_names.GUIDED_GRADIENT].shape[:2])
    return methods_mod.maps(chosen, arrays, size)


def compare(original: Dict[str, np.ndarray], other: Dict[str, np.ndarray]) -> Dict[str, Tuple[float, float]]:
    """method -> (Spearman of absolute values, SSIM) between two sets of maps."""
    return {m: (metrics.spearman(original[m], other[m]), metrics.ssim(original[m], other[m])) for m in original}


# ----------------------------------------------------------------------------- a. randomisation

def strip_layers(layers: Sequence[str], count: int = STRIP_COLUMNS) -> List[str]:
    """About ``count`` evenly spaced layers of the randomisation order, the first (the logits
    layer) and the last included."""
    if not layers:
        return []
    picks = np.round(np.linspace(0, len(layers) - 1, min(count, len(layers)))).astype(int)
    return [layers[i] for i in sorted(set(picks.tolist()))]


def randomization(graph, images: np.ndarray, labels: Sequence[int], seed: int = 0,
                  methods: Optional[Sequence[Method]] = None
                  ) -> Tuple[List[Dict], "OrderedDict[str, Dict[str, np.ndarray]]"]:
    """Rows (mode, depth, layer, image, method, spearman, ssim) for cascading and independent
    randomisation, and the first image's cascading maps at ``strip_layers`` (after "original").

    Layers are named by their short names. ValueError when the model's weights are constants."""
    targets = [Target.of(int(label)) for label in labels]

    def run() -> List[Dict[str, np.ndarray]]:
        out = graph.run(images, targets, photo_gradient=False)
        return [maps(out, i, methods, graph, images[i]) for i in range(len(images))]

    randomizer = graph.randomizer(seed)
    shown = set(strip_layers(list(randomizer.names.values())))
    original = run()
    rows, strip = [], OrderedDict([("original", original[0])])
    try:
        for mode in ("cascading", "independent"):
            for depth, (layer, name) in enumerate(randomizer.names.items(), start=1):
                randomizer.randomize(layer)
                current = run()
                if mode == "independent":
                    randomizer.restore([layer])
                elif name in shown:
                    strip[name] = current[0]
                for i, (before, after) in enumerate(zip(original, current)):
                    for method, (rho, s) in compare(before, after).items():
                        rows.append({"mode": mode, "depth": depth, "layer": name, "image": i,
                                     "method": method, "spearman": rho, "ssim": s})
            randomizer.restore()
    finally:
        randomizer.restore()
    return rows, strip


# ----------------------------------------------------------------------------- b. class sensitivity

def low_rank_for(num_classes: int, low_rank: Optional[int] = None) -> int:
    """The class rank compared with the best class: ``low_rank``, or by default the 500th
    (the last when the model has fewer classes)."""
    return low_rank if low_rank is not None else min(DEFAULT_LOW_RANK, num_classes)


def class_sensitivity(graph, images: np.ndarray, low_rank: int, methods: Optional[Sequence[Method]] = None
                      ) -> List[Dict]:
    """Rows comparing each image's maps for its best class and its low_rank-th best class."""
    n = len(images)
    out = graph.run(np.concatenate([images, images]), [Target.best(1)] * n + [Target.best(low_rank)] * n,
                    photo_gradient=False)
    rows = []
    for i in range(n):
        for method, (rho, s) in compare(maps(out, i, methods, graph, images[i]),
                                        maps(out, n + i, methods, graph, images[i])).items():
            rows.append({"image": i, "top1": int(out["label"][i]), "other": int(out["label"][n + i]),
                         "method": method, "spearman": rho, "ssim": s})
    return rows


# ----------------------------------------------------------------------------- c. deletion / insertion

def faithfulness(graph, images: np.ndarray, out: Dict, steps: int, seed: int = 0,
                 methods: Optional[Sequence[Method]] = None) -> List[Dict]:
    """Deletion / insertion AUCs per image and method (and the baselines), for each image's
    best class.

    images: model-sized [N, h, w, 3] in [0, 1]; out: ``graph.run(images, None,
    photo_gradient=False)`` of the trained model, with the plain gradient (the baseline)."""
    labels = [int(label) for label in out["label"]]
    rng = np.random.RandomState(seed)
    rows = []
    for i, image in enumerate(images):
        target = labels[i]
        candidates = maps(out, i, methods, graph, image)
        candidates["gradient"] = out[out_names.PLAIN_GRADIENT][i]
        candidates["random"] = rng.random_sample(image.shape[:2])
        blurred = cv2.GaussianBlur(image, (0, 0), BLUR_SIGMA)

        def predict(batch: np.ndarray) -> np.ndarray:
            return model_scores(graph.logits(batch), graph.model.output_function)[:, target]

        for method in candidates:
            scores = metrics.deletion_insertion(image, candidates[method], predict, blurred, GREY, steps)
            rows.append({"image": i, "target": target, "method": method,
                         "deletion_auc": scores["deletion_auc"], "insertion_auc": scores["insertion_auc"]})
    return rows


# ----------------------------------------------------------------------------- e. axioms

def completeness(graph, images: np.ndarray, labels: Sequence[int], methods: Sequence[Method]) -> List[Dict]:
    """Integrated gradients' completeness per image: the attributions' sum against the score
    difference from the baseline, and the relative error (Sundararajan et al., 2017)."""
    from ggcam.methods.integrated_gradients import GAP, IntegratedGradients
    rows = []
    for m in methods:
        if not isinstance(m, IntegratedGradients):
            continue
        for i, (image, label) in enumerate(zip(images, labels)):
            got = methods_mod.graph_work([m], graph, image, Target.of(int(label)))
            total, gap = float(got[m.name].sum()), float(got[GAP])
            rows.append({"image": i, "target": int(label), "method": m.name, "attribution_sum": total,
                         "score_difference": gap, "relative_error": abs(total - gap) / max(abs(gap), 1e-12)})
    return rows


# ----------------------------------------------------------------------------- d. pointing game

def read_boxes(path: str, names: Optional[List[str]]) -> Dict[str, Dict[int, List[List[float]]]]:
    """{image: {class index: [[x0, y0, x1, y1], ...]}} from JSON with class indices, or names
    when ``names`` are known. OptionsError when the file is unreadable or malformed."""
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
                boxes[image][labels_mod.target_of(str(label), names).index] = entries
        return boxes
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise OptionsError("--boxes %s: %s" % (path, exc))


def pointing_game(graph, photos: Dict[str, np.ndarray], boxes: Dict, seed: int = 0,
                  methods: Optional[Sequence[Method]] = None) -> List[Dict]:
    """One row per image, class and method: whether the map's peak hits a box (15 px).

    photos: image key -> RGB uint8 photo; the maps are at the photo's size."""
    rng = np.random.RandomState(seed)
    rows = []
    for key, classes in boxes.items():
        photo = photos[key].astype(np.float32) / 255.0
        for label, class_boxes in classes.items():
            out = graph.run([photo], [Target.of(label)])
            image = graph.resize(photo) if methods_mod.has_graph_work(method_list(methods)) else None
            candidates = maps(out, 0, methods, graph, image, photo.shape[:2])
            candidates["gradient"] = out[out_names.PHOTO[out_names.PLAIN_GRADIENT]][0]
            candidates["random"] = rng.random_sample(photo.shape[:2])
            for method in candidates:
                x, y = metrics.peak(candidates[method])
                rows.append({"image": key, "label": label, "method": method, "peak_x": x, "peak_y": y,
                             "hit": int(metrics.pointing_hit(candidates[method], class_boxes))})
    return rows


# ----------------------------------------------------------------------------- reports

def write_csv(path: str, rows: List[Dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("%.4f" % v if isinstance(v, float) else v) for k, v in row.items()})
    safe_files.atomic_write_text(path, buffer.getvalue())


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


def _checked(rows: List[Dict]) -> List[str]:
    """The method names of rows, in first-seen order."""
    return list(OrderedDict.fromkeys(r["method"] for r in rows))


def randomization_table(rows: List[Dict], mode: str) -> str:
    checked = _checked(rows)
    header = ["depth", "randomised"] + ["%s %s" % (title(m), s) for m in checked for s in ("rho", "SSIM")]
    table = OrderedDict()
    for depth, layer, method, rho, s in summarize([r for r in rows if r["mode"] == mode],
                                                  ("depth", "layer", "method"), ("spearman", "ssim")):
        table.setdefault((depth, layer), {})[method] = (rho, s)
    body = [[d, l] + [v for m in checked for v in cols[m]] for (d, l), cols in table.items()]
    return markdown_table(header, body)


MAX_TICK_LABELS = 30


def plot_randomization(rows: List[Dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), sharey=True)
    for ax, mode in zip(axes, ("cascading", "independent")):
        for k, method in enumerate(_checked(rows)):
            colour = "C%d" % k if k > 2 else ("tab:red", "tab:blue", "tab:purple")[k]
            stats = summarize([r for r in rows if r["mode"] == mode and r["method"] == method],
                              ("depth", "layer"), ("spearman", "ssim"))
            depths = [s[0] for s in stats]
            ax.plot(depths, [s[2] for s in stats], "-o", color=colour, ms=3, label="%s, Spearman" % title(method))
            ax.plot(depths, [s[3] for s in stats], "--", color=colour, label="%s, SSIM" % title(method))
            every = -(-len(stats) // MAX_TICK_LABELS)  # at most MAX_TICK_LABELS names
            ax.set_xticks(depths[::every])
            ax.set_xticklabels([s[1] for s in stats][::every], rotation=90, fontsize=7)
        ax.set_title("%s randomisation (logits -> %s)" % (mode, stats[-1][1] if stats else "input"))
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
    safe_files.atomic_write_bytes(path, buffer.getvalue())


def _display(method: Method, saliency: np.ndarray) -> np.ndarray:
    if method.cam:
        return gc.heatmap(gc.normalize_max(saliency))
    score = metrics.importance(saliency)
    # |gradient| clipped at its 99th percentile, so a few extreme pixels do not hide the rest
    return gc.to_uint8(gc.normalize_max(np.minimum(score, np.percentile(score, 99))))


def strip_picture(image: np.ndarray, strip: "OrderedDict[str, Dict[str, np.ndarray]]",
                  methods: Optional[Sequence[Method]] = None) -> np.ndarray:
    """Rows per method: the model-sized input, the trained model's map, then the maps after
    cascading randomisation down to each layer of ``strip`` (from ``randomization``)."""
    columns = list(strip)
    rows = []
    for method in method_list(methods):
        pictures = [image] + [_display(method, strip[col][method.name]) for col in columns]
        captions = ["input", "%s: trained" % method.title] + ["up to %s" % c for c in columns[1:]]
        rows.append(gc.panel(pictures, captions, height=160))
    return np.concatenate(rows, axis=0)


def _mean(rows: List[Dict], key: str, **match) -> Optional[float]:
    found = [r[key] for r in rows if all(r.get(k) == v for k, v in match.items())]
    return float(np.mean(found)) if found else None


def summary_table(random_rows, cls_rows, di_rows, pg_rows, axiom_rows=()) -> str:
    """One row per method, the checks as columns (means over images), with the verdicts of
    the two sanity checks: a map passes when its rank correlation with the trained model's
    map after the logits layer alone is randomised, and with the low-ranked class's map, is
    below ``SANITY_RHO``."""
    methods = list(OrderedDict.fromkeys(r["method"] for rows in (random_rows, cls_rows, di_rows, pg_rows, axiom_rows)
                                        for r in rows))
    deepest = max([r["depth"] for r in random_rows if r["mode"] == "cascading"] or [0])
    body = []
    for m in methods:
        top = _mean(random_rows, "spearman", method=m, mode="independent", depth=1)
        cascade = _mean(random_rows, "spearman", method=m, mode="cascading", depth=deepest)
        cls = _mean(cls_rows, "spearman", method=m)
        verdict = ("pass" if top < SANITY_RHO and cls < SANITY_RHO else "fail") \
            if top is not None and cls is not None else "—"
        completeness_error = _mean(list(axiom_rows), "relative_error", method=m)
        body.append([title(m)] + ["—" if v is None else v for v in (
            top, cascade, cls, _mean(di_rows, "deletion_auc", method=m), _mean(di_rows, "insertion_auc", method=m),
            _mean(pg_rows, "hit", method=m), completeness_error)] + [verdict])
    return markdown_table(["method", "rho, logits layer randomised", "rho, all layers randomised (cascade)",
                           "rho, top-1 vs low class", "deletion AUC", "insertion AUC", "pointing hit rate",
                           "completeness error", "sanity checks"], body)


def report(out_dir: str, paths: List[str], names: List[str], random_rows, cls_rows, di_rows, pg_rows,
           model: str = "", layer: str = "", notes: Sequence[str] = (), axiom_rows: Sequence[Dict] = ()) -> str:
    """Write report.md (the tables of the checks that ran) into ``out_dir``; returns its text."""
    parts = ["# Explanation sanity checks and faithfulness", ""]
    if model:
        parts += ["Model: `%s`, Grad-CAM layer `%s`" % (model, layer), ""]
    parts += ["Images: " + ", ".join("%d `%s`" % (i, p) for i, p in enumerate(paths)), ""]
    for note in notes:
        parts += [note[0].upper() + note[1:] + ".", ""]
    parts += ["## Summary", "",
              "Means over images; the sanity checks pass when both rank correlations (after the logits "
              "layer is randomised; against a low-ranked class's map) are below %.1f: the map depends on "
              "the model's top layer and on the class. Completeness: integrated gradients' "
              "|sum - score difference| / |score difference|." % SANITY_RHO, "",
              summary_table(random_rows, cls_rows, di_rows, pg_rows, axiom_rows), ""]
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
                  markdown_table(["image", "top-1", "other class"] + ["%s rho" % title(m) for m in _checked(cls_rows)]
                                 + ["%s SSIM" % title(m) for m in _checked(cls_rows)],
                                 [[i, names[t][:24], names[o][:24]] +
                                  [r["spearman"] for r in rows] + [r["ssim"] for r in rows]
                                  for (i, t, o), rows in _by_image(cls_rows)]), ""]
    if di_rows:
        parts += ["## c. Deletion and insertion", "",
                  "Area under the target-class probability curve as pixels are deleted (to grey; lower "
                  "is better) or inserted (into a blurred copy; higher is better), mean over images.", "",
                  markdown_table(["method", "deletion AUC", "insertion AUC"],
                                 [[title(m), d, ins] for m, d, ins in summarize(di_rows, ("method",),
                                                                                 ("deletion_auc", "insertion_auc"))]), ""]
    if pg_rows:
        parts += ["## d. Pointing game", "", "Share of (image, class) pairs whose map peak lies within 15 px of a box.", "",
                  markdown_table(["method", "hit rate", "pairs"],
                                 [[title(m), rate, sum(1 for r in pg_rows if r["method"] == m)]
                                  for m, rate in summarize(pg_rows, ("method",), ("hit",))]), ""]
    if axiom_rows:
        parts += ["## e. Completeness of integrated gradients", "",
                  "Attributions summed against score(image) - score(black image), per image.", "",
                  markdown_table(["image", "method", "attribution sum", "score difference", "relative error"],
                                 [[r["image"], r["method"], r["attribution_sum"], r["score_difference"],
                                   r["relative_error"]] for r in axiom_rows]), ""]
    text = "\n".join(parts)
    safe_files.atomic_write_text(os.path.join(out_dir, "report.md"), text)
    return text


def _by_image(rows: List[Dict]):
    groups = OrderedDict()
    for r in rows:
        groups.setdefault((r["image"], r["top1"], r["other"]), []).append(r)
    return groups.items()


# ----------------------------------------------------------------------------- a whole evaluation

def load_photos(paths: Sequence[str]) -> Tuple["OrderedDict[str, np.ndarray]", List[str]]:
    """The photos that load (path -> RGB uint8), and the paths that failed (each reported on
    stderr, as inference.py does: a bad image is left out, the others are evaluated)."""
    photos, failed = OrderedDict(), []
    for p in paths:
        try:
            photos[p] = decoding.load_image(p)
        except decoding.ImageError as exc:
            print("error: %s" % exc, file=sys.stderr)
            failed.append(p)
    if not photos:
        raise decoding.ImageError("no usable image among %d: nothing to evaluate" % len(paths))
    return photos, failed


def box_photos(boxes: Dict, paths: Sequence[str]) -> Dict[str, str]:
    """Each --boxes image key (a path as given, or a file name) -> its path among ``paths``.
    OptionsError for a key that names none of them."""
    by_name = {os.path.basename(p): p for p in paths}
    found = {}
    for key in boxes:
        if key not in paths and key not in by_name:
            raise OptionsError("--boxes names %s, which is not among the images" % key)
        found[key] = key if key in paths else by_name[key]
    return found


class Evaluation(NamedTuple):
    """What ``evaluate`` did: report.md's text, the paths that could not be read."""
    report: str
    failed: List[str]


def evaluate(paths: Sequence[str], model_kwargs: Dict, output_dir: str, checks: Sequence[str] = CHECKS,
             boxes: Optional[Dict] = None, layer: Optional[str] = None, steps: int = 16,
             low_rank: Optional[int] = None, seed: int = 0,
             methods: Sequence[Union[str, Method]] = MAP_METHODS) -> Evaluation:
    """Run ``checks`` (and the pointing game when ``boxes`` are given) on the photos at
    ``paths`` for the model ``make_model(**model_kwargs)`` and ``methods`` (``ggcam.methods``);
    write the tables, plots and report.md into ``output_dir``. An image that cannot be read is
    said on stderr and left out (``Evaluation.failed``); ImageError when none can be.

    One graph of the model serves every check: its plain input gradient is the gradient
    baseline. OptionsError for a ``low_rank`` or a box class beyond the model's classes (known
    only once it is loaded)."""
    chosen = method_list(methods)
    boxes = dict(boxes or {})
    box_paths = box_photos(boxes, paths)
    photos, failed = load_photos(paths)
    for key in list(boxes):
        if box_paths[key] not in photos:
            print("note: --boxes: %s failed to load; the pointing game leaves it out" % key, file=sys.stderr)
            del boxes[key]
    safe_files.check_writable(output_dir)

    from ggcam.engine import runner  # TensorFlow loads here
    from ggcam.models import make_model
    wanted = out_names.STANDARD + methods_mod.graph_needs(chosen) + (
        (out_names.PLAIN_GRADIENT,) if "deletion" in checks or boxes else ())
    with runner.open_graph(make_model(**model_kwargs), layer, outputs=wanted) as graph:
        model = graph.model
        for note in model.notes:
            print("note: %s" % note, file=sys.stderr)
        rank = low_rank_for(model.num_classes, low_rank)
        if "class" in checks and not 2 <= rank <= model.num_classes:
            if model.num_classes < 2:
                raise OptionsError("class sensitivity needs 2 classes or more; %s has %d (drop 'class' "
                                   "from --checks)" % (model.name, model.num_classes))
            raise OptionsError("--low_rank must be in 2..%d (%s has %d classes)"
                               % (model.num_classes, model.name, model.num_classes))
        for key, classes in boxes.items():
            for label in classes:
                if label >= model.num_classes:
                    raise OptionsError("--boxes %s: class %d is out of range: %s has classes 0..%d"
                                       % (key, label, model.name, model.num_classes - 1))
        safe_files.ensure_writable_dir(output_dir)

        images = np.stack([graph.resize(p.astype(np.float32) / 255.0) for p in photos.values()])
        trained = graph.run(images, None, photo_gradient=False)
        notes, random_rows, strip = [], [], {}
        if "randomization" in checks:
            if graph.weight_layers() is None:
                notes.append(not_applicable(model))
                print(notes[-1])
            else:
                random_rows, strip = randomization(graph, images, trained["label"], seed, chosen)
        cls_rows = class_sensitivity(graph, images, rank, chosen) if "class" in checks else []
        di_rows = faithfulness(graph, images, trained, steps, seed, chosen) if "deletion" in checks else []
        pg_rows = (pointing_game(graph, {k: photos[box_paths[k]] for k in boxes}, boxes, seed, chosen)
                   if boxes else [])
        axiom_rows = completeness(graph, images, trained["label"], chosen)
        layer_name = graph.layer_name

    for name, rows in (("randomization", random_rows), ("class_sensitivity", cls_rows),
                       ("deletion_insertion", di_rows), ("pointing_game", pg_rows), ("completeness", axiom_rows)):
        if rows:
            write_csv(os.path.join(output_dir, name + ".csv"), rows)
    if random_rows:
        plot_randomization(random_rows, os.path.join(output_dir, "randomization.png"))
        safe_files.save_picture(os.path.join(output_dir, "randomization_strip.png"),
                                strip_picture(images[0], strip, chosen))
    text = report(output_dir, list(photos), model.class_names, random_rows, cls_rows, di_rows, pg_rows,
                  model=model.name, layer=layer_name, notes=notes, axiom_rows=axiom_rows)
    return Evaluation(text, failed)
