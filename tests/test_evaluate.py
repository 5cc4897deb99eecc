"""evaluate.py and ggcam/evaluation/checks.py: restoring weights, known-answer comparisons, the command
line on MobileNet V1 (real weights, the session's shared graphs), on a frozen graph (randomisation
does not apply) and on another zoo network (random weights saved here)."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import evaluate
from conftest import ROOT, run_main
from ggcam.evaluation import checks as evaluation
from ggcam.io import decoding
from ggcam.targets import Target

pytestmark = pytest.mark.graph

CHELSEA = os.path.join(ROOT, "images", "chelsea.png")
MOBILENET_LAYERS = 28  # Logits, 13 x (pointwise, depthwise), Conv2d_0


@pytest.fixture(scope="module")
def inputs(graph):
    return np.stack([graph.resize(decoding.load_image(CHELSEA).astype(np.float32) / 255.0)])


# ----------------------------------------------------------------------------- no TensorFlow

@pytest.mark.unit
def test_short_names_drop_the_shared_scope():
    assert evaluation.short_names(["MobilenetV1/Logits/Conv2d_1c_1x1", "MobilenetV1/Conv2d_0"]) == \
        ["Logits/Conv2d_1c_1x1", "Conv2d_0"]
    assert evaluation.short_names(["a/b", "a/c/d"]) == ["b", "c/d"]
    assert evaluation.short_names(["dense", "conv"]) == ["dense", "conv"]
    assert evaluation.short_names(["net/dense"]) == ["dense"]  # a name never becomes empty
    assert evaluation.short_names(["net/x", "net"]) == ["net/x", "net"]


@pytest.mark.unit
def test_strip_layers_are_evenly_spaced_from_first_to_last():
    layers = ["L%d" % i for i in range(MOBILENET_LAYERS)]
    picked = evaluation.strip_layers(layers)
    assert picked == ["L0", "L5", "L11", "L16", "L22", "L27"]
    assert evaluation.strip_layers(layers[:3]) == layers[:3]
    assert evaluation.strip_layers(["only"]) == ["only"] and evaluation.strip_layers([]) == []


@pytest.mark.e2e
@pytest.mark.smoke
def test_help_does_not_load_tensorflow():
    # A new process: this one has TensorFlow loaded already.
    code = ("import sys, evaluate\n"
            "try:\n"
            "    evaluate.main(['--help'])\n"
            "except SystemExit as exc:\n"
            "    assert exc.code in (0, None), exc.code\n"
            "print('status', evaluate.main(['--image=x.png', '--low_rank=5000']))\n"
            "print('loaded:', sorted(m for m in ('tensorflow', 'inference') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    for flag in ("--image", "--boxes", "--checks", "--model", "--graph", "--keras", "--layer", "--low_rank"):
        assert flag in result.stdout
    assert result.stdout.strip().splitlines()[-2:] == ["status 2", "loaded: []"]
    assert result.stderr.strip() == "error: --low_rank must be in 2..1001"


# ----------------------------------------------------------------------------- MobileNet V1, trained

def test_maps_compared_with_themselves_score_one(graph, inputs):
    maps = evaluation.maps(graph.run(inputs, photo_gradient=False), 0)
    assert maps["gradcam"].shape == inputs.shape[1:3] and maps["guided_backprop"].shape == inputs.shape[1:]
    for method, (rho, s) in evaluation.compare(maps, maps).items():
        assert rho == pytest.approx(1.0) and s == pytest.approx(1.0), method


def test_randomization_restores_the_trained_weights(graph, inputs):
    before = graph.run(inputs, photo_gradient=False)
    randomizer = graph.randomizer(seed=1)
    layers = list(randomizer.layers)
    assert len(layers) == MOBILENET_LAYERS
    assert list(randomizer.names.values())[:2] == ["Logits/Conv2d_1c_1x1", "Conv2d_13_pointwise"]
    assert list(randomizer.names.values())[-1] == "Conv2d_0"
    try:
        randomizer.randomize(layers[0])
        randomizer.randomize(layers[17])
        changed = graph.run(inputs, [Target.of(int(before["label"][0]))], photo_gradient=False)
        assert not np.array_equal(changed["logits"], before["logits"])
    finally:
        randomizer.restore()  # the graph is shared with later tests
    after = graph.run(inputs, photo_gradient=False)
    np.testing.assert_array_equal(after["logits"], before["logits"])
    np.testing.assert_array_equal(after["guided_backprop"], before["guided_backprop"])


def test_randomization_rows_and_restoration(graph, inputs):
    labels = graph.run(inputs, photo_gradient=False)["label"]
    logits = graph.logits(inputs)
    rows, strip = evaluation.randomization(graph, inputs, labels, seed=0)
    np.testing.assert_array_equal(graph.logits(inputs), logits)
    assert len(rows) == 2 * MOBILENET_LAYERS * 3
    assert list(strip) == ["original", "Logits/Conv2d_1c_1x1", "Conv2d_11_pointwise", "Conv2d_8_pointwise",
                           "Conv2d_6_depthwise", "Conv2d_3_depthwise", "Conv2d_0"]
    first = {r["method"]: r["spearman"] for r in rows if r["mode"] == "cascading" and r["depth"] == 1}
    # randomising the logits layer changes the class evidence (Grad-CAM) far more than guided backprop
    assert first["guided_backprop"] > 0.9 > first["gradcam"]


def test_class_sensitivity_rows(graph, inputs):
    rows = evaluation.class_sensitivity(graph, inputs, low_rank=500)
    assert [r["method"] for r in rows] == list(evaluation.MAP_METHODS)
    assert rows[0]["top1"] == 286 and rows[0]["other"] != 286
    ranked = np.argsort(-graph.logits(inputs)[0])
    assert rows[0]["other"] == ranked[499]


def test_cli_end_to_end_with_boxes(shared_graphs, tmp_path):
    boxes = tmp_path / "boxes.json"
    # Chelsea's face fills most of the photo; the box covers the head (451 x 300 photo)
    boxes.write_text(json.dumps({"chelsea.png": {"Egyptian cat": [[60, 0, 400, 300]], "282": [[60, 0, 400, 300]]}}))
    out = tmp_path / "eval"
    result = run_main(evaluate.main, "--image=%s" % CHELSEA, "--output_dir=%s" % out, "--boxes=%s" % boxes,
                      "--steps=4", "--checks=class,deletion")
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(str(out))) == ["class_sensitivity.csv", "deletion_insertion.csv",
                                            "pointing_game.csv", "report.md"]
    with open(str(out / "pointing_game.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 5 and {r["label"] for r in rows} == {"286", "282"}
    with open(str(out / "deletion_insertion.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["gradcam", "guided_backprop", "guided_gradcam", "gradient", "random"]
    assert all(0.0 <= float(r["deletion_auc"]) <= 1.0 and 0.0 <= float(r["insertion_auc"]) <= 1.0 for r in rows)
    report = (out / "report.md").read_text()
    assert "Model: `mobilenet_v1`" in report
    assert "## c. Deletion and insertion" in report and "## d. Pointing game" in report


@pytest.mark.unit
def test_cli_bad_boxes_are_a_usage_error(tmp_path):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"chelsea.png": {"282": [[10, 10, 5]]}}))
    result = run_main(evaluate.main, "--image=%s" % CHELSEA, "--boxes=%s" % boxes,
                      "--output_dir=%s" % (tmp_path / "e"))
    assert result.returncode == 2
    assert result.stderr.startswith("error: --boxes") and result.stderr.count("\n") == 1
    assert not (tmp_path / "e").exists()


# ----------------------------------------------------------------------------- a frozen graph

@pytest.fixture(scope="module")
def frozen_pb(tmp_path_factory) -> str:
    """A 3-layer conv net (4 classes, 32x32 input) with random weights, frozen to constants."""
    from ggcam.tf.compat import tf
    path = str(tmp_path_factory.mktemp("frozen") / "tiny.pb")
    rng = np.random.RandomState(0)
    with tf.Graph().as_default() as g:
        x = tf.placeholder(tf.float32, [None, 32, 32, 3], name="image")
        for i, (cin, cout, stride) in enumerate(((3, 8, 1), (8, 8, 2), (8, 8, 1))):
            w = tf.Variable(rng.randn(3, 3, cin, cout).astype(np.float32) * 0.4, name="conv%d/weights" % i)
            x = tf.nn.relu(tf.nn.conv2d(x, w, [1, stride, stride, 1], "SAME") + 0.05, name="conv%d/Relu" % i)
        w = tf.Variable(rng.randn(8, 4).astype(np.float32), name="dense/weights")
        logits = tf.matmul(tf.reduce_mean(x, [1, 2]), w, name="logits")
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            frozen = tf.graph_util.convert_variables_to_constants(sess, g.as_graph_def(), [logits.op.name])
    with open(path, "wb") as f:
        f.write(frozen.SerializeToString())
    return path


@pytest.mark.e2e
def test_frozen_graph_skips_randomisation_and_runs_the_rest(frozen_pb, tmp_path):
    out = tmp_path / "eval"
    result = run_main(evaluate.main, "--graph=%s" % frozen_pb, "--image=%s" % CHELSEA,
                      "--checks=randomization,class,deletion", "--steps=2", "--output_dir=%s" % out)
    assert result.returncode == 0, result.stderr
    line = "weight randomisation does not apply to tiny: its weights are constants (frozen graph)"
    assert result.stdout.splitlines()[0] == line
    assert sorted(os.listdir(str(out))) == ["class_sensitivity.csv", "deletion_insertion.csv", "report.md"]
    with open(str(out / "deletion_insertion.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == list(evaluation.MAP_METHODS + evaluation.BASELINE_METHODS)
    with open(str(out / "class_sensitivity.csv")) as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["top1"] != rows[0]["other"]  # the default low rank: the last of the 4 classes
    report = (out / "report.md").read_text()
    assert "Weight randomisation does not apply to tiny" in report and "## a." not in report


@pytest.mark.e2e
def test_frozen_graph_class_bounds_are_checked_once_the_model_is_known(frozen_pb, tmp_path):
    result = run_main(evaluate.main, "--graph=%s" % frozen_pb, "--image=%s" % CHELSEA, "--checks=class",
                      "--low_rank=5", "--output_dir=%s" % (tmp_path / "a"))
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == "error: --low_rank must be in 2..4 (tiny has 4 classes)"
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"chelsea.png": {"tabby": [[0, 0, 10, 10]]}}))
    result = run_main(evaluate.main, "--graph=%s" % frozen_pb, "--image=%s" % CHELSEA, "--boxes=%s" % boxes,
                      "--output_dir=%s" % (tmp_path / "b"))
    assert result.returncode == 2 and "this model's classes have no names" in result.stderr
    boxes.write_text(json.dumps({"chelsea.png": {"7": [[0, 0, 10, 10]]}}))
    result = run_main(evaluate.main, "--graph=%s" % frozen_pb, "--image=%s" % CHELSEA, "--boxes=%s" % boxes,
                      "--checks=deletion", "--output_dir=%s" % (tmp_path / "c"))
    assert result.returncode == 2 and "class 7 is out of range: tiny has classes 0..3" in result.stderr
    assert not any((tmp_path / d).exists() for d in "abc")


# ----------------------------------------------------------------------------- another zoo network

def save_random_checkpoint(name: str, prefix: str) -> None:
    """The zoo network ``name`` with its variables' own (seeded) random initial values, saved."""
    from ggcam.models.slim import build_network
    from ggcam.models.zoo import entry
    from ggcam.tf.compat import tf
    e = entry(name)
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        build_network(e, tf.placeholder(tf.float32, [None, e.input_size[0], e.input_size[1], 3]))
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            tf.train.Saver().save(sess, prefix, write_meta_graph=False, write_state=False)


@pytest.mark.extended  # a larger zoo graph, as in tests/test_zoo.py
def test_resnet_v1_50_from_a_random_checkpoint(tmp_path, monkeypatch):
    from ggcam.models.slim import SlimModel
    prefix = str(tmp_path / "resnet_v1_50.ckpt")
    save_random_checkpoint("resnet_v1_50", prefix)
    every_layer = SlimModel.randomization_layers
    seen = {}

    def first_and_last(self):
        """ResNet-50 has 54 layers with weights: the logits, the next two and the first layer
        keep the test quick and still go through its variables' names."""
        layers = every_layer(self)
        seen["count"] = len(layers)
        items = list(layers.items())
        return type(layers)(items[:3] + items[-1:])

    monkeypatch.setattr(SlimModel, "randomization_layers", first_and_last)
    out = tmp_path / "eval"
    result = run_main(evaluate.main, "--model=resnet_v1_50", "--checkpoint=%s" % prefix, "--image=%s" % CHELSEA,
                      "--checks=randomization", "--output_dir=%s" % out)
    assert result.returncode == 0, result.stderr
    assert seen["count"] == 54
    assert sorted(os.listdir(str(out))) == ["randomization.csv", "randomization.png", "randomization_strip.png",
                                            "report.md"]
    with open(str(out / "randomization.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [r["layer"] for r in rows if r["mode"] == "cascading" and r["method"] == "gradcam"] == \
        ["logits", "block4/unit_3/bottleneck_v1/conv3", "block4/unit_3/bottleneck_v1/conv2", "conv1"]
    assert all(np.isfinite(float(r["spearman"])) for r in rows)
    report = (out / "report.md").read_text()
    assert "Model: `resnet_v1_50`, Grad-CAM layer `resnet_v1_50/block4`" in report
    assert "## a. Model randomisation" in report and "## c." not in report
