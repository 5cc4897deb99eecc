"""What a method is: a map made from named graph outputs, in numpy (``ggcam.outputs``).

A method declares the outputs it reads (``needs``) and turns one example's arrays into a map
(``compute``): a CAM method gives a coarse map [H, W] in [0, 1] (shown as a heatmap, laid over
the photo, multiplied into a guided gradient by ``Guided``), a gradient method a signed map
[H, W, 3] (shown around mid-grey). A method that needs more of the graph than one run's
arrays (several forward passes, noise, integration paths) sets ``graph_work``: it is handed a
``Context`` while the graph is open and returns arrays of its own, which ``compute`` then reads
like the outputs (they are kept in ``raw.npz`` too).
"""
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from ggcam.core import gradcam as gc


class Context:
    """What a method's ``graph_work`` may ask of the graph for one example: the model-sized
    input ``image`` [h, w, 3] in [0, 1], its ``target``, and more runs of the same graph."""

    def __init__(self, graph, image: np.ndarray, target: Any):
        self.graph, self.image, self.target = graph, image, target

    def run(self, images: np.ndarray, outputs: Sequence[str], targets: Optional[Sequence[Any]] = None
            ) -> Dict[str, np.ndarray]:
        """The graph's ``outputs`` for model-sized ``images`` [N, h, w, 3] in [0, 1], each for
        the example's target unless ``targets`` are given (no photo gradients)."""
        images = np.asarray(images, np.float32)
        targets = [self.target] * len(images) if targets is None else list(targets)
        return self.graph.run(list(images), targets, photo_gradient=False, outputs=outputs)


class Method:
    """One method. ``name``: its name in ``--methods``, file names and raw.npz; ``title``: what
    a person reads; ``needs``: graph outputs it reads (``ggcam.outputs``; an input gradient is
    given at the map's size); ``cam``: whether its map is a CAM ([H, W] in [0, 1])."""
    name = ""
    title = ""
    needs = ()  # type: Tuple[str, ...]
    cam = False
    graph_work = None  # or a method graph_work(self, context) -> {name: array} (module docstring)

    def compute(self, arrays: Mapping[str, np.ndarray], size: Tuple[int, int]) -> np.ndarray:
        """The map of one example at ``size`` (H, W), before display scaling: [H, W] in [0, 1]
        for a CAM method, [H, W, 3] otherwise. ``arrays``: the example's ``needs`` (input
        gradients already [H, W, 3]) and its ``graph_work`` arrays."""
        raise NotImplementedError

    def display(self, saliency: np.ndarray) -> np.ndarray:
        """The map as an RGB uint8 picture [H, W, 3]."""
        if self.cam:
            return gc.heatmap(saliency)
        return gc.to_uint8(gc.scale_signed(saliency))

    def raw(self, arrays: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Arrays of its own for raw.npz, from the example's model-sized arrays (default none)."""
        return {}

    def __repr__(self) -> str:
        return "<method %s>" % self.name
