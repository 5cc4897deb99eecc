"""Built graphs kept on disk, so that the next command line imports one instead of rebuilding it.

Building a slim network and its gradients op by op in Python takes about 1.2 s; importing
the same GraphDef about 0.2 s (README, "Speed"). An entry is keyed by everything that shapes
the graph: TensorFlow's and tf_slim's versions, this project's graph-making source files, the
model's identity (zoo name, checkpoint path, size and modification time), the layer and the
guided rule. It holds no weights (they are read from the checkpoint each time) and no file
ops: a loaded entry passes the same op check as a user's model file (``models.safety``), and
any entry that cannot be read, parsed or checked is ignored and rebuilt.

Folder: ``$GGCAM_GRAPH_CACHE`` (``off`` disables it), else ``$XDG_CACHE_HOME/ggcam/graphs``
or ``~/.cache/ggcam/graphs``. The newest ``KEEP`` entries are kept.
"""
import glob
import hashlib
import json
import os
from typing import Dict, Optional, Tuple

from ggcam import image_io

ENV = "GGCAM_GRAPH_CACHE"
KEEP = 16
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The files whose code decides which ops a graph gets.
_SOURCES = ("ggcam/graph.py", "ggcam/guided_relu.py", "ggcam/tf_compat.py", "ggcam/graph_cache.py",
            "ggcam/models/*.py", "nets/*.py")


def folder() -> Optional[str]:
    """The cache folder, or None when $GGCAM_GRAPH_CACHE is 'off'."""
    chosen = os.environ.get(ENV)
    if chosen == "off":
        return None
    if chosen:
        return chosen
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ggcam", "graphs")


def _source_digest() -> str:
    digest = hashlib.sha256()
    for pattern in _SOURCES:
        for path in sorted(glob.glob(os.path.join(_ROOT, pattern))):
            with open(path, "rb") as f:
                digest.update(path[len(_ROOT):].encode() + b"\0" + f.read())
    return digest.hexdigest()


def key(identity: Dict) -> str:
    """The entry name for a model identity (JSON-ready dict) with the code and versions."""
    from ggcam.tf_compat import VERSION
    import tf_slim
    parts = dict(identity, tensorflow=VERSION, tf_slim=getattr(tf_slim, "__version__", "?"), source=_source_digest())
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def load(name: str) -> Optional[Tuple[object, Dict]]:
    """(GraphDef, names) of entry ``name``, or None when absent, unreadable or refused."""
    where = folder()
    if where is None:
        return None
    from ggcam.models.safety import check_ops
    from ggcam.tf_compat import tf
    try:
        with open(os.path.join(where, name + ".json"), encoding="utf-8") as f:
            names = json.load(f)
        with open(os.path.join(where, name + ".pb"), "rb") as f:
            graph_def = tf.GraphDef.FromString(f.read())
        check_ops(graph_def.node, trust_model=False, what="graph cache entry %s" % name, library=graph_def.library)
    except Exception:  # absent, truncated, altered or refused: rebuild
        return None
    return graph_def, names


def save(name: str, graph_def, names: Dict) -> None:
    """Write entry ``name`` (the .json last: an entry without it is never read); keep the
    newest entries. A folder that cannot be written is not an error: nothing is kept."""
    where = folder()
    if where is None:
        return
    try:
        os.makedirs(where, exist_ok=True)
        image_io.atomic_write_bytes(os.path.join(where, name + ".pb"), graph_def.SerializeToString())
        image_io.atomic_write_text(os.path.join(where, name + ".json"), json.dumps(names, sort_keys=True))
        entries = sorted(glob.glob(os.path.join(where, "*.json")), key=os.path.getmtime, reverse=True)
        for old in entries[KEEP:]:
            for path in (old, old[:-len(".json")] + ".pb"):
                os.remove(path)
    except OSError:
        pass
