"""LayerCAM (Jiang et al., IEEE TIP 2021): each position's activations weighted by its own
positive gradient, summed over channels (no spatial averaging)."""
import numpy as np

from ggcam.methods.base import CamMethod
from ggcam.methods.registry import register


class LayerCam(CamMethod):
    name, title = "layercam", "LayerCAM"

    def layer_map(self, activations: np.ndarray, gradient: np.ndarray) -> np.ndarray:
        return np.maximum((np.maximum(gradient, 0.0) * activations).sum(axis=-1), 0.0)


register(LayerCam())
