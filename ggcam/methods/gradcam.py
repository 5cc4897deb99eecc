"""Grad-CAM (Selvaraju et al., ICCV 2017): the layer's feature maps weighted by the spatial mean
of the class score's gradient, summed over channels, rectified; upsampled to the photo and
divided by its maximum (``ggcam.core.gradcam``)."""
from typing import Dict, Mapping, Tuple

import numpy as np

from ggcam import outputs as out
from ggcam.core import gradcam as gc
from ggcam.methods.base import Method
from ggcam.methods.registry import register


class GradCam(Method):
    name = "gradcam"
    title = gc.TITLES["gradcam"]
    needs = (out.ACTIVATIONS, out.LAYER_GRADIENT)
    cam = True

    def compute(self, arrays: Mapping[str, np.ndarray], size: Tuple[int, int]) -> np.ndarray:
        return gc.cam_image(gc.compute_cam(arrays[out.ACTIVATIONS], arrays[out.LAYER_GRADIENT]), size[0], size[1])

    def raw(self, arrays: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        # the [h, w] CAM before upsampling
        return {"cam": gc.compute_cam(arrays[out.ACTIVATIONS], arrays[out.LAYER_GRADIENT])}


register(GradCam())
