"""The benchmark scripts run (on tiny inputs, so they cannot rot); no timing is asserted."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.e2e


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




def torch_venv_or_skip():
    """benchmarks/.venv-torch, which `make torch-setup` (run by `make test-all`) creates."""
    if not os.path.isfile(os.path.join(ROOT, "benchmarks", ".venv-torch", ".installed")):
        pytest.skip("benchmarks/.venv-torch is absent: `make torch-setup` creates it (about 5 GB; "
                    "`make test-all` does so before the tests)")


@pytest.mark.extended
def test_speed_benchmark_runs_on_two_images_and_torch_logits_agree(tmp_path):
    torch_venv_or_skip()
    output = tmp_path / "results.json"
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "speed.py"), "--images=2",
                             "--batches=1", "--repeats=1", "--output=%s" % output],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(output.read_text())
    tools = {r["tool"] for r in report["rows"]}
    assert tools == {"this project", "this project, 5 pictures", "network pass (floor)", "forward only",
                     "seed pipeline shape", "pytorch-grad-cam"}
    # the PyTorch MobileNet V1 carries the same weights and reproduces TF's SAME padding
    assert report["pytorch_grad_cam_logits_max_abs_diff"] < 1e-3
    summary = result.stdout.strip().splitlines()[-1]
    assert [w.split("=")[0] for w in summary.split()] == [
        "speedup_vs_pytorch_grad_cam", "speedup_vs_pytorch_grad_cam_b1", "overhead_vs_network",
        "network_vs_forward", "cold_start_vs_tf_import"], summary
    cold = report["cold_start"]
    assert cold["vs_tf_import"] > 0 and cold["help_s"] < cold["first_picture_s"]
    assert report["by_batch"]["1"]["overhead_vs_network"] > 0
    assert report["cold_start"]["first_picture_s"] <= report["cold_start"]["exit_s"]


@pytest.mark.extended
def test_methods_benchmark_times_each_method_against_pytorch_grad_cam(tmp_path):
    torch_venv_or_skip()
    output = tmp_path / "methods.json"
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "methods.py"), "--images=2",
                             "--slow_images=1", "--repeats=1", "--methods=gradcam,eigencam",
                             "--output=%s" % output], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(output.read_text())
    peer = {r["method"]: r for r in rows if r.get("tool") == "pytorch-grad-cam"}
    assert set(peer) == {"gradcam", "eigencam"}
    assert all(r["ours_vs_peer"] > 0 for r in peer.values())
    assert {r["method"] for r in rows if r["part"] == "c"} == {"integrated_gradients", "guided_backprop_smoothgrad"}
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("closed_form_cams_vs_gradcam=") and "eigencam_vs_pytorch_grad_cam=" in summary


@pytest.mark.graph
def test_speed_variants_take_turns_and_each_keeps_its_best_round(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    import speed
    clock, calls = [0.0], []
    costs = {"a": iter([3.0, 1.0, 2.0]), "b": iter([5.0, 6.0, 4.0])}

    def variant(name):
        def run():
            calls.append(name)
            clock[0] += next(costs[name])
        return run

    monkeypatch.setattr(speed.time, "perf_counter", lambda: clock[0])
    best = speed.interleaved_best({"a": variant("a"), "b": variant("b")}, repeats=3)
    assert calls == ["a", "b"] * 3
    assert best == {"a": 1.0, "b": 4.0}


def test_the_network_pass_profile_and_levers_run(tmp_path):
    """benchmarks/profile_ops.py and benchmarks/network_levers.py on one small round: they run,
    their groups cover the op time, and a lever that keeps the values reports no difference."""
    report = tmp_path / "ops.json"
    done = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "profile_ops.py"), "--batches=1",
                           "--repeats=1", "--output=%s" % report], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True)
    assert done.returncode == 0, done.stderr
    (batch,) = json.loads(report.read_text())["batches"]
    assert abs(sum(g["share"] for g in batch["groups"]) - 1.0) < 1e-6 and batch["network_vs_forward"] > 1
    levers = tmp_path / "levers.json"
    done = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "network_levers.py"), "--batches=1",
                           "--rounds=1", "--levers=relu6grad,pointwise", "--output=%s" % levers],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert done.returncode == 0, done.stderr
    rows = {r["lever"]: r for r in json.loads(levers.read_text())["rows"]}
    assert sorted(rows) == ["baseline", "pointwise", "relu6grad"]
    assert rows["relu6grad"]["largest_difference"] == 0.0 and rows["pointwise"]["largest_difference"] < 1e-5
