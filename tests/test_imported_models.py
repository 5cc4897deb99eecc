"""Imported TF1 model files (ggcam/models/imported.py): the image-retraining script's frozen
graph from the nudity package, a SavedModel and a MetaGraph exported here from our MobileNet V1
checkpoint (their arrays must equal ``SlimModel``'s), small graphs fed from a queue or a
tf.data iterator, the safety check, and one-line errors. Each graph is built once per module."""
import os

import numpy as np
import pytest
from PIL import Image

from ggcam.tf import guided as guided_relu
from ggcam.engine.graph import GuidedGradCamGraph
from ggcam.models import detect, make_model
from ggcam.models.base import ModelError
from ggcam.models.frozen_graph import FrozenGraphModel
from ggcam.models.meta_graph import MetaGraphModel
from ggcam.models.saved_model import SavedModelModel
from ggcam.models.slim import SlimModel, build_network
from ggcam.models.zoo import default_checkpoint, entry
from ggcam.weights.registry import FetchError, example_path
from ggcam.targets import Target
from ggcam.tf.compat import tf

pytestmark = pytest.mark.graph

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABBY = 282  # ImageNet class 281 "tabby" in the 1001-way numbering (0 is background)
BASE_LOGITS = "MobilenetV1/Logits/SpatialSqueeze:0"
RETRAINED_LAYER = "MobilenetV1/MobilenetV1/Conv2d_13_pointwise/Relu6"
COMPARED = ("logits", "conv_activations", "conv_gradient", "guided_backprop", "guided_backprop_image", "cam")


def one_line(exc: Exception) -> str:
    text = str(exc)
    assert text and "\n" not in text, text
    return text


def forward_rectifiers(graph: tf.Graph):
    """Relu and Relu6 ops of the forward pass (the guided gradients' own Relu ops excluded)."""
    return [op for op in graph.get_operations() if op.type in ("Relu", "Relu6")
            and not any(part.startswith("gradients") for part in op.name.split("/"))]


def arrays(out) -> dict:
    """The raw.npz arrays of the first image of a run, float64; the CAM as Grad-CAM defines it
    (channel weights: the gradient's spatial mean; ReLU of the weighted sum of the maps)."""
    found = {k: np.asarray(out[k][0], np.float64) for k in COMPARED if k != "cam"}
    weights = found["conv_gradient"].mean(axis=(0, 1))
    found["cam"] = np.maximum(np.tensordot(found["conv_activations"], weights, axes=([2], [0])), 0.0)
    found["label"] = int(out["label"][0])
    return found


def assert_same_arrays(out, reference, name: str) -> None:
    """Correlation >= 0.999 for every array, logits within 1e-3, the same explained class."""
    a, b = arrays(out), arrays(reference)
    assert a["label"] == b["label"] == TABBY
    diff = np.abs(a["logits"] - b["logits"]).max()
    assert diff <= 1e-3, diff
    report = ["max |logit diff| %.2g" % diff]
    for key in COMPARED:
        assert a[key].shape == b[key].shape, key
        r = np.corrcoef(a[key].ravel(), b[key].ravel())[0, 1]
        report.append("%s 1-r=%.1e" % (key, 1 - r))
        assert r >= 0.999, (key, r)
    print("%s vs mobilenet_v1: %s" % (name, ", ".join(report)))


def run_once(model, photos, targets, **kwargs):
    with GuidedGradCamGraph(model, **kwargs) as graph:
        return graph.run(photos, targets)


# ----------------------------------------------------------------------------- shared inputs

@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    with Image.open(os.path.join(ROOT, "images", "chelsea.png")) as img:
        return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


@pytest.fixture(scope="module")
def slim_run(photo):
    """``--model=mobilenet_v1`` on chelsea, explained at tabby: the reference arrays."""
    if not os.path.exists(default_checkpoint("mobilenet_v1") + ".index"):
        pytest.skip("no MobileNet V1 checkpoint (make setup writes it)")
    return run_once(SlimModel("mobilenet_v1"), [photo], [Target.of(TABBY)])


@pytest.fixture(scope="module")
def retrained_file() -> str:
    try:
        return example_path("retrained_graph.pb")
    except FetchError as exc:
        pytest.skip("cannot fetch the retrained graph (nudity==0.2.3 from the package index): %s" % exc)


# ----------------------------------------------------------------------------- the retrained graph, as is

@pytest.fixture(scope="module")
def retrained_graph(retrained_file):
    graph = GuidedGradCamGraph(FrozenGraphModel(retrained_file))
    yield graph
    graph.close()


def test_retrained_graph_automatic_choices(retrained_graph):
    model = retrained_graph.model
    assert model.input_size == (224, 224) and model.channels == 3 and model.num_classes == 2
    assert model.input_range == (-1.0, 1.0) and model.max_batch == 1
    # Logits: the input of the Softmax final_result, the graph's output (pruned: not run).
    assert model.logits.op.name.endswith("final_training_ops/Wx_plus_b/add")
    assert model.default_layer == RETRAINED_LAYER and retrained_graph.layer_name == RETRAINED_LAYER
    assert model.layers()[RETRAINED_LAYER].shape.as_list() == [None, 7, 7, 1024]
    assert "%s  [7, 7, 1024]" % RETRAINED_LAYER in detect.describe(model.layers())
    notes = "\n".join(model.notes)
    for said in ("input: input:0 [224, 224, 3] (found automatically",
                 "logits: final_training_ops/Wx_plus_b/add:0, the input of Softmax final_result (found automatically",
                 "layer: %s [7, 7, 1024]" % RETRAINED_LAYER, "one image at a time"):
        assert said in notes
    assert model.randomization_layers() is None  # constants: randomisation does not apply
    assert model.class_names == ["class 0", "class 1"]


def test_retrained_graph_runs_a_batch_one_image_at_a_time(retrained_graph, photo):
    photos = [photo, photo[:300, :400], photo[::-1]]
    out = retrained_graph.run(photos)
    assert out["logits"].shape == (3, 2) and out["conv_activations"].shape == (3, 7, 7, 1024)
    assert out["guided_backprop"].shape == (3, 224, 224, 3)
    for key in ("logits", "conv_gradient", "guided_backprop"):
        assert np.all(np.isfinite(out[key])) and np.abs(out[key]).max() > 0, key
    alone = retrained_graph.run([photos[1]])
    np.testing.assert_allclose(out["logits"][1], alone["logits"][0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["guided_backprop"][1], alone["guided_backprop"][0], rtol=1e-4, atol=1e-7)


def test_retrained_graph_every_rectifier_is_guided(retrained_graph):
    relus = forward_rectifiers(retrained_graph.graph)
    assert len(relus) == 27  # MobileNet V1: one Relu6 after each of its 27 convolutions
    assert all(guided_relu.is_guided(op) for op in relus), [op.name for op in relus if not guided_relu.is_guided(op)]


def test_retrained_graph_at_its_base_logits_equals_mobilenet(retrained_file, photo, slim_run):
    model = FrozenGraphModel(retrained_file, logits_tensor=BASE_LOGITS, input_range=(-1.0, 1.0))
    out = run_once(model, [photo], [Target.of(TABBY)])
    assert model.num_classes == 1001 and not any(n.startswith("logits:") for n in model.notes)
    assert "preprocessing: RGB, [0, 1] scaled to [-1, 1] (as given;" in "\n".join(model.notes)
    assert_same_arrays(out, slim_run, "retrained_graph.pb at %s" % BASE_LOGITS)


# ----------------------------------------------------------------------------- our MobileNet as SavedModel, MetaGraph

@pytest.fixture(scope="module")
def exported(tmp_path_factory, slim_run):
    """Our MobileNet V1, restored from its checkpoint and written as a SavedModel (signature
    serving_default: image -> logits) and as a MetaGraph + checkpoint (input placeholder
    ``input``, logits behind an identity ``logits``)."""
    folder = tmp_path_factory.mktemp("exported")
    saved, prefix = str(folder / "saved_model"), str(folder / "mobilenet")
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, [None, 224, 224, 3], name="input")  # in [-1, 1]
        logits, _ = build_network(entry("mobilenet_v1"), images)
        logits = tf.identity(logits, name="logits")
        saver = tf.train.Saver()
        with tf.Session() as sess:
            saver.restore(sess, default_checkpoint("mobilenet_v1"))
            tf.saved_model.simple_save(sess, saved, inputs={"image": images}, outputs={"logits": logits})
            saver.save(sess, prefix)
    return saved, prefix


def test_saved_model_equals_mobilenet(exported, photo, slim_run):
    from tensorflow.core.protobuf import saved_model_pb2
    saved, _ = exported
    model = make_model(saved_model=saved)
    assert isinstance(model, SavedModelModel)
    out = run_once(model, [photo], [Target.of(TABBY)])
    assert model.num_classes == 1001 and model.default_layer == "MobilenetV1/Conv2d_13_pointwise/Relu6"
    notes = "\n".join(model.notes)
    assert "the signature's input 'image'" in notes and "logits: logits:0, the model's output" in notes
    assert_same_arrays(out, slim_run, "SavedModel")
    # Its own save and restore ops were there, off the explanation's path: not refused.
    with open(os.path.join(saved, "saved_model.pb"), "rb") as f:
        proto = saved_model_pb2.SavedModel.FromString(f.read())
    assert {"RestoreV2", "SaveV2"} <= {n.op for n in proto.meta_graphs[0].graph_def.node}
    assert not model.trust_model


def test_meta_graph_equals_mobilenet(exported, photo, slim_run):
    _, prefix = exported
    model = make_model(meta_graph=prefix + ".meta", checkpoint=prefix)
    assert isinstance(model, MetaGraphModel)
    with GuidedGradCamGraph(model) as graph:
        out = graph.run([photo], [Target.of(TABBY)])
        relus = forward_rectifiers(graph.graph)
        assert len(relus) == 27 and all(guided_relu.is_guided(op) for op in relus)
        layers = model.randomization_layers()
        assert list(layers)[0] == "MobilenetV1/Logits/Conv2d_1c_1x1" and list(layers)[-1] == "MobilenetV1/Conv2d_0"
    notes = "\n".join(model.notes)
    assert "input: input:0 [224, 224, 3] (found automatically" in notes
    # Two outputs, the logits and MobileNet's own Softmax of them: the logits are chosen.
    assert "logits: logits:0, the model's output" in notes
    assert_same_arrays(out, slim_run, "MetaGraph")


# ----------------------------------------------------------------------------- small graphs

def tiny_classifier(x: tf.Tensor, variables: bool, seed: int = 0) -> tf.Tensor:
    """conv 3x3 + Relu, conv 3x3 stride 2 + Relu6, global mean, dense: logits [N, 4]."""
    rng = np.random.RandomState(seed)
    make = (lambda v: tf.Variable(v, name="weights")) if variables else (lambda v: tf.constant(v, name="weights"))
    channels = x.shape.as_list()[-1]
    with tf.name_scope("conv1"):
        w = make(rng.randn(3, 3, channels, 8).astype(np.float32) * 0.5)
        h = tf.nn.relu(tf.nn.conv2d(x, w, [1, 1, 1, 1], "SAME") + 0.1, name="Relu")
    with tf.name_scope("conv2"):
        w = make(rng.randn(3, 3, 8, 8).astype(np.float32) * 0.3)
        h = tf.nn.relu6(tf.nn.conv2d(h, w, [1, 2, 2, 1], "SAME") - 0.1, name="Relu6")
    pooled = tf.reduce_mean(h, [1, 2], name="pool")
    with tf.name_scope("dense"):
        return tf.matmul(pooled, make(rng.randn(8, 4).astype(np.float32)), name="MatMul")


def write_frozen(path: str, build, as_text: bool = False) -> tf.Graph:
    """Build a graph with ``build()`` and write its GraphDef; returns the graph (py_funcs live as long)."""
    graph = tf.Graph()
    with graph.as_default():
        build()
    folder, name = os.path.split(path)
    tf.io.write_graph(graph.as_graph_def(), folder, name, as_text=as_text)
    return graph


def plain_tiny(channels: int = 3, clash: bool = False):
    def build():
        image = tf.placeholder(tf.float32, [None, 32, 32, channels], name="image")
        x = tf.multiply(image, 1.0, name="mul") if clash else image  # "mul" is also one of our own ops
        logits = tf.identity(tiny_classifier(x, variables=False), name="logits")
        tf.nn.softmax(logits, name="probabilities")
    return build


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    files = {}
    for name, build, as_text in (("tiny.pb", plain_tiny(clash=True), False), ("tiny.pbtxt", plain_tiny(), True),
                                 ("grey.pb", plain_tiny(channels=1), False)):
        files[name] = str(folder / name)
        write_frozen(files[name], build, as_text)
    return files


def reference_logits(path: str, feed_name: str, values: np.ndarray) -> np.ndarray:
    """The logits of a frozen graph run as is, ``values`` fed at ``feed_name``."""
    model = FrozenGraphModel(path)
    graph_def = model._load()
    with tf.Graph().as_default() as g:
        tf.import_graph_def(graph_def, name="")
        with tf.Session() as sess:
            return sess.run(g.get_tensor_by_name("logits:0"), {g.get_tensor_by_name(feed_name): values})


@pytest.fixture(scope="module")
def tiny_graph(tiny_files):
    graph = GuidedGradCamGraph(FrozenGraphModel(tiny_files["tiny.pb"], input_range=(0.0, 255.0),
                                                class_names=["a", "b", "c", "d"]))
    yield graph
    graph.close()


def test_tiny_frozen_graph(tiny_graph, tiny_files):
    model = tiny_graph.model
    # Its op "mul" clashes with one of ours: imported under a scope, names typed as in the file.
    assert model._prefix and model.logits.name == model._prefix + "logits:0"
    assert model.default_layer == "conv2/Relu6" and list(model.layers())[-1] == "conv2/Relu6"
    assert model.layer("conv1/Relu:0") is model.layers()["conv1/Relu"]
    assert not any(name.startswith(model._prefix) for name in model.layers())
    assert model.max_batch is None and model.class_names == ["a", "b", "c", "d"]
    assert "logits: logits:0, the input of Softmax probabilities" in "\n".join(model.notes)
    relus = forward_rectifiers(tiny_graph.graph)
    assert len(relus) == 2 and all(guided_relu.is_guided(op) for op in relus)
    images = np.random.RandomState(1).rand(2, 32, 32, 3).astype(np.float32)
    out = tiny_graph.run(list(images))
    np.testing.assert_allclose(out["logits"], reference_logits(tiny_files["tiny.pb"], "image:0", images * 255.0),
                               rtol=1e-5, atol=1e-4)
    assert out["conv_activations"].shape == (2, 16, 16, 8) and np.abs(out["guided_backprop"]).max() > 0


def test_text_graph_def_and_greyscale(tiny_files):
    images = np.random.RandomState(2).rand(1, 32, 32, 3).astype(np.float32)
    model = FrozenGraphModel(tiny_files["tiny.pbtxt"])
    out = run_once(model, list(images), None)
    assert model._prefix == ""  # nothing clashed: the file's names as they are
    np.testing.assert_allclose(out["logits"], reference_logits(tiny_files["tiny.pbtxt"], "image:0", images * 2 - 1),
                               rtol=1e-5, atol=1e-4)
    grey = FrozenGraphModel(tiny_files["grey.pb"])
    out = run_once(grey, list(images), None)
    assert grey.channels == 1 and "luminance" in "\n".join(grey.notes)
    assert out["guided_backprop"].shape == (1, 32, 32, 3)  # colour in, luminance inside the graph
    luminance = (images * np.array([0.299, 0.587, 0.114], np.float32)).sum(-1, keepdims=True)
    np.testing.assert_allclose(out["logits"], reference_logits(tiny_files["grey.pb"], "image:0", luminance * 2 - 1),
                               rtol=1e-5, atol=1e-4)
    gbp = out["guided_backprop"][0]
    np.testing.assert_allclose(gbp[..., 0] / 0.299, gbp[..., 1] / 0.587, rtol=1e-3, atol=1e-6)


def save_meta_graph(prefix: str, make_input) -> dict:
    """A tiny classifier with variables on ``make_input()``'s images, saved with a Saver; returns
    its logits for a random image fed at the input tensor (and that image, in [0, 1])."""
    with tf.Graph().as_default() as g:
        x = make_input()
        logits = tf.identity(tiny_classifier(x, variables=True, seed=3), name="logits")
        saver = tf.train.Saver()
        image = np.random.RandomState(4).rand(2, 32, 32, 3).astype(np.float32)  # the queue's batch
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            saver.save(sess, prefix)
            fed = {"to_float:0": image * 255.0, "IteratorGetNext:0": image * 2 - 1}[x.name]
            return {"image": image, "logits": sess.run(logits, {x: fed}), "input": x.name}


@pytest.mark.parametrize("source", ["queue", "dataset"])
def test_meta_graph_fed_after_a_queue_or_an_iterator(tmp_path, source):
    def from_queue():
        queue = tf.FIFOQueue(8, [tf.uint8], shapes=[[32, 32, 3]])
        return tf.cast(queue.dequeue_many(2), tf.float32, name="to_float")  # RGB 0..255

    def from_dataset():
        data = tf.data.Dataset.from_tensor_slices(np.zeros((4, 32, 32, 3), np.float32)).batch(2)
        return tf.data.make_one_shot_iterator(data).get_next()  # in [-1, 1]

    prefix = str(tmp_path / source)
    saved = save_meta_graph(prefix, from_queue if source == "queue" else from_dataset)
    model = MetaGraphModel(prefix + ".meta", checkpoint=prefix,
                           input_range=(0.0, 255.0) if source == "queue" else None)
    out = run_once(model, list(saved["image"]), None)
    notes = "\n".join(model.notes)
    op = "QueueDequeueManyV2" if source == "queue" else "IteratorGetNext"
    assert "input: %s [32, 32, 3], the first 4-D float tensor from the %s op" % (saved["input"], op) in notes
    np.testing.assert_allclose(out["logits"], saved["logits"], rtol=1e-5, atol=1e-4)
    assert np.abs(out["guided_backprop"]).max() > 0
    # The queue's dequeue_many(2) fixes the batch: run one by one, and said so.
    assert (model.max_batch == 1) == (source == "queue")


# ----------------------------------------------------------------------------- safety

@pytest.fixture(scope="module")
def unsafe_files(tmp_path_factory):
    """Frozen tiny classifiers whose logits go through a py_func, or are scaled by a number read
    from a file (the graphs are kept, so the py_func's Python function stays registered)."""
    folder = tmp_path_factory.mktemp("unsafe")
    number = folder / "scale.txt"
    number.write_text("1")

    def with_py_func():
        image = tf.placeholder(tf.float32, [None, 32, 32, 3], name="image")
        raw = tiny_classifier(image, variables=False)
        side = tf.py_func(lambda a: np.zeros_like(a), [raw], tf.float32, name="side_effect")
        tf.add(raw, tf.reshape(side, [-1, 4]), name="logits")

    def with_read_file():
        image = tf.placeholder(tf.float32, [None, 32, 32, 3], name="image")
        scale = tf.strings.to_number(tf.io.read_file(str(number), name="read_scale"))
        tf.multiply(tiny_classifier(image, variables=False), scale, name="logits")

    files, graphs = {}, []
    for name, build in (("py_func.pb", with_py_func), ("read_file.pb", with_read_file)):
        files[name] = str(folder / name)
        graphs.append(write_frozen(files[name], build))
    yield files
    del graphs


@pytest.mark.parametrize("name, op, op_type, does", [
    ("py_func.pb", "side_effect", "PyFunc", "runs Python"),
    ("read_file.pb", "read_scale", "ReadFile", "reads or writes files")])
def test_unsafe_ops_are_refused_unless_trusted(unsafe_files, name, op, op_type, does):
    with pytest.raises(ModelError) as err:
        GuidedGradCamGraph(FrozenGraphModel(unsafe_files[name]))
    text = one_line(err.value)
    assert "op %s (%s) %s" % (op, op_type, does) in text and "--trust_model" in text
    images = np.random.RandomState(5).rand(1, 32, 32, 3).astype(np.float32)
    out = run_once(FrozenGraphModel(unsafe_files[name], trust_model=True), list(images), None)
    assert out["logits"].shape == (1, 4) and np.abs(out["guided_backprop"]).max() > 0


def test_unknown_op_types(tiny_files, tmp_path):
    graph_def = FrozenGraphModel(tiny_files["tiny.pbtxt"])._load()
    # Off the path (an extra output nobody reads): imported without it, explained as usual.
    debris = graph_def.node.add()
    debris.name, debris.op = "debris", "NoSuchOp"
    debris.input.append("image")
    off = str(tmp_path / "off.pb")
    tf.io.write_graph(graph_def, str(tmp_path), "off.pb", as_text=False)
    assert run_once(FrozenGraphModel(off), [np.zeros((32, 32, 3), np.float32)], None)["logits"].shape == (1, 4)
    # On the path: one line, trusted or not.
    next(n for n in graph_def.node if n.name == "conv2/Relu6").op = "MyCustomRelu6"
    tf.io.write_graph(graph_def, str(tmp_path), "on.pb", as_text=False)
    with pytest.raises(ModelError) as err:
        FrozenGraphModel(str(tmp_path / "on.pb"), trust_model=True).prepare()
    assert "conv2/Relu6 has type MyCustomRelu6" in one_line(err.value)


# ----------------------------------------------------------------------------- errors

def refused(model, **kwargs) -> str:
    with pytest.raises(ModelError) as err:
        GuidedGradCamGraph(model, **kwargs)
    return one_line(err.value)


def test_one_line_errors(tiny_files, tmp_path):
    tiny = tiny_files["tiny.pbtxt"]
    assert "no frozen graph at" in refused(FrozenGraphModel(str(tmp_path / "missing.pb")))
    notes = tmp_path / "notes.pb"
    notes.write_text("these are my notes, not a model\n")
    assert "is not a GraphDef" in refused(FrozenGraphModel(str(notes)))
    text = refused(FrozenGraphModel(tiny, input_tensor="imag:0"))
    assert "no tensor named 'imag:0'" in text and "image:0" in text and "--input_tensor" in text
    text = refused(FrozenGraphModel(tiny, logits_tensor="logit"))
    assert "no tensor named 'logit'" in text and "logits" in text
    text = refused(FrozenGraphModel(tiny), layer="conv3/Relu")
    assert "no layer named 'conv3/Relu'" in text and "conv1/Relu" in text
    assert "not a 4-D feature map" in refused(FrozenGraphModel(tiny), layer="pool")
    assert "not between the input and the logits" in refused(FrozenGraphModel(tiny), layer="conv1/weights")
    assert "3 class names given for the 4 classes" in refused(FrozenGraphModel(tiny, class_names=["a", "b", "c"]))
    assert "must be [batch, classes]" in refused(FrozenGraphModel(tiny, logits_tensor="conv2/Relu6"))


def test_one_line_errors_of_saved_models_and_meta_graphs(exported, tmp_path):
    saved, prefix = exported
    text = refused(SavedModelModel(saved, signature="predict"))
    assert "no signature 'predict'" in text and "serving_default" in text
    assert "no SavedModel at" in refused(SavedModelModel(str(tmp_path / "nothing")))
    assert "--checkpoint" in refused(MetaGraphModel(prefix + ".meta"))
    assert "no checkpoint at" in refused(MetaGraphModel(prefix + ".meta", checkpoint=str(tmp_path / "none")))
    assert "--meta_graph" in refused(FrozenGraphModel(prefix + ".meta"))


@pytest.mark.parametrize("kind", ["resource", "partitioned"])
def test_meta_graph_variables_of_every_kind_are_restored(tmp_path, kind):
    """Resource variables and a variable split into parts are read from the checkpoint and fed
    (no Saver): the logits and input gradient equal those of the graph run as saved."""
    prefix = str(tmp_path / kind)
    image = np.random.RandomState(6).rand(2, 32, 32, 3).astype(np.float32)
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 32, 32, 3], name="image")
        rng = np.random.RandomState(7)
        if kind == "resource":
            w = tf.get_variable("conv/weights", initializer=rng.randn(3, 3, 3, 8).astype(np.float32), use_resource=True)
        else:
            w = tf.get_variable("conv/weights", [3, 3, 3, 8], partitioner=tf.fixed_size_partitioner(2, axis=3))
        h = tf.nn.relu(tf.nn.conv2d(x, tf.convert_to_tensor(w) if kind == "partitioned" else w, [1, 1, 1, 1], "SAME"),
                       name="conv/Relu")
        dense = tf.get_variable("dense/weights", initializer=rng.randn(8, 4).astype(np.float32),
                                use_resource=kind == "resource")
        logits = tf.identity(tf.matmul(tf.reduce_mean(h, [1, 2]), dense), name="logits")
        plain = tf.gradients(logits[:, 0], [x])[0]
        saver = tf.train.Saver()
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            saver.save(sess, prefix)
            expected, expected_grad = sess.run([logits, plain], {x: image * 2 - 1})
    model = MetaGraphModel(prefix + ".meta", checkpoint=prefix)
    with GuidedGradCamGraph(model, guided_relu6="plain") as graph:
        out = graph.run(list(image), [Target.of(0), Target.of(0)])
        assert not {op.type for op in graph.graph.get_operations()} & {"SaveV2", "RestoreV2"}
        layers = model.randomization_layers()
        assert list(layers) == ["dense", "conv"] and len(layers["conv"]) == (2 if kind == "partitioned" else 1)
    np.testing.assert_allclose(out["logits"], expected, rtol=1e-5, atol=1e-4)
    # d/d[0, 1] image = 2 * d/d[-1, 1] input: the chain rule through the input range
    np.testing.assert_allclose(out["guided_backprop"], 2 * expected_grad, rtol=1e-4, atol=1e-5)


def test_a_tensorflow_2_saved_model_is_refused_in_one_line_that_says_why(tmp_path):
    """TF 2's tf.saved_model.save keys the weights by object path ("<path>/.ATTRIBUTES/
    VARIABLE_VALUE", with the object graph under _CHECKPOINTABLE_OBJECT_GRAPH), not by the
    variables' names; such a checkpoint is written here in that layout over a TF1 SavedModel."""
    saved = str(tmp_path / "saved")
    with tf.Graph().as_default():
        image = tf.placeholder(tf.float32, [None, 8, 8, 3], name="image")
        w = tf.Variable(np.ones((3, 2), np.float32), name="dense_weights")
        logits = tf.matmul(tf.reduce_mean(tf.nn.relu(image), [1, 2]), w, name="logits")
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            tf.saved_model.simple_save(session, saved, {"image": image}, {"logits": logits})
            graph_key = tf.Variable(b"", name="object_graph")
            session.run(graph_key.initializer)
            tf.train.Saver({"_CHECKPOINTABLE_OBJECT_GRAPH": graph_key,
                            "_layers/0/kernel/.ATTRIBUTES/VARIABLE_VALUE": w}).save(
                session, os.path.join(saved, "variables", "variables"), write_meta_graph=False, write_state=False)
    with pytest.raises(ModelError) as caught:
        GuidedGradCamGraph(SavedModelModel(saved, trust_model=True))
    message = str(caught.value)
    assert "is a TensorFlow 2 SavedModel" in message and "_layers/0/kernel/.ATTRIBUTES/VARIABLE_VALUE" in message
    assert "lacks" not in message and "\n" not in message


def test_a_truncated_checkpoint_says_what_is_wrong_on_either_runtime(tmp_path):
    """TF 2's checkpoint reader raises IndexError for a short data file: still one line naming
    the checkpoint and the reason."""
    prefix = str(tmp_path / "model")
    with tf.Graph().as_default():
        image = tf.placeholder(tf.float32, [None, 8, 8, 3], name="image")
        w = tf.Variable(np.ones((3, 2), np.float32), name="dense_weights")
        tf.matmul(tf.reduce_mean(tf.nn.relu(image), [1, 2]), w, name="logits")
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            tf.train.Saver().save(session, prefix)
    data = prefix + ".data-00000-of-00001"
    with open(data, "rb") as f:
        head = f.read(20)
    with open(data, "wb") as f:
        f.write(head)
    with pytest.raises(ModelError) as caught:
        GuidedGradCamGraph(MetaGraphModel(prefix + ".meta", checkpoint=prefix, trust_model=True))
    message = str(caught.value)
    assert message.startswith("cannot restore %s: " % prefix) and "\n" not in message, message
    assert len(message) > len("cannot restore %s: " % prefix) + 5  # the reason, not an empty line
