"""The TensorFlow side: one graph and session that yield every array Guided Grad-CAM needs.

The graph is built once per model: the model's ops are created with Relu and Relu6 gradients
overridden by guided ones; photos and targets are fed, so explaining more images or other
classes never adds ops (the graph is finalized).
"""
import re
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ggcam.engine import cache as graph_cache
from ggcam.engine.weights import WeightRandomizer
from ggcam.tf import guided as guided_relu
from ggcam.engine import isolation
from ggcam.models import detect, safety
from ggcam.models.base import Model, ModelError
from ggcam.models.detect import depends_on
from ggcam.targets import Target, encode
from ggcam.timing import stamp
from ggcam.tf.compat import error_line, tf, tf2


def resize_images(photos: tf.Tensor, size: Sequence[int]) -> tf.Tensor:
    """RGB [N, H, W, 3] in [0, 1] -> [N, size[0], size[1], 3] in [0, 1].

    Bilinear with antialiasing: identical to plain bilinear at the model's size, and when
    shrinking a larger photo every pixel contributes, so the gradient with respect to the
    photo is smooth instead of a lattice of sampled points.
    """
    return tf2.image.resize(photos, list(size), method="bilinear", antialias=True)


class GuidedGradCamGraph:
    """Owns a graph and session for one model with guided rectifiers.

    ``run(photos, targets)`` explains a batch of photos of any sizes: each is resized to the
    model's input size in the graph, the batch goes through one forward and one backward
    pass, and the guided gradient is carried back through each photo's resize (the adjoint
    of a linear op). Use as a context manager or call ``close()``.
    """

    # The graph's own tensors, by attribute; with the model's, they are what a cache entry names.
    _TENSORS = ("photo", "resized", "resized_grad", "photo_grad", "images", "targets")

    def __init__(self, model: Model, layer: Optional[str] = None, guided_relu6: str = "exact",
                 config: Optional[tf.ConfigProto] = None, cache: bool = False):
        """cache=True: import the graph from ``ggcam.engine.cache`` when an entry matches, and
        keep it there after building it (models that can say what they are built from)."""
        self.model = model
        timeout = isolation.run_timeout() if model.untrusted else 0
        self._options = tf.RunOptions(timeout_in_ms=int(timeout * 1000)) if timeout else None
        model.prepare()
        identity = model.cache_identity() if cache else None
        # A cacheable model knows its default layer before it is built; an imported one finds it then.
        name = graph_cache.key(dict(identity, layer=layer or model.default_layer, guided_relu6=guided_relu6)) \
            if identity else None
        entry = graph_cache.load(name, model.notes) if name else None
        if entry is not None:
            try:
                self._import(*entry)
            except Exception:  # an entry that does not fit: build as if there were none
                entry = None
        if entry is None:
            self._build(layer, guided_relu6)
            # What runs, however the model's ops were made (imported, rebuilt, gradients added).
            # (A cache entry is the graph itself, checked by graph_cache.load.)
            safety.check_graph(self.graph, model.trust_model, model.path or model.name)
        self.graph.finalize()
        stamp("graph_build")
        self.closed = False
        self.session = tf.Session(graph=self.graph, config=config)
        try:
            model.restore(self.session)
        except Exception:
            self.session.close()
            raise
        if name and entry is None:
            graph_cache.save(name, self.graph.as_graph_def(), self._names())
        stamp("session_and_restore")

    def _build(self, layer: Optional[str], guided_relu6: str) -> None:
        """Make every op: the resize and its adjoint, the model under the guided override,
        the target's score and the gradients."""
        model = self.model
        height, width = model.input_size
        self.graph = tf.Graph()
        overrides = guided_relu.override_map(guided_relu6)
        with self.graph.as_default():
            with tf.name_scope("ggcam") as ours:
                # One photo at a time, any size: its model-sized version, and the adjoint of
                # that resize, which maps a model-sized gradient to a photo-sized one.
                self.photo = tf.placeholder(tf.float32, [1, None, None, 3], name="photo")
                self.resized = resize_images(self.photo, (height, width))
                self.resized_grad = tf.placeholder(tf.float32, [1, height, width, 3], name="resized_grad")
                (self.photo_grad,) = tf.gradients(self.resized, [self.photo], grad_ys=self.resized_grad,
                                                  name="photo_gradient")
                self.images = tf.placeholder(tf.float32, [None, height, width, 3], name="images")
                self.targets = tf.placeholder(tf.int32, [None], name="targets")
            model.guided = bool(overrides)
            with self.graph.gradient_override_map(overrides):
                logits = model.build(self.images)
            self.layer_name = layer or model.default_layer
            conv = model.layer(self.layer_name)
            left = guided_relu.unguided(depends_on(logits, self.images)) if overrides else {}
            if left:
                model.notes.append("guided backprop: %s keep their own gradient (not rectifier-like, so not guided)"
                                   % ", ".join("%s (%d op%s)" % (t, n, "s" if n > 1 else "")
                                               for t, n in sorted(left.items())))
            with tf.name_scope(ours):  # the same scope again, not "ggcam_1"
                deepest_rank = tf.maximum(1, tf.reduce_max(-self.targets))
                _, ranked = tf.nn.top_k(logits, k=deepest_rank)
                rows = tf.range(tf.shape(self.targets)[0])
                by_rank = tf.gather_nd(ranked, tf.stack([rows, tf.maximum(-self.targets - 1, 0)], axis=1))
                label = tf.where(self.targets >= 0, self.targets, by_rank)
                # Images in a batch are independent (inference-mode batch norm), so the gradient
                # of the summed target logits gives every image its own gradient in one pass.
                score = tf.reduce_sum(logits * tf.one_hot(label, model.num_classes))
                try:
                    conv_grad, input_grad = tf.gradients(score, [conv, self.images])
                    # Grad-CAM's weights need the unguided gradient at the layer: when guided
                    # rectifiers lie above it (the one that made the layer does not count), a
                    # second, plain backward pass from the logits down to the layer gives it.
                    self.plain_layer_pass = any(guided_relu.is_guided(op)
                                                for op in depends_on(logits, conv) - {conv.op})
                    if self.plain_layer_pass:
                        with guided_relu.plain_gradients():
                            (conv_grad,) = tf.gradients(score, [conv], name="plain_layer_gradient")
                except (AttributeError, LookupError, TypeError, ValueError) as exc:
                    # Ops TensorFlow cannot differentiate as imported (a TF1 while loop read from
                    # a file has lost its control-flow context), or that have no gradient.
                    lines = str(exc).strip().splitlines() or [type(exc).__name__]
                    raise ModelError("%s: TensorFlow %s cannot compute the gradient of its logits (%s: %s)"
                                     % (model.path or model.name, tf.VERSION, type(exc).__name__, lines[0]))
            if conv_grad is None or input_grad is None:
                raise ModelError("the logits of %s do not depend on %s" % (
                    model.name, self.layer_name if conv_grad is None else "the input image"))
            self.layer_tensor = conv  # the layer as the model has it (any axis order)
            perm = detect.to_nhwc(model.layout(conv))
            if perm is not None:  # a channels-first layer: the numpy side always gets [h, w, C]
                with tf.name_scope(ours):
                    conv, conv_grad = tf.transpose(conv, perm), tf.transpose(conv_grad, perm)
            self.fetches = {"logits": logits, "label": label, "conv_activations": conv,
                            "conv_gradient": conv_grad, "guided_backprop": input_grad}

    def layer_table(self) -> List[Tuple[str, List[Optional[int]], str, bool]]:
        """(name, [h, w, channels], axis order, whether it is the layer in use) of each
        candidate layer, in network order (a tensor listed under two names is in use once)."""
        model, layers = self.model, self.model.layers()
        named = self.layer_name in layers
        return [(name, model.layer_shape(t), model.layout(t),
                 name == self.layer_name if named else t is self.layer_tensor) for name, t in layers.items()]

    def weight_layers(self) -> Optional[List[str]]:
        """The layers a randomisation check re-initialises, logits first; None when the
        weights are constants."""
        layers = self.model.randomization_layers()
        return None if layers is None else list(layers)

    def randomizer(self, seed: int = 0) -> WeightRandomizer:
        """The model-randomisation check's handle on this graph's weights."""
        return WeightRandomizer(self, seed)

    def _names(self) -> Dict:
        """What a cache entry needs besides the GraphDef: tensor names and flags."""
        return {"tensors": {k: getattr(self, k).name for k in self._TENSORS},
                "fetches": {k: t.name for k, t in self.fetches.items()},
                "layer_name": self.layer_name, "plain_layer_pass": self.plain_layer_pass,
                "model": self.model.imported_state()}

    def _import(self, graph_def, names: Dict) -> None:
        """The graph of a cache entry (see ``_names``)."""
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.import_graph_def(graph_def, name="")
            tensor = self.graph.get_tensor_by_name
            for k in self._TENSORS:
                setattr(self, k, tensor(names["tensors"][k]))
            self.fetches = {k: tensor(v) for k, v in names["fetches"].items()}
            self.layer_tensor = self.fetches["conv_activations"]  # zoo layers are NHWC
            self.layer_name = names["layer_name"]
            self.plain_layer_pass = bool(names["plain_layer_pass"])
            self.model.attach_imported(self.graph, names["model"])

    # --------------------------------------------------------------- running

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("this explainer is closed; make a new one (or use it inside its 'with' block)")

    @property
    def input_size(self):
        return self.model.input_size

    def resize(self, photo: np.ndarray) -> np.ndarray:
        """[H, W, 3] in [0, 1] -> the model's input size [h, w, 3] in [0, 1]."""
        self._check_open()
        return self.session.run(self.resized, {self.photo: photo[None]})[0]

    def photo_gradient(self, grad: np.ndarray, photo_shape: Sequence[int]) -> np.ndarray:
        """Gradient w.r.t. the model-sized [0, 1] image [h, w, 3] -> w.r.t. the photo [H, W, 3]."""
        # The resize is linear: its adjoint needs the photo's shape, not its values.
        shape = (1, int(photo_shape[0]), int(photo_shape[1]), 3)
        return self.session.run(self.photo_grad, {self.photo: np.zeros(shape, np.float32),
                                                  self.resized_grad: grad[None]})[0]

    def _run(self, fetches, feeds):
        """``session.run`` of the model's ops, within the time limit of an untrusted model; a
        failure is a ModelError with the line of TensorFlow's message that says why."""
        what = self.model.path or self.model.name
        try:
            return self.session.run(fetches, feeds, options=self._options)
        except tf.errors.DeadlineExceededError as exc:
            if self._options is None:
                raise ModelError("%s: %s" % (what, error_line(exc)))
            raise ModelError("%s: one run took longer than %g s, the limit for a model file not trusted (a graph "
                             "that loops forever?); %s=SECONDS allows more"
                             % (what, self._options.timeout_in_ms / 1000.0, isolation.RUN_TIMEOUT_ENV))
        except tf.errors.OpError as exc:
            text = getattr(exc, "message", "") or str(exc)
            if "only supports NHWC" in text:
                # TF 1.15's plain CPU kernels (TF_DISABLE_MKL=1, stock tensorflow) have no
                # channels-first convolutions, pooling or batch norm; the oneDNN ones do.
                node = re.search(r"\[\[\{?\{?node ([^\s}]+)", text)  # TF 2: [[{{node x}}]]; 1.15: [[node x (
                raise ModelError("%s: TensorFlow %s's CPU kernels here cannot run %s in the channels-first layout "
                                 "(NCHW) the model uses; run it with oneDNN kernels (intel-tensorflow, as "
                                 "requirements.txt pins, without TF_DISABLE_MKL=1; or TensorFlow 2)"
                                 % (what, tf.VERSION, "op " + node.group(1) if node else "its ops"))
            raise ModelError("%s: running it failed: %s" % (what, error_line(exc)))

    def _feed_runs(self, fetches, images: np.ndarray, codes: np.ndarray) -> Dict[str, np.ndarray]:
        """Run ``fetches`` over a batch, in pieces of the model's largest batch."""
        step = self.model.max_batch or len(images)
        parts = [self._run(fetches, {self.images: images[i:i + step], self.targets: codes[i:i + step]})
                 for i in range(0, len(images), step)]
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def run(self, photos: Union[np.ndarray, Sequence[np.ndarray]],
            targets: Optional[Sequence[Union[Target, int]]] = None, photo_gradient: bool = True
            ) -> Dict[str, Union[np.ndarray, List[np.ndarray]]]:
        """Explain a batch of photos.

        photos: float [H, W, 3] arrays, RGB in [0, 1], of any sizes (or one [N, H, W, 3] array).
        targets: one ``Target`` (or class index) per photo; None means the best class for all.
        Returns logits [N, K], label [N] (the explained classes), conv_activations and
        conv_gradient [N, h, w, C] (the layer's), guided_backprop [N, H_in, W_in, 3] (w.r.t.
        the model-sized RGB image in [0, 1]) and, unless photo_gradient is False,
        guided_backprop_image: a list of N [H, W, 3] arrays, w.r.t. each photo in [0, 1].
        """
        self._check_open()
        photos = [np.asarray(p, dtype=np.float32) for p in photos]
        for p in photos:
            if p.ndim != 3 or p.shape[-1] != 3 or p.shape[0] < 1 or p.shape[1] < 1:
                raise ValueError("each photo must be [H, W, 3], got %s" % (p.shape,))
        if targets is None:
            targets = [Target.best()] * len(photos)
        codes = encode(targets, self.model.num_classes)
        if len(codes) != len(photos):
            raise ValueError("got %d targets for %d photos" % (len(codes), len(photos)))
        size = tuple(self.model.input_size)
        images = np.stack([p if p.shape[:2] == size else self.resize(p) for p in photos])
        out = self._feed_runs(self.fetches, images, codes)
        if photo_gradient:
            out["guided_backprop_image"] = [
                g if p.shape[:2] == g.shape[:2] else self.photo_gradient(g, p.shape)
                for p, g in zip(photos, out["guided_backprop"])]
        return out

    def logits(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Forward pass only: model-sized images [N, h, w, 3] in [0, 1] -> logits [N, K]."""
        self._check_open()
        images = np.asarray(images, dtype=np.float32)
        step = min(batch_size, self.model.max_batch or batch_size)
        return np.concatenate([self._run(self.fetches["logits"], {self.images: images[i:i + step]})
                               for i in range(0, len(images), step)])

    def close(self) -> None:
        self.closed = True
        self.session.close()

    def __enter__(self) -> "GuidedGradCamGraph":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_graph(model: Model, layer: Optional[str] = None, guided_relu6: str = "exact",
               config: Optional[tf.ConfigProto] = None, cache: bool = False):
    """The graph for ``model``: in a process of its own when it comes from a file the user has
    not said they trust (``ggcam.engine.worker.RemoteGraph``), else in this one."""
    if model.untrusted:
        from ggcam.engine.worker import RemoteGraph
        return RemoteGraph(model, layer, guided_relu6, config)
    return GuidedGradCamGraph(model, layer, guided_relu6, config, cache=cache)
