"""The graph with the real weights: predictions, gradients, one backward pass, no graph growth."""
import os

import numpy as np
import pytest

import gradcam as gc
from ggcam.io import decoding
from conftest import ROOT, mobilenet_graph
from ggcam.engine.graph import resize_images
from ggcam.models import zoo
from ggcam.tf.guided import override_map
from ggcam.targets import Target
from nets import mobilenet_v1 as mnet
from ggcam.tf.compat import tf

import tf_slim as slim  # noqa: E402

pytestmark = pytest.mark.graph

BULL_MASTIFF, TABBY_CAT = 244, 282


def photo(path):
    return decoding.load_image(path)[None].astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def chelsea():
    return photo(os.path.join(ROOT, "images", "chelsea.png"))


def test_seed_demo_top1_is_bull_mastiff(graph, seed_images):
    out = graph.run(photo(os.path.join(seed_images, "demo.png")))
    assert int(out["label"][0]) == BULL_MASTIFF
    assert int(np.argmax(out["logits"][0])) == BULL_MASTIFF


def test_tabby_cat_cam_peaks_in_lower_half(graph, seed_images):
    out = graph.run(photo(os.path.join(seed_images, "demo.png")), [TABBY_CAT])
    assert int(out["label"][0]) == TABBY_CAT
    cam = gc.compute_cam(out["conv_activations"][0], out["conv_gradient"][0])
    row, _ = np.unravel_index(np.argmax(cam), cam.shape)
    assert row >= cam.shape[0] / 2.0, cam
    # and the predicted class (the dog) peaks in the upper half
    out = graph.run(photo(os.path.join(seed_images, "demo.png")))
    cam = gc.compute_cam(out["conv_activations"][0], out["conv_gradient"][0])
    assert np.unravel_index(np.argmax(cam), cam.shape)[0] < cam.shape[0] / 2.0, cam


def test_gradcam_gradient_is_the_plain_analytic_gradient(graph, chelsea):
    # Between Conv2d_13_pointwise and the logits lie only a global average pool and a 1x1
    # convolution, so d logit_c / d A[i, j, k] = W[k, c] / 49 exactly, at every position.
    out = graph.run(chelsea, [TABBY_CAT])
    w = graph.session.run(graph.graph.get_tensor_by_name("MobilenetV1/Logits/Conv2d_1c_1x1/weights:0"))
    expected = np.broadcast_to(w[0, 0, :, TABBY_CAT] / 49.0, (7, 7, 1024))
    np.testing.assert_allclose(out["conv_gradient"][0], expected, rtol=1e-5, atol=1e-9)


def test_guided_backprop_differs_from_plain_gradient_and_seed_rule(graph, chelsea):
    guided = graph.run(chelsea)
    # shared with other tests through the session's cache (conftest.py): built once
    with mobilenet_graph(guided_relu6="plain") as plain_graph:
        plain = plain_graph.run(chelsea)
    with mobilenet_graph(guided_relu6="seed") as seed_graph:
        seed = seed_graph.run(chelsea)
    # Same forward pass and the same (unguided) Grad-CAM gradient in all three graphs ...
    np.testing.assert_allclose(guided["logits"], plain["logits"], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(guided["conv_gradient"], plain["conv_gradient"], rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(seed["conv_gradient"], plain["conv_gradient"], rtol=1e-5, atol=1e-8)

    # ... but different input gradients.
    def corr(a, b):
        return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
    g, p, s = (x["guided_backprop"][0] for x in (guided, plain, seed))
    assert corr(g, p) < 0.5
    assert corr(g, s) < 0.9
    assert np.mean(np.sign(g) != np.sign(s)) > 0.05


def test_batch_equals_single_images(graph, chelsea):
    other = chelsea[:, ::-1]  # the mirrored photo, same size
    both = graph.run(np.concatenate([chelsea, other]), [TABBY_CAT, Target.best()])
    for i, (img, label) in enumerate([(chelsea, TABBY_CAT), (other, Target.best())]):
        single = graph.run(img, [label])
        for name, value in single.items():
            # float32 rounding of the batched kernels (TF 2 sums in another order): relative to the array's scale
            atol = 1e-5 * max(1.0, float(np.abs(value).max()))
            np.testing.assert_allclose(both[name][i], value[0], rtol=1e-4, atol=atol, err_msg=name)


def test_graph_is_finalized_and_does_not_grow(graph, chelsea):
    assert graph.graph.finalized
    n_ops = len(graph.graph.get_operations())
    for label in (1, TABBY_CAT, Target.best()):
        graph.run(chelsea, [label])
    graph.run(np.zeros((3, 100, 150, 3), np.float32))
    graph.run([np.zeros((50, 60, 3)), np.ones((224, 224, 3)), np.ones((300, 20, 3))], [Target.best(2), 5, Target.best()])
    assert len(graph.graph.get_operations()) == n_ops


def test_one_backward_pass_through_the_network(graph):
    # Each tf.gradients call makes its own name scope; only one may hold the network's
    # backward ops (the other one maps a 224x224 gradient back through the photo's resize).
    scopes = {}
    for op in graph.graph.get_operations():
        parts = op.name.split("/")
        top = parts[1] if parts[0] == "ggcam" and len(parts) > 1 else parts[0]
        if top.startswith(("gradients", "photo_gradient")):
            scopes.setdefault(top, set()).add(op.type)
    assert set(scopes) == {"gradients", "photo_gradient"}
    assert "Conv2DBackpropInput" in scopes["gradients"]
    assert not scopes["photo_gradient"] & {"Conv2DBackpropInput", "Conv2DBackpropFilter",
                                           "DepthwiseConv2dNativeBackpropInput"}


def test_guided_backprop_at_photo_resolution(graph):
    img = np.random.RandomState(1).uniform(0, 1, (1, 300, 451, 3)).astype(np.float32)
    out = graph.run(img)
    assert out["guided_backprop_image"][0].shape == (300, 451, 3)
    assert out["guided_backprop"].shape == (1, 224, 224, 3)
    # antialiased resize: every photo pixel receives gradient, not a sampled lattice
    assert np.mean(np.abs(out["guided_backprop_image"][0]).sum(-1) > 0) > 0.9


def test_photo_gradient_equals_gradient_through_the_resize(graph):
    # The adjoint run must give what a direct tf.gradients through resize + network gives.
    img = np.random.RandomState(2).uniform(0, 1, (1, 97, 131, 3)).astype(np.float32)
    out = graph.run(img, [TABBY_CAT])
    g = tf.Graph()
    with g.as_default(), g.gradient_override_map(override_map("exact")):
        photo = tf.constant(img)
        logits, _ = mnet.build((resize_images(photo, (224, 224)) - 0.5) * 2.0)
        (direct,) = tf.gradients(logits[0, TABBY_CAT], [photo])
        saver = tf.train.Saver()
    with tf.Session(graph=g) as sess:
        saver.restore(sess, zoo.default_checkpoint("mobilenet_v1"))
        expected = sess.run(direct)[0]
    np.testing.assert_allclose(out["guided_backprop_image"][0], expected, rtol=1e-4,
                               atol=1e-5 * np.abs(expected).max())


def test_rank_targets_pick_the_rth_best_class(graph, chelsea):
    out = graph.run(np.concatenate([chelsea] * 3), [Target.best(1), Target.best(2), Target.best(3)])
    order = np.argsort(-out["logits"][0])[:3]
    assert list(out["label"]) == list(order)


def test_bad_labels_are_refused(graph, chelsea):
    with pytest.raises(ValueError, match="class 1001 is out of range"):
        graph.run(chelsea, [1001])
    with pytest.raises(ValueError, match="at least 0"):
        graph.run(chelsea, [-1])
    with pytest.raises(ValueError):
        graph.run(chelsea, [1, 2])


def test_finite_difference_of_plain_gradient_on_small_net():
    # Tiny MobileNet (depth 0.25, 10 classes, 32x32 input) with random weights, float64.
    rng = np.random.RandomState(0)
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float64, [1, 32, 32, 3])
        with slim.arg_scope([slim.batch_norm], fused=False):  # fused batch norm lacks float64
            logits, end_points = mnet.build(x, depth_multiplier=0.25, num_classes=10)
        score = logits[0, 3]
        conv = end_points["Conv2d_13_pointwise"]
        grad_x, grad_conv = tf.gradients(score, [x, conv])
        init = [v.assign(rng.uniform(0.5, 1.5, v.shape.as_list()) if "variance" in v.op.name
                         else rng.normal(0, 0.5, v.shape.as_list())) for v in tf.global_variables()]
    with tf.Session(graph=graph) as sess:
        sess.run(init)
        x0 = rng.uniform(-1, 1, (1, 32, 32, 3))
        analytic = sess.run(grad_x, {x: x0})
        eps = 1e-5
        for idx in [(0, 0, 0, 0), (0, 5, 7, 1), (0, 16, 16, 2), (0, 31, 30, 0), (0, 12, 3, 1)]:
            plus, minus = x0.copy(), x0.copy()
            plus[idx] += eps
            minus[idx] -= eps
            numeric = (sess.run(score, {x: plus}) - sess.run(score, {x: minus})) / (2 * eps)
            assert analytic[idx] == pytest.approx(numeric, rel=1e-4, abs=1e-7), idx
        assert np.abs(analytic).max() > 0


def test_cam_at_an_earlier_layer_uses_the_plain_gradient(shared_graphs, chelsea):
    # Conv2d_11_pointwise (14x14) has guided ReLU6s above it: its Grad-CAM weights must come
    # from the unguided gradient while the input still gets the guided one.
    layer = "Conv2d_11_pointwise"
    guided = mobilenet_graph(layer=layer)
    plain = mobilenet_graph(layer=layer, guided_relu6="plain")
    assert guided.plain_layer_pass and not mobilenet_graph().plain_layer_pass
    g = guided.run(chelsea, [TABBY_CAT])
    p = plain.run(chelsea, [TABBY_CAT])
    assert g["conv_activations"].shape == (1, 14, 14, 512)
    np.testing.assert_allclose(g["conv_gradient"], p["conv_gradient"], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(gc.compute_cam(g["conv_activations"][0], g["conv_gradient"][0]),
                               gc.compute_cam(p["conv_activations"][0], p["conv_gradient"][0]), rtol=1e-4, atol=1e-6)
    # the input gradient is still the guided one, equal to the default layer's graph
    np.testing.assert_allclose(g["guided_backprop"], mobilenet_graph().run(chelsea, [TABBY_CAT])["guided_backprop"],
                               rtol=1e-5, atol=1e-8)
