"""Can these explanations be trusted? The same as ``ggcam evaluate`` (``ggcam.cli.evaluate``)."""
import sys

from ggcam.cli.evaluate import build_parser, main, run  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
