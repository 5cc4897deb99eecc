"""``python -m ggcam COMMAND [flags]``: the ``ggcam`` command (``ggcam.cli.main``)."""
import sys

from ggcam.cli.main import main

sys.exit(main())
