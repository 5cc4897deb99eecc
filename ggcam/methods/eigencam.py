"""Eigen-CAM (Muhammad and Yeasin, IJCNN 2020): the activations' first principal component,
the positions [h*w, C] centred over positions and projected on the first right singular
vector. A singular vector's sign is arbitrary, and the projection of centred positions always
sums to zero, so the sign is chosen to make the uncentred activations' projection sum to a
positive value (the component points the way the activations do). It uses no gradient, so it
does not depend on the target."""
import numpy as np

from ggcam import outputs as out
from ggcam.methods.base import CamMethod
from ggcam.methods.registry import register


class EigenCam(CamMethod):
    name, title = "eigencam", "Eigen-CAM"
    needs = (out.ACTIVATIONS,)

    def layer_map(self, activations: np.ndarray, gradient=None) -> np.ndarray:
        h, w, c = activations.shape
        rows = np.nan_to_num(activations).reshape(h * w, c)
        mean = rows.mean(axis=0)
        rows = rows - mean
        _, _, vt = np.linalg.svd(rows, full_matrices=False)
        projection = rows @ vt[0]
        if mean @ vt[0] < 0:
            projection = -projection
        return np.maximum(projection.reshape(h, w), 0.0)

    def layer_cam(self, arrays):
        return np.asarray(self.layer_map(np.asarray(arrays[out.ACTIVATIONS], np.float64)), np.float32)


register(EigenCam())
