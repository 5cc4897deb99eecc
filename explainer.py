"""The TensorFlow side: one graph and session that yield every array Guided Grad-CAM needs.

The graph is built once, with Relu and Relu6 gradients overridden by guided ones while the
model's ops are created; photos and target classes are fed, so explaining more images or
other classes never adds ops (the graph is finalized).

- ``GuidedGradCamGraph``: batches of arrays in, batches of arrays out.
- ``Explainer``: the notebook API; paths, PIL images or arrays in, ``Explanation`` objects out.
"""
import os
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
from PIL import Image as PILImage

import guided_relu
import image_io
import labels as labels_mod
import weights
from explanation import Explanation
from nets import mobilenet_v1 as mnet
from tf_setup import quiet_tensorflow

tf = quiet_tensorflow()

LAYER = mnet.LAST_CONV
PREDICTED = -1  # label -r means "the r-th best class"; -1 is the top-1 class


class CheckpointError(Exception):
    """The checkpoint is missing or does not fit the model; one line for the user."""


def resize_to_model(photos: tf.Tensor) -> tf.Tensor:
    """RGB [N, H, W, 3] in [0, 1] -> [N, 224, 224, 3] in [0, 1].

    Bilinear with antialiasing: identical to plain bilinear at 224x224, and when shrinking a
    larger photo every pixel contributes, so the gradient with respect to the photo is smooth
    instead of a lattice of sampled points.
    """
    size = [mnet.INPUT_SIZE, mnet.INPUT_SIZE]
    return tf.compat.v2.image.resize(photos, size, method="bilinear", antialias=True)


def to_model_range(images: tf.Tensor) -> tf.Tensor:
    """[0, 1] -> [-1, 1], the scaling the slim ImageNet models were trained with."""
    return (images - 0.5) * 2.0


class GuidedGradCamGraph:
    """Owns a graph and session for MobileNet V1 with guided ReLUs.

    ``run(photos, labels)`` explains a batch of photos of any sizes: each is resized to
    224x224 in the graph, the batch goes through one forward and one backward pass, and the
    guided gradient is carried back through each photo's resize (the adjoint of a linear op).
    Use as a context manager or call ``close()``.
    """

    def __init__(self, checkpoint: str = weights.DEFAULT_CHECKPOINT,
                 guided_relu6: str = "exact", config: Optional[tf.ConfigProto] = None):
        if not os.path.exists(checkpoint + ".index"):
            raise CheckpointError("no checkpoint at %s; fetch it with: %s"
                                  % (checkpoint, weights.fetch_command(checkpoint)))
        self.graph = tf.Graph()
        overrides = guided_relu.override_map(guided_relu6)
        with self.graph.as_default():
            # One photo at a time, any size: its 224x224 version, and the adjoint of that
            # resize, which maps a 224x224 gradient to a photo-sized one.
            self.photo = tf.placeholder(tf.float32, [1, None, None, 3], name="photo")
            self.resized = resize_to_model(self.photo)
            self.resized_grad = tf.placeholder(tf.float32, [1, mnet.INPUT_SIZE, mnet.INPUT_SIZE, 3],
                                               name="resized_grad")
            (self.photo_grad,) = tf.gradients(self.resized, [self.photo], grad_ys=self.resized_grad,
                                              name="photo_gradient")
            with self.graph.gradient_override_map(overrides):
                self.images = tf.placeholder(tf.float32, [None, mnet.INPUT_SIZE, mnet.INPUT_SIZE, 3],
                                             name="images")
                self.labels = tf.placeholder(tf.int32, [None], name="labels")
                self.model_input = to_model_range(self.images)
                logits, end_points = mnet.build(self.model_input)
            conv = end_points[LAYER]
            deepest_rank = tf.maximum(1, tf.reduce_max(-self.labels))
            _, ranked = tf.nn.top_k(logits, k=deepest_rank)
            rows = tf.range(tf.shape(self.labels)[0])
            by_rank = tf.gather_nd(ranked, tf.stack([rows, tf.maximum(-self.labels - 1, 0)], axis=1))
            target = tf.where(self.labels >= 0, self.labels, by_rank)
            # Images in a batch are independent (inference-mode batch norm), so the gradient
            # of the summed target logits gives every image its own gradient in one pass.
            score = tf.reduce_sum(logits * tf.one_hot(target, mnet.NUM_CLASSES))
            conv_grad, input_grad = tf.gradients(score, [conv, self.model_input])
            self.fetches = {
                "logits": logits,
                "label": target,
                "conv_activations": conv,
                "conv_gradient": conv_grad,
                "guided_backprop": input_grad,
            }
            variables = tf.global_variables()
            saver = tf.train.Saver(variables)
        problems = weights.checkpoint_problems(
            checkpoint, {v.op.name: tuple(v.shape.as_list()) for v in variables})
        if problems:
            raise CheckpointError("%s; fetch it with: %s"
                                  % (problems[0], weights.fetch_command(checkpoint)))
        self.graph.finalize()
        self.closed = False
        self.session = tf.Session(graph=self.graph, config=config)
        try:
            saver.restore(self.session, checkpoint)
        except tf.errors.OpError as exc:
            self.session.close()
            raise CheckpointError("cannot restore %s: %s" % (checkpoint, exc.message.splitlines()[0]))

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("this explainer is closed; make a new one (or use it inside its 'with' block)")

    def resize(self, photo: np.ndarray) -> np.ndarray:
        """[H, W, 3] in [0, 1] -> [224, 224, 3] in [0, 1]."""
        self._check_open()
        return self.session.run(self.resized, {self.photo: photo[None]})[0]

    def photo_gradient(self, grad: np.ndarray, photo_shape: Sequence[int]) -> np.ndarray:
        """Gradient w.r.t. the 224x224 [0, 1] image [224, 224, 3] -> w.r.t. the photo [H, W, 3]."""
        # The resize is linear: its adjoint needs the photo's shape, not its values.
        shape = (1, int(photo_shape[0]), int(photo_shape[1]), 3)
        return self.session.run(self.photo_grad, {self.photo: np.zeros(shape, np.float32),
                                                  self.resized_grad: grad[None]})[0]

    def run(self, photos: Union[np.ndarray, Sequence[np.ndarray]],
            labels: Optional[Sequence[int]] = None, photo_gradient: bool = True
            ) -> Dict[str, Union[np.ndarray, List[np.ndarray]]]:
        """Explain a batch of photos.

        photos: float [H, W, 3] arrays, RGB in [0, 1], of any sizes (or one [N, H, W, 3] array).
        labels: N class indices in 0..1000, or -r for the r-th best class (-1: top-1);
        None means top-1 for all.
        Returns logits [N, 1001], label [N] (the explained classes), conv_activations and
        conv_gradient [N, 7, 7, 1024], guided_backprop [N, 224, 224, 3] (w.r.t. the model
        input in [-1, 1]) and, unless photo_gradient is False, guided_backprop_image: a list
        of N [H, W, 3] arrays, the guided gradient w.r.t. each photo in [0, 1].
        """
        self._check_open()
        photos = [np.asarray(p, dtype=np.float32) for p in photos]
        for p in photos:
            if p.ndim != 3 or p.shape[-1] != 3 or p.shape[0] < 1 or p.shape[1] < 1:
                raise ValueError("each photo must be [H, W, 3], got %s" % (p.shape,))
        if labels is None:
            labels = [PREDICTED] * len(photos)
        labels = np.asarray(labels, dtype=np.int32).reshape(-1)
        if len(labels) != len(photos):
            raise ValueError("got %d labels for %d photos" % (len(labels), len(photos)))
        if np.any((labels < -mnet.NUM_CLASSES) | (labels >= mnet.NUM_CLASSES)):
            raise ValueError("labels must be in 0..%d (or -r for the r-th best class)"
                             % (mnet.NUM_CLASSES - 1))
        images = np.stack([p if p.shape[:2] == (mnet.INPUT_SIZE, mnet.INPUT_SIZE) else self.resize(p)
                           for p in photos])
        out = self.session.run(self.fetches, {self.images: images, self.labels: labels})
        if photo_gradient:
            # d/d[0,1]-image = 2 * d/d[-1,1]-input, then back through each photo's resize.
            out["guided_backprop_image"] = [
                2.0 * g if p.shape[:2] == g.shape[:2] else self.photo_gradient(2.0 * g, p.shape)
                for p, g in zip(photos, out["guided_backprop"])]
        return out

    def logits(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Forward pass only: [N, 224, 224, 3] in [0, 1] -> logits [N, 1001]."""
        self._check_open()
        images = np.asarray(images, dtype=np.float32)
        return np.concatenate([self.session.run(self.fetches["logits"], {self.images: images[i:i + batch_size]})
                               for i in range(0, len(images), batch_size)])

    def close(self) -> None:
        self.closed = True
        self.session.close()

    def __enter__(self) -> "GuidedGradCamGraph":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


ImageLike = Union[str, os.PathLike, np.ndarray, PILImage.Image]
LabelLike = Union[int, str]


def as_photo(image: ImageLike, max_side: int = image_io.DEFAULT_MAX_SIDE) -> np.ndarray:
    """A path, PIL image, or uint8 / float ([0, 1]) array -> RGB uint8 [H, W, 3]."""
    if isinstance(image, PILImage.Image):
        return image_io.pil_to_rgb(image, max_side)
    if isinstance(image, np.ndarray):
        return image_io.array_to_rgb(image, max_side)
    return image_io.load_image(str(image), max_side)


class Explainer:
    """Guided Grad-CAM for notebooks and scripts: builds the graph once, explains many.

        with Explainer() as ex:
            results = ex.explain(["cat.jpg", pil_image, array], labels="tabby cat")
            results[0].overlay()      # a PIL image; shows inline in Jupyter

    ``explain`` returns one ``Explanation`` per image and target.
    """

    def __init__(self, checkpoint: str = weights.DEFAULT_CHECKPOINT, guided_relu6: str = "exact",
                 fusion: str = "paper", batch_size: int = 8,
                 max_side: int = image_io.DEFAULT_MAX_SIDE, config: Optional[tf.ConfigProto] = None):
        self.names = labels_mod.load_labels()
        self.graph = GuidedGradCamGraph(checkpoint, guided_relu6, config)
        self.fusion, self.batch_size, self.max_side = fusion, batch_size, max_side

    def explain(self, images: Union[ImageLike, Sequence[ImageLike]],
                labels: Union[None, LabelLike, Sequence[Union[LabelLike, Sequence[LabelLike]]]] = None,
                top_k: Optional[int] = None) -> List[Explanation]:
        """Explain one image or a list of them.

        labels: None (the top-1 class), one class for all images (index or name), or one entry
        per image, each a class or a list of classes. top_k: explain each of the K best
        classes of every image instead. Returns Explanations in input order, targets in order.
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

    def targets(self, n: int, labels=None, top_k: Optional[int] = None) -> List[List[int]]:
        """Per image, the list of label codes for ``GuidedGradCamGraph.run``."""
        if top_k is not None:
            if not 1 <= int(top_k) <= mnet.NUM_CLASSES:
                raise ValueError("top_k must be in 1..%d" % mnet.NUM_CLASSES)
            return [[-r for r in range(1, int(top_k) + 1)]] * n
        if labels is None:
            return [[PREDICTED]] * n
        if isinstance(labels, (int, np.integer, str)):
            return [[labels_mod.resolve(labels, self.names)]] * n
        labels = list(labels)
        if len(labels) != n:
            raise ValueError("got %d label entries for %d images" % (len(labels), n))
        return [[labels_mod.resolve(l, self.names) for l in (entry if isinstance(entry, (list, tuple))
                                                             else [entry])] for entry in labels]

    def explain_photos(self, photos: Sequence[np.ndarray], targets: Sequence[Sequence[int]],
                       sources: Optional[Sequence[Optional[str]]] = None) -> List[List[Explanation]]:
        """One graph run over every (photo, target) pair. photos: RGB uint8 [H, W, 3]."""
        sources = sources or [None] * len(photos)
        pairs = [(i, t) for i, ts in enumerate(targets) for t in ts]
        floats = [p.astype(np.float32) / 255.0 for p in photos]
        out = self.graph.run([floats[i] for i, _ in pairs], [t for _, t in pairs])
        results = [[] for _ in photos]
        for k, (i, spec) in enumerate(pairs):
            results[i].append(Explanation(
                photo=photos[i], names=self.names, source=sources[i], fusion=self.fusion,
                requested=spec, logits=out["logits"][k], label=int(out["label"][k]),
                conv_activations=out["conv_activations"][k], conv_gradient=out["conv_gradient"][k],
                guided_backprop=out["guided_backprop"][k],
                guided_backprop_image=out["guided_backprop_image"][k]))
        return results

    def close(self) -> None:
        self.graph.close()

    def __enter__(self) -> "Explainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
