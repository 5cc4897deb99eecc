"""The model seam: one object per model owns every fact about it.

A ``Model`` says how its ops are made (built from code, or imported/loaded) while the
guided-ReLU override is active, its input size and channels, its preprocessing (graph ops
from RGB in [0, 1], so gradients w.r.t. the [0, 1] image come from the chain rule), its
classes and their names, its default Grad-CAM layer, the layers a randomisation check walks,
and how its weights are restored. Nothing outside ``ggcam/models`` knows these facts.
"""
import difflib
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

from ggcam.tf_compat import tf

# Luminance weights (ITU-R BT.601), as Pillow's "L" conversion uses.
_LUMA = (0.299, 0.587, 0.114)


class ModelError(Exception):
    """The model cannot be used as asked (missing file, unknown tensor, ...); one line."""


def index_names(num_classes: int) -> List[str]:
    """Class names for a model without a list: its indices."""
    return ["class %d" % i for i in range(num_classes)]


def close_matches(name: str, candidates: Sequence[str], n: int = 5) -> str:
    """'; did you mean: a, b' for the candidates nearest to ``name`` (or '')."""
    near = difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)
    if not near:
        near = [c for c in candidates if name.lower() in c.lower()][:n]
    return "; did you mean: %s" % ", ".join(near) if near else ""


class Model:
    """Base class of model descriptions. Subclasses set the attributes and implement ``_create``.

    Attributes (set by the subclass, some only after ``build``):
      name: shown in results and raw.npz.
      input_size: (height, width) the network takes.
      channels: 3 (RGB) or 1 (greyscale: the photo's luminance is fed).
      input_range: (lo, hi) the [0, 1] image is scaled to; or None when ``mean_rgb`` is set.
      mean_rgb: per-channel means subtracted from the 0..255 image (VGG-style), or None.
      num_classes, class_names: the classes; names[i] names output i.
      default_layer: the Grad-CAM layer when none is asked for.
      max_batch: how many images one run may take (1 for graphs exported with a fixed batch).
    """

    name = "model"
    input_size = (224, 224)  # type: Tuple[int, int]
    channels = 3
    input_range = (-1.0, 1.0)  # type: Optional[Tuple[float, float]]
    mean_rgb = None  # type: Optional[Tuple[float, float, float]]
    num_classes = 0
    class_names = None  # type: Optional[List[str]]
    default_layer = ""
    max_batch = None  # type: Optional[int]

    def __init__(self) -> None:
        self.logits = None  # type: Optional[tf.Tensor]
        self.model_input = None  # type: Optional[tf.Tensor]
        self.notes = []  # type: List[str]  # choices made automatically, said once to the user

    # --------------------------------------------------------------- preprocessing

    def preprocess(self, images: tf.Tensor) -> tf.Tensor:
        """RGB [N, H, W, 3] in [0, 1] -> the network's input [N, H, W, channels], as graph ops."""
        x = images
        if self.channels == 1:
            x = tf.reduce_sum(x * tf.constant(_LUMA, tf.float32), axis=-1, keepdims=True)
        if self.mean_rgb is not None:
            means = self.mean_rgb if self.channels == 3 else (sum(self.mean_rgb) / 3.0,)
            return x * 255.0 - tf.constant(means, tf.float32)
        lo, hi = self.input_range
        return x * (hi - lo) + lo

    def describe_preprocessing(self) -> str:
        grey = "luminance of the photo, " if self.channels == 1 else ""
        if self.mean_rgb is not None:
            return "%sRGB 0..255 minus means %s" % (grey, ", ".join("%.2f" % m for m in self.mean_rgb))
        return "%s[0, 1] scaled to [%g, %g]" % (grey, self.input_range[0], self.input_range[1])

    # --------------------------------------------------------------- building

    def prepare(self) -> None:
        """Read and check the model's files before any op is made: after it, ``input_size``,
        ``channels`` and (for imported graphs) the input and logits tensors are known.
        Raises ModelError."""

    def build(self, images: tf.Tensor) -> tf.Tensor:
        """Make the model's ops on ``images`` (RGB [N, H, W, 3] in [0, 1]) in the current graph.

        Call inside the guided override context. Returns the logits [N, num_classes].
        """
        self.model_input = self.preprocess(images)
        self.logits = self._create(self.model_input)
        if self.logits.shape.ndims != 2:
            raise ModelError("%s: logits must be [batch, classes], got %s" % (self.name, self.logits.shape))
        if self.class_names is None:
            self.class_names = index_names(self.num_classes)
        return self.logits

    def _create(self, model_input: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def restore(self, session: tf.Session) -> None:
        """Load the weights into ``session`` (nothing for frozen graphs)."""

    # --------------------------------------------------------------- graph cache (ggcam.graph_cache)

    def cache_identity(self) -> Optional[Dict]:
        """What the model's graph is built from (JSON-ready), or None: not cached. Models read
        from a user's file are not: importing that file is what building them costs."""
        return None

    def imported_state(self) -> Dict:
        """After ``build``: the tensor names ``attach_imported`` needs (JSON-ready)."""
        raise NotImplementedError

    def without_saver(self, graph_def):
        """The built GraphDef as a cache entry keeps it: without ops that touch files."""
        raise NotImplementedError

    def attach_imported(self, graph: tf.Graph, state: Dict) -> None:
        """Instead of ``build``: take the model's tensors from an imported cache entry."""
        raise NotImplementedError

    def restore_imported(self, session: tf.Session) -> None:
        """Load the weights into a session over an imported cache entry."""
        raise NotImplementedError

    # --------------------------------------------------------------- layers

    def layers(self) -> "OrderedDict[str, tf.Tensor]":
        """Named 4-D layers a user may pick, in network order (after ``build``)."""
        raise NotImplementedError

    def layer(self, name: str) -> tf.Tensor:
        """The 4-D feature map named ``name``: a layer name from ``layers()``, or any tensor
        (``op:0``) or op name in the graph. Raises ModelError naming close candidates."""
        named = self.layers()
        if name in named:
            tensor = named[name]
        else:
            tensor = self._graph_tensor(name)
            if tensor is None:
                raise ModelError("no layer named %r in %s%s (list them with --list_layers)"
                                 % (name, self.name, close_matches(name, list(named))))
        if tensor.shape.ndims != 4:
            raise ModelError("layer %s is not a 4-D feature map (shape %s); Grad-CAM needs [batch, h, w, channels]"
                             % (name, tensor.shape))
        return tensor

    def _candidates(self, name: str) -> Tuple[str, ...]:
        """Graph names a user's name may stand for, the most likely first."""
        return name, self._scoped(name)

    def _graph_tensor(self, name: str) -> Optional[tf.Tensor]:
        graph = tf.get_default_graph() if self.logits is None else self.logits.graph
        for candidate in self._candidates(name):
            try:
                if ":" in candidate:
                    return graph.get_tensor_by_name(candidate)
                return graph.get_operation_by_name(candidate).outputs[0]
            except (KeyError, ValueError, IndexError):
                continue
        return None

    def _scoped(self, name: str) -> str:
        return name

    def randomization_layers(self) -> Optional["OrderedDict[str, List[tf.Variable]]"]:
        """Layer name -> its weight (and bias) variables, from the logits down to the input;
        None when the weights are constants (frozen graphs): randomisation does not apply."""
        return variable_layers(self.logits.graph, self._scoped(""))

    def describe(self) -> Dict[str, object]:
        """Facts shown to the user and stored with results."""
        return {"model": self.name, "input_size": list(self.input_size), "channels": self.channels,
                "num_classes": self.num_classes, "preprocessing": self.describe_preprocessing()}


def variable_layers(graph: tf.Graph, scope: str = "") -> Optional["OrderedDict[str, List[tf.Variable]]"]:
    """Group a graph's weight variables by layer (their scope), last-created layer first.

    Batch-norm parameters are left out (randomising them is a different experiment).
    """
    layers = OrderedDict()  # type: OrderedDict[str, List[tf.Variable]]
    for v in graph.get_collection(tf.GraphKeys.GLOBAL_VARIABLES):
        name = v.op.name
        if "BatchNorm" in name or "batch_normalization" in name or not name.startswith(scope):
            continue
        if name.rsplit("/", 1)[-1] in ("moving_mean", "moving_variance", "gamma", "beta", "global_step"):
            continue
        layers.setdefault(name[len(scope):].rsplit("/", 1)[0], []).append(v)
    if not layers:
        return None
    return OrderedDict(reversed(list(layers.items())))
