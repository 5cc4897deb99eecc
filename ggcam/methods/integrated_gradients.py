"""Integrated gradients (Sundararajan et al., ICML 2017): (x - x') times the plain gradient
averaged along the straight path from a baseline x' (the black image) to the image x. The
path's ``steps`` points (midpoints of equal segments) go through the graph as one batch. By
completeness the attributions sum to score(x) - score(x'), up to the integral's error; the
two end scores are kept (``integrated_gradients_gap``) so that it can be checked."""
from typing import Mapping, Tuple

import numpy as np

from ggcam import outputs as out
from ggcam.methods.base import Method, Options, resized
from ggcam.methods.registry import register

GAP = "integrated_gradients_gap"  # raw.npz: score(x) - score(baseline), a scalar


class IntegratedGradients(Method):
    name, title = "integrated_gradients", "Integrated Gradients"
    uses = (out.LOGITS, out.PLAIN_GRADIENT)
    smoothable = True

    def __init__(self, steps: int = 32):
        if steps < 1:
            raise ValueError("integrated gradients need 1 step or more, got %d" % steps)
        self.steps = int(steps)

    def configured(self, options: Options) -> "IntegratedGradients":
        return IntegratedGradients(options.ig_steps)

    def path(self, image: np.ndarray) -> np.ndarray:
        """The ``steps`` inputs [steps, h, w, 3] between the black baseline and ``image``."""
        alphas = (np.arange(self.steps, dtype=np.float32) + 0.5) / self.steps
        return alphas[:, None, None, None] * image[None]

    def graph_work(self, context):
        image = np.asarray(context.image, np.float32)
        fed = np.concatenate([self.path(image), image[None], np.zeros_like(image)[None]])
        got = context.run(fed, [out.PLAIN_GRADIENT])
        mean_gradient = got[out.PLAIN_GRADIENT][:self.steps].astype(np.float64).mean(axis=0)
        label = int(got[out.LABEL][-1])
        scores = got[out.LOGITS][-2:, label]
        return {self.name: (image * mean_gradient).astype(np.float32),  # the baseline is 0
                GAP: np.float32(scores[0] - scores[1])}

    def compute(self, arrays: Mapping[str, np.ndarray], size: Tuple[int, int]) -> np.ndarray:
        return resized(arrays[self.name], size)


register(IntegratedGradients())
