"""One explained (image, class) pair: its arrays, its pictures and how to save them.

numpy, OpenCV and Pillow only, like ``gradcam.py``.
"""
import io
import os
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

import gradcam as gc
import image_io

PICTURES = ("gradcam", "guided_backprop", "guided_gradcam", "overlay", "panel")
INPUT_FILE = "input.jpg"
RAW_FILE = "raw.npz"
OUTPUT_FILES = tuple([INPUT_FILE] + [name + ".png" for name in PICTURES])


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities [K] from logits [K]."""
    z = np.exp(logits - logits.max())
    return z / z.sum()


class Explanation:
    """Guided Grad-CAM of one photo for one class.

    Arrays (float32 unless noted), named as in raw.npz: ``logits`` [1001], ``label`` (int,
    the explained class), ``conv_activations`` and ``conv_gradient`` [7, 7, 1024],
    ``guided_backprop`` [224, 224, 3] (w.r.t. the model input), ``cam`` [7, 7]; plus
    ``photo`` (uint8 RGB [H, W, 3], as fed) and ``guided_backprop_image`` [H, W, 3]
    (w.r.t. the photo in [0, 1]). ``requested`` is the label code asked for: a class index,
    or -r for the r-th best class.
    """

    def __init__(self, photo: np.ndarray, names: List[str], logits: np.ndarray, label: int,
                 conv_activations: np.ndarray, conv_gradient: np.ndarray,
                 guided_backprop: np.ndarray, guided_backprop_image: np.ndarray,
                 requested: int = -1, source: Optional[str] = None, fusion: str = "paper"):
        self.photo, self.names, self.source, self.fusion = photo, names, source, fusion
        self.logits = np.asarray(logits, np.float32)
        self.label, self.requested = int(label), int(requested)
        self.conv_activations = np.asarray(conv_activations, np.float32)
        self.conv_gradient = np.asarray(conv_gradient, np.float32)
        self.guided_backprop = np.asarray(guided_backprop, np.float32)
        self.guided_backprop_image = np.asarray(guided_backprop_image, np.float32)
        self.cam = gc.compute_cam(self.conv_activations, self.conv_gradient)
        self._pictures = None  # type: Optional[Dict[str, np.ndarray]]

    @property
    def name(self) -> str:
        """Name of the explained class."""
        return self.names[self.label]

    @property
    def probability(self) -> float:
        """Softmax probability of the explained class."""
        return float(softmax(self.logits.astype(np.float64))[self.label])

    def top(self, k: int = 5) -> List[Tuple[int, str, float, float]]:
        """The k best classes: (index, name, logit, probability)."""
        probs = softmax(self.logits.astype(np.float64))
        return [(int(i), self.names[i], float(self.logits[i]), float(probs[i]))
                for i in np.argsort(-self.logits)[:k]]

    @property
    def caption(self) -> str:
        kind = "Target" if self.requested >= 0 else "Predicted"
        return "%s: %s" % (kind, self.name.split(",")[0])

    def raw(self) -> Dict[str, np.ndarray]:
        """The public raw.npz arrays (see the class docstring)."""
        return {
            "logits": self.logits,
            "label": np.asarray(self.label),
            "conv_activations": self.conv_activations,
            "conv_gradient": self.conv_gradient,
            "guided_backprop": self.guided_backprop,
            "cam": self.cam,
        }

    def pictures(self) -> Dict[str, np.ndarray]:
        """uint8 RGB pictures at the photo's size, keyed by ``PICTURES`` (computed once)."""
        if self._pictures is None:
            for name, value in self.raw().items():
                if not np.all(np.isfinite(value)):
                    raise ValueError("the network produced NaN or infinite values (%s)" % name)
            cam, gbp, ggc = gc.gradcam(self.conv_activations, self.conv_gradient,
                                       self.guided_backprop_image, fusion=self.fusion)
            out = {
                "gradcam": gc.heatmap(cam),
                "guided_backprop": gc.to_uint8(gbp),
                "guided_gradcam": gc.to_uint8(ggc),
                "overlay": gc.overlay(self.photo, cam),
            }
            out["panel"] = gc.panel(
                [self.photo, out["gradcam"], out["guided_backprop"], out["guided_gradcam"], out["overlay"]],
                [self.caption, "Grad-CAM", "Guided Backprop", "Guided Grad-CAM", "Overlay"])
            self._pictures = out
        return self._pictures

    def overlay(self) -> Image.Image:
        """Grad-CAM heatmap over the photo, as a PIL image."""
        return Image.fromarray(self.pictures()["overlay"])

    def panel(self) -> Image.Image:
        """Photo, Grad-CAM, guided backprop, Guided Grad-CAM and overlay side by side."""
        return Image.fromarray(self.pictures()["panel"])

    def _repr_png_(self) -> bytes:  # Jupyter shows the panel
        buffer = io.BytesIO()
        self.panel().save(buffer, format="PNG")
        return buffer.getvalue()

    def __repr__(self) -> str:
        return "<Explanation %s: class %d (%s), p=%.3f>" % (
            self.source or "array", self.label, self.name, self.probability)

    def save(self, folder: str, save_raw: bool = False) -> List[str]:
        """Write input.jpg, the pictures (and raw.npz) into ``folder``, each file atomically.

        All pictures are computed before the first file is written. Returns the paths.
        """
        pictures = self.pictures()
        os.makedirs(folder, exist_ok=True)
        paths = [os.path.join(folder, INPUT_FILE)]
        image_io.save_picture(paths[0], self.photo)
        for name in PICTURES:
            paths.append(os.path.join(folder, name + ".png"))
            image_io.save_picture(paths[-1], pictures[name])
        if save_raw:
            paths.append(os.path.join(folder, RAW_FILE))
            image_io.save_arrays(paths[-1], self.raw())
        return paths


def is_complete(folder: str) -> bool:
    """Whether ``folder`` holds every output file of an explanation."""
    return all(os.path.isfile(os.path.join(folder, f)) for f in OUTPUT_FILES)
