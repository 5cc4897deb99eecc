"""inference.py with every kind of model: the model flags, automatic choices, --list_layers,
--layer and their errors. Runs in this process; the real model files come from registry
packages (skipped with the reason when they cannot be fetched)."""
import os

import numpy as np
import pytest
from PIL import Image

import inference
from conftest import ROOT, run_main
from ggcam.weights import registry

pytestmark = pytest.mark.e2e

CHELSEA = os.path.join(ROOT, "images", "chelsea.png")
COFFEE = os.path.join(ROOT, "images", "coffee.png")
EMOTIONS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def example(name: str) -> str:
    try:
        return registry.example_path(name)
    except registry.FetchError as exc:
        pytest.skip("%s cannot be fetched from the package registry: %s" % (name, exc))


def one_line_error(result, code, *fragments):
    assert result.returncode == code, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def retrained():
    return example("retrained_graph.pb")


def test_frozen_graph_as_is_with_no_tensor_flags(retrained, tmp_path):
    out = tmp_path / "out"
    result = run_main(inference.main, "--graph=%s" % retrained, "--image=%s" % CHELSEA, "--output_dir=%s" % out,
                      "--save_raw", "--top_k=2")
    assert result.returncode == 0, result
    notes = [l for l in result.stderr.splitlines() if l.startswith("note: ")]
    assert any("input:0" in l for l in notes) and any("final_result" in l for l in notes), notes
    assert any("one image at a time" in l for l in notes), notes
    raw = np.load(str(out / "raw.npz"))
    assert raw["logits"].shape == (2,) and raw["conv_activations"].shape == (7, 7, 1024)
    assert raw["guided_backprop"].shape == (224, 224, 3) and str(raw["layer"]).endswith("Conv2d_13_pointwise/Relu6")
    assert "class 0" in result.stdout and "class 1" in result.stdout       # no names: shown by index


def test_fixed_batch_graph_in_a_folder_run_says_so_once(retrained, tmp_path):
    out = tmp_path / "out"
    result = run_main(inference.main, "--graph=%s" % retrained, "--image=%s" % CHELSEA, "--image=%s" % COFFEE,
                      "--top_k_targets=2", "--output_dir=%s" % out, "--quiet", "--batch_size=4")
    assert result.returncode == 0, result
    assert sum("one image at a time" in l for l in result.stderr.splitlines()) == 1
    assert len([d for d in os.listdir(str(out)) if os.path.isdir(str(out / d))]) == 4


def test_list_layers_marks_the_grad_cam_layer(retrained):
    result = run_main(inference.main, "--graph=%s" % retrained, "--list_layers")
    assert result.returncode == 0, result
    lines = result.stdout.splitlines()
    marked = [l for l in lines if l.startswith("* ")]
    assert len(marked) == 1 and "Conv2d_13_pointwise/Relu6" in marked[0] and "[7, 7, 1024]" in marked[0]
    assert sum("Relu6" in l for l in lines) == 27


@pytest.mark.graph
def test_zoo_model_list_layers_and_an_earlier_layer(shared_graphs, tmp_path):
    result = run_main(inference.main, "--list_layers")
    assert result.returncode == 0
    assert "* Conv2d_13_pointwise  [7, 7, 1024]" in result.stdout
    assert "  Conv2d_11_pointwise  [14, 14, 512]" in result.stdout
    out = tmp_path / "out"
    result = run_main(inference.main, "--image=%s" % CHELSEA, "--layer=Conv2d_11_pointwise", "--save_raw",
                      "--output_dir=%s" % out, "--top_k=0")
    assert result.returncode == 0, result
    raw = np.load(str(out / "raw.npz"))
    assert raw["cam"].shape == (14, 14) and str(raw["layer"]) == "Conv2d_11_pointwise"


def test_keras_file_greyscale_with_class_names(tmp_path):
    model = example("emotion_model.hdf5")
    names = tmp_path / "emotions.txt"
    names.write_text("\n".join(EMOTIONS) + "\n")
    import matplotlib
    photo = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    face = tmp_path / "face.png"
    with Image.open(photo) as img:
        img.convert("RGB").crop((150, 130, 370, 350)).save(str(face))
    out = tmp_path / "out"
    result = run_main(inference.main, "--keras=%s" % model, "--labels=%s" % names, "--image=%s" % face,
                      "--output_dir=%s" % out, "--save_raw", "--label=happy")
    assert result.returncode == 0, result
    raw = np.load(str(out / "raw.npz"))
    assert raw["logits"].shape == (7,) and int(raw["label"]) == EMOTIONS.index("happy")
    assert raw["guided_backprop"].shape == (64, 64, 3) and raw["cam"].shape == (4, 4)
    overlay = np.asarray(Image.open(str(out / "overlay.png")))
    assert overlay.shape == (220, 220, 3)                                    # the colour photo's size
    assert "explained class 3 (happy)" in result.stdout


@pytest.mark.parametrize("args, code, fragment", [
    (["--graph=a.pb", "--keras=b.h5"], 2, "give one model: --graph, --keras"),
    (["--input_tensor=x:0"], 2, "--input_tensor is for model files"),
    (["--meta_graph=%s" % CHELSEA], 2, "--meta_graph needs --checkpoint"),
    (["--graph=/no/such.pb"], 2, "--graph /no/such.pb: no such file"),
    (["--graph=%s" % CHELSEA, "--input_range=1,0"], 2, "LO must be below HI"),
    (["--graph=%s" % CHELSEA, "--input_range=a"], 2, "--input_range must be LO,HI"),
    (["--graph=%s" % CHELSEA, "--label=cat"], 2, "no names: give an index, or --labels=FILE"),
    (["--model=resnet"], 2, "invalid choice"),
    (["--graph=%s" % CHELSEA], 1, "not a"),
])
def test_model_flag_errors(tmp_path, args, code, fragment):
    out = tmp_path / "out"
    result = run_main(inference.main, "--image=%s" % CHELSEA, "--output_dir=%s" % out, *args)
    one_line_error(result, code, fragment)
    assert not out.exists()


@pytest.mark.graph
def test_unknown_layer_lists_close_names(shared_graphs, tmp_path):
    result = run_main(inference.main, "--image=%s" % CHELSEA, "--layer=Conv2d_11_pointwis",
                      "--output_dir=%s" % (tmp_path / "out"))
    one_line_error(result, 1, "no layer named 'Conv2d_11_pointwis'", "did you mean: Conv2d_11_pointwise")
    assert not (tmp_path / "out").exists()


@pytest.mark.graph
def test_zoo_model_without_its_checkpoint_says_how_to_fetch_it(tmp_path):
    prefix = str(tmp_path / "vgg_16.ckpt")
    result = run_main(inference.main, "--model=vgg_16", "--checkpoint=%s" % prefix, "--image=%s" % CHELSEA,
                      "--output_dir=%s" % (tmp_path / "out"))
    one_line_error(result, 1, "no checkpoint at %s" % prefix, "python weights.py --model=vgg_16 --source=official")


@pytest.mark.unit
def test_help_lists_the_model_flags():
    result = run_main(inference.main, "--help")
    assert result.returncode == 0
    for flag in ("--model", "--graph", "--saved_model", "--signature", "--keras", "--meta_graph", "--input_tensor",
                 "--logits_tensor", "--input_range", "--labels", "--trust_model", "--layer", "--list_layers"):
        assert flag in result.stdout, flag


@pytest.fixture(scope="module")
def meta_graph(tmp_path_factory):
    """Our MobileNet V1 saved by tf.train.Saver (model.meta + checkpoint) under other names:
    input placeholder ``input`` (in [-1, 1]), logits behind an identity ``logits``."""
    from ggcam.models.slim import build_network
    from ggcam.models.zoo import default_checkpoint, entry
    from ggcam.tf.compat import tf
    prefix = str(tmp_path_factory.mktemp("meta") / "model.ckpt")
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, [None, 224, 224, 3], name="input")
        logits, _ = build_network(entry("mobilenet_v1"), images)
        tf.identity(logits, name="logits")
        saver = tf.train.Saver()
        with tf.Session() as sess:
            saver.restore(sess, default_checkpoint("mobilenet_v1"))
            saver.save(sess, prefix)
    return prefix


def test_meta_graph_from_the_command_line_and_the_notebook(meta_graph, shared_graphs, tmp_path):
    from ggcam import Explainer
    result = run_main(inference.main, "--meta_graph=%s.meta" % meta_graph, "--checkpoint=%s" % meta_graph,
                      "--list_layers")
    assert result.returncode == 0, result
    assert "* MobilenetV1/Conv2d_13_pointwise/Relu6  [7, 7, 1024]" in result.stdout
    out = tmp_path / "out"
    result = run_main(inference.main, "--meta_graph=%s.meta" % meta_graph, "--checkpoint=%s" % meta_graph,
                      "--image=%s" % CHELSEA, "--save_raw", "--output_dir=%s" % out, "--top_k=0", "--label=282")
    assert result.returncode == 0, result
    raw = np.load(str(out / "raw.npz"))
    with Explainer(meta_graph=meta_graph + ".meta", checkpoint=meta_graph) as ex:
        (mine,) = ex.explain(CHELSEA, labels=282)
    with Explainer() as ex:                                               # --model=mobilenet_v1
        (zoo,) = ex.explain(CHELSEA, labels=282)
    for name, value in zoo.raw().items():
        if value.dtype.kind != "f":
            continue
        assert np.abs(raw[name] - value).max() <= 1e-3 * max(1.0, np.abs(value).max()), name
        assert np.corrcoef(mine.raw()[name].ravel(), value.ravel())[0, 1] >= 0.999, name
    assert str(raw["model"]) == "model.ckpt" and str(raw["layer"]) == "MobilenetV1/Conv2d_13_pointwise/Relu6"
