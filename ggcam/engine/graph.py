"""The TensorFlow side: running a model's graph (``ggcam.engine.build``) in a session.

``GuidedGradCamGraph`` builds the graph once (or takes it from the graph cache), restores the
weights and answers ``run``: any number of photos of any sizes and targets, fed into the same
ops every time. ``ggcam.engine.runner.open_graph`` chooses where it runs (a model file not
trusted: a process of its own, ``ggcam.engine.worker``).
"""
import re
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ggcam import outputs as out
from ggcam import targets as targets_mod
from ggcam.engine import build as build_mod
from ggcam.engine import isolation
from ggcam.engine.build import resize_images  # noqa: F401  (part of this module's interface)
from ggcam.engine.weights import WeightRandomizer
from ggcam.models.base import Model, ModelError
from ggcam.targets import Target
from ggcam.timing import stamp
from ggcam.tf.compat import error_line, tf


class GuidedGradCamGraph:
    """Owns a graph and session for one model with guided rectifiers.

    ``run(photos, targets)`` explains a batch of photos of any sizes: each is resized to the
    model's input size in the graph, the batch goes through one forward and one backward
    pass, and the input gradients are carried back through each photo's resize (the adjoint
    of a linear op). ``outputs``: what the graph can give (``ggcam.outputs``; the standard
    ones always). A graph built elsewhere (``ggcam.engine.build.make``) is run with
    ``GuidedGradCamGraph.running(built, model)``. Use as a context manager or call ``close()``.
    """

    def __init__(self, model: Model, layer: Optional[str] = None, guided_relu6: str = "exact",
                 config: Optional[tf.ConfigProto] = None, cache: bool = False,
                 outputs: Sequence[str] = out.STANDARD):
        """cache=True: import the graph from ``ggcam.engine.cache`` when an entry matches, and
        keep it there after building it (models that can say what they are built from)."""
        built = build_mod.make(model, layer, guided_relu6, outputs, cache=cache)
        stamp("graph_build")
        self._start(built, model, config)
        build_mod.keep(built, model)
        stamp("session_and_restore")

    @classmethod
    def running(cls, built: build_mod.Built, model: Model,
                config: Optional[tf.ConfigProto] = None) -> "GuidedGradCamGraph":
        """A session over a graph already built for ``model`` (``build.make``); weights restored."""
        self = cls.__new__(cls)
        self._start(built, model, config)
        return self

    def _start(self, built: build_mod.Built, model: Model, config) -> None:
        self.model, self.built = model, built
        timeout = isolation.run_timeout() if model.untrusted else 0
        self._options = tf.RunOptions(timeout_in_ms=int(timeout * 1000)) if timeout else None
        self.graph, self.fetches = built.graph, built.fetches
        self.images = built.images  # the model-sized input placeholder [N, h, w, 3] in [0, 1]
        self._bypass = {}  # type: Dict[str, bool]  # see _bypassed
        self.layer_name, self.layer_tensor = built.layer_name, built.layer_tensor
        self.plain_layer_pass = built.plain_layer_pass
        self.closed = False
        self.session = tf.Session(graph=self.graph, config=config)
        try:
            model.restore(self.session)
        except Exception:
            self.session.close()
            raise

    @property
    def outputs(self) -> Tuple[str, ...]:
        """The outputs this graph gives (``ggcam.outputs``)."""
        return self.built.outputs

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
        return self.session.run(self.built.resized, {self.built.photo: photo[None]})[0]

    def photo_gradient(self, grad: np.ndarray, photo_shape: Sequence[int]) -> np.ndarray:
        """Gradient w.r.t. the model-sized [0, 1] image [h, w, 3] -> w.r.t. the photo [H, W, 3]."""
        # The resize is linear: its adjoint needs the photo's shape, not its values.
        shape = (1, int(photo_shape[0]), int(photo_shape[1]), 3)
        return self.session.run(self.built.photo_grad, {self.built.photo: np.zeros(shape, np.float32),
                                                        self.built.resized_grad: grad[None]})[0]

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

    def target_feeds(self, targets: Sequence[Union[Target, int]]) -> Dict[tf.Tensor, np.ndarray]:
        """The placeholder values for one target per example, from each target kind the model
        supports (``ggcam.targets``). ValueError for a target the model cannot have."""
        targets = [t if hasattr(t, "kind") else targets_mod.as_target(t) for t in targets]
        kinds = self.model.target_kinds
        for t in targets:
            if t.kind not in kinds:
                raise ValueError("%s targets: %s's output supports %s targets" % (t.kind, self.model.name,
                                                                                 " and ".join(kinds)))
        feeds = {}
        for name in kinds:
            values = targets_mod.kind(name).feed([t if t.kind == name else None for t in targets],
                                                 self.model.num_classes)
            feeds.update((self.built.feeds[name][k], v) for k, v in values.items())
        if self.built.selector is not None:
            feeds[self.built.selector] = np.asarray([kinds.index(t.kind) for t in targets], np.int32)
        return feeds

    def _feed_runs(self, fetches, images: np.ndarray, feeds: Dict) -> Dict[str, np.ndarray]:
        """Run ``fetches`` over a batch (per-example ``feeds`` as ``target_feeds`` gives them),
        in pieces of the model's largest batch."""
        step = self.model.max_batch or len(images)
        parts = []
        for i in range(0, len(images), step):
            piece = {k: v[i:i + step] for k, v in feeds.items()}
            piece[self.built.images] = images[i:i + step]
            parts.append(self._run(fetches, piece))
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def run(self, photos: Union[np.ndarray, Sequence[np.ndarray]],
            targets: Optional[Sequence[Union[Target, int]]] = None, photo_gradient: bool = True,
            outputs: Optional[Sequence[str]] = None) -> Dict[str, Union[np.ndarray, List[np.ndarray]]]:
        """Explain a batch of photos.

        photos: float [H, W, 3] arrays, RGB in [0, 1], of any sizes (or one [N, H, W, 3] array).
        targets: one target (``Target``, or a class index) per photo; None means the best class
        for all. outputs: the names to fetch (``ggcam.outputs``; default all the graph gives):
        logits [N, K], label [N] (the explained classes), conv_activations and conv_gradient
        [N, h, w, C] (the layer's), guided_backprop (and plain_gradient) [N, H_in, W_in, 3]
        (w.r.t. the model-sized RGB image in [0, 1]) and, unless photo_gradient is False, for
        each input gradient its photo version (guided_backprop_image, plain_gradient_image): a
        list of N [H, W, 3] arrays, w.r.t. each photo in [0, 1].
        """
        self._check_open()
        photos = [np.asarray(p, dtype=np.float32) for p in photos]
        for p in photos:
            if p.ndim != 3 or p.shape[-1] != 3 or p.shape[0] < 1 or p.shape[1] < 1:
                raise ValueError("each photo must be [H, W, 3], got %s" % (p.shape,))
        if targets is None:
            targets = [Target.best()] * len(photos)
        if len(targets) != len(photos):
            raise ValueError("got %d targets for %d photos" % (len(targets), len(photos)))
        feeds = self.target_feeds(targets)
        wanted = self.outputs if outputs is None else out.graph_outputs(outputs)
        missing = [n for n in wanted if n not in self.fetches]
        if missing:
            raise ValueError("this graph was built without %s; open it with outputs=%s"
                             % (", ".join(missing), list(wanted)))
        size = tuple(self.model.input_size)
        images = np.stack([p if p.shape[:2] == size else self.resize(p) for p in photos])
        result = self._feed_runs({n: self.fetches[n] for n in wanted}, images, feeds)
        if photo_gradient:
            for name in out.INPUT_GRADIENTS:
                if name in result:
                    result[out.PHOTO[name]] = [g if p.shape[:2] == g.shape[:2] else self.photo_gradient(g, p.shape)
                                               for p, g in zip(photos, result[name])]
        return result

    FED = ("model_input", "layer")  # what ``logits_fed`` may be given in place of the computed values

    def model_inputs(self, images: np.ndarray) -> np.ndarray:
        """The network's preprocessed input [N, h, w, c] (channels last) for model-sized
        ``images`` [N, h, w, 3] in [0, 1]."""
        self._check_open()
        return self._run(self.built.model_input, {self.built.images: np.asarray(images, np.float32)})

    def logits_fed(self, at: str, values: np.ndarray, image: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Logits [N, K] with ``at`` fed ``values`` [N, ...] instead of being computed: "model_input"
        (as ``model_inputs`` gives it) or "layer" (the layer's [N, h, w, C], as ``run`` gives
        its activations). Only the ops above it run; ``image`` (model-sized [h, w, 3] in [0, 1])
        feeds any path to the logits that bypasses it."""
        self._check_open()
        if at not in self.FED:
            raise ValueError("logits_fed: at must be one of %s, got %r" % (", ".join(self.FED), at))
        values = np.asarray(values, np.float32)
        tensor = self.built.model_input if at == "model_input" else self.built.layer_tensor
        if at == "layer" and self.built.layer_perm is not None:  # back to the layer's own axis order
            values = np.transpose(values, np.argsort(self.built.layer_perm))
        step = min(batch_size, self.model.max_batch or batch_size)
        image = np.asarray(image, np.float32)[None] if self._bypassed(tensor) else None
        parts = []
        for i in range(0, len(values), step):
            piece = values[i:i + step]
            feeds = {tensor: piece}
            if image is not None:
                feeds[self.built.images] = np.repeat(image, len(piece), axis=0)
            parts.append(self._run(self.fetches[out.LOGITS], feeds))
        return np.concatenate(parts)

    def _bypassed(self, tensor: tf.Tensor) -> bool:
        """Whether the logits read the input image by a path that does not pass ``tensor``
        (then the image is fed too); walked once per tensor."""
        if tensor.name not in self._bypass:
            seen, stack = set(), [self.fetches[out.LOGITS].op]
            while stack:  # the ops that run when ``tensor`` is fed: a fed tensor's producer does not
                op = stack.pop()
                if op in seen:
                    continue
                seen.add(op)
                stack.extend(t.op for t in op.inputs if t is not tensor)
                stack.extend(op.control_inputs)
            self._bypass[tensor.name] = self.built.images.op in seen
        return self._bypass[tensor.name]

    def logits(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Forward pass only: model-sized images [N, h, w, 3] in [0, 1] -> logits [N, K]."""
        self._check_open()
        images = np.asarray(images, dtype=np.float32)
        step = min(batch_size, self.model.max_batch or batch_size)
        return np.concatenate([self._run(self.fetches[out.LOGITS], {self.built.images: images[i:i + step]})
                               for i in range(0, len(images), step)])

    def close(self) -> None:
        self.closed = True
        self.session.close()

    def __enter__(self) -> "GuidedGradCamGraph":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
