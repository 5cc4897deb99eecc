"""Model descriptions: one ``Model`` per kind of model file (see ``base.Model``).

``make_model(...)`` picks the kind from the arguments given; importing this package loads no
TensorFlow (the kinds' modules do, when a model is made).
"""
import os
from typing import Dict, List, Optional, Sequence, Tuple

from ggcam.models.zoo import DEFAULT_MODEL, ZOO

KINDS = ("model", "graph", "saved_model", "keras", "meta_graph")
# Arguments only model files take (a zoo network knows its own input and preprocessing).
FILE_ONLY = ("input_tensor", "logits_tensor", "input_range", "channel_order", "mean", "std", "feeds")


def read_class_names(path: str) -> List[str]:
    """One class name per line (blank lines at the end ignored); a byte-order mark is dropped."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            names = [line.rstrip("\r\n") for line in f]
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError("cannot read class names from %s: %s" % (path, getattr(exc, "strerror", None) or exc))
    while names and not names[-1].strip():
        names.pop()
    if not names:
        raise ValueError("%s lists no class names" % path)
    return names


def make_model(model: Optional[str] = None, checkpoint: Optional[str] = None, graph: Optional[str] = None,
               saved_model: Optional[str] = None, signature: str = "serving_default",
               keras: Optional[str] = None, meta_graph: Optional[str] = None,
               input_tensor: Optional[str] = None, logits_tensor: Optional[str] = None,
               input_range: Optional[Tuple[float, float]] = None, labels: Optional[str] = None,
               trust_model: bool = False, channel_order: str = "rgb", mean: Optional[Sequence[float]] = None,
               std: Optional[Sequence[float]] = None, feeds: Optional[Dict[str, object]] = None,
               session=None):
    """The description of the model named by exactly one of ``model`` (a slim zoo name),
    ``graph`` (frozen GraphDef), ``saved_model`` (folder), ``keras`` (HDF5 file, or a
    ``tf.keras.Model`` object), ``meta_graph`` (``.meta`` file, with ``checkpoint``) or
    ``session`` (a ``tf.Session`` whose graph holds the model, with ``input_tensor`` and
    ``logits_tensor``: tensors or names). Default: the zoo's MobileNet V1."""
    given = [k for k, v in (("model", model), ("graph", graph), ("saved_model", saved_model),
                            ("keras", keras), ("meta_graph", meta_graph), ("session", session))
             if v is not None and v is not False and v != ""]
    if len(given) > 1:
        raise ValueError("give one model: %s" % ", ".join("--" + k for k in given))
    names = read_class_names(labels) if labels else None
    kind = given[0] if given else "model"
    imported = {"input_tensor": input_tensor, "logits_tensor": logits_tensor, "input_range": input_range,
                "class_names": names, "trust_model": trust_model, "channel_order": channel_order, "mean": mean,
                "std": std, "feeds": feeds or None}
    if kind == "model":
        for flag in FILE_ONLY:
            if imported[flag] not in (None, "rgb"):
                raise ValueError("--%s is for imported models (--graph, --saved_model, --keras, --meta_graph)" % flag)
        from ggcam.models.slim import SlimModel
        return SlimModel(model or DEFAULT_MODEL, checkpoint, class_names=names)
    if checkpoint and kind != "meta_graph":
        raise ValueError("--checkpoint goes with --model or --meta_graph, not --%s" % kind)
    if kind == "graph":
        from ggcam.models.frozen_graph import FrozenGraphModel
        return FrozenGraphModel(graph, **imported)
    if kind == "saved_model":
        from ggcam.models.saved_model import SavedModelModel
        return SavedModelModel(saved_model, signature=signature, **imported)
    if kind == "meta_graph":
        from ggcam.models.meta_graph import MetaGraphModel
        return MetaGraphModel(meta_graph, checkpoint=checkpoint, **imported)
    if kind == "session":
        from ggcam.models.session_graph import SessionModel
        if input_tensor is None or logits_tensor is None:
            raise ValueError("a session model needs input_tensor and logits_tensor (tensors or names)")
        return SessionModel(session, **imported)
    from ggcam.models.keras_file import KerasModel
    if not isinstance(keras, (str, os.PathLike)):
        return KerasModel.from_object(keras, **{k: v for k, v in imported.items() if k != "trust_model"})
    return KerasModel(keras, **imported)
