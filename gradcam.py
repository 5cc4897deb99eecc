"""The seed's entry point, kept: Grad-CAM, guided backpropagation and their fusion in numpy.

    from gradcam import gradcam
    cam, guided_backprop, guided_gradcam = gradcam(conv_activations, conv_gradient, guided_backprop)

The code is ``ggcam.core.gradcam`` (installed with the package); this file, in the clone only,
stands for it, so that notebooks and scripts opened in the clone keep working: importing
``gradcam`` gives that very module.
"""
import sys

from ggcam.core import gradcam as _core

sys.modules[__name__] = _core
