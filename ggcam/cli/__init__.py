"""What the command lines share: one-line errors, model flags, image lists, class tables.

No TensorFlow here: ``--help`` and usage errors never load it.
"""
import argparse
import csv
import glob
import os
import signal
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ggcam import labels as labels_mod
from ggcam import methods as methods_mod
from ggcam.core.gradcam import FUSIONS
from ggcam.errors import OptionsError
from ggcam.methods.base import Method
from ggcam.io import decoding
from ggcam.runs.naming import GLOB_CHARS, IMAGE_EXTENSIONS
from ggcam.models import FILE_ONLY, zoo
from ggcam.targets import Target
from ggcam.tf.guided import RULES

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2


class UsageError(OptionsError):
    """Bad command-line input; exits with status 2."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit status 2 via ``run_cli``)."""

    def error(self, message: str) -> None:
        raise UsageError("%s (see --help)" % message)


# ----------------------------------------------------------------------------- model flags

def add_model_flags(p: argparse.ArgumentParser) -> None:
    """The flags naming a model and its Grad-CAM layer, shared by the command lines."""
    g = p.add_argument_group("model (one of --model, --graph, --saved_model, --keras, --meta_graph)")
    g.add_argument("--model", choices=list(zoo.ZOO), default=None,
                   help="a TF-slim zoo network (default: %s)" % zoo.DEFAULT_MODEL)
    g.add_argument("--checkpoint", default=None,
                   help="checkpoint prefix for --model (default: checkpoints/<the official name>) "
                        "or --meta_graph")
    g.add_argument("--graph", default=None, help="a frozen GraphDef (.pb, binary or text)")
    g.add_argument("--saved_model", default=None, help="a TF1 SavedModel folder")
    g.add_argument("--signature", default="serving_default",
                   help="--saved_model's signature (default: %(default)s)")
    g.add_argument("--keras", default=None, help="a Keras HDF5 model file (.h5)")
    g.add_argument("--meta_graph", default=None, help="a MetaGraph (.meta) written by tf.train.Saver, "
                                                      "with --checkpoint")
    g.add_argument("--input_tensor", default=None,
                   help="model files: the image input tensor (default: the single float image placeholder)")
    g.add_argument("--logits_tensor", default=None,
                   help="model files: the logits tensor (default: the model's output, or the input of "
                        "its Softmax/Sigmoid)")
    g.add_argument("--input_range", default=None,
                   help="model files: LO,HI the [0, 1] image is scaled to, e.g. -1,1 or 0,255 (default: -1,1)")
    g.add_argument("--channel_order", choices=("rgb", "bgr"), default="rgb",
                   help="model files: the channel order the network was trained on (bgr: OpenCV-loaded or "
                        "Caffe-style images); the pictures always show the photo in RGB")
    g.add_argument("--mean", default=None,
                   help="model files: A,B,C (or one value) subtracted after --input_range, in the network's channel "
                        "order, e.g. 0.485,0.456,0.406 with --input_range=0,1 (torch style)")
    g.add_argument("--std", default=None,
                   help="model files: A,B,C (or one value) divided by after --mean, e.g. 0.229,0.224,0.225")
    g.add_argument("--feed", action="append", default=None, metavar="NAME=VALUE",
                   help="model files: a value for another placeholder the logits need (is_training=false, "
                        "keep_prob=1.0, a side input: 0.5 or a comma list 1,2,3); NAME with or without ':0'; "
                        "a placeholder with a batch axis gets the value for every image; repeatable")
    g.add_argument("--labels", default=None,
                   help="a file of class names, one per line (model files; default: classes by index)")
    g.add_argument("--trust_model", action="store_true",
                   help="run a model file even if it reads or writes files, reaches the network or runs "
                        "Python (Lambda layers, py_func, ...)")
    g.add_argument("--layer", default=None,
                   help="the Grad-CAM layer: an end-point name (Conv2d_11_pointwise, resnet_v1_50/block4), "
                        "an op or tensor name, or a Keras layer name (default: the model's last feature map)")
    g.add_argument("--list_layers", action="store_true",
                   help="print the model's candidate layers with their shapes and exit")


def parse_range(text: str) -> Tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise UsageError("--input_range must be LO,HI (e.g. -1,1 or 0,255), got %r" % text)
    if not lo < hi:
        raise UsageError("--input_range: LO must be below HI, got %r" % text)
    return lo, hi


def parse_values(text: str, flag: str) -> Tuple[float, ...]:
    """'A,B,C' or 'A' -> floats (a usage error otherwise)."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UsageError("--%s must be numbers separated by commas (A,B,C or A), got %r" % (flag, text))
    if flag == "std" and not all(v > 0 for v in values):
        raise UsageError("--std values must be above 0, got %r" % text)
    return values


def _scalar(text: str, flag: str):
    word = text.strip()
    if word.lower() in ("true", "false"):
        return word.lower() == "true"
    for kind in (int, float):
        try:
            return kind(word)
        except ValueError:
            continue
    raise UsageError("--%s: %r is not true, false, an integer or a number" % (flag, text))


def parse_feeds(items: Optional[Sequence[str]]) -> Dict[str, object]:
    """--feed NAME=VALUE items -> {NAME: value}: true/false, an int, a float, or a comma list."""
    feeds = {}  # type: Dict[str, object]
    for item in items or ():
        name, sep, text = item.partition("=")
        if not sep or not name.strip() or not text.strip():
            raise UsageError("--feed must be NAME=VALUE (e.g. is_training=false), got %r" % item)
        values = [_scalar(v, "feed " + name) for v in text.split(",")]
        if name.strip() in feeds:
            raise UsageError("--feed %s is given twice" % name.strip())
        feeds[name.strip()] = values[0] if len(values) == 1 else values
    return feeds


def model_kwargs(args: argparse.Namespace) -> Dict:
    """``make_model`` arguments from the model flags (checked, no TensorFlow)."""
    kwargs = {k: getattr(args, k) for k in ("model", "checkpoint", "graph", "saved_model", "keras",
                                            "meta_graph", "input_tensor", "logits_tensor", "labels")}
    kwargs.update(signature=args.signature, trust_model=args.trust_model,
                  input_range=parse_range(args.input_range) if args.input_range else None,
                  channel_order=args.channel_order,
                  mean=parse_values(args.mean, "mean") if args.mean else None,
                  std=parse_values(args.std, "std") if args.std else None,
                  feeds=parse_feeds(args.feed) or None)
    given = [k for k in ("model", "graph", "saved_model", "keras", "meta_graph") if kwargs[k]]
    if len(given) > 1:
        raise UsageError("give one model: %s" % ", ".join("--" + k for k in given))
    kind = given[0] if given else "model"
    if kind == "model":
        for flag in FILE_ONLY:
            if kwargs[flag] not in (None, "rgb"):
                raise UsageError("--%s is for model files (--graph, --saved_model, --keras, --meta_graph)" % flag)
    elif kwargs["checkpoint"] and kind != "meta_graph":
        raise UsageError("--checkpoint goes with --model or --meta_graph, not --%s" % kind)
    if kind == "meta_graph" and not kwargs["checkpoint"]:
        raise UsageError("--meta_graph needs --checkpoint=PREFIX (the weights)")
    for flag in ("graph", "saved_model", "keras", "meta_graph", "labels"):
        if kwargs[flag] and not os.path.exists(kwargs[flag]):
            raise UsageError("--%s %s: no such file or folder" % (flag, kwargs[flag]))
    return kwargs


def class_names(args: argparse.Namespace) -> Optional[List[str]]:
    """The names targets may be given by, known without loading the model: the zoo's ImageNet
    names, or --labels; None when the classes are only known by index."""
    from ggcam.models import read_class_names
    if args.labels:
        try:
            return read_class_names(args.labels)
        except ValueError as exc:
            raise UsageError("--labels: %s" % exc)
    if any(getattr(args, k) for k in ("graph", "saved_model", "keras", "meta_graph")):
        return None
    from ggcam.models.imagenet import imagenet_names
    try:
        return imagenet_names(zoo.entry(args.model or zoo.DEFAULT_MODEL).num_classes)
    except (OSError, ValueError) as exc:
        raise RuntimeError(str(exc))


resolve_target = labels_mod.target_of


# ----------------------------------------------------------------------------- what to explain, and how

def add_target_flags(p: argparse.ArgumentParser, images_help: str, labels_file_help: str) -> None:
    """The flags saying which images and classes to explain (explain and beam)."""
    g = p.add_argument_group("images and targets")
    g.add_argument("--image", action="append", default=None, help=images_help)
    g.add_argument("--label", default=None,
                   help="class to explain for every image: an index (the zoo models' ImageNet classes are "
                        "listed in ggcam/data/imagenet_labels.txt) or a name ('tabby cat'); default: the best class")
    g.add_argument("--top_k_targets", type=int, default=None,
                   help="explain each of the K best classes of every image")
    g.add_argument("--labels_file", default=None, help=labels_file_help)


def add_method_flags(p: argparse.ArgumentParser) -> None:
    """The flags saying which maps are made and how (explain, beam and evaluate)."""
    g = p.add_argument_group("methods")
    g.add_argument("--methods", default=",".join(methods_mod.DEFAULT),
                   help="comma-separated maps to make, among %s (default: %%(default)s); each is "
                        "written as NAME.png, with an overlay of the first CAM map and a panel"
                        % ", ".join(methods_mod.names()))
    g.add_argument("--guided_relu6", choices=RULES, default="exact",
                   help="exact: true ReLU6 derivative (no gradient through saturated units); "
                        "seed: the seed's rule (gradient also passes where output = 6); "
                        "plain: no guidance, the vanilla gradient")
    g.add_argument("--fusion", choices=FUSIONS, default="paper",
                   help="paper: raw guided gradient x CAM, then scaled for display; "
                        "seed: min-max normalised guided gradient x CAM")
    add_method_options(g)


def add_method_options(g) -> None:
    """The flags of parametrised methods (``ggcam.methods.Options``)."""
    g.add_argument("--ig_steps", type=int, default=32,
                   help="integrated_gradients: points on the path from the black image (default: %(default)s)")
    g.add_argument("--smoothgrad", type=int, default=0, metavar="N",
                   help="average each input-gradient map (saliency, guided_backprop, integrated_gradients) "
                        "over N noisy copies of the image, as <name>_smoothgrad (default: off)")
    g.add_argument("--smoothgrad_noise", type=float, default=0.15,
                   help="SmoothGrad's noise: its standard deviation as a fraction of the input range "
                        "(default: %(default)s)")


def add_output_flags(p: argparse.ArgumentParser) -> None:
    """The flags of the files a run writes (explain and beam)."""
    p.add_argument("--max_side", type=int, default=decoding.DEFAULT_MAX_SIDE,
                   help="shrink photos longer than this many pixels first (default: %(default)s)")
    p.add_argument("--save_raw", action="store_true", help="also write raw.npz, the arrays of each explanation (docs/cli.md)")
    p.add_argument("--overwrite", action="store_true",
                   help="redo images whose outputs are already complete (default: skip them)")


def methods_from_flags(args: argparse.Namespace) -> List[Method]:
    """--methods (with --fusion, --ig_steps, --smoothgrad, --smoothgrad_noise) -> the methods
    (a usage error for an unknown one)."""
    chosen = tuple(dict.fromkeys(m.strip() for m in args.methods.split(",") if m.strip()))
    unknown = [m for m in chosen if m not in methods_mod.names()]
    if unknown or not chosen:
        raise UsageError("--methods: %s; choose among %s" % ("unknown %s" % ", ".join(unknown) if unknown else "none given",
                                                            ", ".join(methods_mod.names())))
    options = methods_mod.Options(getattr(args, "ig_steps", 32), getattr(args, "smoothgrad", 0),
                                  getattr(args, "smoothgrad_noise", 0.15))
    if options.ig_steps < 1 or options.smoothgrad < 0 or options.smoothgrad_noise < 0:
        raise UsageError("--ig_steps must be at least 1, --smoothgrad and --smoothgrad_noise at least 0")
    made = methods_mod.make(chosen, getattr(args, "fusion", "paper"), options)
    if options.smoothgrad and not any(m.name.endswith("_smoothgrad") for m in made):
        raise UsageError("--smoothgrad averages input-gradient maps (saliency, guided_backprop, "
                         "integrated_gradients); --methods names none")
    return made


def targets_from_flags(args: argparse.Namespace, names: Optional[List[str]]) -> List[Target]:
    """--label / --top_k_targets -> the targets of every image (the best class by default)."""
    if args.top_k_targets:
        if names is not None and args.top_k_targets > len(names):
            raise UsageError("--top_k_targets must be at most %d (the model's classes)" % len(names))
        return [Target.best(r) for r in range(1, args.top_k_targets + 1)]
    if args.label is not None:
        try:
            return [resolve_target(args.label, names)]
        except labels_mod.LabelError as exc:
            raise UsageError("--label: %s" % exc)
    return [Target.best()]


def check_minimums(args: argparse.Namespace, minimums: Dict[str, int]) -> None:
    """A usage error for a flag given below its minimum."""
    for flag, minimum in minimums.items():
        value = getattr(args, flag)
        if value is not None and value < minimum:
            raise UsageError("--%s must be at least %d" % (flag, minimum))


# ----------------------------------------------------------------------------- inputs

def check_image_flags(args: argparse.Namespace) -> None:
    """Usage errors among --image, --labels_file, --label and --top_k_targets."""
    if args.labels_file and (args.image or args.label is not None or args.top_k_targets):
        raise UsageError("--labels_file gives the images and their labels; drop --image, --label and --top_k_targets")
    if args.label is not None and args.top_k_targets:
        raise UsageError("use either --label or --top_k_targets")
    if not args.labels_file and not args.image:
        raise UsageError("the following arguments are required: --image (or --labels_file)")


def _read_list(path: str) -> List[str]:
    try:
        # utf-8-sig: a byte-order mark (as some editors write) must not become part of a path
        with open(path, encoding="utf-8-sig") as f:
            lines = [l.strip() for l in f]
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError("cannot read %s: %s" % (path, getattr(exc, "strerror", None) or exc))
    base = os.path.dirname(path)
    return [os.path.join(base, l) for l in lines if l and not l.startswith("#")]


def _dangling(path: str) -> bool:
    """A symlink that points to itself, into a loop or nowhere."""
    return os.path.islink(path) and not os.path.exists(path)


def _note(message: str) -> None:
    print("note: %s" % message, file=sys.stderr)


def unique_paths(paths: Sequence[str]) -> Tuple[List[str], int]:
    """``paths`` without repeats of the same file (compared by real path, so a file reached
    through a symlink or a ``**`` glob over a symlink loop counts once), first-seen order;
    and how many were dropped."""
    seen, kept = set(), []
    for p in paths:
        real = os.path.realpath(p)
        if real not in seen:
            seen.add(real)
            kept.append(p)
    return kept, len(paths) - len(kept)


def expand_images(specs: Sequence[str]) -> Tuple[List[str], bool]:
    """Paths named by --image values, each file once, and whether they name exactly one plain file."""
    paths, dangling = [], []
    for spec in specs:
        if spec.startswith("@"):
            paths.extend(_read_list(spec[1:]))
        elif os.path.isdir(spec):
            skipped, folders = [], 0
            for name in sorted(os.listdir(spec)):
                full = os.path.join(spec, name)
                if _dangling(full):
                    dangling.append(full)
                elif os.path.isdir(full):
                    folders += 1
                elif not os.path.isfile(full):
                    continue
                elif name.lower().endswith(IMAGE_EXTENSIONS):
                    paths.append(full)
                else:
                    skipped.append(name)
            if skipped:
                _note("skipped %d file(s) in %s without an image extension: %s"
                      % (len(skipped), spec, ", ".join(skipped[:3]) + (" ..." if len(skipped) > 3 else "")))
            if folders:
                _note("%d sub-folder(s) of %s not entered; to include them, a ** glob such as --image='%s'"
                      % (folders, spec, os.path.join(spec.rstrip("/" + os.sep), "**", "*.jpg")))
        elif any(c in spec for c in GLOB_CHARS) and not os.path.lexists(spec):
            matches = sorted(glob.glob(spec, recursive=True))
            dangling.extend(p for p in matches if _dangling(p))
            found = [p for p in matches if os.path.isfile(p)]
            if not found:
                raise UsageError("no files match %s" % spec)
            paths.extend(found)
        elif spec.endswith(("/", os.sep)) and not os.path.exists(spec):
            raise UsageError("--image: no such folder: %s" % spec)
        else:
            paths.append(spec)
    if dangling:
        _note("skipped %d symlink(s) pointing to themselves, into a loop or nowhere: %s"
              % (len(dangling), ", ".join(dangling[:3]) + (" ..." if len(dangling) > 3 else "")))
    paths, repeated = unique_paths(paths)
    if repeated:
        _note("%d path(s) named a file already listed; each file is explained once" % repeated)
    if not paths:
        raise UsageError("no images found in %s" % ", ".join(specs))
    plain = all(not s.startswith("@") and not os.path.isdir(s)
                and not (any(c in s for c in GLOB_CHARS) and not os.path.lexists(s)) for s in specs)
    return paths, plain and len(paths) == 1


def read_labels_file(path: str, names: Optional[List[str]]) -> List[Tuple[str, List[Target]]]:
    """(image path, [Targets]) from a 'path,label' CSV, in first-seen order; a file
    named twice (even by different paths) is one image with the classes of both rows."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError("cannot read %s: %s" % (path, getattr(exc, "strerror", None) or exc))
    base, jobs, order = os.path.dirname(path), {}, []
    for n, row in enumerate(rows, start=1):
        if not row or not "".join(row).strip() or row[0].startswith("#"):
            continue
        if n == 1 and [c.strip().lower() for c in row[:2]] == ["path", "label"]:
            continue
        if len(row) != 2:
            raise UsageError("%s line %d: expected 'path,label', got %d fields" % (path, n, len(row)))
        try:
            label = resolve_target(row[1], names)
        except labels_mod.LabelError as exc:
            raise UsageError("%s line %d: %s" % (path, n, exc))
        image = os.path.join(base, row[0].strip())
        real = os.path.realpath(image)
        if real not in jobs:
            jobs[real] = (image, [])
            order.append(real)
        if label not in jobs[real][1]:
            jobs[real][1].append(label)
    if not order:
        raise UsageError("%s lists no images" % path)
    return [jobs[r] for r in order]


# ----------------------------------------------------------------------------- output

def print_top(top: Sequence[Tuple[int, str, float, Optional[float]]]) -> None:
    """The best classes as a table: index, name (shortened to fit), logit, probability ('-'
    for a model with no output function)."""
    if not top:
        return
    width = 40
    print("%5s  %-*s %9s %8s" % ("class", width, "name", "logit", "p"))
    for index, name, logit, prob in top:
        if len(name) > width:
            name = name[:width - 3] + "..."
        print("%5d  %-*s %9.3f %8s" % (index, width, name, logit, "%.4f" % prob if prob is not None else "-"))


def show(path: str) -> None:
    """Open a picture or page in the system's viewer, or say why it cannot be shown."""
    headless = sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    opened = False
    if not headless:
        if path.endswith(".html"):
            import webbrowser
            opened = webbrowser.open("file://" + os.path.abspath(path))
        else:
            from PIL import Image, ImageShow
            opened = bool(ImageShow.show(Image.open(path), title=os.path.basename(path)))
    if not opened:
        print("warning: --show: no display or viewer available; see %s" % path, file=sys.stderr)


def print_summary(summary) -> int:
    """A folder run's last line (``ggcam.runs.folder.Summary``); its exit status."""
    print("%d explanation(s) made and %d failed by this run, %d already done, of %d image(s)%s; %s"
          % (summary.explained, summary.failed, summary.skipped, summary.images,
             "; %d row(s) of earlier runs kept" % summary.kept if summary.kept else "",
             "see %s" % summary.index if summary.index else "no image could be read: nothing written"))
    return EXIT_RUNTIME if summary.failed else EXIT_OK


def run_cli(run_fn: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser,
            argv: Optional[List[str]] = None) -> int:
    """Parse ``argv`` and call ``run_fn``; every failure becomes one line on stderr and an
    exit status: 2 for usage errors, 130 when interrupted, 1 otherwise."""
    try:
        return run_fn(parser.parse_args(argv))
    except OptionsError as exc:  # UsageError, and the library's own (an option that does not fit)
        print("error: %s" % exc, file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:  # a folder run's says what its results cover, and which signal
        print(str(exc) or "error: interrupted", file=sys.stderr)
        return 128 + int(getattr(exc, "signal", signal.SIGINT))
    except Exception as exc:  # every other failure is reported in one line, no traceback
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print("error: %s" % message, file=sys.stderr)
        return EXIT_RUNTIME


