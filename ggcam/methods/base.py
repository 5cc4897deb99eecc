"""What a method is: a map made from named graph outputs, in numpy (``ggcam.outputs``).

A method declares the outputs it reads (``needs``) and turns one example's arrays into a map
(``compute``): a CAM method gives a coarse map [H, W] in [0, 1] (shown as a heatmap, laid over
the photo, multiplied into a guided gradient by ``Guided``), a gradient method a signed map
[H, W, 3] (shown around mid-grey). A method that needs more of the graph than one run's
arrays (several forward passes, noise, integration paths) sets ``graph_work``: it is handed a
``Context`` while the graph is open and returns arrays of its own, which ``compute`` then reads
like the outputs (they are kept in ``raw.npz`` too).
"""
from typing import Any, Dict, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ggcam import outputs as out
from ggcam.core import gradcam as gc


class Options(NamedTuple):
    """What parametrised methods read (the command lines' flags of the same names):
    integrated gradients' steps; SmoothGrad's samples (0: off) and noise (its standard
    deviation, as a fraction of the [0, 1] input range)."""
    ig_steps: int = 32
    smoothgrad: int = 0
    smoothgrad_noise: float = 0.15


RUN_BATCH = 32  # images per graph run of a method's graph work


class Context:
    """What a method's ``graph_work`` may ask of the graph for one example: the model-sized
    input ``image`` [h, w, 3] in [0, 1], its ``target``, the example's ``arrays`` from the
    explanation's run (model-sized; may be empty), and more runs of the same graph."""

    def __init__(self, graph, image: np.ndarray, target: Any, arrays: Optional[Mapping[str, np.ndarray]] = None):
        self.graph, self.image, self.target = graph, image, target
        self.arrays = dict(arrays or {})

    def outputs(self, names: Sequence[str]) -> Dict[str, np.ndarray]:
        """The example's own ``names`` (``ggcam.outputs``): from the explanation's run when it
        has them, else from a run of its own."""
        if all(n in self.arrays for n in names):
            return {n: self.arrays[n] for n in names}
        got = self.run(self.image[None], names)
        return {n: got[n][0] for n in names}

    def run(self, images: np.ndarray, outputs: Sequence[str], targets: Optional[Sequence[Any]] = None,
            batch: int = RUN_BATCH) -> Dict[str, np.ndarray]:
        """The graph's ``outputs`` for model-sized ``images`` [N, h, w, 3] in [0, 1], each for
        the example's target unless ``targets`` are given (no photo gradients), in graph runs
        of at most ``batch`` images (so that memory stays bounded however many there are)."""
        images = np.asarray(images, np.float32)
        targets = [self.target] * len(images) if targets is None else list(targets)
        parts = [self.graph.run(list(images[i:i + batch]), targets[i:i + batch], photo_gradient=False,
                                outputs=outputs) for i in range(0, len(images), batch)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


class Method:
    """One method. ``name``: its name in ``--methods``, file names and raw.npz; ``title``: what
    a person reads; ``needs``: graph outputs it reads (``ggcam.outputs``; an input gradient is
    given at the map's size); ``uses``: those its ``graph_work`` runs fetch; ``cam``: whether
    its map is a CAM ([H, W] in [0, 1])."""
    name = ""
    title = ""
    needs = ()  # type: Tuple[str, ...]
    uses = ()  # type: Tuple[str, ...]  # outputs its graph_work asks the graph for
    cam = False
    smoothable = False  # an input-gradient map SmoothGrad can average (``ggcam.methods.smoothgrad``)
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

    def configured(self, options: Options) -> "Method":
        """This method with ``options`` applied (itself when it reads none)."""
        return self

    def __repr__(self) -> str:
        return "<method %s>" % self.name


class CamMethod(Method):
    """A CAM method computed from the layer's activations and gradient of one backward pass:
    subclasses give ``layer_map`` (the CAM at the layer's resolution, after its ReLU, not
    normalised); the map is it upsampled to the photo and divided by its maximum."""
    needs = (out.ACTIVATIONS, out.LAYER_GRADIENT)
    cam = True

    def layer_map(self, activations: np.ndarray, gradient: np.ndarray) -> np.ndarray:
        """[h, w] >= 0 from activations and gradient [h, w, C]."""
        raise NotImplementedError

    def layer_cam(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        # float32 as the graph gives them: the formulas' few passes over [h, w, C] stay cheap
        return np.asarray(self.layer_map(np.asarray(arrays[out.ACTIVATIONS], np.float32),
                                         np.asarray(arrays[out.LAYER_GRADIENT], np.float32)), np.float32)

    def compute(self, arrays: Mapping[str, np.ndarray], size: Tuple[int, int]) -> np.ndarray:
        return gc.cam_image(self.layer_cam(arrays), size[0], size[1])

    def raw(self, arrays: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return {"cam_" + self.name: self.layer_cam(arrays)}


def weighted_cam(activations: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ReLU of the feature maps [h, w, C] summed with channel ``weights`` [C]: [h, w]."""
    return np.maximum(np.tensordot(activations, weights, axes=([2], [0])), 0.0)


def resized(saliency: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """A model-sized map [h, w, 3] bilinearly resized to ``size`` (H, W)."""
    saliency = np.asarray(saliency, np.float32)
    return saliency if saliency.shape[:2] == tuple(size) else gc.upsample(saliency, size[0], size[1])
