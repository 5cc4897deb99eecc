"""HiResCAM (Draelos and Carin, 2020): the element-wise product of gradient and activations,
summed over channels; faithful to the model where Grad-CAM's spatial average is not."""
import numpy as np

from ggcam.methods.base import CamMethod
from ggcam.methods.registry import register


class HiResCam(CamMethod):
    name, title = "hirescam", "HiResCAM"

    def layer_map(self, activations: np.ndarray, gradient: np.ndarray) -> np.ndarray:
        return np.maximum((gradient * activations).sum(axis=-1), 0.0)


register(HiResCam())
