"""A model file cannot act (ggcam/models/safety.py, ggcam/engine/isolation.py, the path-only import).

Each test crafts a model file the way an attacker would, one per way that got through before
the allowlist: ops that touch files but were on no list, a graph held in a string, a gradient
function in the library, attributes a caller hands a function body, ops behind the input of a
MetaGraph or SavedModel, Keras layers that carry raw ops, a file that crashes TensorFlow and a
graph that loops forever. Run as a user would (``inference.main``, no --trust_model), each is
refused in one line with exit status 1: nothing is written, no output folder appears, and
nothing of the secret file reaches a message. With --trust_model the same file runs as before.
"""
import json
import os

import numpy as np
import pytest

import inference
from conftest import run_main
from ggcam.engine import isolation
from ggcam.engine.graph import GuidedGradCamGraph
from ggcam.models import safety
from ggcam.models.base import ModelError
from ggcam.models.frozen_graph import FrozenGraphModel
from ggcam.models.meta_graph import MetaGraphModel
from ggcam.models.keras_file import KerasModel, unsafe_object
from ggcam.tf.compat import tf

pytestmark = pytest.mark.e2e

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTO = os.path.join(ROOT, "images", "chelsea.png")
SECRET = "4711"  # the secret file's content: must never show up in logits or messages


def tiny_logits(x: tf.Tensor, variables: bool = False) -> tf.Tensor:
    """conv 3x3 + Relu, global mean, dense: logits [N, 4] (fixed random weights)."""
    rng = np.random.RandomState(0)
    make = tf.Variable if variables else tf.constant
    w = make(rng.randn(3, 3, 3, 4).astype(np.float32), name="conv_weights")
    h = tf.nn.relu(tf.nn.conv2d(x, w, [1, 1, 1, 1], "SAME"), name="conv")
    pooled = tf.reduce_mean(h, [1, 2], name="pool")
    return tf.matmul(pooled, make(rng.randn(4, 4).astype(np.float32), name="dense_weights"), name="raw_logits")


def write_graph(path: str, build) -> None:
    with tf.Graph().as_default() as g:
        build()
        tf.io.write_graph(g.as_graph_def(), os.path.dirname(path), os.path.basename(path), as_text=False)


@pytest.fixture
def secret(tmp_path) -> str:
    path = tmp_path / "secret.txt"
    path.write_text(SECRET + "\n")
    return str(path)


def cli(tmp_path, *flags: str):
    out = tmp_path / "out"
    run = run_main(inference.main, "--image=" + PHOTO, "--output_dir=" + str(out), *flags)
    return run, out


def assert_refused(tmp_path, flags, says: str, written: str = "") -> str:
    """The CLI refuses the model in one error line, exit 1, with no output folder; ``written``
    (a path the model would write) does not exist; the secret is in no message."""
    run, out = cli(tmp_path, *flags)
    lines = [l for l in run.stderr.strip().splitlines() if not l.startswith("note: ")]  # choices said before a run
    assert run.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), run
    assert run.stderr.strip().splitlines()[-1] == lines[0]
    assert says in lines[0], lines[0]
    assert SECRET not in run.stdout + run.stderr
    assert not out.exists()
    assert not written or not os.path.exists(written)
    return lines[0]


def assert_runs_trusted(tmp_path, flags) -> None:
    run, out = cli(tmp_path, "--trust_model", *flags)
    assert run.returncode == 0, run
    assert (out / "gradcam.png").exists()


# ----------------------------------------------------------------------------- 1. ops on no denylist

@pytest.mark.smoke
def test_a_dataset_op_that_writes_records_is_refused(tmp_path):
    model, written = str(tmp_path / "records.pb"), str(tmp_path / "written.tfrecord")

    def build():
        image = tf.placeholder(tf.float32, [None, 16, 16, 3], name="image")
        records = tf.data.Dataset.from_tensors(tf.constant("stolen"))
        write = tf.data.experimental.TFRecordWriter(written).write(records)
        with tf.control_dependencies([write]):
            tf.identity(tiny_logits(image), name="logits")

    write_graph(model, build)
    text = assert_refused(tmp_path, ["--graph=" + model], "(DatasetToTFRecord) reads or writes files", written)
    assert "--trust_model" in text
    assert_runs_trusted(tmp_path, ["--graph=" + model])
    assert os.path.exists(written)  # trusted: it does what it was written to do


def test_a_candidate_sampler_reading_a_file_into_the_logits_is_refused(tmp_path, secret):
    model = str(tmp_path / "sampler.pb")

    def build():
        image = tf.placeholder(tf.float32, [None, 16, 16, 3], name="image")
        raw = tiny_logits(image)
        classes = tf.cast(tf.zeros_like(raw[:, :1]), tf.int64)
        _, expected, _ = tf.nn.fixed_unigram_candidate_sampler(classes, 1, 1, True, 1, vocab_file=secret)
        tf.add(raw, expected, name="logits")  # the file's number, divided by itself: 1 (or more if trusted)

    write_graph(model, build)
    assert_refused(tmp_path, ["--graph=" + model], "(FixedUnigramCandidateSampler)")


def test_a_graph_held_in_a_string_is_refused(tmp_path):
    model, written = str(tmp_path / "in_a_string.pb"), str(tmp_path / "from_the_string.txt")
    with tf.Graph().as_default():
        def act(value):
            with tf.control_dependencies([tf.io.write_file(written, "the string ran")]):
                return tf.identity(value)
        dataset = tf.data.Dataset.from_tensors(0.0).map(act)
        stateful = ({"allow_stateful": True} if "allow_stateful" in {a.name for a in
                                                                      safety.registered_ops()["DatasetToGraph"].attr}
                    else {"stateful_whitelist": ["WriteFile"]})  # TF 2 / TF 1.15
        serialized = tf.raw_ops.DatasetToGraph(input_dataset=dataset._variant_tensor, **stateful)
        with tf.Session() as session:
            graph_bytes = session.run(serialized)

    def build():
        image = tf.placeholder(tf.float32, [None, 16, 16, 3], name="image")
        dataset = tf.raw_ops.DatasetFromGraph(graph_def=tf.constant(graph_bytes))
        (value,) = tf.raw_ops.DatasetToSingleElement(dataset=dataset, output_types=[tf.float32], output_shapes=[[]])
        tf.add(tiny_logits(image), value, name="logits")

    write_graph(model, build)
    assert_refused(tmp_path, ["--graph=" + model], "(DatasetFromGraph) runs a graph held in a string", written)
    assert not os.path.exists(written)


# ----------------------------------------------------------------------------- 2. functions

def test_a_gradient_function_that_writes_a_file_is_refused(tmp_path):
    from tensorflow.python.framework import function
    model, written = str(tmp_path / "gradient.pb"), str(tmp_path / "gradient_ran.txt")

    def build():
        @function.Defun(tf.float32, tf.float32)
        def writing_gradient(x, dy):
            with tf.control_dependencies([tf.io.write_file(written, "the gradient ran")]):
                return tf.identity(dy)

        @function.Defun(tf.float32, grad_func=writing_gradient)
        def passthrough(x):
            return tf.identity(x)

        image = tf.placeholder(tf.float32, [None, 16, 16, 3], name="image")
        out = passthrough(tiny_logits(image))
        tf.reshape(out, [-1, 4], name="logits")  # a function's output has no static shape

    write_graph(model, build)
    assert_refused(tmp_path, ["--graph=" + model], "writing_gradient", written)


def test_a_print_to_a_file_given_by_the_caller_is_refused(tmp_path):
    """The function body's PrintV2 takes its output stream from an attribute the call sets."""
    from tensorflow.python.framework import function
    model, written = str(tmp_path / "caller_attr.pb"), str(tmp_path / "printed.txt")

    def build():
        @function.Defun(tf.float32)
        def logged(x):
            with tf.control_dependencies([tf.print("logged", output_stream="file://" + written)]):
                return tf.identity(x)

        image = tf.placeholder(tf.float32, [None, 16, 16, 3], name="image")
        out = logged(tiny_logits(image))
        tf.reshape(out, [-1, 4], name="logits")  # a function's output has no static shape

    with tf.Graph().as_default() as g:
        build()
        graph_def = g.as_graph_def()
    body = graph_def.library.function[0]
    stream = body.signature.attr.add()
    stream.name, stream.type = "stream", "string"
    printer = next(n for n in body.node_def if n.op == "PrintV2")
    printer.attr["output_stream"].Clear()
    printer.attr["output_stream"].placeholder = "stream"
    call = next(n for n in graph_def.node if n.op == body.signature.name)
    call.attr["stream"].s = ("file://" + written).encode()
    tf.io.write_graph(graph_def, str(tmp_path), "caller_attr.pb", as_text=False)
    assert_refused(tmp_path, ["--graph=" + model], "(PrintV2) prints", written)


# ----------------------------------------------------------------------------- 3. behind the input

def save_meta_graph(prefix: str, build) -> None:
    with tf.Graph().as_default():
        build()
        saver = tf.train.Saver()
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            saver.save(session, prefix)


def test_ops_behind_the_input_of_a_meta_graph_do_not_run(tmp_path):
    prefix, written = str(tmp_path / "behind"), str(tmp_path / "behind_the_input.txt")

    def build():
        with tf.control_dependencies([tf.io.write_file(written, "behind the input")]):
            image = tf.placeholder(tf.float32, [None, 16, 16, 3], name="image")
        raw = tiny_logits(image, variables=True)
        with tf.control_dependencies([image.op]):  # running the logits would run the placeholder op
            tf.identity(raw, name="logits")

    save_meta_graph(prefix, build)
    flags = ["--meta_graph=" + prefix + ".meta", "--checkpoint=" + prefix]
    assert_refused(tmp_path, flags, "depends on the input op image other than through the image", written)
    with tf.Graph().as_default():  # and as a SavedModel
        build()
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            graph = tf.get_default_graph()
            tf.saved_model.simple_save(session, str(tmp_path / "saved"), {"image": graph.get_tensor_by_name("image:0")},
                                       {"logits": graph.get_tensor_by_name("logits:0")})
    assert_refused(tmp_path, ["--saved_model=" + str(tmp_path / "saved")], "a control input", written)


def test_another_output_of_the_input_op_is_refused(tmp_path, secret):
    """Fed from an iterator: the image is its output 0, its output 1 a number read from a file."""
    prefix = str(tmp_path / "iterator")

    def build():
        images = tf.data.Dataset.from_tensors(np.zeros((1, 16, 16, 3), np.float32))
        numbers = tf.data.TextLineDataset(secret).map(tf.strings.to_number).batch(1)
        image, number = tf.data.make_one_shot_iterator(tf.data.Dataset.zip((images, numbers))).get_next()
        tf.add(tiny_logits(image, variables=True), number[:, None], name="logits")

    save_meta_graph(prefix, build)
    assert_refused(tmp_path, ["--meta_graph=" + prefix + ".meta", "--checkpoint=" + prefix],
                   "its output IteratorGetNext:1")


# ----------------------------------------------------------------------------- 4. Keras

def keras_file(path: str, raw_ops, photo=None):
    """A small functional model whose output goes through ``raw_ops(dense)`` (Keras wraps them
    in TensorFlowOpLayers), saved to ``path``. With ``photo`` ([16, 16, 3] in [0, 1], fed as
    is): its logits and the plain gradient of the best logit w.r.t. the photo, computed by
    Keras and tf.gradients in the session that built it."""
    with tf.Graph().as_default(), tf.Session() as session:
        tf.keras.backend.set_session(session)
        x = tf.keras.layers.Input((16, 16, 3))
        h = tf.keras.layers.Conv2D(4, 3, activation="relu", name="conv")(x)
        h = tf.keras.layers.GlobalAveragePooling2D()(h)
        out = raw_ops(tf.keras.layers.Dense(4, name="dense")(h))
        model = tf.keras.Model(x, out)
        session.run(tf.global_variables_initializer())
        model.save(path)
        if photo is None:
            return None
        logits = session.run(model.output, {model.input: photo[None]})
        (gradient,) = tf.gradients(model.output[0, int(np.argmax(logits))], [model.input])
        return logits, session.run(gradient, {model.input: photo[None]})


def test_a_keras_layer_carrying_a_file_op_is_refused(tmp_path, secret):
    path = str(tmp_path / "op_layer.h5")

    def sampler(dense):
        classes = tf.cast(tf.zeros_like(dense[:, :1]), tf.int64)
        _, expected, _ = tf.nn.fixed_unigram_candidate_sampler(classes, 1, 1, True, 1, vocab_file=secret)
        return tf.add(dense, expected)

    keras_file(path, sampler)
    text = assert_refused(tmp_path, ["--keras=" + path], "(TensorFlowOpLayer) carries the TensorFlow op")
    assert "FixedUnigramCandidateSampler" in text


@pytest.mark.graph
def test_a_keras_layer_carrying_a_pure_op_is_explained_right(tmp_path):
    """Op-carrying layers whose ops are on the allowlist are fine: the map equals plain Keras's."""
    path = str(tmp_path / "pure_op_layer.h5")
    photo = np.random.RandomState(3).rand(16, 16, 3).astype(np.float32)
    expected_logits, expected_gradient = keras_file(path, lambda dense: tf.multiply(dense, 2.0), photo)
    with GuidedGradCamGraph(KerasModel(path, input_range=(0.0, 1.0)), guided_relu6="plain") as graph:
        out = graph.run([photo])
    np.testing.assert_allclose(out["logits"], expected_logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["guided_backprop"], expected_gradient, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("function, allowed", [("io.write_file", False), ("io.gfile.makedirs", False),
                                               ("math.multiply", True)])
@pytest.mark.graph
def test_tf_op_lambda_layers_name_only_pure_functions(function, allowed):
    config = {"class_name": "Functional", "config": {"name": "m", "layers": [
        {"class_name": "InputLayer", "config": {"name": "x", "batch_input_shape": [None, 8, 8, 3]}},
        {"class_name": "TFOpLambda", "config": {"name": "tf.op", "function": function}}]}}
    found = unsafe_object(config)
    assert (found is None) == allowed, found
    if not allowed:
        assert "calls the TensorFlow function %r" % function in found


# ----------------------------------------------------------------------------- 7. crashes and hangs

@pytest.mark.smoke
def test_a_file_that_crashes_tensorflow_is_one_line(tmp_path):
    """A self-calling function in the library: TensorFlow's import recurses until it segfaults."""
    model = str(tmp_path / "crash.pb")
    graph_def = tf.GraphDef()
    loop = graph_def.library.function.add()
    loop.signature.name = "Loop"
    out = loop.signature.output_arg.add()
    out.name, out.type = "y", tf.float32.as_datatype_enum
    inner = loop.node_def.add()
    inner.name, inner.op = "inner", "Loop"
    loop.ret["y"] = "inner:y:0"
    image = graph_def.node.add()
    image.name, image.op = "image", "Placeholder"
    image.attr["dtype"].type = tf.float32.as_datatype_enum
    call = graph_def.node.add()
    call.name, call.op = "logits", "Loop"
    with open(model, "wb") as f:
        f.write(graph_def.SerializeToString())
    text = assert_refused(tmp_path, ["--graph=" + model], "crashed TensorFlow while being read")
    assert "SIGSEGV" in text


def test_a_graph_that_loops_forever_is_stopped(tmp_path, monkeypatch):
    model = str(tmp_path / "forever.pb")

    def build():
        image = tf.placeholder(tf.float32, [None, 16, 16, 3], name="image")
        raw = tiny_logits(image)
        count = tf.while_loop(lambda i: i >= 0.0, lambda i: i + 1.0, [tf.reduce_sum(raw) * 0.0])
        with tf.control_dependencies([count]):  # the logits wait for a loop that never ends
            tf.identity(raw, name="logits")

    write_graph(model, build)
    monkeypatch.setenv(isolation.RUN_TIMEOUT_ENV, "2")
    assert_refused(tmp_path, ["--graph=" + model, "--logits_tensor=logits"], "one run took longer than 2 s")


def test_a_kernel_that_crashes_while_running_is_one_line(tmp_path):
    """UnravelIndex with a zero dimension, a constant of the file: TF 1.15's kernel divides by
    zero (SIGFPE), TF 2's refuses. The child's trial run meets it first."""
    model = str(tmp_path / "unravel.pb")

    def build():
        image = tf.placeholder(tf.float32, [None, 16, 16, 3], name="image")
        raw = tiny_logits(image)
        zero = tf.cast(tf.reduce_sum(image) * 0.0, tf.int32)
        r = tf.raw_ops.UnravelIndex(indices=tf.stack([zero + 5]), dims=tf.stack([zero, zero]))
        tf.add(raw, tf.stop_gradient(tf.reduce_sum(tf.cast(r, tf.float32))) * 0.0, name="logits")

    write_graph(model, build)
    text = assert_refused(tmp_path, ["--graph=" + model], "unravel.pb")
    assert "crashed TensorFlow while running" in text or "running it failed" in text


def photo_dependent(x: tf.Tensor) -> tf.Tensor:
    """1.0 for an image with any contrast (a photo), 0.0 for a flat grey one."""
    return tf.cast(tf.reduce_max(x) - tf.reduce_min(x) > 1e-3, tf.float32)


def test_a_kernel_that_crashes_only_on_a_photo_is_one_line(tmp_path):
    """The model runs in a process of its own for its whole life: a crash on the photo's values
    (SIGFPE on TF 1.15) ends that process, not this one."""
    model = str(tmp_path / "photo_crash.pb")

    def build():
        image = tf.placeholder(tf.float32, [None, 16, 16, 3], name="image")
        raw = tiny_logits(image)
        dims = tf.cast(1.0 - photo_dependent(image), tf.int32)
        r = tf.raw_ops.UnravelIndex(indices=tf.stack([dims]), dims=tf.stack([dims, dims]))
        tf.add(raw, tf.stop_gradient(tf.minimum(tf.abs(tf.reduce_sum(tf.cast(r, tf.float32))), 0.0)), name="logits")

    write_graph(model, build)
    text = assert_refused(tmp_path, ["--graph=" + model], "photo_crash.pb")
    assert "crashed TensorFlow while running" in text or "running it failed" in text


def test_a_kernel_that_never_returns_is_stopped(tmp_path, monkeypatch):
    """AdjustHue with an infinite hue shift for a photo: one kernel that never returns, which
    TensorFlow's own deadline cannot cut short; the model's process is stopped."""
    import time
    model = str(tmp_path / "hue.pb")

    def build():
        image = tf.placeholder(tf.float32, [None, 16, 16, 3], name="image")
        delta = 1.0 / (1.0 - photo_dependent(image)) - 1.0  # inf for a photo
        r = tf.raw_ops.AdjustHue(images=image[:1, :2, :2, :], delta=delta)
        tf.add(tiny_logits(image), tf.stop_gradient(tf.minimum(tf.abs(tf.reduce_mean(r)), 0.0)), name="logits")

    write_graph(model, build)
    monkeypatch.setenv(isolation.RUN_TIMEOUT_ENV, "2")
    started = time.monotonic()
    assert_refused(tmp_path, ["--graph=" + model], "still running past its limit of 2 s and was stopped")
    assert time.monotonic() - started < 60


def test_functions_that_grow_past_the_limit_when_inlined_are_refused(tmp_path):
    from tensorflow.python.framework import function
    model = str(tmp_path / "grows.pb")

    def build():
        @function.Defun(tf.float32, func_name="F0")
        def f(x):
            return x * 1.0001
        for k in range(1, 17):  # F_k(x) = F_{k-1}(x) + F_{k-1}(x): 2**16 copies once inlined
            f = (lambda prev, k: function.Defun(tf.float32, func_name="F%d" % k)(lambda x: prev(x) + prev(x)))(f, k)
        image = tf.placeholder(tf.float32, [None, 16, 16, 3], name="image")
        raw = tiny_logits(image)
        tf.reshape(tf.add(raw, tf.stop_gradient(f(tf.reduce_sum(raw))) * 0.0), [-1, 4], name="logits")

    write_graph(model, build)
    assert_refused(tmp_path, ["--graph=" + model], "grow the graph to more than %d ops" % safety.MAX_INLINED_OPS)


def test_a_gradient_kernel_in_a_file_is_refused(tmp_path):
    model = str(tmp_path / "grad_kernel.pb")

    def build():
        image = tf.placeholder(tf.float32, [None, 16, 16, 3], name="image")
        raw = tiny_logits(image)
        tf.raw_ops.ReluGrad(gradients=raw, features=raw, name="logits")

    write_graph(model, build)
    assert_refused(tmp_path, ["--graph=" + model], "(ReluGrad) is a gradient kernel")


def test_a_keras_weight_stored_in_another_file_is_refused(tmp_path, secret):
    """HDF5 follows external storage by itself: a Keras file's bias could be another file's bytes."""
    import h5py
    path = str(tmp_path / "external.h5")
    keras_file(path, lambda dense: dense)
    with h5py.File(path, "r+") as f:
        group = f["model_weights/dense/dense"]
        name = [k for k in group if k.startswith("bias")][0]
        del group[name]
        group.create_dataset(name, shape=(1,), dtype="<f4", external=[(secret, 0, 4)])
    assert_refused(tmp_path, ["--keras=" + path], "keeps its bytes in another file")


def test_a_saved_model_whose_weights_are_a_symlink_is_refused(tmp_path, secret):
    with tf.Graph().as_default():
        image = tf.placeholder(tf.float32, [None, 16, 16, 3], name="image")
        logits = tf.identity(tiny_logits(image, variables=True), name="logits")
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            tf.saved_model.simple_save(session, str(tmp_path / "saved"), {"image": image}, {"logits": logits})
    data = tmp_path / "saved" / "variables" / "variables.data-00000-of-00001"
    data.unlink()
    data.symlink_to(secret)
    assert_refused(tmp_path, ["--saved_model=" + str(tmp_path / "saved")], "is a symlink")


def test_a_refused_model_leaves_no_output_folder_in_a_folder_run(tmp_path):
    model = str(tmp_path / "read_file.pb")

    def build():
        image = tf.placeholder(tf.float32, [None, 16, 16, 3], name="image")
        tf.multiply(tiny_logits(image), tf.strings.to_number(tf.io.read_file(str(tmp_path / "x"))), name="logits")

    write_graph(model, build)
    assert_refused(tmp_path, ["--graph=" + model, "--image=" + os.path.join(ROOT, "images", "coffee.png")],
                   "(ReadFile) reads or writes files")


# ----------------------------------------------------------------------------- the isolation itself

def test_isolation_returns_values_and_errors():
    assert isolation.run_isolated("isolation_targets:value", (1,), "f") == {"a": [1, 2]}
    with pytest.raises(ModelError, match="^bad model$"):
        isolation.run_isolated("isolation_targets:fails", (), "f", error=ModelError)
    with pytest.raises(ValueError, match="wrong value"):
        isolation.run_isolated("isolation_targets:wrong_value", (), "f", error=ModelError)


def test_isolation_reports_crashes_hangs_and_memory(monkeypatch):
    import time
    with pytest.raises(isolation.IsolationError, match="f crashed TensorFlow while being read .signal SIGSEGV"):
        isolation.run_isolated("isolation_targets:segfault", (), "f")
    monkeypatch.setenv(isolation.TIMEOUT_ENV, "3")
    started = time.monotonic()
    with pytest.raises(isolation.IsolationError, match="still being read past its limit of 3 s and was stopped"):
        isolation.run_isolated("isolation_targets:sleeps", (), "f")
    assert time.monotonic() - started < 15
    monkeypatch.setenv(isolation.MEMORY_ENV, "0.5")
    with pytest.raises(isolation.IsolationError, match="more memory than allowed"):
        isolation.run_isolated("isolation_targets:hogs_memory", (), "f")


# ----------------------------------------------------------------------------- the allowlist

@pytest.mark.graph
def test_the_allowlist_names_only_known_op_types():
    """Every allowed type is one TensorFlow registers on at least one runtime (a typo would be
    an op that can never be allowed); no kind lists a type twice."""
    names = [t for types in safety.allowed_kinds().values() for t in types]
    assert len(names) == len(set(names))
    known_here = safety.ALLOWED & set(safety.registered_ops())
    assert len(known_here) > 0.9 * len(safety.ALLOWED)


@pytest.mark.graph
def test_unknown_ops_and_missing_functions_are_named():
    graph_def = tf.GraphDef()
    node = graph_def.node.add()
    node.name, node.op = "call", "PartitionedCall"
    node.attr["f"].func.name = "WriteFile"  # a primitive op named as a function
    found = safety.problems(graph_def.node, graph_def.library)
    assert found == [("call", "PartitionedCall", "calls WriteFile, which is not a function of the model's library")]
    assert safety.problems(graph_def.node, graph_def.library, trust_model=True) == []
    with pytest.raises(ModelError, match="refusing to run it"):
        safety.check_graph_def(graph_def, False, "f.pb")


@pytest.mark.graph
def test_a_trusted_file_may_run_anything_but_unknown_ops():
    graph_def = tf.GraphDef()
    node = graph_def.node.add()
    node.name, node.op = "w", "WriteFile"
    safety.check_graph_def(graph_def, True, "f.pb")
    node.op = "NoSuchOp"
    with pytest.raises(ModelError, match="does not know"):
        safety.check_graph_def(graph_def, True, "f.pb")


@pytest.mark.graph
def test_frozen_and_meta_graph_files_import_only_the_path(tmp_path):
    """Ops off the path (a saver, a summary, an unused file reader) are not imported at all."""
    prefix = str(tmp_path / "model")

    def build():
        image = tf.placeholder(tf.float32, [None, 16, 16, 3], name="image")
        tf.identity(tiny_logits(image, variables=True), name="logits")
        tf.io.read_file(str(tmp_path / "unused.txt"), name="unused_reader")
        tf.summary.scalar("loss", tf.constant(1.0))

    save_meta_graph(prefix, build)
    with GuidedGradCamGraph(MetaGraphModel(prefix + ".meta", checkpoint=prefix)) as graph:
        types = {op.type for op in graph.graph.get_operations()}
        assert not types & {"ReadFile", "SaveV2", "RestoreV2", "ScalarSummary"}, types
        assert safety.not_allowed(types) == set()
        assert graph.run([np.zeros((16, 16, 3), np.float32)])["logits"].shape == (1, 4)
    def build_frozen():
        image = tf.placeholder(tf.float32, [None, 16, 16, 3], name="image")
        tf.identity(tiny_logits(image), name="logits")
        tf.io.read_file(str(tmp_path / "unused.txt"), name="unused_reader")

    model = str(tmp_path / "frozen.pb")
    write_graph(model, build_frozen)
    with GuidedGradCamGraph(FrozenGraphModel(model)) as graph:
        assert "ReadFile" not in {op.type for op in graph.graph.get_operations()}


@pytest.mark.graph
def test_gradient_overrides_written_into_a_file_are_dropped(tmp_path):
    """A file marking its convolution with another gradient (here the guided ReLU's) would
    change the map; the import drops such attributes, so the gradient is TensorFlow's own."""
    model = str(tmp_path / "override.pb")

    def build():
        image = tf.placeholder(tf.float32, [None, 16, 16, 3], name="image")
        tf.identity(tiny_logits(image), name="logits")

    with tf.Graph().as_default() as g:
        build()
        graph_def = g.as_graph_def()
    conv = next(n for n in graph_def.node if n.op == "Conv2D")
    conv.attr["_gradient_op_type"].s = b"GuidedGradCamRelu"
    tf.io.write_graph(graph_def, str(tmp_path), "override.pb", as_text=False)
    write_graph(str(tmp_path / "clean.pb"), build)
    photo = [np.random.RandomState(1).rand(16, 16, 3).astype(np.float32)]
    with GuidedGradCamGraph(FrozenGraphModel(model), guided_relu6="plain") as a, \
            GuidedGradCamGraph(FrozenGraphModel(str(tmp_path / "clean.pb")), guided_relu6="plain") as b:
        np.testing.assert_array_equal(a.run(photo)["guided_backprop"], b.run(photo)["guided_backprop"])


@pytest.mark.graph
def test_the_allowlist_covers_the_example_models_and_keras(tmp_path):
    """The op types of a rebuilt Keras model (batch norm, depthwise, dropout) are all allowed."""
    path = str(tmp_path / "keras.h5")
    with tf.Graph().as_default():
        x = tf.keras.layers.Input((16, 16, 3))
        h = tf.keras.layers.Conv2D(4, 3, padding="same")(x)
        h = tf.keras.layers.BatchNormalization()(h)
        h = tf.keras.layers.ReLU(6.0)(h)
        h = tf.keras.layers.DepthwiseConv2D(3)(h)
        h = tf.keras.layers.Dropout(0.5)(tf.keras.layers.GlobalAveragePooling2D()(h))
        tf.keras.Model(x, tf.keras.layers.Dense(3, activation="softmax")(h)).save(path)
    with GuidedGradCamGraph(KerasModel(path)) as graph:
        assert safety.not_allowed(op.type for op in graph.graph.get_operations()) == set()
    assert json.loads(json.dumps(sorted(safety.ALLOWED)))  # plain strings, for the docs


# ----------------------------------------------------------------------------- the model's own process

def test_the_models_own_process_computes_what_this_one_does(tmp_path):
    """A file not trusted runs in a process of its own (ggcam.engine.worker); trusted, in this
    one: the same arrays, the same facts, the same weight randomisation."""
    import evaluate
    from ggcam.explainer import Explainer
    prefix = str(tmp_path / "model")

    def build():
        image = tf.placeholder(tf.float32, [None, 16, 16, 3], name="image")
        tf.identity(tiny_logits(image, variables=True), name="logits")

    save_meta_graph(prefix, build)
    photo = np.random.RandomState(4).rand(20, 24, 3).astype(np.float32)
    runs = {}
    for trusted in (False, True):
        with Explainer(meta_graph=prefix + ".meta", checkpoint=prefix, trust_model=trusted) as ex:
            assert type(ex.graph).__name__ == ("GuidedGradCamGraph" if trusted else "RemoteGraph")
            (e,) = ex.explain([photo])
            runs[trusted] = (e.raw(), e.guided_backprop_image, ex.model.notes, ex.layer, ex.graph.layer_table())
        out = tmp_path / ("eval_%s" % trusted)
        run = run_main(evaluate.main, "--meta_graph=" + prefix + ".meta", "--checkpoint=" + prefix, "--image=" + PHOTO,
                       "--checks=randomization", "--output_dir=" + str(out), *(["--trust_model"] if trusted else []))
        assert run.returncode == 0, run
        runs[trusted] += ((out / "randomization.csv").read_text(),)
    remote, local = runs[False], runs[True]
    for name in local[0]:
        np.testing.assert_array_equal(remote[0][name], local[0][name], err_msg=name)
    np.testing.assert_array_equal(remote[1], local[1])
    assert remote[2:5] == local[2:5]
    assert remote[5] == local[5] and remote[5].count("\n") > 2
