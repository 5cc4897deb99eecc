"""Guided-backpropagation gradients (Springenberg et al., 2014) for every rectifier-like activation.

Use ``override_map(rule)`` with ``graph.gradient_override_map`` while the model's ops are
*created*: the override is recorded on each op then. Each guided gradient is the activation's
own derivative times the *positive part* of the upstream gradient: Relu and Relu6 (the rule
decides Relu6's saturated units), LeakyRelu, Elu, Selu and Softplus. Activations TensorFlow
builds from several ops (swish/SiLU ``x * sigmoid(x)``, GELU, hard-swish, mish) are guided
the same way by a *gate* on their output (``gate``: an identity whose gradient is the positive
part of the upstream gradient) with their inner ops' plain gradients (``make_plain``), so the
gradient is the activation's own derivative times the gated upstream gradient.

The gradient functions are registered with TensorFlow on first use (importing this module
loads no TensorFlow, so command lines can list ``RULES`` in ``--help``); registering again,
after a re-import or reload, is harmless.

``plain_gradients()``: inside it, ``tf.gradients`` builds the *unguided* gradient through
ops that carry the override. Grad-CAM's channel weights need that gradient at a layer with
rectifiers above it, while the input gets the guided one: two ``tf.gradients`` calls over the
same forward ops, in one graph and one ``session.run``.
"""
import contextlib
from typing import Dict, Iterator

RULES = ("exact", "seed", "plain")

_GUIDED_RELU = "GuidedGradCamRelu"
_GUIDED_RELU6 = {"exact": "GuidedGradCamRelu6Exact", "seed": "GuidedGradCamRelu6Seed"}
# The other single-op activations: op type -> the name its guided gradient is registered under.
_GUIDED_OTHERS = {"LeakyRelu": "GuidedGradCamLeakyRelu", "Elu": "GuidedGradCamElu", "Selu": "GuidedGradCamSelu",
                  "Softplus": "GuidedGradCamSoftplus"}
GATE = "GuidedGradCamGate"  # the gradient of the identity on a composite activation's output
# Not a guided rule: the input gradient of an inference-mode batch norm as one multiply, on TF 2
# only, where it takes 20% off the network pass (batch 8; benchmarks/network_levers.py): with
# FusedBatchNormGradV3 gone, Grappler fuses each convolution, batch norm and ReLU6 of the forward
# pass as it does for the forward pass alone. On TF 1.15 (oneDNN) the multiply is 24% slower.
INFERENCE_BATCH_NORM = "GuidedGradCamInferenceBatchNorm"
GUIDED_OP_TYPES = frozenset([_GUIDED_RELU, GATE] + list(_GUIDED_RELU6.values()) + list(_GUIDED_OTHERS.values()))
# Op types that carry a guided gradient (single-op activations); the plain gradient of each is
# registered under its own type name.
GUIDED_TYPES = frozenset(["Relu", "Relu6"] + list(_GUIDED_OTHERS))
_plain = [False]  # read while tf.gradients builds the backward ops, not when they run


def _tf2() -> bool:
    # (ggcam.tf.compat imports this module: its TF2 flag would make a cycle)
    from tensorflow.python.framework import versions
    return int(versions.__version__.split(".")[0]) >= 2


def _register() -> None:
    from tensorflow.python.framework import ops
    from tensorflow.python.ops import gen_nn_ops
    from tensorflow.python.ops import math_ops
    from tensorflow.python.ops import nn_ops

    def positive(grad):
        # One element-wise op (a tf.where mask costs three, measured 9 ms/image more at batch 8).
        return nn_ops.relu(grad)

    def guided_relu_grad(op, grad):
        if _plain[0]:
            return gen_nn_ops.relu_grad(grad, op.outputs[0])
        # Passes where the unit is active (x > 0) and the upstream gradient is positive.
        return gen_nn_ops.relu_grad(positive(grad), op.outputs[0])

    TF2 = _tf2()

    def guided_relu6_exact_grad(op, grad):
        x = op.inputs[0]
        if _plain[0]:
            return gen_nn_ops.relu6_grad(grad, x)
        # True ReLU6 derivative (1 on 0 < x < 6, else 0), gated by positive upstream gradient.
        if TF2:  # one Relu6Grad: 2 to 8% off TF 2's network pass against the form below
            return gen_nn_ops.relu6_grad(positive(grad), x)
        # On TF 1.15 as two ReluGrads (x > 0, then 6 - x > 0) rather than one Relu6Grad: the same
        # values bit for bit, and 10 to 15% off the network pass on intel-tensorflow, whose
        # Relu6Grad kernel alone took 30% of its op time (docs/performance.md, lever table).
        gated = gen_nn_ops.relu_grad(positive(grad), x)
        # 6 - x made when the gradient arrives: made in the forward pass, each layer's copy would
        # be held until the backward pass (160 MB more at batch 8, benchmarks/memory.py).
        with ops.control_dependencies([gated]):
            below_six = math_ops.subtract(6.0, x)
        return gen_nn_ops.relu_grad(gated, below_six)

    def guided_relu6_seed_grad(op, grad):
        if _plain[0]:
            return gen_nn_ops.relu6_grad(grad, op.inputs[0])
        # The seed's rule: relu_grad on the *output*, so saturated units (output 6) pass too.
        return gen_nn_ops.relu_grad(positive(grad), op.outputs[0])

    def guided(own_gradient):
        """The guided gradient of an activation whose gradient is ``own_gradient(op, grad)``."""
        def gradient(op, grad):
            return own_gradient(op, grad if _plain[0] else positive(grad))
        return gradient

    others = {
        "LeakyRelu": lambda op, g: gen_nn_ops.leaky_relu_grad(g, op.inputs[0], alpha=op.get_attr("alpha")),
        "Elu": lambda op, g: gen_nn_ops.elu_grad(g, op.outputs[0]),
        "Selu": lambda op, g: gen_nn_ops.selu_grad(g, op.outputs[0]),
        "Softplus": lambda op, g: gen_nn_ops.softplus_grad(g, op.inputs[0]),
    }

    def inference_batch_norm_grad(op, grad, *unused):
        # y = (x - mean) * gamma / sqrt(variance + epsilon) + beta, per channel, with the moving
        # statistics as constants: dy/dx is that one factor. Training mode (batch statistics)
        # and channels-first keep TensorFlow's own gradient.
        data_format = op.get_attr("data_format")
        if op.get_attr("is_training") or data_format not in (b"NHWC", "NHWC"):
            from tensorflow.python.ops import nn_grad
            return nn_grad._FusedBatchNormV3Grad(op, grad, *unused)
        _, gamma, _, _, variance = op.inputs
        factor = gamma * math_ops.rsqrt(variance + op.get_attr("epsilon"))
        return [grad * factor, None, None, None, None]

    registered = [(_GUIDED_RELU, guided_relu_grad), (_GUIDED_RELU6["exact"], guided_relu6_exact_grad),
                  (_GUIDED_RELU6["seed"], guided_relu6_seed_grad), (GATE, guided(lambda op, g: g))]
    registered += [(_GUIDED_OTHERS[t], guided(fn)) for t, fn in others.items()]
    registered.append((INFERENCE_BATCH_NORM, inference_batch_norm_grad))
    for name, fn in registered:
        try:
            ops.RegisterGradient(name)(fn)
        except KeyError:
            pass  # already registered by an earlier import or reload of this module


def override_map(rule: str = "exact") -> Dict[str, str]:
    """The ``gradient_override_map`` argument that makes the single-op activations guided.

    rule: "exact" (true ReLU6 derivative), "seed" (saturated units pass gradient) or
    "plain" (no guidance: the vanilla gradient, for comparison). On TF 2 every rule also gives
    inference-mode batch norm its one-multiply input gradient (INFERENCE_BATCH_NORM).
    """
    if rule not in RULES:
        raise ValueError("guided_relu6 must be one of %s, got %r" % (", ".join(RULES), rule))
    _register()
    faster = {"FusedBatchNormV3": INFERENCE_BATCH_NORM} if _tf2() else {}  # every rule: the same forward pass
    if rule == "plain":
        return faster
    return dict(_GUIDED_OTHERS, Relu=_GUIDED_RELU, Relu6=_GUIDED_RELU6[rule], **faster)


def gate(x):
    """``x`` through an identity whose gradient is the positive part of the upstream one (the
    plain gradient inside ``plain_gradients``): put on a composite activation's output."""
    from tensorflow.python.ops import array_ops
    _register()
    with x.graph.gradient_override_map({"Identity": GATE}):
        return array_ops.identity(x, name="ggcam_gate")


# Graph collection of the ops inside gated composite activations (their gradient is plain).
COMPOSITE_OPS = "ggcam_composite_activation_ops"
# Nonlinear element-wise op types whose own gradient passes unguided when not inside a gated
# composite: said in a note (``unguided``).
_REPORTED = ("Sigmoid", "Tanh", "Softsign", "Erf", "Exp")


def unguided(ops) -> Dict[str, int]:
    """Op type -> count of the nonlinear element-wise ops among ``ops`` (a model's forward ops)
    whose gradient is not guided: neither a guided single-op activation nor inside a gated
    composite one."""
    ops = list(ops)
    inside = set(ops[0].graph.get_collection(COMPOSITE_OPS)) if ops else set()
    counts = {}  # type: Dict[str, int]
    for op in ops:
        if op.type in _REPORTED and op not in inside:
            counts[op.type] = counts.get(op.type, 0) + 1
    return counts


def composite_activation(fn, x, guided: bool = True):
    """``fn(x)`` (an activation TensorFlow builds from several ops) with its inner ops' plain
    gradients and, when ``guided``, a gate on its output."""
    graph = x.graph
    start = len(graph.get_operations())
    with graph.gradient_override_map({t: t for t in GUIDED_TYPES}):  # each type's own gradient
        y = fn(x)
    for op in graph.get_operations()[start:]:
        graph.add_to_collection(COMPOSITE_OPS, op)
    return gate(y) if guided else y


def make_plain(ops) -> None:
    """Give the single-op activations among ``ops`` (inside a gated composite activation) their
    plain gradient again (the override map gave them the guided one when they were made)."""
    from tensorflow.core.framework import attr_value_pb2
    for op in ops:
        if op.type in GUIDED_TYPES:
            # TensorFlow's own gradient of each type is registered under the type's name.
            op._set_attr("_gradient_op_type", attr_value_pb2.AttrValue(s=op.type.encode()))  # no public setter


@contextlib.contextmanager
def plain_gradients() -> Iterator[None]:
    """Within this block, ``tf.gradients`` treats guided rectifiers as plain ones."""
    _plain[0] = True
    try:
        yield
    finally:
        _plain[0] = False


def is_guided(op) -> bool:
    """Whether ``op`` was created under a guided override."""
    try:
        return op.get_attr("_gradient_op_type").decode() in GUIDED_OP_TYPES
    except ValueError:
        return False
