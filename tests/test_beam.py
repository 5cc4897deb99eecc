"""beam_explain.py: the Apache Beam pipeline on the DirectRunner with 2 worker processes, and on
a real Dask cluster: a scheduler and two worker processes (one thread each) on 127.0.0.1,
talking TCP, started here and stopped by their pids.

The pipeline tests need Apache Beam (requirements-beam.txt, `make beam-setup`, which `make
test-all` runs first): they are marked ``extended`` and skip with the reason without it. The
Dask runner's need Dask too, which Beam 2.48 (the TF 1.15 runtime, Python 3.7) cannot have.
"""
import csv
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, run_main

pytestmark = pytest.mark.e2e

SCRIPT = os.path.join(ROOT, "beam_explain.py")
GOOD = ("chelsea.jpg", "coffee.png", "cat_and_coffee.png", "grey.png")
BROKEN = ("broken.jpg", "truncated.png")
TARGETS = ("top:1", "top:2")


def beam_or_skip() -> None:
    """Apache Beam in this interpreter's venv; `make beam-setup` (which `make test-all` runs
    first) installs it: no test installs packages."""
    try:
        import apache_beam  # noqa: F401
    except ImportError:
        pytest.skip("Apache Beam is not installed in %s: `make beam-setup` installs it (`make test-all` "
                    "does so before the tests)" % sys.prefix)


DIRECT = ("--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2")


def run_beam(*args: str, runner=DIRECT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT] + list(runner) + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=900, cwd=ROOT)


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """A Dask scheduler and two single-threaded worker processes on 127.0.0.1 (scripts/dask_cluster.py,
    the same Python); yields the runner flags that point the pipeline at it."""
    beam_or_skip()
    import importlib.util
    if importlib.util.find_spec("distributed") is None:
        pytest.skip("Dask is not installed: Beam's Dask runner (apache-beam[dask]) comes with `make beam-setup` "
                    "on the TF 2 runtime; Beam 2.48 on Python 3.7 (TF 1.15) cannot have it")
    import distributed
    spec = importlib.util.spec_from_file_location("dask_cluster", os.path.join(ROOT, "scripts", "dask_cluster.py"))
    dask_cluster = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dask_cluster)
    log = str(tmp_path_factory.mktemp("dask") / "cluster.log")
    with dask_cluster.local_cluster(workers=2, log_path=log) as address:
        with distributed.Client(address, timeout=60) as client:
            workers = client.scheduler_info()["workers"]
            pids = sorted(client.run(os.getpid).values())  # the worker processes, as the scheduler knows them
        assert address.startswith("tcp://127.0.0.1:"), address
        assert len(workers) == 2 and all(w["nthreads"] == 1 for w in workers.values()), workers
        yield ("--runner=DaskRunner", "--dask_client_address=%s" % address)
    assert [pid for pid in pids if os.path.exists("/proc/%d" % pid)] == []  # stopped by their pids


def make_photos(folder) -> None:
    """Four small good photos (JPEG, PNG, greyscale) cut from images/, two broken files."""
    os.makedirs(folder)
    chelsea = Image.open(os.path.join(ROOT, "images", "chelsea.png")).convert("RGB")
    coffee = Image.open(os.path.join(ROOT, "images", "coffee.png")).convert("RGB")
    both = Image.open(os.path.join(ROOT, "images", "cat_and_coffee.png")).convert("RGB")
    chelsea.resize((200, 150)).save(os.path.join(folder, "chelsea.jpg"), quality=92)
    coffee.resize((180, 120)).save(os.path.join(folder, "coffee.png"))
    both.resize((240, 120)).save(os.path.join(folder, "cat_and_coffee.png"))
    chelsea.convert("L").resize((160, 160)).save(os.path.join(folder, "grey.png"))
    with open(os.path.join(folder, "broken.jpg"), "w") as f:
        f.write("this is not a JPEG\n")
    with open(os.path.join(folder, "coffee.png"), "rb") as f:
        head = f.read(200)
    with open(os.path.join(folder, "truncated.png"), "wb") as f:
        f.write(head)


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_shards(out):
    rows = []
    for shard in sorted(glob.glob(os.path.join(out, "results-*-of-*.jsonl"))):
        with open(shard, encoding="utf-8") as f:
            rows.extend(json.loads(line) for line in f if line.strip())
    return rows


def picture_files(out):
    """path -> (inode, mtime, size) of every file in the per-image folders."""
    found = {}
    for folder in os.listdir(out):
        full = os.path.join(out, folder)
        if os.path.isdir(full) and not folder.startswith("beam-temp"):
            for name in os.listdir(full):
                st = os.stat(os.path.join(full, name))
                found[os.path.join(folder, name)] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return found


# ----------------------------------------------------------------------------- without Beam

@pytest.mark.smoke
def test_help_loads_neither_tensorflow_nor_beam():
    code = ("import sys, runpy; sys.argv = ['beam_explain.py', '--help']\n"
            "try:\n    runpy.run_path(%r, run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print('LOADED', sorted(m for m in ('tensorflow', 'apache_beam') if m in sys.modules))" % SCRIPT)
    done = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "--runner=DataflowRunner" in done.stdout and "--max_batch_size" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "LOADED []"


@pytest.mark.unit
def test_usage_errors_come_before_beam(capsys):
    import beam_explain
    assert beam_explain.main(["--image=images", "--max_batch_size=0"]) == 2
    assert beam_explain.main(["--image=images", "--label=282", "--top_k_targets=2"]) == 2
    assert beam_explain.main(["--image=images", "--metrics", "--metric_maps=saliency"]) == 2
    assert beam_explain.main(["--image=images", "--list_layers"]) == 2
    err = capsys.readouterr().err
    assert "--max_batch_size must be at least 1" in err
    assert "use either --label or --top_k_targets" in err and "--metric_maps: choose among" in err


# ----------------------------------------------------------------------------- the pipeline

@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("beam") / "photos")
    make_photos(folder)
    return folder


def pipeline_run(photos, out, runner):
    """One pipeline run over 4 good and 2 broken photos, 2 targets each, with raw.npz and metrics."""
    args = ("--image=%s" % photos, "--top_k_targets=2", "--save_raw", "--metrics", "--max_batch_size=3",
            "--output_dir=%s" % out)
    return photos, out, args, run_beam(*args, runner=runner)


@pytest.fixture(scope="module", params=["direct", "dask"])
def beam_run(request, photos, tmp_path_factory):
    """The run on the DirectRunner (2 processes), and on the Dask cluster."""
    beam_or_skip()
    runner = DIRECT if request.param == "direct" else request.getfixturevalue("dask_cluster")
    out = str(tmp_path_factory.mktemp("out-" + request.param))
    return pipeline_run(photos, out, runner) + (runner,)


@pytest.fixture(scope="module")
def direct_run(photos, tmp_path_factory):
    """The DirectRunner's run, to compare the Dask runner's with."""
    beam_or_skip()
    return pipeline_run(photos, str(tmp_path_factory.mktemp("out-direct-reference")), DIRECT)


@pytest.mark.extended
def test_the_dask_runner_without_dask_is_a_usage_error(tmp_path, capsys):
    beam_or_skip()
    import importlib.util
    if importlib.util.find_spec("distributed") is not None:
        pytest.skip("Dask is installed here: the Dask runner runs (test_every_image_and_target_once...[dask])")
    import beam_explain
    out = tmp_path / "out"
    assert beam_explain.main(["--image=%s" % os.path.join(ROOT, "images"), "--output_dir=%s" % out,
                              "--runner=DaskRunner"]) == 2
    assert "--runner=DaskRunner needs Dask" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.extended
def test_unknown_options_are_usage_errors():
    beam_or_skip()
    done = run_beam("--image=images", "--imgae=x", "--output_dir=/nonexistent/never")
    assert done.returncode == 2, done.stderr
    assert "unknown option(s): --imgae" in done.stderr


@pytest.mark.extended
def test_every_image_and_target_once_bad_images_fail_alone(beam_run):
    photos, out, _, done, _ = beam_run
    assert done.returncode == 1, done.stderr  # some images failed, the pipeline did not
    assert "8 explanation(s), 4 failed, 0 already done" in done.stdout, done.stdout + done.stderr
    import re
    graphs = int(re.search(r"graph was built (\d+) time", done.stderr).group(1))
    assert 1 <= graphs <= 2  # once per worker process, never per batch
    rows = read_csv(os.path.join(out, "results.csv"))
    from ggcam.runs import results
    with open(os.path.join(out, "results.csv"), encoding="utf-8") as f:
        header = f.readline().strip().split(",")
    assert header == list(results.COLUMNS) + ["deletion_auc_guided_gradcam", "insertion_auc_guided_gradcam"]
    keys = [(os.path.basename(r["path"]), r["target"]) for r in rows]
    assert sorted(keys) == sorted((name, t) for name in GOOD + BROKEN for t in TARGETS)  # none lost or duplicated
    shard_rows = read_shards(out)
    assert sorted((os.path.basename(r["path"]), r["target"]) for r in shard_rows) == sorted(keys)
    for r in rows:
        if os.path.basename(r["path"]) in BROKEN:
            assert r["status"] == "failed" and r["error"] and not r["folder"]
        else:
            assert r["status"] == "ok" and not r["error"], r
            assert 0.0 <= float(r["deletion_auc_guided_gradcam"]) <= 1.0
    assert "not an image file" in " ".join(r["error"] for r in rows)
    # pictures present, each checked against its recorded size and checksum
    from ggcam.explanation import expected_files, is_complete
    for r in shard_rows:
        if r["status"] == "ok":
            folder = os.path.join(out, r["folder"])
            assert sorted(os.listdir(folder)) == sorted(expected_files(save_raw=True))
            assert is_complete(folder, r["files"], save_raw=True)
    assert not glob.glob(os.path.join(out, "*", ".tmp-*")) and not glob.glob(os.path.join(out, "beam-temp*"))


@pytest.mark.extended
def test_the_dask_cluster_gives_the_direct_runners_rows_files_and_arrays(beam_run, direct_run):
    """The same rows (but the seconds), the same files in each folder, raw.npz arrays within
    1e-5 of each array's scale, the same counters."""
    _, out, _, done, runner = beam_run
    if runner == DIRECT:
        pytest.skip("compares the Dask runner's run with the DirectRunner's")
    _, reference, _, reference_done = direct_run
    assert done.returncode == reference_done.returncode == 1, done.stderr

    def rows(folder):
        found = {}
        for r in read_shards(folder):
            r = {k: v for k, v in r.items() if k not in ("seconds", "files")}
            found[(os.path.basename(r["path"]), r["target"])] = r
        return found
    ours, theirs = rows(out), rows(reference)
    assert sorted(ours) == sorted(theirs)
    for key, row in theirs.items():
        assert ours[key] == row, key
        if row["status"] != "ok":
            continue
        a, b = os.path.join(out, row["folder"]), os.path.join(reference, row["folder"])
        assert sorted(os.listdir(a)) == sorted(os.listdir(b))
        with np.load(os.path.join(a, "raw.npz")) as x, np.load(os.path.join(b, "raw.npz")) as y:
            for name in y.files:
                if y[name].dtype.kind == "f":
                    np.testing.assert_allclose(x[name], y[name], rtol=0, err_msg=name,
                                               atol=1e-5 * max(1.0, float(np.abs(y[name]).max())))
                else:
                    assert x[name] == y[name], name
    counters = [l for l in done.stdout.splitlines() if "explanation(s)" in l]
    assert [l.split("; see")[0] for l in counters] == [
        l.split("; see")[0] for l in reference_done.stdout.splitlines() if "explanation(s)" in l]


@pytest.mark.extended
def test_metrics_summary_is_the_mean_with_a_t_interval(beam_run):
    _, out, _, done, _ = beam_run
    rows = [r for r in read_shards(out) if r["status"] == "ok"]
    with open(os.path.join(out, "metrics_summary.json")) as f:
        summary = {(r["map"], r["measure"]): r for r in json.load(f)["rows"]}
    values = np.array([r["insertion_auc_guided_gradcam"] for r in rows])
    s = summary[("guided_gradcam", "insertion_auc")]
    assert s["n"] == len(values) == 8
    assert s["mean"] == pytest.approx(values.mean())
    half = 2.365 * values.std(ddof=1) / np.sqrt(8)  # Student's t, 7 degrees of freedom
    assert (s["ci95_low"], s["ci95_high"]) == pytest.approx((values.mean() - half, values.mean() + half))
    assert "guided_gradcam insertion_auc: mean" in done.stdout


@pytest.mark.extended
def test_raw_arrays_equal_the_command_lines(beam_run, tmp_path, shared_graphs):
    photos, out, _, _, _ = beam_run
    import inference
    cli_out = str(tmp_path / "cli")
    result = run_main(inference.main, "--image=%s" % os.path.join(photos, "chelsea.jpg"), "--save_raw",
                      "--output_dir=%s" % cli_out)
    assert result.returncode == 0, result.stderr
    row, = [r for r in read_shards(out) if r["path"].endswith("chelsea.jpg") and r["target"] == "top:1"]
    ours, theirs = np.load(os.path.join(out, row["folder"], "raw.npz")), np.load(os.path.join(cli_out, "raw.npz"))
    assert sorted(ours.files) == sorted(theirs.files)
    for name in theirs.files:
        if theirs[name].dtype.kind == "f":
            # Batched and single-image kernels may round differently (TF 2): 1e-5 of the array's scale.
            atol = 1e-5 * max(1.0, float(np.abs(theirs[name]).max()))
            np.testing.assert_allclose(ours[name], theirs[name], atol=atol, rtol=0, err_msg=name)
        else:
            assert ours[name] == theirs[name], name


@pytest.mark.extended
def test_a_rerun_writes_nothing_new(beam_run):
    _, out, args, _, runner = beam_run
    before = picture_files(out)
    rows_before = {(r["path"], r["target"]): r for r in read_shards(out)}
    done = run_beam(*args, runner=runner)
    assert done.returncode == 1, done.stderr  # the broken images are tried again, and fail again
    assert "0 explanation(s), 4 failed, 8 already done" in done.stdout, done.stdout + done.stderr
    assert picture_files(out) == before  # same files, not rewritten
    rows_after = {(r["path"], r["target"]): r for r in read_shards(out)}
    assert sorted(rows_after) == sorted(rows_before)
    assert all(rows_after[k] == r for k, r in rows_before.items() if r["status"] == "ok")


def readme_beam_commands():
    """The beam_explain.py command lines of the documentation's Beam page, as argv lists."""
    import re
    import shlex
    with open(os.path.join(ROOT, "docs", "beam.md"), encoding="utf-8") as f:
        section = f.read()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        for command in block.replace("\\\n", " ").splitlines():
            words = shlex.split(command, comments=True)
            if len(words) > 1 and words[1] == "beam_explain.py":
                commands.append(words[2:])
    return commands


@pytest.mark.extended
def test_documented_command_lines_parse():
    """The local, Dataflow, Flink and Spark command lines: our flags and Beam's options all known."""
    beam_or_skip()
    import beam_explain
    import importlib.util
    commands = readme_beam_commands()
    has_dask = importlib.util.find_spec("distributed") is not None
    runners = set()
    for argv in commands:
        if "--runner=DaskRunner" in argv and not has_dask:
            continue  # Dask's options exist only where Dask is (not with Beam 2.48 on Python 3.7)
        args, rest = beam_explain.build_parser().parse_known_args(argv)
        options = beam_explain.pipeline_options(rest)  # raises UsageError for an unknown option
        runners.add(options.get_all_options()["runner"])
        assert args.image
    assert runners >= {"DirectRunner", "DataflowRunner", "FlinkRunner", "SparkRunner"} | (
        {"DaskRunner"} if has_dask else set()), runners


@pytest.mark.extended
def test_newest_complete_shard_set_is_read_and_stale_shards_go(tmp_path):
    beam_or_skip()
    from ggcam.runs import beam as bp
    out = str(tmp_path)
    for name, mtime in (("results-00000-of-00003.jsonl", 100), ("results-00001-of-00003.jsonl", 100),
                        ("results-00002-of-00003.jsonl", 100), ("results-00000-of-00002.jsonl", 200),
                        ("results-00001-of-00002.jsonl", 200), ("results-00000-of-00004.jsonl", 300)):
        path = os.path.join(out, name)
        open(path, "w").close()
        os.utime(path, (mtime, mtime))
    # the set of 4 is incomplete (an interrupted write); of the complete sets the newest wins
    assert [os.path.basename(p) for p in bp.prior_shards(out)] == ["results-00000-of-00002.jsonl",
                                                                   "results-00001-of-00002.jsonl"]
    bp.remove_stale_shards([os.path.join(out, "results-00000-of-00002.jsonl"),
                            os.path.join(out, "results-00001-of-00002.jsonl")], out)
    assert sorted(os.listdir(out)) == ["results-00000-of-00002.jsonl", "results-00001-of-00002.jsonl"]


@pytest.mark.extended
def test_t_quantiles_and_intervals():
    beam_or_skip()
    from ggcam.runs import beam as bp
    assert bp.t975(7) == 2.365 and bp.t975(30) == 2.042
    for df, t in ((40, 2.021), (60, 2.000), (120, 1.980), (10 ** 6, 1.960)):
        assert bp.t975(df) == pytest.approx(t, abs=6e-4)
    values = np.array([0.2, 0.4, 0.3, 0.5])
    ci = bp.mean_ci(len(values), values.sum(), (values ** 2).sum())
    half = 3.182 * values.std(ddof=1) / 2.0
    assert (ci["mean"], ci["ci95_low"], ci["ci95_high"]) == pytest.approx((0.35, 0.35 - half, 0.35 + half))
    assert bp.mean_ci(1, 0.3, 0.09)["ci95_low"] is None and bp.mean_ci(0, 0.0, 0.0)["mean"] is None


@pytest.mark.extended
def test_the_pipeline_takes_the_methods_flags(tmp_path):
    """--methods, --ig_steps and --smoothgrad as for inference.py; --metrics scores the maps named."""
    beam_or_skip()
    photos, out = str(tmp_path / "photos"), str(tmp_path / "out")
    os.makedirs(photos)
    Image.open(os.path.join(ROOT, "images", "chelsea.png")).convert("RGB").resize((200, 150)).save(
        os.path.join(photos, "chelsea.jpg"), quality=92)
    done = run_beam("--image=%s" % photos, "--output_dir=%s" % out, "--save_raw", "--methods=layercam,saliency",
                    "--smoothgrad=2", "--metrics", "--metric_maps=layercam,saliency_smoothgrad", "--metric_steps=4")
    assert done.returncode == 0, done.stderr
    (row,) = read_shards(out)
    folder = os.path.join(out, row["folder"])
    assert sorted(os.listdir(folder)) == sorted(["input.jpg", "layercam.png", "saliency_smoothgrad.png", "overlay.png",
                                                 "panel.png", "raw.npz"])
    with np.load(os.path.join(folder, "raw.npz")) as raw:
        assert {"cam_layercam", "saliency_smoothgrad"} <= set(raw.files)
    assert 0.0 <= row["insertion_auc_saliency_smoothgrad"] <= 1.0 and 0.0 <= row["deletion_auc_layercam"] <= 1.0
