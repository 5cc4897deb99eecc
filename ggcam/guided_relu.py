"""Guided-backpropagation gradients for Relu and Relu6 (Springenberg et al., 2014).

Use ``override_map(rule)`` with ``graph.gradient_override_map`` while the model's ops are
*created*: the override is recorded on each op then. The gradient functions are registered
with TensorFlow on first use (importing this module loads no TensorFlow, so command lines can
list ``RULES`` in ``--help``); registering again, after a re-import or reload, is harmless.

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
GUIDED_OP_TYPES = frozenset([_GUIDED_RELU] + list(_GUIDED_RELU6.values()))
_plain = [False]  # read while tf.gradients builds the backward ops, not when they run


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

    def guided_relu6_exact_grad(op, grad):
        x = op.inputs[0]
        if _plain[0]:
            return gen_nn_ops.relu6_grad(grad, x)
        # True ReLU6 derivative (1 on 0 < x < 6, else 0), gated by positive upstream gradient.
        # As two ReluGrads (x > 0, then 6 - x > 0) rather than one Relu6Grad: the same values
        # bit for bit, and 10 to 15% off the network pass on intel-tensorflow, whose Relu6Grad
        # kernel alone took 30% of its op time (README, "Speed", lever table).
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

    for name, fn in ((_GUIDED_RELU, guided_relu_grad), (_GUIDED_RELU6["exact"], guided_relu6_exact_grad),
                     (_GUIDED_RELU6["seed"], guided_relu6_seed_grad)):
        try:
            ops.RegisterGradient(name)(fn)
        except KeyError:
            pass  # already registered by an earlier import or reload of this module


def override_map(rule: str = "exact") -> Dict[str, str]:
    """The ``gradient_override_map`` argument that makes Relu and Relu6 guided.

    rule: "exact" (true ReLU6 derivative), "seed" (saturated units pass gradient) or
    "plain" (no override: the vanilla gradient, for comparison).
    """
    if rule not in RULES:
        raise ValueError("guided_relu6 must be one of %s, got %r" % (", ".join(RULES), rule))
    if rule == "plain":
        return {}
    _register()
    return {"Relu": _GUIDED_RELU, "Relu6": _GUIDED_RELU6[rule]}


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
