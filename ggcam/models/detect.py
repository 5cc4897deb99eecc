"""Automatic choices for imported models, made on the graph: logits and the Grad-CAM layer.

Each choice is said to the user (``Model.notes``) and can be overridden with a flag.
"""
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Set

from ggcam.tf.compat import tf

# Ops that only pass values along: walked through when looking for a Softmax behind an output.
PASS_THROUGH = ("Identity", "Reshape", "Squeeze", "ExpandDims", "StopGradient", "Snapshot")
ACTIVATIONS = ("Softmax", "Sigmoid")
# Ops that end the spatial part of a classifier (global pooling, flattening).
_POOLING = ("Mean", "AvgPool", "MaxPool", "Max", "Reshape", "Squeeze")


def through(t: tf.Tensor) -> tf.Tensor:
    """``t`` behind any reshapes and identities (``PASS_THROUGH``) that made it."""
    while t.op.type in PASS_THROUGH and t.op.inputs:
        t = t.op.inputs[0]
    return t


def logits_behind(output: tf.Tensor) -> tf.Tensor:
    """The pre-activation logits of a model output: when ``output`` is (a reshape of) a
    Softmax or Sigmoid, its input; otherwise ``output`` itself.

    Explaining probabilities instead of logits saturates the gradient (the classic cause of
    blank maps), so the activation is stepped over.
    """
    t = through(output)
    return t.op.inputs[0] if t.op.type in ACTIVATIONS else output


def activation_of(output: tf.Tensor) -> Optional[tf.Operation]:
    """The Softmax or Sigmoid op ``logits_behind`` steps over to leave ``output``, or None."""
    t = through(output)
    return t.op if t.op.type in ACTIVATIONS else None


def output_function(logits: tf.Tensor, output: Optional[tf.Tensor] = None) -> str:
    """How the model turns ``logits`` into its scores: "softmax" or "sigmoid" when ``output``
    (the tensor the logits were found behind) is one, or when such an op reads the logits
    (through reshapes and identities); "none" otherwise (a raw score: no probabilities)."""
    if output is not None:
        op = activation_of(output)
        if op is not None:
            return op.type.lower()
    seen, stack = set(), [logits]
    while stack:
        t = stack.pop()
        for consumer in t.consumers():
            if consumer in seen:
                continue
            seen.add(consumer)
            if consumer.type in ACTIVATIONS:
                return consumer.type.lower()
            if consumer.type in PASS_THROUGH:
                stack.extend(consumer.outputs[:1])
    return "none"


def depends_on(tensor: tf.Tensor, source: tf.Tensor) -> Set[tf.Operation]:
    """The ops between ``source`` and ``tensor`` (those ``tensor`` depends on that depend on ``source``)."""
    behind, stack = set(), [tensor.op]
    while stack:
        op = stack.pop()
        if op not in behind:
            behind.add(op)
            stack.extend(t.op for t in op.inputs)
    ahead, stack = set(), [source.op]
    while stack:
        op = stack.pop()
        if op not in ahead and op in behind:
            ahead.add(op)
            stack.extend(c for t in op.outputs for c in t.consumers())
    return ahead


def feature_maps(logits: tf.Tensor, source: tf.Tensor) -> "OrderedDict[str, tf.Tensor]":
    """Every 4-D float tensor between ``source`` and ``logits``, in graph order, by op name
    (an op's first output by its op name, further outputs by tensor name)."""
    on_path = depends_on(logits, source)
    maps = OrderedDict()
    for op in logits.graph.get_operations():
        if op not in on_path or op is source.op:
            continue
        for i, t in enumerate(op.outputs):
            if t.dtype.is_floating and t.shape.ndims == 4:
                maps[op.name if i == 0 else t.name] = t
    return maps


def last_feature_map(logits: tf.Tensor, source: tf.Tensor,
                     layout: Callable[[tf.Tensor], str] = lambda t: "NHWC") -> Optional[tf.Tensor]:
    """The last 4-D feature map before global pooling or flattening: walking back from the
    logits along the inputs that depend on ``source``, the first 4-D tensor whose spatial
    size is not 1x1 (a known 1x1 map is already pooled). ``layout(t)``: its axis order."""
    on_path = depends_on(logits, source)
    t, seen = logits, set()
    while t is not None and t.op not in seen:
        seen.add(t.op)
        if t.dtype.is_floating and t.shape.ndims == 4 and t is not source:
            order, dims = layout(t), t.shape.as_list()
            h, w = dims[order.index("H")], dims[order.index("W")]
            if not (h == 1 and w == 1):
                return t
        data = [x for x in t.op.inputs if x.op in on_path and x.dtype.is_floating]
        t = data[0] if data else None
    return None


def layouts(logits: tf.Tensor, source: tf.Tensor, source_layout: str = "NHWC") -> Dict[tf.Tensor, str]:
    """The axis order ("NHWC", "NCHW", ...) of every 4-D tensor between ``source`` and
    ``logits``: set by an op's ``data_format`` (convolutions, pooling, bias, batch norm),
    permuted by a Transpose of constant order, otherwise that of the op's first 4-D input
    ("" where unknown, as after a Reshape of something else)."""
    from tensorflow.python.framework import tensor_util
    on_path = depends_on(logits, source)
    found = {source: source_layout}  # type: Dict[tf.Tensor, str]
    for op in logits.graph.get_operations():  # in the order they were made: inputs first
        if op not in on_path or op is source.op:
            continue
        outputs = [t for t in op.outputs if t.shape.ndims == 4]
        if not outputs:
            continue
        inputs = [found[t] for t in op.inputs if t in found and found[t]]
        layout = inputs[0] if inputs else ""
        if "data_format" in op.node_def.attr:
            fmt = op.get_attr("data_format")
            fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
            layout = fmt if sorted(fmt) == sorted("NHWC") else layout
        elif op.type == "Transpose" and layout:
            perm = tensor_util.constant_value(op.inputs[1])
            layout = "".join(layout[int(i)] for i in perm) if perm is not None and len(perm) == 4 else ""
        elif op.type == "Reshape":
            layout = ""
        for t in outputs:
            found[t] = layout
    return found


def to_nhwc(layout: str) -> Optional[List[int]]:
    """The transpose order that makes a tensor of ``layout`` NHWC, or None when it is NHWC
    already (or its layout is unknown)."""
    if not layout or layout == "NHWC":
        return None
    return [layout.index(axis) for axis in "NHWC"]


def describe(tensors: "OrderedDict[str, tf.Tensor]") -> List[str]:
    """'name  [h, w, c]' lines for --list_layers."""
    return ["%s  %s" % (name, [d if d is not None else "?" for d in t.shape.as_list()[1:]])
            for name, t in tensors.items()]
