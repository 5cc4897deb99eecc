"""The vanilla gradient (Simonyan et al., 2014): the score's plain gradient w.r.t. the input,
through the model's own activation derivatives (no guidance)."""
from typing import Dict, Mapping, Tuple

import numpy as np

from ggcam import outputs as out
from ggcam.methods.base import Method
from ggcam.methods.registry import register


class Saliency(Method):
    name, title = "saliency", "Saliency"
    needs = (out.PLAIN_GRADIENT,)
    smoothable = True

    def compute(self, arrays: Mapping[str, np.ndarray], size: Tuple[int, int]) -> np.ndarray:
        return np.asarray(arrays[out.PLAIN_GRADIENT], np.float32)

    def raw(self, arrays: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return {self.name: np.asarray(arrays[out.PLAIN_GRADIENT], np.float32)}


register(Saliency())
