"""The notebook API: paths, PIL images or arrays in, ``Explanation`` objects out.

    from ggcam import Explainer
    with Explainer() as ex:                          # MobileNet V1; or model="resnet_v1_50",
        results = ex.explain(["cat.jpg", array])     # graph="frozen.pb", keras="model.h5", ...
"""
import json
import os
from typing import List, Optional, Sequence, Union

import numpy as np
from PIL import Image as PILImage

from ggcam import labels as labels_mod
from ggcam import methods as methods_mod
from ggcam import outputs as out
from ggcam.io import decoding
from ggcam.explanation import Explanation
from ggcam.engine import runner
from ggcam.methods.base import Method, Options
from ggcam.models import make_model
from ggcam.models.base import Model
from ggcam.targets import Target
from ggcam.tf.compat import tf

ImageLike = Union[str, os.PathLike, np.ndarray, PILImage.Image]
LabelLike = Union[int, str, Target]


def as_photo(image: ImageLike, max_side: int = decoding.DEFAULT_MAX_SIDE) -> np.ndarray:
    """A path, PIL image, or uint8 / float ([0, 1]) array -> RGB uint8 [H, W, 3]."""
    if isinstance(image, PILImage.Image):
        return decoding.pil_to_rgb(image, max_side)
    if isinstance(image, np.ndarray):
        return decoding.array_to_rgb(image, max_side)
    return decoding.load_image(str(image), max_side)


class Explainer:
    """Guided Grad-CAM for notebooks and scripts: builds the graph once, explains many.

        with Explainer(model="mobilenet_v1", layer="Conv2d_11_pointwise") as ex:
            results = ex.explain(["cat.jpg", pil_image, array], labels="tabby cat")
            results[0].overlay()      # a PIL image; shows inline in Jupyter

    The model: a slim zoo name (``model=``, with ``checkpoint=``), or a model file:
    ``graph=`` (frozen GraphDef), ``saved_model=`` (folder, ``signature=``), ``keras=``
    (HDF5), ``meta_graph=`` (with ``checkpoint=``); for files, ``input_tensor``,
    ``logits_tensor``, ``input_range`` ((lo, hi)), ``labels`` (a file of class names) and
    ``trust_model`` as for the command line; or a ``Model`` description. ``methods``: the
    maps to make (names from ``ggcam.methods.names()``, or ``Method`` objects; default the
    paper's three), ``method_options`` their parameters (``ggcam.methods.Options``: integrated
    gradients' steps, SmoothGrad). ``explain`` returns one ``Explanation`` per image and target.
    ``cache_graph=True``: a zoo model's graph comes from the graph cache when it was built
    before (``ggcam.engine.cache``), as for the command lines. ``Explainer.from_graph`` takes
    a graph already open.
    """

    def __init__(self, model: Union[None, str, Model] = None, layer: Optional[str] = None,
                 guided_relu6: str = "exact", fusion: str = "paper", batch_size: int = 8,
                 max_side: int = decoding.DEFAULT_MAX_SIDE, config: Optional[tf.ConfigProto] = None,
                 cache_graph: bool = False, methods: Sequence[Union[str, Method]] = methods_mod.DEFAULT,
                 method_options: Optional[Options] = None, **model_files):
        if not isinstance(model, Model):
            model = make_model(model=model, **model_files)
        elif model_files:
            raise ValueError("give either a Model or model arguments, not both")
        chosen = methods_mod.resolve(methods, fusion, method_options)
        # A model file not trusted runs in a process of its own (ggcam.engine.worker).
        graph = runner.open_graph(model, layer, guided_relu6, config, cache=cache_graph,
                                  outputs=out.STANDARD + methods_mod.graph_needs(chosen))
        self._start(graph, chosen, fusion, batch_size, max_side)

    @classmethod
    def from_graph(cls, graph, methods: Sequence[Union[str, Method]] = methods_mod.DEFAULT, fusion: str = "paper",
                   batch_size: int = 8, max_side: int = decoding.DEFAULT_MAX_SIDE,
                   method_options: Optional[Options] = None) -> "Explainer":
        """An Explainer over an open graph (``ggcam.engine.runner.open_graph`` or
        ``GuidedGradCamGraph``); closing the Explainer closes it."""
        self = cls.__new__(cls)
        chosen = methods_mod.resolve(methods, fusion, method_options)
        missing = [n for n in methods_mod.graph_needs(chosen) if n not in graph.outputs]
        if missing:
            raise ValueError("the graph gives no %s, which %s read" % (", ".join(missing),
                                                                       ", ".join(m.name for m in chosen)))
        self._start(graph, chosen, fusion, batch_size, max_side)
        return self

    def _start(self, graph, methods: List[Method], fusion: str, batch_size: int, max_side: int) -> None:
        self.graph = graph
        self.model = graph.model
        self.names = self.model.class_names
        self.methods = methods
        self.fusion, self.batch_size, self.max_side = fusion, batch_size, max_side
        self._feeds = json.dumps(self.model.describe().get("feeds", {}), sort_keys=True)

    @property
    def layer(self) -> str:
        """The Grad-CAM layer's name."""
        return self.graph.layer_name

    def explain(self, images: Union[ImageLike, Sequence[ImageLike]],
                labels: Union[None, LabelLike, Sequence[Union[LabelLike, Sequence[LabelLike]]]] = None,
                top_k: Optional[int] = None) -> List[Explanation]:
        """Explain one image or a list of them.

        labels: None (the best class), one class for all images (index, name or Target), or
        one entry per image, each a class or a list of classes. top_k: explain each of the K
        best classes of every image instead. Returns Explanations in input order, targets in order.
        """
        images = list(images) if isinstance(images, (list, tuple)) else [images]
        targets = self.targets(len(images), labels, top_k)
        sources = [im if isinstance(im, str) else getattr(im, "filename", None) or None for im in images]
        results = []
        for start in range(0, len(images), self.batch_size):
            batch = slice(start, start + self.batch_size)
            photos = [as_photo(im, self.max_side) for im in images[batch]]  # decoded per batch
            for per_image in self.explain_photos(photos, targets[batch], sources[batch]):
                results.extend(per_image)
        return results

    def _target(self, label: LabelLike) -> Target:
        if isinstance(label, Target):
            return label
        return Target.of(labels_mod.resolve(label, self.names))

    def targets(self, n: int, labels=None, top_k: Optional[int] = None) -> List[List[Target]]:
        """Per image, the list of Targets to explain."""
        if top_k is not None:
            if not 1 <= int(top_k) <= self.model.num_classes:
                raise ValueError("top_k must be in 1..%d" % self.model.num_classes)
            return [[Target.best(r) for r in range(1, int(top_k) + 1)]] * n
        if labels is None:
            return [[Target.best()]] * n
        if isinstance(labels, (int, np.integer, str, Target)):
            return [[self._target(labels)]] * n
        labels = list(labels)
        if len(labels) != n:
            raise ValueError("got %d label entries for %d images" % (len(labels), n))
        return [[self._target(l) for l in (entry if isinstance(entry, (list, tuple)) else [entry])]
                for entry in labels]

    def explain_photos(self, photos: Sequence[np.ndarray], targets: Sequence[Sequence[Target]],
                       sources: Optional[Sequence[Optional[str]]] = None) -> List[List[Explanation]]:
        """One graph run over every (photo, target) pair (and the methods' graph work, each
        pair on its own). photos: RGB uint8 [H, W, 3]."""
        sources = sources or [None] * len(photos)
        pairs = [(i, t) for i, ts in enumerate(targets) for t in ts]
        floats = [p.astype(np.float32) / 255.0 for p in photos]
        fed = [floats[i] for i, _ in pairs]
        # only what the methods read: the ops behind the rest do not run
        result = self.graph.run(fed, [t for _, t in pairs], outputs=methods_mod.needs(self.methods))
        working = methods_mod.has_graph_work(self.methods)
        results = [[] for _ in photos]
        for k, (i, target) in enumerate(pairs):
            arrays = {name: value[k] for name, value in result.items()}
            if working:
                image = fed[k] if fed[k].shape[:2] == tuple(self.model.input_size) else self.graph.resize(fed[k])
                arrays.update(methods_mod.graph_work(self.methods, self.graph, image,
                                                     Target.of(int(arrays[out.LABEL])),
                                                     methods_mod.example(result, k, photo_size=False)))
            results[i].append(Explanation(
                photo=photos[i], names=self.names, arrays=arrays, requested=target, source=sources[i],
                methods=self.methods, fusion=self.fusion, model=self.model.name, layer=self.layer,
                output_function=self.model.output_function,
                preprocessing=self.model.describe_preprocessing(), feeds=self._feeds))
        return results

    def close(self) -> None:
        self.graph.close()

    def __enter__(self) -> "Explainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
