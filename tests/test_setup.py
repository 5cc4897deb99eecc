"""scripts/setup_venv.sh for TensorFlow 1.15 (RUNTIME=tf1, the script's default) without any
Python 3.7 in reach. RUNTIME=auto and tf2, --detect and make's runtime line: test_runtimes.py."""
import os
import subprocess

import pytest

from conftest import ROOT

pytestmark = pytest.mark.unit

PATH = "/usr/bin:/bin"


@pytest.mark.parametrize("runtime", [None, "tf1"])
def test_no_python37_gives_a_short_message_and_exit_1(tmp_path, runtime):
    if any(os.path.exists(os.path.join(folder, "python3.7")) for folder in PATH.split(":")):
        pytest.skip("this machine has a python3.7 in %s: the set-up would install" % PATH)
    env = {"PATH": PATH, "HOME": str(tmp_path), "PYENV_ROOT": str(tmp_path / "pyenv"),
           "VENV": str(tmp_path / "venv")}
    if runtime:
        env["RUNTIME"] = runtime
    result = subprocess.run(["bash", os.path.join(ROOT, "scripts", "setup_venv.sh")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "no Python 3.7 found" in result.stderr and "pyenv install 3.7" in result.stderr
    assert "RUNTIME=tf2" in result.stderr  # the way out without Python 3.7
    assert not (tmp_path / "venv").exists()
