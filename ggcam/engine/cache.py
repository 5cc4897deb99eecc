"""Built graphs kept on disk, so that the next command line imports one instead of rebuilding it.

Building a slim network and its gradients op by op in Python takes about 1.2 s; importing
the same GraphDef about 0.2 s (docs/performance.md). An entry is keyed by everything that shapes
the graph: TensorFlow's and tf_slim's versions, this project's graph-making source files, the
model's identity (zoo name, checkpoint path, size and modification time), the layer and the
guided rule. It holds no weights (they are read from the checkpoint each time) and no file
ops (the graphs hold none).

A cache entry is a program too: whoever can write the folder decides what runs. So the folder
is made private (0700), and the folder or an entry that is a symlink, is not the user's own,
or can be written by group or others is refused (``load`` says why in ``notes``; the graph is
built anew and nothing is kept). A loaded entry must pass the allowlist of ``models.safety``;
any entry that cannot be read, parsed or checked is ignored and rebuilt.

Folder: ``$GGCAM_GRAPH_CACHE`` (``off`` disables it), else ``$XDG_CACHE_HOME/ggcam/graphs``
or ``~/.cache/ggcam/graphs``. The newest ``KEEP`` entries are kept.
"""
import glob
import hashlib
import json
import os
import stat
from typing import Dict, List, Optional, Tuple

from ggcam.io import safe_files

ENV = "GGCAM_GRAPH_CACHE"
KEEP = 16
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The files whose code decides which ops a graph gets.
_SOURCES = ("ggcam/engine/*.py", "ggcam/tf/*.py", "ggcam/models/*.py", "ggcam/nets/*.py", "ggcam/targets/*.py",
            "ggcam/outputs.py")


def folder() -> Optional[str]:
    """The cache folder, or None when $GGCAM_GRAPH_CACHE is 'off'."""
    chosen = os.environ.get(ENV)
    if chosen == "off":
        return None
    if chosen:
        return chosen
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ggcam", "graphs")


def unsafe(path: str, is_folder: bool) -> Optional[str]:
    """Why ``path`` may not be trusted as (a file of) the cache, or None: a symlink, not the
    expected kind, owned by someone else, or writable by group or others."""
    try:
        info = os.lstat(path)
    except OSError:
        return None  # absent: nothing to trust yet
    if stat.S_ISLNK(info.st_mode):
        return "%s is a symlink" % path
    if not (stat.S_ISDIR(info.st_mode) if is_folder else stat.S_ISREG(info.st_mode)):
        return "%s is not a %s" % (path, "folder" if is_folder else "regular file")
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        return "%s belongs to another user (uid %d)" % (path, info.st_uid)
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "%s can be written by %s" % (path, "others" if info.st_mode & stat.S_IWOTH else "its group")
    return None


def _source_digest() -> str:
    digest = hashlib.sha256()
    for pattern in _SOURCES:
        for path in sorted(glob.glob(os.path.join(_ROOT, pattern))):
            with open(path, "rb") as f:
                digest.update(path[len(_ROOT):].encode() + b"\0" + f.read())
    return digest.hexdigest()


def key(identity: Dict) -> str:
    """The entry name for a model identity (JSON-ready dict) with the code and versions."""
    from ggcam.tf.compat import VERSION
    import tf_slim
    parts = dict(identity, tensorflow=VERSION, tf_slim=getattr(tf_slim, "__version__", "?"), source=_source_digest())
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _refused(notes: Optional[List[str]], why: str, kept: bool) -> None:
    if notes is not None:
        notes.append("graph cache refused: %s; the graph is built anew%s" % (why, "" if kept else " and not kept"))


def load(name: str, notes: Optional[List[str]] = None) -> Optional[Tuple[object, Dict]]:
    """(GraphDef, names) of entry ``name``, or None when absent, unreadable or refused (a
    refusal for safety is said in ``notes``)."""
    where = folder()
    if where is None:
        return None
    paths = [os.path.join(where, name + ext) for ext in (".json", ".pb")]
    why = unsafe(where, True)
    if why:
        _refused(notes, why, kept=False)
        return None
    why = next((w for w in (unsafe(p, False) for p in paths) if w), None)
    if why:
        _refused(notes, why, kept=True)
        return None
    from ggcam.models.base import ModelError
    from ggcam.models.safety import check_graph_def
    from ggcam.tf.compat import tf
    try:
        with open(paths[0], encoding="utf-8") as f:
            names = json.load(f)
        with open(paths[1], "rb") as f:
            graph_def = tf.GraphDef.FromString(f.read())
        check_graph_def(graph_def, trust_model=False, what="graph cache entry %s" % paths[1], ours=True)
    except ModelError as exc:
        _refused(notes, str(exc), kept=True)
        return None
    except Exception:  # absent, truncated or altered: rebuild
        return None
    return graph_def, names


def save(name: str, graph_def, names: Dict) -> None:
    """Write entry ``name`` (the .json last: an entry without it is never read); keep the
    newest entries. A folder that cannot be written, or is refused (``unsafe``), is not an
    error: nothing is kept."""
    where = folder()
    if where is None:
        return
    try:
        os.makedirs(where, mode=0o700, exist_ok=True)
        if unsafe(where, True):
            return
        os.chmod(where, 0o700)  # one made by an earlier version (0755): private from now on
        safe_files.atomic_write_bytes(os.path.join(where, name + ".pb"), graph_def.SerializeToString())
        safe_files.atomic_write_text(os.path.join(where, name + ".json"), json.dumps(names, sort_keys=True))
        entries = sorted(glob.glob(os.path.join(where, "*.json")), key=os.path.getmtime, reverse=True)
        for old in entries[KEEP:]:
            for path in (old, old[:-len(".json")] + ".pb"):
                os.remove(path)
    except OSError:
        pass
