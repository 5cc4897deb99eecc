"""evaluate.py with the real weights: restoring weights, known-answer comparisons, CLI."""
import csv
import json
import os

import numpy as np
import pytest

import evaluate
from conftest import ROOT, run_main

CHELSEA = os.path.join(ROOT, "images", "chelsea.png")


@pytest.fixture(scope="module")
def small_graph(graph):
    """The session's shared graph; tests that randomise weights restore them in all cases."""
    return graph


@pytest.fixture(scope="module")
def inputs(small_graph):
    import image_io
    return np.stack([small_graph.resize(image_io.load_image(CHELSEA).astype(np.float32) / 255.0)])


def test_maps_compared_with_themselves_score_one(small_graph, inputs):
    maps = evaluate.maps_224(small_graph.run(inputs, photo_gradient=False), 0)
    for method, (rho, s) in evaluate.compare(maps, maps).items():
        assert rho == pytest.approx(1.0) and s == pytest.approx(1.0), method


def test_randomization_restores_the_trained_weights(small_graph, inputs):
    before = small_graph.run(inputs, photo_gradient=False)
    randomizer = evaluate.WeightRandomizer(small_graph, seed=1)
    try:
        randomizer.randomize("Logits")
        randomizer.randomize("Conv2d_5_pointwise")
        changed = small_graph.run(inputs, [int(before["label"][0])], photo_gradient=False)
        assert not np.array_equal(changed["logits"], before["logits"])
    finally:
        randomizer.restore()  # the graph is shared with later tests
    after = small_graph.run(inputs, photo_gradient=False)
    np.testing.assert_array_equal(after["logits"], before["logits"])
    np.testing.assert_array_equal(after["guided_backprop"], before["guided_backprop"])


def test_randomization_rows_and_restoration(small_graph, inputs):
    labels = small_graph.run(inputs, photo_gradient=False)["label"]
    logits = small_graph.logits(inputs)
    rows, strip = evaluate.randomization(small_graph, inputs, labels, seed=0)
    np.testing.assert_array_equal(small_graph.logits(inputs), logits)
    assert len(rows) == 2 * 28 * 3
    assert set(strip) == {"original"} | set(evaluate.STRIP_LAYERS)
    first = {r["method"]: r["spearman"] for r in rows if r["mode"] == "cascading" and r["depth"] == 1}
    # randomising the logits layer changes the class evidence (Grad-CAM) far more than guided backprop
    assert first["guided_backprop"] > 0.9 > first["gradcam"]


def test_class_sensitivity_rows(small_graph, inputs):
    rows = evaluate.class_sensitivity(small_graph, inputs, low_rank=500)
    assert [r["method"] for r in rows] == list(evaluate.MAP_METHODS)
    assert rows[0]["top1"] == 286 and rows[0]["other"] != 286


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
    assert "## c. Deletion and insertion" in report and "## d. Pointing game" in report


def test_cli_bad_boxes_are_a_usage_error(tmp_path):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"chelsea.png": {"282": [[10, 10, 5]]}}))
    result = run_main(evaluate.main, "--image=%s" % CHELSEA, "--boxes=%s" % boxes,
                      "--output_dir=%s" % (tmp_path / "e"))
    assert result.returncode == 2
    assert result.stderr.startswith("error: --boxes") and result.stderr.count("\n") == 1
    assert not (tmp_path / "e").exists()
