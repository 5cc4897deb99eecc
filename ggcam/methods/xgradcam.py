"""XGrad-CAM (Fu et al., BMVC 2020): channel weights sum(g * A) / sum(A), the gradient weighted
by the channel's normalised activations."""
import numpy as np

from ggcam.methods.base import CamMethod, weighted_cam
from ggcam.methods.registry import register

EPS = 1e-7  # a channel that is all zero gets weight 0, not NaN


class XGradCam(CamMethod):
    name, title = "xgradcam", "XGrad-CAM"

    def layer_map(self, activations: np.ndarray, gradient: np.ndarray) -> np.ndarray:
        weights = (gradient * activations).sum(axis=(0, 1)) / (activations.sum(axis=(0, 1)) + EPS)
        return weighted_cam(activations, weights)


register(XGradCam())
