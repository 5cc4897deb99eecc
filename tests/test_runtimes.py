"""The two TensorFlow runtimes (docs/environment.md): TF 1.15 (.venv) and TF 2 (.venv-tf2).

The cross-runtime test computes raw.npz arrays for the same inputs and classes in this
process and, in a subprocess, under the other runtime's venv, and checks they agree: logits
within 1e-3, every other float array with correlation >= 0.9999. It skips when the other
venv has not been set up (`make test RUNTIME=tf1` / `RUNTIME=tf2` sets it up); on CI
(.ci/run) the tf1 suite runs first, so the tf2 suite finds .venv in place.

Run as a script, this file is the subprocess's side: ``python tests/test_runtimes.py
--output=OUT.npz --frozen_graph=PB``.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

pytestmark = pytest.mark.e2e

VENVS = {"tf1": os.path.join(ROOT, ".venv"), "tf2": os.path.join(ROOT, ".venv-tf2")}
IMAGES = [os.path.join(ROOT, "images", name) for name in ("chelsea.png", "cat_and_coffee.png")]
# Per model: the classes explained for every image (None: the best class).
CLASSES = {"mobilenet_v1": (None, 282), "frozen": (None, 3)}
SETUP = os.path.join(ROOT, "scripts", "setup_venv.sh")


# ----------------------------------------------------------------------------- both sides

def write_frozen_graph(path: str) -> None:
    """A tiny frozen classifier (two convolutions with ReLU, global pooling, 5 classes), random
    weights from a fixed seed, written as a binary GraphDef with the ops' default attributes
    stripped, so either runtime reads what the other wrote."""
    from ggcam.tf.compat import tf
    rng = np.random.RandomState(7)
    with tf.Graph().as_default() as graph:
        x = tf.placeholder(tf.float32, [None, 32, 32, 3], name="input")
        w1 = tf.constant(rng.normal(0, 0.3, (3, 3, 3, 8)).astype(np.float32), name="conv1/weights")
        h = tf.nn.relu(tf.nn.conv2d(x, w1, [1, 1, 1, 1], "SAME") + 0.05, name="conv1/Relu")
        w2 = tf.constant(rng.normal(0, 0.2, (3, 3, 8, 16)).astype(np.float32), name="conv2/weights")
        h = tf.nn.relu(tf.nn.conv2d(h, w2, [1, 2, 2, 1], "SAME") + 0.05, name="conv2/Relu")
        pooled = tf.reduce_mean(h, [1, 2], name="pool")
        w3 = tf.constant(rng.normal(0, 0.5, (16, 5)).astype(np.float32), name="logits/weights")
        logits = tf.matmul(pooled, w3, name="logits/MatMul")
        tf.nn.softmax(logits, name="probabilities")
        graph_def = graph.as_graph_def()
    from tensorflow.python.framework import graph_util
    graph_def = graph_util.extract_sub_graph(graph_def, ["probabilities"])
    for node in graph_def.node:  # attributes equal to their defaults: left to the reader
        from ggcam.tf.compat import registered_ops
        op_def = registered_ops().get(node.op)
        for a in op_def.attr if op_def is not None else ():
            if a.HasField("default_value") and a.name in node.attr and node.attr[a.name] == a.default_value:
                del node.attr[a.name]
    with open(path, "wb") as f:
        f.write(graph_def.SerializeToString())


def compute(frozen_graph: str) -> dict:
    """'model/image/class/array' -> value, for every model, image and class of the test."""
    from ggcam import Explainer
    from ggcam.tf.compat import RUNTIME, VERSION
    out = {"runtime": np.asarray(RUNTIME), "version": np.asarray(VERSION)}
    for model, kwargs in (("mobilenet_v1", {}), ("frozen", {"graph": frozen_graph, "input_range": (0, 1)})):
        with Explainer(**kwargs) as ex:
            for target in CLASSES[model]:
                for path, e in zip(IMAGES, ex.explain(IMAGES, labels=target)):
                    for name, value in e.raw().items():
                        key = "%s/%s/%s/%s" % (model, os.path.basename(path), target or "best", name)
                        out[key] = value
    return out


# ----------------------------------------------------------------------------- this process

def other_runtime():
    from ggcam.tf.compat import RUNTIME
    return "tf2" if RUNTIME == "tf1" else "tf1"


def venv_python_or_skip(runtime: str) -> str:
    venv = VENVS[runtime]
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(os.path.join(venv, ".installed")) or not os.path.exists(python):
        pytest.skip("the %s runtime's venv %s is not set up (make test RUNTIME=%s sets it up); the cross-runtime "
                    "check runs in whichever suite finds the other venv" % (runtime, os.path.relpath(venv, ROOT),
                                                                            runtime))
    return python


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    if np.array_equal(a, b):
        return 1.0
    return float(np.corrcoef(a, b)[0, 1])


def test_both_runtimes_compute_the_same_raw_arrays(tmp_path):
    other = other_runtime()
    python = venv_python_or_skip(other)
    frozen = str(tmp_path / "tiny_frozen.pb")
    write_frozen_graph(frozen)
    theirs_file = tmp_path / ("raw_%s.npz" % other)
    done = subprocess.run([python, os.path.abspath(__file__), "--output=%s" % theirs_file,
                           "--frozen_graph=%s" % frozen], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    ours = compute(frozen)
    with np.load(str(theirs_file)) as f:
        theirs = {k: f[k] for k in f.files}
    assert str(theirs["runtime"]) == other and str(ours["runtime"]) != other
    assert set(ours) == set(theirs)
    report, checked = [], 0
    for key in sorted(k for k in ours if "/" in k):
        a, b = ours[key], theirs[key]
        assert a.shape == b.shape, key
        name = key.rsplit("/", 1)[1]
        if a.dtype.kind != "f":
            assert a.tolist() == b.tolist(), key  # label, model, layer
        elif name == "logits":
            diff = float(np.abs(a - b).max())
            report.append("%s max|diff| %.2e" % (key, diff))
            assert diff <= 1e-3, key
        else:
            r = correlation(a, b)
            report.append("%s r=%.7f" % (key, r))
            assert r >= 0.9999, key
        checked += 1
    # 2 models x 2 images x 2 classes x 11 arrays (8 numbers and labels, and what was fed: preprocessing,
    # feeds, output function, the same strings on both runtimes)
    assert checked == 88
    print("\n".join(["TensorFlow %s vs %s" % (ours["version"], theirs["version"])] + report))


def test_the_frozen_graph_of_the_cross_check_is_read_back(tmp_path):
    """The file the cross check hands to the other runtime loads here, with its own classes."""
    from ggcam import Explainer
    frozen = str(tmp_path / "tiny_frozen.pb")
    write_frozen_graph(frozen)
    with Explainer(graph=frozen, input_range=(0, 1)) as ex:
        assert ex.model.num_classes == 5 and ex.layer == "conv2/Relu"
        (e,) = ex.explain(IMAGES[:1], labels=3)
    assert e.label == 3 and e.cam.shape == (16, 16) and np.isfinite(e.guided_backprop).all()


# ----------------------------------------------------------------------------- set-up and runtime lines

@pytest.mark.graph
def test_runtime_facts_and_the_import_check():
    from ggcam.tf import compat as tf_compat
    assert tf_compat.RUNTIME == ("tf2" if tf_compat.MAJOR >= 2 else "tf1")
    import tensorflow
    assert tf_compat.tf is tensorflow.compat.v1
    assert tf_compat.tf.executing_eagerly() is False  # graph mode on both
    tf_compat.check()  # builds and runs a tf_slim network with the guided override
    # The version this runtime was tested with is the one installed (requirements pin it).
    assert tf_compat.VERSION in tf_compat.TESTED[tf_compat.RUNTIME]


@pytest.mark.graph
def test_native_noise_is_dropped_also_when_the_import_is_interrupted(capfd):
    """Ctrl-C (or SIGTERM, a KeyboardInterrupt here) while TensorFlow loads: its native start-up
    lines are still dropped; another error keeps every line, which may say what went wrong."""
    from ggcam.tf import compat as tf_compat
    noise = b"2026-12-01 17:00:00.000000: I tensorflow/core/platform/cpu_feature_guard.cc:210] This binary...\n"
    for raised, noise_shown in ((KeyboardInterrupt, False), (ImportError, True)):
        with pytest.raises(raised):
            with tf_compat._native_stderr_filtered():
                os.write(2, noise)
                os.write(2, b"a line that is not noise\n")
                raise raised()
        err = capfd.readouterr().err
        assert "a line that is not noise" in err
        assert ("cpu_feature_guard.cc" in err) == noise_shown, (raised, err)


@pytest.mark.graph
def test_a_release_that_breaks_tf_slim_gets_one_line_naming_the_tested_versions():
    from ggcam.tf import compat as tf_compat
    line = tf_compat.unsupported(ImportError("cannot import name 'Foo' from 'tensorflow.python.bar'\nmore"))
    assert "\n" not in line and tf_compat.VERSION in line and "cannot import name 'Foo'" in line
    for version in tf_compat.TESTED["tf1"] + tf_compat.TESTED["tf2"]:
        assert version in line


def test_the_import_check_runs_as_the_setup_runs_it():
    done = subprocess.run([sys.executable, "-m", "ggcam.tf.compat"], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok: TensorFlow ")


def _setup(tmp_path, **env):
    base = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYENV_ROOT": str(tmp_path / "pyenv"),
            "VENV": str(tmp_path / "venv")}
    base.update(env)
    return subprocess.run(["bash", SETUP], env=base, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=60)


def _bin_without(tmp_path, *versions):
    """A PATH folder with bash, sed, sort and friends but no python of the given versions."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for tool in ("bash", "sed", "sort", "tr", "head", "rm", "cat", "env", "dirname"):
        for where in ("/usr/bin", "/bin"):
            if os.path.exists(os.path.join(where, tool)):
                os.symlink(os.path.join(where, tool), str(folder / tool))
                break
    return str(folder)


@pytest.mark.unit
def test_setup_without_any_supported_python_says_so_in_one_line(tmp_path):
    path = _bin_without(tmp_path)
    done = _setup(tmp_path, PATH=path, RUNTIME="auto")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "neither Python 3.7" in lines[0] and "for TensorFlow 2" in lines[0] and "pyenv install" in lines[0]
    assert not (tmp_path / "venv").exists()
    done = _setup(tmp_path, PATH=path, RUNTIME="tf2")
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1
    assert "no Python 3." in done.stderr and "requirements-tf2.txt" in done.stderr
    done = _setup(tmp_path, PATH=path, RUNTIME="tf3")
    assert done.returncode == 2 and "RUNTIME must be auto, tf1 or tf2" in done.stderr


@pytest.mark.unit
def test_auto_picks_tf1_with_python37_and_tf2_without(tmp_path):
    path = _bin_without(tmp_path)
    done = subprocess.run(["bash", SETUP, "--detect"], env={"PATH": path, "HOME": str(tmp_path),
                                                              "PYENV_ROOT": str(tmp_path / "pyenv")},
                          stdout=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert done.stdout.strip() == "none"  # neither runtime's Python
    py3 = os.path.join(VENVS["tf2"], "bin", "python")
    if os.path.exists(py3):
        done = subprocess.run(["bash", SETUP, "--detect"], env={"PATH": path, "HOME": str(tmp_path),
                                                                  "PYENV_ROOT": str(tmp_path / "pyenv"),
                                                                  "PYTHON3": py3},
                              stdout=subprocess.PIPE, universal_newlines=True, timeout=60)
        assert done.stdout.strip() == "tf2"
    py37 = os.path.join(VENVS["tf1"], "bin", "python")
    if not os.path.exists(py37):
        pytest.skip("no .venv (Python 3.7) to point PYTHON37 at")
    done = subprocess.run(["bash", SETUP, "--detect"], env={"PATH": path, "HOME": str(tmp_path),
                                                              "PYENV_ROOT": str(tmp_path / "pyenv"),
                                                              "PYTHON37": py37},
                          stdout=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert done.stdout.strip() == "tf1"


@pytest.mark.unit
def test_make_says_which_runtime_and_why():
    # Under `make test-all RUNTIME=...` the outer make's variables reach us through the
    # environment (MAKEFLAGS, RUNTIME): the inner makes must start clean.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "RUNTIME")}
    for runtime, venv in (("tf1", ".venv"), ("tf2", ".venv-tf2")):
        done = subprocess.run(["make", "-s", "-C", ROOT, "runtime", "RUNTIME=%s" % runtime], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True, timeout=60, env=env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "runtime %s: TensorFlow %s in %s (RUNTIME=%s was given)" % (
            runtime, "1.15" if runtime == "tf1" else "2", venv, runtime)
    done = subprocess.run(["make", "-s", "-C", ROOT, "runtime"], stdout=subprocess.PIPE, universal_newlines=True,
                          timeout=60, env=env)
    assert "(RUNTIME=auto: " in done.stdout
    done = subprocess.run(["make", "-s", "-C", ROOT, "runtime", "RUNTIME=tf3"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=60, env=env)
    assert done.returncode != 0 and "RUNTIME must be auto, tf1 or tf2" in done.stderr


@pytest.mark.unit
def test_make_runtime_without_any_supported_python_names_both_routes_and_exits_1(tmp_path):
    """`make runtime` (and so every target) with neither Python: one line naming both
    runtimes' Pythons, exit status 1; not "runtime tf2" and 0."""
    path = _bin_without(tmp_path)
    for tool in ("make", "id", "uname", "date", "grep"):
        for where in ("/usr/bin", "/bin"):
            if os.path.exists(os.path.join(where, tool)) and not os.path.exists(os.path.join(path, tool)):
                os.symlink(os.path.join(where, tool), os.path.join(path, tool))
                break
    env = {"PATH": path, "HOME": str(tmp_path), "PYENV_ROOT": str(tmp_path / "pyenv")}
    for target in ("runtime", "setup"):
        done = subprocess.run(["make", "-s", "-C", ROOT, target], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=60, env=env)
        assert done.returncode != 0, (target, done.stdout)
        assert "runtime tf2" not in done.stdout, done.stdout
        assert "neither Python 3.7 (for TensorFlow 1.15) nor Python 3." in done.stderr, done.stderr
        assert "(for TensorFlow 2)" in done.stderr, done.stderr


# ----------------------------------------------------------------------------- the subprocess's side

def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", required=True)
    parser.add_argument("--frozen_graph", required=True)
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    out = compute(args.frozen_graph)
    np.savez(args.output, **out)
    print(json.dumps({"runtime": str(out["runtime"]), "arrays": len(out)}))


if __name__ == "__main__":
    main()
