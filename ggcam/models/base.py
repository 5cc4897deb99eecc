"""The model seam: one object per model owns every fact about it.

A ``Model`` says how its ops are made (built from code, or imported/loaded) while the
guided-ReLU override is active, its input size and channels, its preprocessing (graph ops
from RGB in [0, 1], so gradients w.r.t. the [0, 1] image come from the chain rule), its
classes and their names, its default Grad-CAM layer, the layers a randomisation check walks,
and how its weights are restored. Nothing outside ``ggcam/models`` knows these facts.
"""
import difflib
import os
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ggcam.models import detect
from ggcam.tf.compat import tf

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
      channel_order: "rgb", or "bgr" for networks trained on OpenCV-loaded or Caffe-style images.
      mean, std: per-channel (one value, or one per channel in the network's order) values
        subtracted and divided by after the range (torch- and Caffe-style normalisation), or None.
      num_classes, class_names: the classes; names[i] names output i.
      default_layer: the Grad-CAM layer when none is asked for.
      max_batch: how many images one run may take (1 for graphs exported with a fixed batch).
      output_function: how the model turns logits into its scores: "softmax", "sigmoid" (each
        class on its own, multi-label) or "none" (a raw score); probabilities follow it.
      path: the model file ('' for networks built from code).
      trust_model: whether the user trusts the file (``ggcam.models.safety`` checks every model
        that is not trusted, networks built from code too).
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
    output_function = "softmax"
    # The target kinds (``ggcam.targets``) the model's output supports: a classifier's classes.
    target_kinds = ("class",)  # type: Tuple[str, ...]
    guided = True  # set by the graph before build: False for the vanilla gradient (rule "plain")
    channel_order = "rgb"
    mean = None  # type: Optional[Tuple[float, ...]]
    std = None  # type: Optional[Tuple[float, ...]]
    path = ""
    trust_model = False

    def __init__(self) -> None:
        self.logits = None  # type: Optional[tf.Tensor]
        self.model_input = None  # type: Optional[tf.Tensor]
        self.input_layout = "NHWC"  # "NCHW": the network takes channels first (the image is transposed to it)
        self._layouts = None  # type: Optional[Dict[tf.Tensor, str]]
        self.notes = []  # type: List[str]  # choices made automatically, said once to the user

    # --------------------------------------------------------------- preprocessing

    def preprocess(self, images: tf.Tensor) -> tf.Tensor:
        """RGB [N, H, W, 3] in [0, 1] -> the network's input [N, H, W, channels], as graph ops
        (so gradients reach the [0, 1] photo): luminance for one channel, the channel order,
        then ``mean_rgb`` (0..255 minus means) or ``input_range``, then ``(x - mean) / std``."""
        x = images
        if self.channels == 1:
            x = tf.reduce_sum(x * tf.constant(_LUMA, tf.float32), axis=-1, keepdims=True)
        elif self.channel_order == "bgr":
            x = tf.reverse(x, axis=[-1])
        if self.mean_rgb is not None:
            means = self.mean_rgb if self.channels == 3 else (sum(self.mean_rgb) / 3.0,)
            x = x * 255.0 - tf.constant(means, tf.float32)
        else:
            lo, hi = self.input_range
            x = x * (hi - lo) + lo
        if self.mean is not None:
            x = x - tf.constant(self.mean, tf.float32)
        if self.std is not None:
            x = x / tf.constant(self.std, tf.float32)
        return x

    def set_preprocessing(self, input_range: Optional[Tuple[float, float]] = None, channel_order: str = "rgb",
                          mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None) -> None:
        """A model file's preprocessing as the user gives it (None: the default)."""
        if channel_order not in ("rgb", "bgr"):
            raise ValueError("channel_order must be rgb or bgr, got %r" % (channel_order,))
        self._preprocessing_given = (input_range is not None or channel_order != "rgb" or mean is not None
                                     or std is not None)
        if input_range is not None:
            self.input_range = (float(input_range[0]), float(input_range[1]))
        self.channel_order = channel_order
        self.mean = tuple(float(m) for m in mean) if mean is not None else None
        self.std = tuple(float(v) for v in std) if std is not None else None
        if self.std is not None and not all(v > 0 for v in self.std):
            raise ValueError("std values must be above 0, got %s" % ",".join("%g" % v for v in self.std))

    def preprocessing_note(self) -> str:
        """The note every run of a model file says: what the network is fed (the preprocessing
        cannot be read off a model file, and a wrong one changes the answer without an error).
        Raises ModelError when mean or std do not fit the input's channels."""
        for name, values in (("mean", self.mean), ("std", self.std)):
            if values is not None and len(values) not in (1, self.channels):
                raise ModelError("--%s has %d values; the input has %d channel(s): give 1 or %d"
                                 % (name, len(values), self.channels, self.channels))
        return "preprocessing: %s (%s; --input_range, --channel_order, --mean and --std choose it)" % (
            self.describe_preprocessing(), "as given" if getattr(self, "_preprocessing_given", False)
            else "the default, not read from the file")

    def describe_preprocessing(self) -> str:
        """'[0, 1] scaled to [-1, 1]' and the like: what the network is fed, from the photo."""
        if self.channels == 1:
            parts = ["luminance of the photo"]
        else:
            parts = ["BGR (channels reversed)" if self.channel_order == "bgr" else "RGB"]
        if self.mean_rgb is not None:
            parts.append("0..255 minus means %s" % ", ".join("%.2f" % m for m in self.mean_rgb))
        else:
            parts.append("[0, 1] scaled to [%g, %g]" % (self.input_range[0], self.input_range[1]))
        if self.mean is not None:
            parts.append("minus %s" % ", ".join("%g" % m for m in self.mean))
        if self.std is not None:
            parts.append("divided by %s" % ", ".join("%g" % v for v in self.std))
        return ", ".join(parts)

    # --------------------------------------------------------------- building

    def prepare(self) -> None:
        """Read and check the model's files before any op is made: after it, ``input_size``,
        ``channels`` and (for imported graphs) the input and logits tensors are known.
        Raises ModelError."""

    @property
    def untrusted(self) -> bool:
        """Whether the model comes from a file the user has not said they trust: it is then read
        in a child process first (``ggcam.engine.isolation``) and runs under a time limit."""
        return bool(self.path) and not self.trust_model

    def file_sizes(self) -> List[int]:
        """The sizes of the files ``prepare`` reads, in bytes (for the child's memory limit)."""
        if os.path.isdir(self.path):
            return [os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(self.path) for f in files]
        return [os.path.getsize(self.path)] if os.path.isfile(self.path) else []

    # What a model built in another process tells this one (``ggcam.engine.worker``).
    _FACTS = ("name", "notes", "input_size", "channels", "num_classes", "class_names", "default_layer",
              "output_function", "max_batch", "input_layout", "target_kinds")

    def facts(self) -> Dict:
        """After ``build``: what the model found out, JSON-ready (``adopt_facts``' input)."""
        return {k: getattr(self, k) for k in self._FACTS}

    def adopt_facts(self, facts: Dict) -> None:
        """Take the facts of this model as built in another process (nothing is read here)."""
        for k in self._FACTS:
            value = facts[k]
            setattr(self, k, tuple(value) if k in ("input_size", "target_kinds") else list(value) if k == "notes"
                    else value)

    def prepared_state(self) -> Dict:
        """After ``prepare``: what it decided, JSON-ready, for ``adopt``."""
        raise NotImplementedError

    def adopt(self, state: Dict) -> None:
        """Instead of ``prepare``: take the decisions of a ``prepare`` made in a child process
        (``prepared_state``), reading the file again but not importing it into a scratch graph."""
        raise NotImplementedError

    def build(self, images: tf.Tensor) -> tf.Tensor:
        """Make the model's ops on ``images`` (RGB [N, H, W, 3] in [0, 1]) in the current graph.

        Call inside the guided override context. Returns the logits [N, num_classes].
        """
        self.model_input = self.preprocess(images)
        self._layouts = None
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

    # --------------------------------------------------------------- graph cache (ggcam.engine.cache)

    def cache_identity(self) -> Optional[Dict]:
        """What the model's graph is built from (JSON-ready), or None: not cached. Models read
        from a user's file are not: importing that file is what building them costs."""
        return None

    def imported_state(self) -> Dict:
        """After ``build``: the tensor names ``attach_imported`` needs (JSON-ready)."""
        raise NotImplementedError

    def attach_imported(self, graph: tf.Graph, state: Dict) -> None:
        """Instead of ``build``: take the model's tensors from an imported cache entry (after it,
        ``restore`` loads the weights as after ``build``)."""
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

    def _layout_source(self) -> Optional[tf.Tensor]:
        """The tensor the network's ops start from, in ``input_layout`` (None: everything NHWC)."""
        return None

    def layout(self, tensor: tf.Tensor) -> str:
        """The axis order of a 4-D tensor of the network ("NHWC", "NCHW", ...; "NHWC" where it
        cannot be told), from the ops' data formats and transposes (``detect.layouts``)."""
        source = self._layout_source()
        if source is None:
            return "NHWC"
        if self._layouts is None:
            self._layouts = detect.layouts(self.logits, source, self.input_layout)
        return self._layouts.get(tensor) or "NHWC"

    def _layout_note(self, tensor: tf.Tensor) -> str:
        layout = self.layout(tensor)
        return "" if layout == "NHWC" else "; its axes are %s: Grad-CAM takes channels from axis %d" % (
            layout, layout.index("C"))

    def layer_shape(self, tensor: tf.Tensor) -> List[Optional[int]]:
        """[h, w, channels] of a 4-D layer, whatever its axis order."""
        dims = tensor.shape.as_list()
        perm = detect.to_nhwc(self.layout(tensor))
        return [dims[i] for i in perm][1:] if perm else dims[1:]

    def randomization_layers(self) -> Optional["OrderedDict[str, List[tf.Variable]]"]:
        """Layer name -> its weight (and bias) variables, from the logits down to the input;
        None when the weights are constants (frozen graphs): randomisation does not apply."""
        return variable_layers(self.logits.graph, self._scoped(""))

    def describe(self) -> Dict[str, object]:
        """Facts shown to the user and stored with results."""
        return {"model": self.name, "input_size": list(self.input_size), "channels": self.channels,
                "num_classes": self.num_classes, "preprocessing": self.describe_preprocessing()}


def variable_layers(graph: tf.Graph, scope: str = "") -> Optional["OrderedDict[str, List[tf.Variable]]"]:
    """``group_layers`` of a graph's global variables."""
    return group_layers(graph.get_collection(tf.GraphKeys.GLOBAL_VARIABLES), scope)


def group_layers(variables: Sequence[tf.Variable], scope: str = "") -> Optional["OrderedDict[str, List[tf.Variable]]"]:
    """Group weight variables (in creation order) by layer (their scope below ``scope``), last
    layer first; None when there are none.

    Batch-norm parameters are left out (randomising them is a different experiment).
    """
    layers = OrderedDict()  # type: OrderedDict[str, List[tf.Variable]]
    for v in variables:
        if not v.op.name.startswith(scope):
            continue
        info = getattr(v, "_save_slice_info", None)
        # The parts of a partitioned variable count as the whole one (its name is the file's).
        name = info.full_name if info else v.op.name[len(scope):]
        if "BatchNorm" in name or "batch_normalization" in name:
            continue
        if name.rsplit("/", 1)[-1] in ("moving_mean", "moving_variance", "gamma", "beta", "global_step"):
            continue
        layers.setdefault(name.rsplit("/", 1)[0], []).append(v)
    if not layers:
        return None
    return OrderedDict(reversed(list(layers.items())))


# Values fed per run when variables are set (a new feed signature costs a run set-up, one run
# of everything would hold every value twice: VGG 16's are 528 MB).
LOAD_GROUP_BYTES = 1 << 28


def load_variables(session: tf.Session,
                   pairs: Sequence[Tuple[tf.Operation, Union[np.ndarray, Callable[[], np.ndarray]]]]) -> None:
    """Set variables through their initializing assignments: ``pairs`` of (the assignment,
    e.g. ``Variable.initializer``, whose value input is fed; the value, or a function giving
    it, called just before its group of runs: groups of about ``LOAD_GROUP_BYTES``). No Saver,
    no file op and no constant enters the graph, so it can be finalized and checked."""
    group, size = [], 0
    for op, read in pairs:
        target = op.inputs[1]
        value = np.asarray(read() if callable(read) else read, dtype=target.dtype.base_dtype.as_numpy_dtype)
        group.append((op, target, value))
        size += value.nbytes
        if size >= LOAD_GROUP_BYTES:
            _run_assignments(session, group)
            group, size = [], 0
    _run_assignments(session, group)


def _run_assignments(session: tf.Session, group) -> None:
    feeds, ops, apart = {}, [], []
    for op, target, value in group:
        if target in feeds:  # two assignments share one value tensor: one run each
            apart.append((op, target, value))
        else:
            feeds[target] = value
            ops.append(op)
    if ops:
        session.run(ops, feeds)
    for op, target, value in apart:
        session.run(op, {target: value})


def variable_over(op: tf.Operation, slice_info=None) -> tf.Variable:
    """A ``tf.Variable`` over an imported variable op (``VariableV2`` or ``VarHandleOp``), with
    an assignment of its own from a placeholder as initializer (``load_variables`` feeds it;
    ``Variable.load`` works as for any variable). ``slice_info``: the SaveSliceInfoDef of a part
    of a partitioned variable."""
    from tensorflow.core.framework import variable_pb2
    from tensorflow.python.ops import gen_resource_variable_ops, resource_variable_ops, state_ops
    handle = op.outputs[0]
    resource = op.type == "VarHandleOp"
    dtype = op.get_attr("dtype")
    shape = tf.TensorShape(op.get_attr("shape")) if resource else handle.shape
    with tf.name_scope(op.name + "/ggcam_load/"):
        value = tf.placeholder(dtype, shape, name="value")
        if resource:
            assign = gen_resource_variable_ops.assign_variable_op(handle, value, name="assign")
            snapshot = gen_resource_variable_ops.read_variable_op(handle, dtype, name="read")
        else:
            assign = state_ops.assign(handle, value, name="assign").op
            snapshot = tf.identity(handle, name="read")
    definition = variable_pb2.VariableDef(variable_name=handle.name, initializer_name=assign.name,
                                          snapshot_name=snapshot.name, initial_value_name=value.name,
                                          is_resource=resource, trainable=True)
    if slice_info is not None:
        definition.save_slice_info_def.CopyFrom(slice_info)
    if resource:
        return resource_variable_ops.ResourceVariable(variable_def=definition)
    return tf.Variable(variable_def=definition)


class FileModel(Model):
    """A model read from a file (or given in memory) rather than built from code: what the
    command line's model-file flags set, in one place (``ggcam.models.make_model``)."""

    def __init__(self, path: str, input_tensor: Optional[str] = None, logits_tensor: Optional[str] = None,
                 input_range: Optional[Tuple[float, float]] = None, class_names: Optional[List[str]] = None,
                 trust_model: bool = False, channel_order: str = "rgb", mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None, feeds: Optional[Dict[str, object]] = None):
        super().__init__()
        self.path = path
        self.name = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
        self.feeds = dict(feeds or {})  # the values of other inputs the logits need, by name
        self.input_tensor, self.logits_tensor = input_tensor, logits_tensor
        self.set_preprocessing(input_range, channel_order, mean, std)
        self.class_names = list(class_names) if class_names else None
        self.trust_model = trust_model
