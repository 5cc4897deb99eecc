"""MobileNet V1 in TF-slim. The code is ``ggcam.nets.mobilenet_v1`` (installed with the package);
this file, in the clone only, stands for it: importing it gives that very module."""
import sys

from ggcam.nets import mobilenet_v1 as _net

sys.modules[__name__] = _net
