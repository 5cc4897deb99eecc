"""Building a model's graph, once: every op Guided Grad-CAM runs, made before the first image.

The model's ops are created with the rectifiers' gradients overridden by guided ones; photos
and targets are fed, so explaining more images or other classes never adds ops (the graph is
finalized). ``make`` builds a graph or takes it from the graph cache (``ggcam.engine.cache``);
``ggcam.engine.graph`` runs it.
"""
from typing import Dict, List, Optional, Sequence, Tuple

from ggcam import outputs as out
from ggcam import targets as targets_mod
from ggcam.engine import cache as graph_cache
from ggcam.models import detect, safety
from ggcam.models.base import Model, ModelError
from ggcam.models.detect import depends_on
from ggcam.tf import guided as guided_relu
from ggcam.tf.compat import tf, tf2


def resize_images(photos: tf.Tensor, size: Sequence[int]) -> tf.Tensor:
    """RGB [N, H, W, 3] in [0, 1] -> [N, size[0], size[1], 3] in [0, 1].

    Bilinear with antialiasing: identical to plain bilinear at the model's size, and when
    shrinking a larger photo every pixel contributes, so the gradient with respect to the
    photo is smooth instead of a lattice of sampled points.
    """
    return tf2.image.resize(photos, list(size), method="bilinear", antialias=True)


class Built:
    """A built graph and the tensors a run feeds and fetches.

    ``photo``, ``resized``, ``resized_grad``, ``photo_grad``: one photo of any size, its
    model-sized version, and the adjoint of that resize. ``images``: the model-sized batch fed.
    ``feeds``: target kind -> its placeholders by name; ``selector``: with several kinds, the
    kind of each example (an index into ``Model.target_kinds``), else None. ``fetches``: output
    name (``ggcam.outputs``) -> tensor. ``layer_tensor``: the layer as the model has it (any
    axis order); ``plain_layer_pass``: whether the layer's gradient has a backward pass of its
    own. ``cache_name``: the cache entry to write once the weights restore (new graphs only).
    """
    _TENSORS = ("photo", "resized", "resized_grad", "photo_grad", "images", "model_input")

    def __init__(self, graph: tf.Graph):
        self.graph = graph
        self.feeds = {}  # type: Dict[str, Dict[str, tf.Tensor]]
        self.selector = None  # type: Optional[tf.Tensor]
        self.fetches = {}  # type: Dict[str, tf.Tensor]
        self.layer_name, self.layer_tensor, self.plain_layer_pass = "", None, False
        self.layer_perm = None  # type: Optional[List[int]]  # the layer's axes to [N, h, w, C], None when so
        self.model_input = None  # type: Optional[tf.Tensor]  # the network's preprocessed input, NHWC
        self.cache_name = None  # type: Optional[str]

    @property
    def outputs(self) -> Tuple[str, ...]:
        return tuple(self.fetches)

    def entry(self, model: Model) -> Dict:
        """What a cache entry needs besides the GraphDef: tensor names and flags."""
        return {"tensors": {k: getattr(self, k).name for k in self._TENSORS},
                "feeds": {k: {n: t.name for n, t in f.items()} for k, f in self.feeds.items()},
                "selector": self.selector.name if self.selector is not None else None,
                "fetches": {k: t.name for k, t in self.fetches.items()},
                "layer_name": self.layer_name, "plain_layer_pass": self.plain_layer_pass, "layer_perm": self.layer_perm,
                "model": model.imported_state()}

    @classmethod
    def from_entry(cls, graph_def, names: Dict, model: Model) -> "Built":
        """The graph of a cache entry (see ``entry``)."""
        built = cls(tf.Graph())
        with built.graph.as_default():
            tf.import_graph_def(graph_def, name="")
            tensor = built.graph.get_tensor_by_name
            for k in cls._TENSORS:
                setattr(built, k, tensor(names["tensors"][k]))
            built.feeds = {k: {n: tensor(t) for n, t in f.items()} for k, f in names["feeds"].items()}
            built.selector = tensor(names["selector"]) if names["selector"] else None
            built.fetches = {k: tensor(v) for k, v in names["fetches"].items()}
            built.layer_tensor = built.fetches[out.ACTIVATIONS]  # zoo layers are NHWC
            built.layer_name = names["layer_name"]
            built.plain_layer_pass = bool(names["plain_layer_pass"])
            built.layer_perm = names.get("layer_perm")
            model.attach_imported(built.graph, names["model"])
        return built


def _score(model: Model, logits: tf.Tensor, built: Built) -> Tuple[tf.Tensor, tf.Tensor]:
    """Each target kind's ops (``ggcam.targets``), and the score and label of every example."""
    kinds = [targets_mod.kind(name) for name in model.target_kinds]
    made = [k.build(logits, model.num_classes) for k in kinds]
    built.feeds = {k.name: ops.feeds for k, ops in zip(kinds, made)}
    if len(made) == 1:
        return made[0].score, made[0].label
    built.selector = tf.placeholder(tf.int32, [None], name="target_kinds")
    score, label = made[0].score, made[0].label
    for i, ops in enumerate(made[1:], start=1):
        chosen = tf.equal(built.selector, i)
        score, label = tf.where(chosen, ops.score, score), tf.where(chosen, ops.label, label)
    return score, label


def build(model: Model, layer: Optional[str] = None, guided_relu6: str = "exact",
          outputs: Sequence[str] = out.STANDARD) -> Built:
    """Make every op: the resize and its adjoint, the model under the guided override, the
    target's score and the gradients of ``outputs`` (``ggcam.outputs.STANDARD`` always)."""
    height, width = model.input_size
    built = Built(tf.Graph())
    overrides = guided_relu.override_map(guided_relu6)
    guided = guided_relu6 != "plain"  # the map is not empty for "plain" on TF 2 (batch norm's gradient)
    with built.graph.as_default():
        with tf.name_scope("ggcam") as ours:
            built.photo = tf.placeholder(tf.float32, [1, None, None, 3], name="photo")
            built.resized = resize_images(built.photo, (height, width))
            built.resized_grad = tf.placeholder(tf.float32, [1, height, width, 3], name="resized_grad")
            # The resize is linear: its adjoint maps a model-sized gradient to a photo-sized one.
            (built.photo_grad,) = tf.gradients(built.resized, [built.photo], grad_ys=built.resized_grad,
                                               name="photo_gradient")
            built.images = tf.placeholder(tf.float32, [None, height, width, 3], name="images")
        model.guided = guided
        with built.graph.gradient_override_map(overrides):
            logits = model.build(built.images)
        built.layer_name = layer or model.default_layer
        conv = model.layer(built.layer_name)
        left = guided_relu.unguided(depends_on(logits, built.images)) if guided else {}
        if left:
            model.notes.append("guided backprop: %s keep their own gradient (not rectifier-like, so not guided)"
                               % ", ".join("%s (%d op%s)" % (t, n, "s" if n > 1 else "")
                                           for t, n in sorted(left.items())))
        with tf.name_scope(ours):  # the same scope again, not "ggcam_1"
            per_example, label = _score(model, logits, built)
            # Images in a batch are independent (inference-mode batch norm), so the gradient
            # of the summed scores gives every image its own gradient in one pass.
            score = tf.reduce_sum(per_example)
            plain_input = None
            try:
                conv_grad, input_grad = tf.gradients(score, [conv, built.images])
                # Grad-CAM's weights need the unguided gradient at the layer: when guided
                # rectifiers lie above it (the one that made the layer does not count), a
                # second, plain backward pass from the logits down to the layer gives it.
                built.plain_layer_pass = any(guided_relu.is_guided(op)
                                             for op in depends_on(logits, conv) - {conv.op})
                if built.plain_layer_pass:
                    with guided_relu.plain_gradients():
                        (conv_grad,) = tf.gradients(score, [conv], name="plain_layer_gradient")
                if out.PLAIN_GRADIENT in outputs:
                    plain_input = input_grad
                    if guided:  # the same forward ops, their own gradients all the way down
                        with guided_relu.plain_gradients():
                            (plain_input,) = tf.gradients(score, [built.images], name="plain_input_gradient")
            except (AttributeError, LookupError, TypeError, ValueError) as exc:
                # Ops TensorFlow cannot differentiate as imported (a TF1 while loop read from
                # a file has lost its control-flow context), or that have no gradient.
                lines = str(exc).strip().splitlines() or [type(exc).__name__]
                raise ModelError("%s: TensorFlow %s cannot compute the gradient of its logits (%s: %s)"
                                 % (model.path or model.name, tf.VERSION, type(exc).__name__, lines[0]))
        if conv_grad is None or input_grad is None:
            raise ModelError("the logits of %s do not depend on %s" % (
                model.name, built.layer_name if conv_grad is None else "the input image"))
        built.layer_tensor, built.model_input = conv, model.model_input
        perm = detect.to_nhwc(model.layout(conv))
        built.layer_perm = None if perm is None else list(perm)
        if perm is not None:  # a channels-first layer: the numpy side always gets [h, w, C]
            with tf.name_scope(ours):
                conv, conv_grad = tf.transpose(conv, perm), tf.transpose(conv_grad, perm)
        built.fetches = {out.LOGITS: logits, out.LABEL: label, out.ACTIVATIONS: conv,
                         out.LAYER_GRADIENT: conv_grad, out.GUIDED_GRADIENT: input_grad}
        if plain_input is not None:
            built.fetches[out.PLAIN_GRADIENT] = plain_input
    return built


def make(model: Model, layer: Optional[str] = None, guided_relu6: str = "exact",
         outputs: Sequence[str] = out.STANDARD, cache: bool = False) -> Built:
    """The finalized graph for ``model``: built, or with cache=True imported from the graph
    cache when an entry matches (models that can say what they are built from). A graph
    built anew passes ``models.safety.check_graph`` (what runs, however the model's ops were
    made); a cache entry passed it when it was loaded."""
    model.prepare()
    identity = model.cache_identity() if cache else None
    outputs = out.graph_outputs(outputs)
    # A cacheable model knows its default layer before it is built; an imported one finds it then.
    name = graph_cache.key(dict(identity, layer=layer or model.default_layer, guided_relu6=guided_relu6,
                                outputs=list(outputs), target_kinds=list(model.target_kinds))) if identity else None
    entry = graph_cache.load(name, model.notes) if name else None
    built = None
    if entry is not None:
        try:
            built = Built.from_entry(*entry, model=model)
        except Exception:  # an entry that does not fit: build as if there were none
            built = None
    if built is None:
        built = build(model, layer, guided_relu6, outputs)
        safety.check_graph(built.graph, model.trust_model, model.path or model.name)
        built.cache_name = name
    built.graph.finalize()
    return built


def keep(built: Built, model: Model) -> None:
    """Write a graph built anew to the cache (once its weights restored: it fits them)."""
    if built.cache_name:
        graph_cache.save(built.cache_name, built.graph.as_graph_def(), built.entry(model))
        built.cache_name = None
