"""TensorFlow, from one place: the v1 graph API on TensorFlow 1.15 and on TensorFlow 2, quiet.

Every module of the project that needs TensorFlow takes ``tf`` from here: it is
``tensorflow.compat.v1`` (present in TF 1.15 too), with TensorFlow's start-up logging and
deprecation warnings silenced. Two runtimes are supported (docs/environment.md):

- TF 1.15 (``requirements.txt``, Python 3.7): the reference.
- TF 2 (``requirements-tf2.txt``): v2 behaviour is switched off (graph mode, v1 control flow,
  reference variables, ``tf.gradients`` with gradient overrides), and tf_slim 1.1.0 is made to
  import: it refers to ``tensorflow.python.framework.ops.Tensor``, which TF >= 2.14 lacks
  (aliased to ``tf.Tensor`` here, before anything imports tf_slim). Its ``batch_norm`` with the
  default ``updates_collections`` goes through a Keras layer module TF 2 cannot import: the
  project's arg scopes pass ``SLIM_BATCH_NORM`` (``updates_collections=None``, see
  ``slim_inference_scope``; inference is unaffected, the same fused batch norm runs).
  ``op_def_registry.get_registered_ops`` (TF 1.15's, gone in TF 2) is provided again.

What changes nothing on TF 1.15 is done on both: ``disable_v2_behavior()`` (TF 1.15's
defaults, also when a TF 2 parent process left ``TF2_BEHAVIOR=1`` in the environment),
``SLIM_BATCH_NORM``, and filtering the import's native stderr lines (``_NOISE`` only).

Import this module before tf_slim (``nets/`` and ``ggcam/models`` do). ``check()`` builds and
runs a small tf_slim network with the guided override: the set-up runs it, and a TensorFlow
release that breaks tf_slim in a new way fails there with one line naming the versions tested.
"""
import contextlib
import functools
import os
import sys
import tempfile
import warnings
from typing import Iterator

# 3: no native log lines below FATAL; every error this project can meet reaches Python as an
# exception, and its one-line message says what the native ERROR line would.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# TF >= 2.16: tf.keras is Keras 3 (no graph mode) unless this is set and the tf_keras package
# (Keras 2) is installed, as requirements-tf2.txt does. Ignored by TF 1.15 and 2.15.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

# Lines TensorFlow 2's native code writes to stderr whatever TF_CPP_MIN_LOG_LEVEL says (its
# logging is not set up yet when the CUDA stubs load): that there is no GPU, which CPU
# instructions it was not built for, an optimisation pass left off. Only these are dropped.
_NOISE = ("absl::InitializeLog", "cudart_stub.cc", "cuda_platform.cc", "cuda_executor.cc", "cuda_dnn.cc",
          "cuda_fft.cc", "cuda_blas.cc", "Unable to register cu", "TF-TRT Warning", "cpu_feature_guard.cc",
          "rebuild TensorFlow with the appropriate compiler flags", "oneDNN custom operations are on",
          "mlir_graph_optimization_pass.cc", "computation_placer.cc")


@contextlib.contextmanager
def _native_stderr_filtered() -> Iterator[None]:
    """Hold file descriptor 2 in a temporary file; on exit write back every line but _NOISE's
    (everything if the block raised an error, which those lines may explain; not for Ctrl-C)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable stderr: nothing to filter
        yield
        return
    held = tempfile.TemporaryFile()
    raised = False
    try:
        os.dup2(held.fileno(), 2)
        yield
    except Exception:
        raised = True
        raise
    finally:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 2)
        os.close(saved)
        held.seek(0)
        lines = held.read().decode("utf-8", "replace").splitlines(True)
        held.close()
        kept = "".join(l for l in lines if raised or not any(n in l for n in _NOISE))
        if kept:
            os.write(2, kept.encode("utf-8"))


with _native_stderr_filtered():
    with warnings.catch_warnings():
        # TF and its dependencies warn on import about numpy and deprecated modules.
        warnings.simplefilter("ignore")
        import tensorflow as _tensorflow

    VERSION = _tensorflow.__version__
    MAJOR = int(VERSION.split(".")[0])
    TF2 = MAJOR >= 2
    RUNTIME = "tf2" if TF2 else "tf1"
    # The releases this project's tests passed under (with tf-slim 1.1.0), for the error lines.
    TESTED = {"tf1": ("1.15.2",), "tf2": ("2.15.1", "2.21.0")}

    tf = _tensorflow.compat.v1
    tf2 = _tensorflow.compat.v2
    tf.logging.set_verbosity(tf.logging.ERROR)  # before disable_v2_behavior, which logs

    # tf_slim's batch_norm through its own fused op, not TF's Keras layer (see the docstring).
    SLIM_BATCH_NORM = {"updates_collections": None}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Graph mode, v1 control flow and reference variables, v1 tensor shapes: the graphs TF
        # 1.15 builds, so checkpoints, MetaGraphs and gradient overrides behave alike. TF 1.15
        # has them by default, unless TF2_BEHAVIOR=1 is in the environment (TF 2 puts it there
        # on import, so a TF 1.15 process started from a TF 2 one inherits it): off on both.
        tf.disable_v2_behavior()
    if TF2:
        # One tiny session here, so the device set-up's stderr lines fall inside the filter.
        with tf.Graph().as_default():
            with tf.Session() as _session:
                _session.run(tf.constant(0))

if TF2:
    # tf_slim's layers call the legacy ``layer.apply``, which TF 2 warns about on every layer.
    warnings.filterwarnings("ignore", message=".layer.apply. is deprecated")
    from tensorflow.python.framework import ops as _ops
    if not hasattr(_ops, "Tensor"):  # TF >= 2.14; tf_slim 1.1.0 still refers to it
        _ops.Tensor = _tensorflow.Tensor
    from tensorflow.python.framework import op_def_registry as _op_def_registry
    if not hasattr(_op_def_registry, "get_registered_ops"):  # TF 2 has get(name) only

        @functools.lru_cache(maxsize=1)
        def _get_registered_ops():
            """Op type -> OpDef of every op registered with this TensorFlow (as TF 1.15's,
            read once)."""
            from tensorflow.core.framework import op_def_pb2
            from tensorflow.python.client import pywrap_tf_session
            buf = pywrap_tf_session.TF_GetAllOpList()
            try:
                op_list = op_def_pb2.OpList()
                op_list.ParseFromString(pywrap_tf_session.TF_GetBuffer(buf))
            finally:
                pywrap_tf_session.TF_DeleteBuffer(buf)
            return {op_def.name: op_def for op_def in op_list.op}

        _op_def_registry.get_registered_ops = _get_registered_ops


def slim_inference_scope(scope: dict) -> dict:
    """A copy of a tf_slim arg scope (what ``with slim.arg_scope(...) as sc`` yields, e.g. a
    zoo network's ``*_arg_scope()``) with ``SLIM_BATCH_NORM`` in every set of batch-norm
    arguments: ``batch_norm``'s own, and the ``normalizer_params`` the zoo's arg scopes give
    ``conv2d`` (explicit arguments, which an outer ``arg_scope([batch_norm])`` cannot override).
    """
    import tf_slim as slim
    from tf_slim.ops.arg_scope import arg_scope_func_key
    batch_norm = arg_scope_func_key(slim.batch_norm)
    out = {}
    for key, kwargs in scope.items():
        kwargs = dict(kwargs)
        if key == batch_norm:
            kwargs.update(SLIM_BATCH_NORM)
        params = kwargs.get("normalizer_params")
        if isinstance(params, dict) and (kwargs.get("normalizer_fn") is slim.batch_norm
                                         or "updates_collections" in params):
            kwargs["normalizer_params"] = dict(params, **SLIM_BATCH_NORM)
        out[key] = kwargs
    return out


def registered_ops():
    """Op type -> OpDef of every op this TensorFlow knows (both runtimes)."""
    from tensorflow.python.framework import op_def_registry
    return op_def_registry.get_registered_ops()


def error_line(exc: BaseException) -> str:
    """The line of a TensorFlow error that says what is wrong. TF 2's messages start with a
    generic "Graph execution error:" and the op's Python traceback; the cause follows "Node:"."""
    text = getattr(exc, "message", None) or str(exc)
    lines = [l.strip() for l in text.strip().splitlines() if l.strip()]
    if lines and lines[0].startswith("Graph execution error"):
        after = [i for i, l in enumerate(lines) if l.startswith("Node:")]
        rest = lines[after[-1] + 1:] if after else lines[1:]
        rest = [l for l in rest if not l.startswith(("[[", "Detected at node", "File ", "Original stack"))]
        if rest:
            return rest[0]
    return lines[0] if lines else type(exc).__name__


def describe() -> str:
    """'TensorFlow 2.15.1 (tf2 runtime, Python 3.11.7)'."""
    return "TensorFlow %s (%s runtime, Python %s)" % (VERSION, RUNTIME, sys.version.split()[0])


def unsupported(exc: BaseException) -> str:
    """The one line said when this TensorFlow and tf_slim 1.1.0 do not work together."""
    lines = [l for l in str(exc).strip().splitlines() if l.strip()] or [type(exc).__name__]
    return ("TensorFlow %s does not run this project's tf_slim 1.1.0 networks (%s: %s); tested: %s. "
            "Install the pinned one: requirements-tf2.txt (or requirements.txt for TF 1.15)"
            % (VERSION, type(exc).__name__, lines[0][:200],
               ", ".join(TESTED["tf1"] + TESTED["tf2"])))


def check() -> None:
    """Build and run a tiny tf_slim network (conv + batch norm + ReLU6, guided override,
    checkpoint round trip) in a graph of its own. Raises RuntimeError with ``unsupported``'s
    line when this TensorFlow breaks it."""
    import tempfile
    try:
        import numpy as np
        import tf_slim as slim
        from ggcam.tf import guided as guided_relu
        with tf.Graph().as_default() as graph:
            x = tf.placeholder(tf.float32, [None, 8, 8, 3])
            with graph.gradient_override_map(guided_relu.override_map("exact")):
                with slim.arg_scope([slim.conv2d], normalizer_fn=slim.batch_norm, activation_fn=tf.nn.relu6):
                    with slim.arg_scope([slim.batch_norm], is_training=False, scale=True, **SLIM_BATCH_NORM):
                        y = slim.conv2d(x, 4, [3, 3], scope="conv")
            logit = tf.reduce_sum(tf.reduce_mean(y, [1, 2]), name="logit")
            (grad,) = tf.gradients(logit, [x])
            if not any(guided_relu.is_guided(op) for op in graph.get_operations()):
                raise RuntimeError("the guided gradient override was not recorded")
            saver = tf.train.Saver()
            with tf.Session() as session, tempfile.TemporaryDirectory() as folder:
                session.run(tf.global_variables_initializer())
                saver.save(session, os.path.join(folder, "check"))
                saver.restore(session, os.path.join(folder, "check"))
                value, g = session.run([logit, grad], {x: np.ones((2, 8, 8, 3), np.float32)})
            if not (np.isfinite(value) and np.isfinite(g).all()):
                raise RuntimeError("non-finite results")
    except Exception as exc:
        raise RuntimeError(unsupported(exc)) from exc


if __name__ == "__main__":  # the set-up's import check: python -m ggcam.tf.compat
    try:
        check()
    except RuntimeError as exc:
        print("error: %s" % exc, file=sys.stderr)
        sys.exit(1)
    print("ok: %s with tf_slim 1.1.0" % describe())
