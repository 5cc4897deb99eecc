"""Guided backpropagation (Springenberg et al., 2014): the score's gradient w.r.t. the input,
through rectifiers that pass only positive gradient (``ggcam.tf.guided``)."""
from typing import Mapping, Tuple

import numpy as np

from ggcam import outputs as out
from ggcam.core import gradcam as gc
from ggcam.methods.base import Method
from ggcam.methods.registry import register


class GuidedBackprop(Method):
    name = "guided_backprop"
    title = gc.TITLES["guided_backprop"]
    needs = (out.GUIDED_GRADIENT,)
    smoothable = True

    def compute(self, arrays: Mapping[str, np.ndarray], size: Tuple[int, int]) -> np.ndarray:
        return np.asarray(arrays[out.GUIDED_GRADIENT], np.float32)


register(GuidedBackprop())
