"""scripts/setup_venv.sh without any Python 3.7 in reach."""
import os
import subprocess

from conftest import ROOT


def test_no_python37_gives_a_short_message_and_exit_1(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYENV_ROOT": str(tmp_path / "pyenv"),
           "VENV": str(tmp_path / "venv")}
    result = subprocess.run(["bash", os.path.join(ROOT, "scripts", "setup_venv.sh")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert result.returncode == 1
    assert "no Python 3.7 found" in result.stderr and "pyenv install 3.7" in result.stderr
    assert not (tmp_path / "venv").exists()
