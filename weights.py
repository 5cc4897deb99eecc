"""Fetch, check and install the checkpoint of a zoo network: the same as ``ggcam weights``
(``ggcam.cli.weights``)."""
import sys

from ggcam.cli.weights import build_parser, main, run  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
