"""Eigen-CAM (Muhammad and Yeasin, IJCNN 2020): the activations' first principal component,
the positions [h*w, C] centred over positions and projected on the first right singular
vector. A singular vector's sign is arbitrary, and the projection of centred positions always
sums to zero, so the sign is chosen to make the uncentred activations' projection sum to a
positive value (the component points the way the activations do). It uses no gradient, so it
does not depend on the target.

The projection comes from the smaller of the two symmetric eigenproblems: with X the centred
positions, X X^T (positions x positions) has X v = sqrt(lambda) u for its leading eigenpair
(lambda, u), and X^T X (channels x channels) has v itself; at MobileNet's last layer (49
positions, 1024 channels) that is a 49x49 problem instead of an SVD of 49x1024.
"""
import numpy as np

from ggcam import outputs as out
from ggcam.methods.base import CamMethod
from ggcam.methods.registry import register


def leading_eigenpair(matrix: np.ndarray):
    """The largest eigenvalue of a symmetric matrix and a unit eigenvector."""
    values, vectors = np.linalg.eigh(matrix)
    return float(values[-1]), vectors[:, -1]


class EigenCam(CamMethod):
    name, title = "eigencam", "Eigen-CAM"
    needs = (out.ACTIVATIONS,)

    def layer_map(self, activations: np.ndarray, gradient=None) -> np.ndarray:
        h, w, c = activations.shape
        rows = np.asarray(activations, np.float64).reshape(h * w, c)  # finite: Explanation.maps checks
        mean = rows.mean(axis=0)
        rows = rows - mean
        if h * w <= c:
            value, vector = leading_eigenpair(rows @ rows.T)
            projection = np.sqrt(max(value, 0.0)) * vector
            pointing = (rows @ mean) @ vector  # the sign of mean . v, as v = X^T u / sqrt(lambda)
        else:
            _, vector = leading_eigenpair(rows.T @ rows)
            projection = rows @ vector
            pointing = mean @ vector
        if pointing < 0:
            projection = -projection
        return np.maximum(projection.reshape(h, w), 0.0)

    def layer_cam(self, arrays):
        return np.asarray(self.layer_map(arrays[out.ACTIVATIONS]), np.float32)


register(EigenCam())
