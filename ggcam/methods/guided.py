"""Guided X: any CAM method's upsampled map times the guided gradient, element-wise (Guided
Grad-CAM when X is Grad-CAM; Selvaraju et al., 2017). Made by name: ``guided_<X's name>``."""
from typing import Mapping, Tuple

import numpy as np

from ggcam import outputs as out
from ggcam.core import gradcam as gc
from ggcam.methods.base import Method

PREFIX = "guided_"


class Guided(Method):
    """``cam`` (a CAM method) composed with guided backprop. fusion "paper": the raw guided
    gradient times the map, scaled for display afterwards; "seed": the min-max normalised
    gradient times the map (``ggcam.core.gradcam.fuse``)."""

    def __init__(self, cam: Method, fusion: str = "paper"):
        if not cam.cam:
            raise ValueError("%s is not a CAM method: only a CAM can be guided" % cam.name)
        if fusion not in gc.FUSIONS:
            raise ValueError("fusion must be one of %s, got %r" % (", ".join(gc.FUSIONS), fusion))
        self.inner, self.fusion = cam, fusion
        self.name, self.title = PREFIX + cam.name, "Guided " + cam.title
        self.needs = tuple(cam.needs) + tuple(n for n in (out.GUIDED_GRADIENT,) if n not in cam.needs)
        self.graph_work = cam.graph_work

    def compute(self, arrays: Mapping[str, np.ndarray], size: Tuple[int, int]) -> np.ndarray:
        return gc.fuse(arrays[out.GUIDED_GRADIENT], self.inner.compute(arrays, size), self.fusion)

    def display(self, saliency: np.ndarray) -> np.ndarray:
        # the seed's order already gives [0, 1] values
        return gc.to_uint8(saliency if self.fusion == "seed" else gc.scale_signed(saliency))

    def raw(self, arrays):
        return self.inner.raw(arrays)
