"""Guided ReLU / ReLU6 gradients on tiny graphs with hand-set values and exact masks."""
import importlib

import numpy as np
import pytest

from ggcam.tf import guided as guided_relu
from ggcam.tf.compat import tf

pytestmark = pytest.mark.graph


X = np.array([-1.0, 0.5, 3.0, 7.0], np.float32)   # below 0, in range, in range, above 6
UPSTREAM = np.array([1.0, -1.0, 1.0, 1.0], np.float32)


def input_gradient(activation, rule, x=X, upstream=UPSTREAM):
    graph = tf.Graph()
    with graph.as_default(), graph.gradient_override_map(guided_relu.override_map(rule)):
        xt = tf.constant(x)
        y = activation(xt)
        (grad,) = tf.gradients(tf.reduce_sum(y * upstream), [xt])
    with tf.Session(graph=graph) as sess:
        return sess.run(grad)


@pytest.mark.parametrize("rule, expected", [
    ("exact", [0, 0, 1, 0]),   # negative upstream blocked; saturated unit (x = 7) blocked
    ("seed", [0, 0, 1, 1]),    # the seed's rule lets the saturated unit through
    ("plain", [0, -1, 1, 0]),  # the true ReLU6 derivative times the upstream gradient
])
def test_relu6_rules(rule, expected):
    np.testing.assert_array_equal(input_gradient(tf.nn.relu6, rule), expected)


@pytest.mark.parametrize("rule, expected", [
    ("exact", [0, 0, 1, 1]),
    ("seed", [0, 0, 1, 1]),
    ("plain", [0, -1, 1, 1]),
])
def test_relu_is_overridden_too(rule, expected):
    np.testing.assert_array_equal(input_gradient(tf.nn.relu, rule), expected)


def two_layer_gradient(rule, w2):
    # x = [4, -1]; pre-activations W1 x = [8, -1, 3] -> relu6 = [6, 0, 3]; out = w2 . h
    w1 = np.array([[2, 0], [0, 1], [1, 1]], np.float32)
    graph = tf.Graph()
    with graph.as_default(), graph.gradient_override_map(guided_relu.override_map(rule)):
        x = tf.constant([[4.0], [-1.0]])
        h = tf.nn.relu6(tf.matmul(tf.constant(w1), x))
        out = tf.reduce_sum(h * tf.constant(np.array(w2, np.float32)[:, None]))
        (grad,) = tf.gradients(out, [x])
    with tf.Session(graph=graph) as sess:
        return sess.run(grad)[:, 0]


@pytest.mark.parametrize("w2, expected", [
    # upstream [1, 1, -1]: exact blocks all three units (saturated, inactive, negative)
    ([1, 1, -1], {"exact": [0, 0], "seed": [2, 0], "plain": [-1, -1]}),
    # upstream [1, 1, 2]: only the third unit passes under the exact rule
    ([1, 1, 2], {"exact": [2, 2], "seed": [4, 2], "plain": [2, 2]}),
])
def test_two_layer_network_exact_masks(w2, expected):
    for rule, want in expected.items():
        np.testing.assert_array_equal(two_layer_gradient(rule, w2), want, err_msg=rule)


def test_registration_survives_reimport_and_reload():
    importlib.reload(guided_relu)
    importlib.reload(guided_relu)
    np.testing.assert_array_equal(input_gradient(tf.nn.relu6, "exact"), [0, 0, 1, 0])


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError):
        guided_relu.override_map("bogus")


def _batch_norm_input_gradient(overridden: bool, is_training: bool):
    """d/dx of sum(r * batch_norm(x)) on a [2, 3, 3, 4] input, as TensorFlow's own gradient or
    through the override map (which on TF 2 carries the one-multiply gradient)."""
    rng = np.random.RandomState(5)
    x_value = rng.normal(size=(2, 3, 3, 4)).astype(np.float32)
    r = rng.normal(size=(2, 3, 3, 4)).astype(np.float32)
    gamma, beta = rng.uniform(0.5, 2, 4).astype(np.float32), rng.normal(size=4).astype(np.float32)
    mean, variance = rng.normal(size=4).astype(np.float32), rng.uniform(0.1, 3, 4).astype(np.float32)
    graph = tf.Graph()
    overrides = guided_relu.override_map("exact") if overridden else {}
    with graph.as_default(), graph.gradient_override_map(overrides):
        x = tf.placeholder(tf.float32, x_value.shape)
        if is_training:
            y = tf.nn.fused_batch_norm(x, gamma, beta, epsilon=1e-3, is_training=True)[0]
        else:
            y = tf.nn.fused_batch_norm(x, gamma, beta, mean, variance, epsilon=1e-3, is_training=False)[0]
        dx, = tf.gradients(tf.reduce_sum(y * r), x)
        with tf.Session() as sess:
            value = sess.run(dx, {x: x_value})
    return value, r * gamma / np.sqrt(variance + 1e-3), y.op.type


def test_inference_batch_norm_gradient_is_tensorflows_own_and_the_hand_worked_one():
    from ggcam.tf.compat import TF2
    assert ("FusedBatchNormV3" in guided_relu.override_map("exact")) == TF2
    assert ("FusedBatchNormV3" in guided_relu.override_map("plain")) == TF2  # every rule: one forward pass
    ours, by_hand, op_type = _batch_norm_input_gradient(True, is_training=False)
    theirs, _, _ = _batch_norm_input_gradient(False, is_training=False)
    assert op_type == "FusedBatchNormV3"
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours, by_hand, rtol=1e-5, atol=1e-6)
    # training mode (batch statistics) keeps TensorFlow's own gradient
    ours, _, _ = _batch_norm_input_gradient(True, is_training=True)
    theirs, _, _ = _batch_norm_input_gradient(False, is_training=True)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
