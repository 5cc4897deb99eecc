"""Explain an image classifier's decisions with Grad-CAM, guided backprop and Guided Grad-CAM.

    python inference.py --image=cat.jpg --label=282
    python inference.py --image=photos/ --top_k_targets=3 --output_dir=out
    python inference.py --model=resnet_v1_50 --image=cat.jpg --layer=resnet_v1_50/block3
    python inference.py --graph=frozen.pb --image=cat.jpg --list_layers

One image: the pictures go to --output_dir (default ./<image name>_<class>). A folder, a
glob, an @list.txt or a --labels_file: one sub-folder per image and target, results.csv,
results.jsonl and index.html in --output_dir (default ./gradcam_output).
"""
import argparse
import os
import sys
from typing import List, Optional

from ggcam import cli
from ggcam.runs import folder as folder_run
from ggcam.io import decoding, safe_files
from ggcam.timing import stamp
from ggcam.targets import Target

# Measured with benchmarks/tf_build.py: 8 gave the most images/s on a 2-core machine.
DEFAULT_BATCH_SIZE = 8
# Set when run as a script: a one-image run then starts TF 1.15 without oneDNN (see run_single).
QUICK_START = False


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser(description="Guided Grad-CAM for TensorFlow 1 image classifiers: TF-slim zoo networks, "
                               "frozen graphs, SavedModels, MetaGraphs and Keras files.")
    cli.add_target_flags(p, images_help="photo to explain; or a folder, a quoted glob ('photos/*.jpg') or @list.txt "
                                        "(one path per line, relative to the list's folder); repeatable",
                         labels_file_help="CSV of 'path,label' rows (label: index or name; a path may repeat), "
                                          "paths relative to the CSV's folder; replaces --image")
    p.add_argument("--output_dir", default=None,
                   help="output folder (default: ./<image name>_<class> for one image, "
                        "./%s otherwise)" % folder_run.DEFAULT_OUTPUT)
    p.add_argument("--top_k", type=int, default=5,
                   help="one image: print the K best classes: index, name, logit, probability (0: none)")
    p.add_argument("--batch_size", type=int, default=DEFAULT_BATCH_SIZE,
                   help="images per graph run (default: %(default)s)")
    cli.add_output_flags(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--show", action="store_true",
                   help="open the panel (one image) or index.html (several) in a viewer")
    cli.add_method_flags(p)
    cli.add_model_flags(p)
    return p


def make_explainer(args: argparse.Namespace):
    """The Explainer for the model flags; its automatic choices are said once on stderr."""
    stamp("python_and_cli_imports")
    from ggcam.explainer import Explainer  # TensorFlow loads here, once the inputs are known to be usable
    stamp("import_tensorflow_and_ggcam")
    ex = Explainer(layer=args.layer, guided_relu6=args.guided_relu6, fusion=args.fusion,
                   batch_size=args.batch_size, max_side=args.max_side, cache_graph=True,
                   methods=cli.methods_from_flags(args), **cli.model_kwargs(args))
    for note in ex.model.notes:
        if not (args.layer and note.startswith("layer:")):  # the automatic choice was not used
            print("note: %s" % note, file=sys.stderr)
    return ex


def list_layers(args: argparse.Namespace) -> int:
    with make_explainer(args) as ex:
        print("model: %s, input %dx%dx%d (%s), %d classes"
              % (ex.model.name, ex.model.input_size[0], ex.model.input_size[1], ex.model.channels,
                 ex.model.describe_preprocessing(), ex.model.num_classes))
        print("layers (4-D feature maps, [h, w, channels]); * the Grad-CAM layer:")
        for name, shape, layout, in_use in ex.graph.layer_table():
            print("%s %s  %s%s" % ("*" if in_use else " ", name, [d if d is not None else "?" for d in shape],
                                   "  (%s)" % layout if layout != "NHWC" else ""))
    return cli.EXIT_OK


def channels_first_kernels(args: argparse.Namespace) -> bool:
    """Whether the model may need channels-first kernels, which TF 1.15's plain CPU kernels lack:
    a frozen graph, MetaGraph or SavedModel whose bytes hold "NCHW" (any op's data_format says
    so literally). A Keras file's channels_first layers run NHWC kernels between transposes."""
    path = args.graph or args.meta_graph or (os.path.join(args.saved_model, "saved_model.pb") if args.saved_model
                                             else None)
    if not path:
        return False
    try:
        with open(path, "rb") as f:
            return b"NCHW" in f.read()
    except OSError:
        return False  # the model's own check says what is wrong with it


def run_single(args: argparse.Namespace, path: str, target: Target) -> int:
    photo = decoding.load_image(path, args.max_side)
    safe_files.check_writable(args.output_dir or ".")
    if QUICK_START and "tensorflow" not in sys.modules and not channels_first_kernels(args):
        # intel-tensorflow 1.15 spends about 1 s preparing oneDNN kernels on a graph's first
        # run, 20 times what one image's pass costs with its plain kernels (docs/performance.md).
        # Read once, at import (the check of a model file in a child process inherits it); TF 2
        # ignores it. TF_DISABLE_MKL=0 keeps oneDNN.
        os.environ.setdefault("TF_DISABLE_MKL", "1")
    with make_explainer(args) as ex:
        (result,), = ex.explain_photos([photo], [[target]], [path])
        stamp("first_run")
    cli.print_top(result.top(args.top_k))
    stem = os.path.splitext(os.path.basename(path))[0]
    out_dir = args.output_dir or "%s_%d" % (stem, result.label)
    safe_files.ensure_writable_dir(out_dir)
    with safe_files.FolderLock(out_dir):
        result.save(out_dir, save_raw=args.save_raw)
    stamp("pictures_written")
    print("explained class %d (%s), logit %.3f; pictures in %s"
          % (result.label, result.name, result.logits[result.label], out_dir))
    if args.show:
        cli.show(os.path.join(out_dir, "panel.png"))
    return cli.EXIT_OK


def run(args: argparse.Namespace) -> int:
    cli.check_minimums(args, {"top_k": 0, "batch_size": 1, "max_side": 32, "top_k_targets": 1})
    methods = cli.methods_from_flags(args)
    cli.model_kwargs(args)  # usage errors in the model flags, before anything is read
    if args.list_layers:
        return list_layers(args)
    cli.check_image_flags(args)
    names = cli.class_names(args)
    targets = cli.targets_from_flags(args, names)

    def explainer():
        return make_explainer(args)

    options = folder_run.Options(args.output_dir, overwrite=args.overwrite, save_raw=args.save_raw,
                                 batch_size=args.batch_size, max_side=args.max_side, quiet=args.quiet,
                                 methods=methods)
    if args.labels_file:
        jobs = cli.read_labels_file(args.labels_file, names)
    else:
        paths, single = cli.expand_images(args.image)
        if single and len(targets) == 1:
            return run_single(args, paths[0], targets[0])
        jobs = [(p, targets) for p in paths]
    summary = folder_run.run_batch(options, jobs, explainer)
    status = cli.print_summary(summary)
    if args.show:
        cli.show(summary.index)
    return status


def main(argv: Optional[List[str]] = None, quick_start: bool = False) -> int:
    """Command-line entry point; returns the exit status. quick_start: this process is the
    command line's own (not a test's or a notebook's), so one-image runs may choose how
    TensorFlow starts (see ``run_single``)."""
    global QUICK_START
    QUICK_START = quick_start
    return cli.run_cli(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main(quick_start=True))
