"""The benchmark scripts run (on tiny inputs, so they cannot rot); no timing is asserted."""
import json
import os
import subprocess
import sys

from conftest import ROOT


def test_memory_benchmark_runs_on_two_images(tmp_path):
    output = tmp_path / "memory.json"
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "memory.py"), "--images=2",
                             "--batch_size=1", "--output=%s" % output],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(output.read_text())
    assert report["images"] == 2
    assert report["peak_rss_mb"] > 0 and report["rss_mb_by_images"]["2"] > 0


def test_tf_build_benchmark_runs(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "tf_build.py"), "--batches=1",
                             "--repeats=1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True)
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout.strip().splitlines()[-1])
    assert row["batch"] == 1 and row["images_per_s"] > 0
