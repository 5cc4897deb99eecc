"""The package as a user installs it: `pip install '.[tf1]'` or `'.[tf2]'` (this runtime's) into
a fresh venv outside the clone, then used from another folder. Marked ``extended``: it
installs TensorFlow into a venv of its own (from pip's cache after the first time)."""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.extended]

RUNTIME = "tf1" if sys.version_info < (3, 8) else "tf2"
CHECKPOINT = os.path.join(ROOT, "checkpoints", "mobilenet_v1_1.0_224.ckpt")
# What a source copy leaves out: venvs, weights, caches and outputs of the clone.
LEFT_OUT = shutil.ignore_patterns(".git", ".venv*", "checkpoints", "*.egg-info", "build", "__pycache__",
                                  "demo_output", ".pytest_cache", "benchmarks", "evaluation")
# Messages of pip that mean no package index could be reached, not that the package is wrong.
OFFLINE = ("Could not find a version that satisfies", "No matching distribution", "Temporary failure in name",
           "NewConnectionError", "Network is unreachable")


def run(args, cwd, env=None, timeout=900):
    return subprocess.run(args, cwd=str(cwd), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, stdin=subprocess.DEVNULL, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv, a folder outside the clone, the environment to run in): the package installed
    from a copy of the source tree (so the build writes nothing into the clone)."""
    top = tmp_path_factory.mktemp("package")
    source, venv, elsewhere = top / "source", top / "venv", top / "elsewhere"
    shutil.copytree(ROOT, str(source), ignore=LEFT_OUT)
    elsewhere.mkdir()
    made = run([sys.executable, "-m", "venv", str(venv)], top)
    assert made.returncode == 0, made.stderr
    python = str(venv / "bin" / "python")
    if RUNTIME == "tf1":  # the pip Python 3.7's venv brings is too old for pyproject.toml's extras
        step = run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "pip<24"], top)
        assert step.returncode == 0, step.stderr
    step = run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                "%s[%s]" % (source, RUNTIME)], top, timeout=1800)
    if step.returncode != 0 and any(m in step.stderr for m in OFFLINE):
        pytest.skip("no package index reachable to install TensorFlow: %s" % step.stderr.strip().splitlines()[-1])
    assert step.returncode == 0, step.stderr[-3000:]
    env = {"PATH": "%s:/usr/bin:/bin" % (venv / "bin"), "HOME": str(top), "GGCAM_HOME": str(top / "home"),
           "LANG": "C.UTF-8"}
    return venv, elsewhere, env


def test_the_wheel_installs_ggcam_and_nothing_else(installed):
    venv, elsewhere, env = installed
    found = run([str(venv / "bin" / "python"), "-c",  # RECORD read by hand: 3.7 has no importlib.metadata
                 "import glob, os, sysconfig, ggcam; print(ggcam.__file__); "
                 "record, = glob.glob(os.path.join(sysconfig.get_paths()['purelib'], 'ggcam-*.dist-info', 'RECORD')); "
                 "print(''.join(line.split(',')[0] + chr(10) for line in open(record)))"],
                elsewhere, env)
    assert found.returncode == 0, found.stderr
    where, *files = found.stdout.split()
    assert where.startswith(str(venv)) and ROOT not in where  # the installed copy, not the clone
    tops = {f.split("/")[0] for f in files if not f.startswith("..")}
    assert tops == {"ggcam", "ggcam-0.5.0.dist-info"}, tops  # no nets, gradcam, inference, tests
    assert "ggcam/data/imagenet_labels.txt" in files
    assert any(f.endswith("bin/ggcam") for f in files)


def test_the_command_and_the_notebook_api_work_from_another_folder(installed):
    venv, elsewhere, env = installed
    if not os.path.exists(CHECKPOINT + ".index"):
        pytest.skip("no MobileNet V1 checkpoint in checkpoints/ (make weights)")
    chelsea = os.path.join(ROOT, "images", "chelsea.png")
    helped = run([str(venv / "bin" / "ggcam"), "--help"], elsewhere, env)
    assert helped.returncode == 0 and "explain" in helped.stdout, helped.stderr
    module = run([str(venv / "bin" / "python"), "-m", "ggcam", "explain", "--help"], elsewhere, env)
    assert module.returncode == 0 and "--methods" in module.stdout, module.stderr
    result = run([str(venv / "bin" / "ggcam"), "explain", "--image=%s" % chelsea, "--label=282",
                  "--checkpoint=%s" % CHECKPOINT, "--output_dir=out", "--top_k=1"], elsewhere, env)
    assert result.returncode == 0, result.stderr
    assert "tabby" in result.stdout
    assert sorted(os.listdir(str(elsewhere / "out"))) == sorted(
        ["input.jpg", "gradcam.png", "guided_backprop.png", "guided_gradcam.png", "overlay.png", "panel.png"])
    notebook = run([str(venv / "bin" / "python"), "-c",
                    "from ggcam import Explainer\n"
                    "with Explainer(checkpoint=%r, methods=['gradcam']) as ex:\n"
                    "    e = ex.explain(%r)[0]\n"
                    "print(e.label, sorted(e.maps()))" % (CHECKPOINT, chelsea)], elsewhere, env)
    assert notebook.returncode == 0, notebook.stderr
    assert notebook.stdout.split()[-1] == "['gradcam']" and int(notebook.stdout.split()[0]) > 0
