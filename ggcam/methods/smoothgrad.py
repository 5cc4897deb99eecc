"""SmoothGrad (Smilkov et al., 2017): an input-gradient method's map averaged over ``samples``
copies of the image with Gaussian noise added (standard deviation ``noise`` of the [0, 1]
range). The noise is drawn from a seed fixed by the image itself, so a run is reproducible;
the noisy copies go through the graph as one batch. Made by ``Options.smoothgrad``, named
``<method>_smoothgrad``."""
import zlib
from typing import Mapping, Tuple

import numpy as np

from ggcam.methods.base import Context, Method, resized

SUFFIX = "_smoothgrad"


class SmoothGrad(Method):
    """``inner`` (an input-gradient method) averaged over noisy copies of the image."""

    def __init__(self, inner: Method, samples: int = 25, noise: float = 0.15, seed: int = 0):
        if not inner.smoothable:
            raise ValueError("SmoothGrad averages input-gradient maps, not %s" % inner.name)
        if samples < 1 or noise < 0:
            raise ValueError("SmoothGrad needs 1 sample or more and noise >= 0, got %d and %g" % (samples, noise))
        self.inner, self.samples, self.noise, self.seed = inner, int(samples), float(noise), seed
        self.name, self.title = inner.name + SUFFIX, "SmoothGrad " + inner.title
        self.uses = tuple(inner.needs) + tuple(inner.uses)

    def noisy(self, image: np.ndarray) -> np.ndarray:
        """The ``samples`` noisy copies [samples, h, w, 3] of a model-sized image."""
        rng = np.random.RandomState((zlib.crc32(np.ascontiguousarray(image).tobytes()) ^ self.seed) & 0xFFFFFFFF)
        return (image[None] + rng.normal(0.0, self.noise, (self.samples,) + image.shape)).astype(np.float32)

    def graph_work(self, context):
        image = np.asarray(context.image, np.float32)
        size = image.shape[:2]
        copies = self.noisy(image)
        if self.inner.graph_work is not None:  # its own graph work on each copy
            found = [self.inner.compute(self.inner.graph_work(Context(context.graph, c, context.target)), size)
                     for c in copies]
        else:
            got = context.run(copies, self.inner.needs)
            found = [self.inner.compute({k: v[i] for k, v in got.items()}, size) for i in range(self.samples)]
        return {self.name: np.mean(np.asarray(found, np.float64), axis=0).astype(np.float32)}

    def compute(self, arrays: Mapping[str, np.ndarray], size: Tuple[int, int]) -> np.ndarray:
        return resized(arrays[self.name], size)
