"""The notebook API: Explainer and Explanation, and the example notebook."""
import io
import os

import numpy as np
import pytest
from PIL import Image

import gradcam as gc
from ggcam.io import decoding
from ggcam import labels as labels_mod
from conftest import ROOT
from ggcam.targets import Target
from ggcam.explanation import OUTPUT_FILES, RAW_FILE

pytestmark = pytest.mark.graph

CHELSEA = os.path.join(ROOT, "images", "chelsea.png")
COFFEE = os.path.join(ROOT, "images", "coffee.png")
RAW_NAMES = ["cam", "conv_activations", "conv_gradient", "feeds", "guided_backprop", "label", "layer", "logits", "model",
             "output_function", "preprocessing"]


@pytest.fixture(scope="module")
def ex(shared_graphs):
    from ggcam import Explainer
    with Explainer(batch_size=3) as e:
        yield e


def test_paths_pil_images_and_arrays_give_the_same_result(ex):
    rgb = np.asarray(Image.open(CHELSEA).convert("RGB"))
    results = ex.explain([CHELSEA, Image.open(CHELSEA), rgb, rgb.astype(np.float32) / 255.0], labels="tabby cat")
    assert [r.label for r in results] == [282] * 4
    for r in results[1:]:
        np.testing.assert_allclose(r.logits, results[0].logits, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(r.guided_backprop_image, results[0].guided_backprop_image,
                                   rtol=1e-4, atol=1e-6)
    assert results[0].source == CHELSEA and results[2].source is None


def test_single_image_default_target_and_repr(ex):
    (r,) = ex.explain(COFFEE)
    assert r.label == 968 and r.name == "espresso" and r.requested == Target.best()
    assert r.probability > 0.9
    assert "espresso" in repr(r)
    assert Image.open(io.BytesIO(r._repr_png_())).format == "PNG"


def test_top_k_and_per_image_labels(ex):
    results = ex.explain([CHELSEA, COFFEE], top_k=3)
    assert [r.requested for r in results] == [Target.best(1), Target.best(2), Target.best(3)] * 2
    assert [r.label for r in results[:3]] == [i for i, _, _, _ in results[0].top(3)]
    results = ex.explain([CHELSEA, COFFEE], labels=[[282, "Egyptian cat"], 968])
    assert [r.label for r in results] == [282, 286, 968]


def test_overlay_panel_and_pictures_match_gradcam(ex):
    (r,) = ex.explain(CHELSEA)
    h, w = r.photo.shape[:2]
    assert isinstance(r.overlay(), Image.Image) and r.overlay().size == (w, h)
    assert isinstance(r.panel(), Image.Image) and r.panel().size[1] == 224 + 12 + 28
    cam, gbp, ggc = gc.gradcam(r.conv_activations, r.conv_gradient, r.guided_backprop_image)
    np.testing.assert_array_equal(r.pictures()["gradcam"], gc.heatmap(cam))
    np.testing.assert_array_equal(r.pictures()["guided_gradcam"], gc.to_uint8(ggc))
    (fresh,) = ex.explain(CHELSEA)  # pictures made one at a time equal the full set
    np.testing.assert_array_equal(fresh.picture("panel"), r.pictures()["panel"])
    with pytest.raises(KeyError):
        fresh.picture("bogus")


def test_save_writes_every_file_with_the_raw_names(ex, tmp_path):
    (r,) = ex.explain(CHELSEA, labels=282)
    paths = r.save(str(tmp_path / "out"), save_raw=True)
    assert sorted(os.listdir(str(tmp_path / "out"))) == sorted(list(OUTPUT_FILES) + [RAW_FILE])
    assert len(paths) == len(OUTPUT_FILES) + 1
    raw = np.load(str(tmp_path / "out" / RAW_FILE))
    assert sorted(raw.files) == RAW_NAMES
    assert int(raw["label"]) == 282
    np.testing.assert_array_equal(raw["cam"], r.cam)


def test_bad_inputs_raise_clear_errors(ex):
    with pytest.raises(decoding.ImageError, match="image not found"):
        ex.explain("/nonexistent/cat.jpg")
    with pytest.raises(decoding.ImageError, match=r"in \[0, 1\]"):
        ex.explain(np.full((20, 20, 3), 3.0))
    with pytest.raises(labels_mod.LabelError, match="matches 2 classes"):
        ex.explain(CHELSEA, labels="crane")
    with pytest.raises(ValueError, match="2 label entries for 1 images"):
        ex.explain([CHELSEA], labels=[1, 2])


def test_many_calls_do_not_grow_the_graph(ex):
    n_ops = len(ex.graph.graph.get_operations())
    for label in (1, 2, 3):
        ex.explain(np.zeros((30, 40, 3), np.uint8), labels=label)
    assert len(ex.graph.graph.get_operations()) == n_ops


@pytest.mark.e2e
def test_example_notebook_runs(tmp_path):
    import nbclient
    import nbformat
    path = os.path.join(ROOT, "examples", "guided_gradcam.ipynb")
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": os.path.dirname(path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 5
    text = "".join(o.get("text", "") for o in outputs)
    assert "tabby" in text and "espresso" in text
