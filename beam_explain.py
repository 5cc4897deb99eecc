"""Guided Grad-CAM over datasets on Apache Beam: the same as ``ggcam beam`` (``ggcam.cli.beam``)."""
import sys

from ggcam.cli.beam import build_parser, main, pipeline_options, run  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
