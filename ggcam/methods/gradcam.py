"""Grad-CAM (Selvaraju et al., ICCV 2017): the layer's feature maps weighted by the spatial mean
of the class score's gradient, summed over channels, rectified; upsampled to the photo and
divided by its maximum (``ggcam.core.gradcam``)."""
from typing import Dict, Mapping

import numpy as np

from ggcam import outputs as out
from ggcam.core import gradcam as gc
from ggcam.methods.base import CamMethod
from ggcam.methods.registry import register


class GradCam(CamMethod):
    name = "gradcam"
    title = gc.TITLES["gradcam"]

    def layer_map(self, activations: np.ndarray, gradient: np.ndarray) -> np.ndarray:
        return gc.compute_cam(activations, gradient)

    def layer_cam(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        # in float32, as raw.npz's reference fingerprints were taken
        return gc.compute_cam(arrays[out.ACTIVATIONS], arrays[out.LAYER_GRADIENT])

    def raw(self, arrays: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return {"cam": self.layer_cam(arrays)}  # the [h, w] CAM before upsampling, its name since the seed


register(GradCam())
