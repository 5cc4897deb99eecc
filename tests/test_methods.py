"""Every method against values worked out independently: a tiny frozen graph whose layer and
gradients numpy computes by hand (the layer's gradient is the readout weight itself), the CAM
formulas written out channel by channel as pytorch-grad-cam 1.5.7 states them, Score-CAM and
Ablation-CAM against slow loops of single forward passes in numpy, integrated gradients'
completeness, SmoothGrad without noise, and the guided versions as the products they are."""
import cv2
import numpy as np
import pytest

from ggcam.evaluation import checks as evaluation
from ggcam import methods as methods_mod
from ggcam import outputs as out
from ggcam.engine.graph import GuidedGradCamGraph
from ggcam.explainer import Explainer
from ggcam.methods.base import Options
from ggcam.models.frozen_graph import FrozenGraphModel
from ggcam.tf.compat import tf

pytestmark = pytest.mark.graph

C, K = 4, 3  # the layer's channels, the classes
RNG = np.random.RandomState(21)
W = RNG.randn(3, C).astype(np.float32)            # 1x1 convolution, stride 2: 6x6 image -> 3x3 layer
B = np.array([0.3, -0.2, 0.1, 0.4], np.float32)
V = RNG.randn(3, 3, C, K).astype(np.float32)      # readout over every position of the layer
PHOTO = RNG.randint(0, 256, (6, 6, 3)).astype(np.uint8)
LABEL = 1
CAMS = ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam", "scorecam", "ablationcam"]


def numpy_layer(x: np.ndarray) -> np.ndarray:
    """The layer for an input [6, 6, 3] in [0, 1]: relu(x W + B) at even positions, [3, 3, C]."""
    return np.maximum(x[::2, ::2] @ W + B, 0.0)


def numpy_logits_from_layer(a: np.ndarray) -> np.ndarray:
    return np.einsum("ijc,ijck->k", a, V)


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("tiny")
    with tf.Graph().as_default() as g:
        image = tf.placeholder(tf.float32, [None, 6, 6, 3], name="image")
        layer = tf.nn.relu(tf.nn.conv2d(image, W[None, None], [1, 2, 2, 1], "VALID") + B, name="layer")
        tf.matmul(tf.reshape(layer, [-1, 9 * C]), tf.constant(V.reshape(9 * C, K)), name="logits")
        tf.io.write_graph(g.as_graph_def(), str(folder), "tiny.pb", as_text=False)
    return str(folder / "tiny.pb")


@pytest.fixture(scope="module")
def tiny(tiny_file):
    graph = GuidedGradCamGraph(FrozenGraphModel(tiny_file, input_range=(0.0, 1.0)), layer="layer", outputs=out.ALL)
    yield graph
    graph.close()


def explain(graph, names, options=None):
    with_graph = Explainer.from_graph(graph, methods=names, method_options=options)
    return with_graph.explain(PHOTO, labels=[LABEL])[0]


# ----------------------------------------------------------------------------- the CAM formulas, written out

def by_channel(a, g):
    """[h, w, C] -> lists of [h, w] per channel, pytorch's layout."""
    return [a[..., c] for c in range(a.shape[-1])], [g[..., c] for c in range(g.shape[-1])]


def cam_of(weights, a):
    return np.maximum(sum(w * a[..., c] for c, w in enumerate(weights)), 0.0)


def gradcam_pp(a, g):
    weights = []
    for ac, gc in zip(*by_channel(a, g)):
        alpha = gc ** 2 / (2 * gc ** 2 + ac.sum() * gc ** 3 + 1e-6)
        alpha[gc == 0] = 0.0
        weights.append((np.maximum(gc, 0) * alpha).sum())
    return cam_of(weights, a)


def xgradcam(a, g):
    return cam_of([(gc * ac).sum() / (ac.sum() + 1e-7) for ac, gc in zip(*by_channel(a, g))], a)


def layercam(a, g):
    return np.maximum(sum(np.maximum(gc, 0) * ac for ac, gc in zip(*by_channel(a, g))), 0.0)


def hirescam(a, g):
    return np.maximum(sum(gc * ac for ac, gc in zip(*by_channel(a, g))), 0.0)


def eigencam(a, g=None):
    """The leading eigenvector of the centred positions' scatter matrix (not an SVD)."""
    rows = a.reshape(-1, a.shape[-1])
    centred = rows - rows.mean(axis=0)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    v = vectors[:, -1] if (rows @ vectors[:, -1]).sum() >= 0 else -vectors[:, -1]
    return np.maximum((centred @ v).reshape(a.shape[:2]), 0.0)


def gradcam(a, g):
    return cam_of(g.mean(axis=(0, 1)), a)


FORMULAS = {"gradcam": gradcam, "gradcam++": gradcam_pp, "xgradcam": xgradcam, "layercam": layercam,
            "hirescam": hirescam, "eigencam": eigencam}


@pytest.mark.parametrize("shape", [(5, 6, 7), (3, 3, 20)], ids=["more positions", "more channels"])
@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_closed_form_cams_on_random_arrays(name, shape):
    rng = np.random.RandomState(len(name))
    a = np.maximum(rng.randn(*shape), 0.0)
    g = rng.randn(*shape)
    g[0, 0, :] = 0.0  # Grad-CAM++'s alpha is zero where the gradient is
    method = methods_mod.get(name)
    np.testing.assert_allclose(method.layer_cam({out.ACTIVATIONS: a, out.LAYER_GRADIENT: g}), FORMULAS[name](a, g),
                               rtol=1e-5, atol=1e-6)


def test_the_gradient_methods_see_the_hand_computed_layer_and_gradient(tiny):
    """The layer is numpy_layer(photo), its gradient V[..., label]; every CAM's raw array is its
    formula of those two."""
    e = explain(tiny, [n for n in FORMULAS])
    a, g = numpy_layer(PHOTO / 255.0), V[..., LABEL]
    np.testing.assert_allclose(e.conv_activations, a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(e.conv_gradient, g, rtol=1e-6)
    raw = e.raw()
    for name, formula in FORMULAS.items():
        key = "cam" if name == "gradcam" else "cam_" + name
        np.testing.assert_allclose(raw[key], formula(a.astype(np.float64), g.astype(np.float64)),
                                   rtol=1e-4, atol=1e-6, err_msg=name)
        assert e.map(name).shape == PHOTO.shape[:2] and e.map(name).max() <= 1.0


# ----------------------------------------------------------------------------- gradient-free CAMs, slow loops

def test_score_cam_equals_a_loop_of_single_forward_passes(tiny):
    x = PHOTO / 255.0
    a = numpy_layer(x)
    scores = []
    for c in range(C):
        up = cv2.resize(a[..., c].astype(np.float32), (6, 6), interpolation=cv2.INTER_LINEAR)
        mask = (up - up.min()) / (up.max() - up.min() + 1e-8)
        scores.append(numpy_logits_from_layer(numpy_layer(mask[..., None] * x))[LABEL])  # one input at a time
    weights = np.exp(scores - np.max(scores)) / np.exp(scores - np.max(scores)).sum()
    e = explain(tiny, ["scorecam"])
    np.testing.assert_allclose(e.raw()["scorecam_weights"], weights, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(e.raw()["cam_scorecam"], cam_of(weights, a), rtol=1e-4, atol=1e-6)


def test_ablation_cam_equals_a_loop_of_single_forward_passes(tiny):
    a = numpy_layer(PHOTO / 255.0)
    score = numpy_logits_from_layer(a)[LABEL]
    weights = []
    for c in range(C):
        ablated = a.copy()
        ablated[..., c] = 0.0  # a ReLU layer: zero is below every activation
        weights.append((score - numpy_logits_from_layer(ablated)[LABEL]) / score)
    e = explain(tiny, ["ablationcam"])
    np.testing.assert_allclose(e.raw()["ablationcam_weights"], weights, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(e.raw()["cam_ablationcam"], cam_of(weights, a), rtol=1e-4, atol=1e-6)


@pytest.mark.e2e
def test_methods_with_graph_work_run_in_the_models_own_process(tiny, tiny_file):
    """A file not trusted runs in a process of its own (RemoteGraph): the same maps there."""
    from ggcam.engine import runner
    names = ["scorecam", "ablationcam", "integrated_gradients"]
    with runner.open_graph(FrozenGraphModel(tiny_file, input_range=(0.0, 1.0)), layer="layer",
                           outputs=out.ALL) as remote:
        assert type(remote).__name__ == "RemoteGraph"
        far = explain(remote, names).raw()
    near = explain(tiny, names).raw()
    for key in ("cam_scorecam", "cam_ablationcam", "integrated_gradients"):
        np.testing.assert_allclose(far[key], near[key], rtol=1e-6, atol=1e-8, err_msg=key)


def test_ablation_of_signed_activations_goes_far_below_their_minimum():
    from ggcam.methods.ablationcam import FAR_BELOW, ablated_value
    assert ablated_value(np.array([0.0, 2.0])) == 0.0
    assert ablated_value(np.array([-1.5, 2.0])) == -1.5 - FAR_BELOW


# ----------------------------------------------------------------------------- input-gradient methods

def numpy_input_gradient(x: np.ndarray, label: int) -> np.ndarray:
    """d logit / d x by the chain rule: only the even positions reach the layer."""
    grad = np.zeros_like(x)
    active = (x[::2, ::2] @ W + B) > 0
    grad[::2, ::2] = (active * V[..., label]) @ W.T
    return grad


def test_saliency_is_the_plain_gradient(tiny):
    e = explain(tiny, ["saliency", "guided_backprop"])
    plain = numpy_input_gradient(PHOTO / 255.0, LABEL)
    np.testing.assert_allclose(e.raw()["saliency"], plain, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(e.map("saliency"), plain, rtol=1e-5, atol=1e-7)
    assert not np.allclose(e.map("guided_backprop"), plain)


def test_integrated_gradients_of_a_linear_model_are_input_times_weight(tmp_path):
    weights = RNG.randn(6 * 6 * 3, 2).astype(np.float32)
    with tf.Graph().as_default() as g:
        image = tf.placeholder(tf.float32, [None, 6, 6, 3], name="image")
        feature = tf.multiply(image, 1.0, name="feature")  # a 4-D layer for the graph's CAM side
        tf.matmul(tf.reshape(feature, [-1, 108]), tf.constant(weights), name="logits")
        tf.io.write_graph(g.as_graph_def(), str(tmp_path), "linear.pb", as_text=False)
    with GuidedGradCamGraph(FrozenGraphModel(str(tmp_path / "linear.pb"), input_range=(0.0, 1.0)),
                            layer="feature", outputs=out.ALL) as graph:
        e = Explainer.from_graph(graph, methods=["integrated_gradients"]).explain(PHOTO, labels=[1])[0]
    x = PHOTO / 255.0
    np.testing.assert_allclose(e.raw()["integrated_gradients"], x * weights[:, 1].reshape(6, 6, 3),
                               rtol=1e-5, atol=1e-7)


def test_integrated_gradients_are_complete_on_a_smooth_network(tmp_path):
    """Attributions sum to score(x) - score(black) within 1% (softplus: no kinks)."""
    with tf.Graph().as_default() as g:
        image = tf.placeholder(tf.float32, [None, 6, 6, 3], name="image")
        layer = tf.nn.softplus(4.0 * tf.nn.conv2d(image, W[None, None], [1, 2, 2, 1], "VALID") + B)
        tf.matmul(tf.reshape(layer, [-1, 9 * C]), tf.constant(V.reshape(9 * C, K)), name="logits")
        tf.io.write_graph(g.as_graph_def(), str(tmp_path), "smooth.pb", as_text=False)
    with GuidedGradCamGraph(FrozenGraphModel(str(tmp_path / "smooth.pb"), input_range=(0.0, 1.0)),
                            outputs=out.ALL) as graph:
        raw = Explainer.from_graph(graph, methods=["integrated_gradients"]).explain(PHOTO, labels=[0])[0].raw()
        logits = graph.logits(np.stack([PHOTO / 255.0, np.zeros((6, 6, 3))]))
        rows = evaluation.completeness(graph, np.stack([PHOTO / 255.0]), [0], methods_mod.make(["integrated_gradients"]))
    gap = logits[0, 0] - logits[1, 0]
    np.testing.assert_allclose(raw["integrated_gradients_gap"], gap, rtol=1e-5)
    assert abs(raw["integrated_gradients"].sum() - gap) <= 0.01 * abs(gap), (raw["integrated_gradients"].sum(), gap)
    assert len(rows) == 1 and rows[0]["relative_error"] < 0.01
    np.testing.assert_allclose(rows[0]["attribution_sum"], raw["integrated_gradients"].sum(), rtol=1e-5)


def test_the_summary_gives_each_method_its_checks_and_verdict():
    random_rows = [{"mode": "independent", "depth": 1, "method": "gradcam", "spearman": 0.1},
                   {"mode": "independent", "depth": 1, "method": "guided_backprop", "spearman": 0.99},
                   {"mode": "cascading", "depth": 2, "method": "gradcam", "spearman": 0.2},
                   {"mode": "cascading", "depth": 2, "method": "guided_backprop", "spearman": 0.5}]
    cls_rows = [{"method": "gradcam", "spearman": 0.3}, {"method": "guided_backprop", "spearman": 0.9}]
    di_rows = [{"method": "gradcam", "deletion_auc": 0.1, "insertion_auc": 0.5},
               {"method": "random", "deletion_auc": 0.2, "insertion_auc": 0.2}]
    table = evaluation.summary_table(random_rows, cls_rows, di_rows, []).splitlines()
    assert table[2] == "| Grad-CAM | 0.100 | 0.200 | 0.300 | 0.100 | 0.500 | — | — | pass |"
    assert table[3] == "| Guided Backprop | 0.990 | 0.500 | 0.900 | — | — | — | — | fail |"
    assert table[4] == "| Random | — | — | — | 0.200 | 0.200 | — | — | — |"


@pytest.mark.parametrize("name", ["saliency", "guided_backprop", "integrated_gradients"])
def test_smoothgrad_without_noise_is_its_method(tiny, name):
    e = explain(tiny, [name], Options(smoothgrad=3, smoothgrad_noise=0.0))
    assert list(e.picture_names) == [name + "_smoothgrad", "panel"]
    plain = explain(tiny, [name])
    np.testing.assert_allclose(e.map(name + "_smoothgrad"), plain.map(name), rtol=1e-5, atol=1e-8)


def test_smoothgrad_noise_is_reproducible_and_averages(tiny):
    options = Options(smoothgrad=4, smoothgrad_noise=0.2)
    first, again = (explain(tiny, ["saliency"], options).map("saliency_smoothgrad") for _ in range(2))
    np.testing.assert_array_equal(first, again)
    smooth = methods_mod.make(["saliency"], options=options)[0]
    copies = smooth.noisy(PHOTO.astype(np.float32) / 255.0)
    expected = np.mean([numpy_input_gradient(c.astype(np.float64), LABEL) for c in copies], axis=0)
    np.testing.assert_allclose(first, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["gradcam++", "eigencam", "scorecam"])
def test_a_guided_cam_is_the_guided_gradient_times_the_cam(tiny, name):
    e = explain(tiny, [name, "guided_backprop", "guided_" + name])
    np.testing.assert_allclose(e.map("guided_" + name), e.map("guided_backprop") * e.map(name)[..., None],
                               rtol=1e-5, atol=1e-9)


def test_every_method_runs_and_writes_its_files(tiny, tmp_path):
    names = methods_mod.names()
    e = explain(tiny, names)
    e.save(str(tmp_path / "all"), save_raw=True)
    written = set(p.name for p in (tmp_path / "all").iterdir())
    assert {n + ".png" for n in names} | {"overlay.png", "panel.png", "raw.npz"} <= written
    # each CAM method has its overlay: the first one's is overlay.png
    assert {"overlay_%s.png" % n for n in CAMS[1:]} <= written and "overlay_gradcam.png" not in written
    np.testing.assert_array_equal(np.asarray(e.overlay("eigencam")), e.picture("overlay_eigencam"))
    np.testing.assert_array_equal(np.asarray(e.overlay()), np.asarray(e.overlay("gradcam")))
    with pytest.raises(KeyError, match="no CAM method 'saliency'"):
        e.overlay("saliency")
    with np.load(str(tmp_path / "all" / "raw.npz")) as raw:
        assert {"cam"} | {"cam_" + n for n in CAMS if n != "gradcam"} | {"saliency", "integrated_gradients"} \
            <= set(raw.files)


# ----------------------------------------------------------------------------- the command line

def test_the_command_line_makes_the_methods_named(shared_graphs, tmp_path):
    import os
    import inference
    from conftest import ROOT, run_main
    chelsea = os.path.join(ROOT, "images", "chelsea.png")
    folder = tmp_path / "some"
    result = run_main(inference.main, "--image=%s" % chelsea, "--output_dir=%s" % folder, "--save_raw",
                      "--methods=gradcam++,saliency,guided_layercam", "--smoothgrad=2", "--smoothgrad_noise=0.1")
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(str(folder))) == sorted(["input.jpg", "gradcam++.png", "saliency_smoothgrad.png",
                                                      "guided_layercam.png", "overlay.png", "panel.png", "raw.npz"])
    with np.load(str(folder / "raw.npz")) as raw:
        assert {"cam_gradcam++", "cam_layercam", "saliency_smoothgrad"} <= set(raw.files)
        assert raw["saliency_smoothgrad"].shape == (224, 224, 3)
    for flags, says in ((["--methods=gradcam", "--smoothgrad=4"], "--smoothgrad averages input-gradient maps"),
                        (["--methods=integrated_gradients", "--ig_steps=0"], "--ig_steps must be at least 1")):
        bad = run_main(inference.main, "--image=%s" % chelsea, "--output_dir=%s" % (tmp_path / "bad"), *flags)
        assert bad.returncode == 2 and says in bad.stderr, bad.stderr
        assert not (tmp_path / "bad").exists()
