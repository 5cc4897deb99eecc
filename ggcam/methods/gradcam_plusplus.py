"""Grad-CAM++ (Chattopadhyay et al., WACV 2018, eq. 19): channel weights that sum the positive
gradient, each position weighted by alpha = g^2 / (2 g^2 + (sum of the channel's activations) g^3),
zero where the gradient is; as pytorch-grad-cam 1.5.7 computes them."""
import numpy as np

from ggcam.methods.base import CamMethod, weighted_cam
from ggcam.methods.registry import register

EPS = 1e-6  # keeps alpha finite where its denominator vanishes


class GradCamPlusPlus(CamMethod):
    name, title = "gradcam++", "Grad-CAM++"

    def layer_map(self, activations: np.ndarray, gradient: np.ndarray) -> np.ndarray:
        g2 = gradient ** 2
        alpha = g2 / (2.0 * g2 + activations.sum(axis=(0, 1)) * g2 * gradient + EPS)
        alpha = np.where(gradient != 0, alpha, 0.0)
        return weighted_cam(activations, (np.maximum(gradient, 0.0) * alpha).sum(axis=(0, 1)))


register(GradCamPlusPlus())
