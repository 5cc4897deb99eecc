"""Explain an image classifier's decisions with Grad-CAM, guided backprop and Guided Grad-CAM.

    python inference.py --image=cat.jpg --label=282

The seed's command, kept: the same as ``ggcam explain`` (``ggcam.cli.explain``, installed with
the package), for a clone without the package installed.
"""
import sys

from ggcam.cli import explain
from ggcam.cli.explain import build_parser, main, run  # noqa: F401  (what scripts and tests call)

if __name__ == "__main__":
    sys.exit(explain.main(quick_start=True))
