"""Can these explanations be trusted? Sanity checks and faithfulness scores, measured.

    python evaluate.py --image=images --output_dir=evaluation [--boxes=boxes.json]
    python evaluate.py --model=resnet_v1_50 --image=photos/ --checks=randomization,deletion
    python evaluate.py --graph=frozen.pb --image=cat.jpg --labels=classes.txt

Model randomisation (where the weights are variables), class sensitivity, deletion and
insertion, and with --boxes the pointing game; see ``ggcam.evaluation.checks``. Writes CSV files,
report.md, randomization.png and randomization_strip.png into --output_dir.
"""
import argparse
import sys
from typing import List, Optional

from ggcam import cli
from ggcam.evaluation import checks as evaluation


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser(description="Sanity checks and faithfulness scores for Grad-CAM, guided backprop and "
                               "Guided Grad-CAM on any model inference.py explains.")
    p.add_argument("--image", action="append", required=True,
                   help="photo, folder, quoted glob or @list.txt, as for inference.py; repeatable")
    p.add_argument("--output_dir", default="evaluation", help="where tables and plots go (default: %(default)s)")
    p.add_argument("--boxes", default=None,
                   help="JSON {image: {class: [[x0, y0, x1, y1], ...]}} in photo pixels (image as given "
                        "to --image or its file name; class as index, or name when the classes have names) "
                        "for the pointing game")
    p.add_argument("--checks", default=",".join(evaluation.CHECKS),
                   help="comma-separated subset of %s (default: all; randomization is skipped for frozen "
                        "graphs, whose weights are constants; the pointing game runs when --boxes is given)"
                        % ", ".join(evaluation.CHECKS))
    p.add_argument("--steps", type=int, default=16, help="deletion / insertion steps (default: %(default)s)")
    p.add_argument("--low_rank", type=int, default=None,
                   help="class sensitivity: compare the best class with the K-th best (default: %d, or the "
                        "model's last class when it has fewer)" % evaluation.DEFAULT_LOW_RANK)
    p.add_argument("--seed", type=int, default=0, help="random seed (re-initialisation, random map)")
    p.add_argument("--methods", default=",".join(evaluation.MAP_METHODS),
                   help="comma-separated maps to check, as for inference.py (default: %(default)s)")
    cli.add_method_options(p)
    cli.add_model_flags(p)
    return p


def run(args: argparse.Namespace) -> int:
    if args.list_layers:
        raise cli.UsageError("evaluate.py lists no layers: run inference.py --list_layers with the same model flags")
    checks = [c.strip() for c in args.checks.split(",") if c.strip()]
    unknown = set(checks) - set(evaluation.CHECKS)
    if unknown:
        raise cli.UsageError("unknown --checks: %s" % ", ".join(sorted(unknown)))
    if args.steps < 2:
        raise cli.UsageError("--steps must be at least 2")
    model_kwargs = cli.model_kwargs(args)
    names = cli.class_names(args)  # None when the classes are known only once the model is loaded
    if args.low_rank is not None and not 2 <= args.low_rank <= (len(names) if names else args.low_rank):
        raise cli.UsageError("--low_rank must be in 2..%s" % (len(names) if names else "the model's classes"))
    boxes = evaluation.read_boxes(args.boxes, names) if args.boxes else {}
    methods = cli.methods_from_flags(args)
    paths, _ = cli.expand_images(args.image)
    done = evaluation.evaluate(paths, model_kwargs, args.output_dir, checks, boxes=boxes, layer=args.layer,
                               steps=args.steps, low_rank=args.low_rank, seed=args.seed, methods=methods)
    print(done.report)
    if done.failed:
        print("%d of %d image(s) could not be read and were left out"
              % (len(done.failed), len(paths)), file=sys.stderr)
    return cli.EXIT_RUNTIME if done.failed else cli.EXIT_OK


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    return cli.run_cli(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
