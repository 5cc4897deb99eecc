"""Reading model files: bytes from a path, protobuf messages in binary or text format, and the
flag a file that fails to parse probably wants; each failure a one-line ModelError."""
import os
import warnings

from ggcam.models.base import ModelError


def read_file(path: str, what: str) -> bytes:
    if not os.path.exists(path):
        raise ModelError("no %s at %s" % (what, path))
    if os.path.isdir(path):
        raise ModelError("%s is a folder, not a %s%s" % (path, what, " (a SavedModel? use --saved_model)"
                                                        if os.path.exists(os.path.join(path, "saved_model.pb"))
                                                        else ""))
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ModelError("cannot read %s: %s" % (path, exc.strerror or exc))


def valid_graph(graph_def) -> bool:
    return len(graph_def.node) > 0 and all(n.name and n.op for n in graph_def.node)


def parse_proto(data: bytes, make, valid, path: str, what: str, hint: str = ""):
    """A protobuf message from ``data``, binary or text format; ModelError if neither parses
    into something ``valid`` accepts."""
    from google.protobuf import message, text_format
    proto = make()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            proto.ParseFromString(data)
        # protobuf warns "Unexpected end-group tag" for data it only partly read: not a model.
        if not any(issubclass(w.category, RuntimeWarning) for w in caught) and valid(proto):
            return proto
    except (message.DecodeError, ValueError):
        pass
    proto = make()
    try:
        text_format.Merge(data.decode("utf-8"), proto)
        if valid(proto):
            return proto
    except (text_format.ParseError, UnicodeDecodeError, ValueError):
        pass
    raise ModelError("%s is not a %s (neither binary nor text format)%s" % (path, what, hint))


def flag_hint(path: str, kind: str) -> str:
    """Which flag a file that failed to parse as ``kind`` probably wants."""
    base = os.path.basename(path)
    if kind != "meta_graph" and base.endswith(".meta"):
        return "; a MetaGraph? use --meta_graph with --checkpoint"
    if kind != "saved_model" and base in ("saved_model.pb", "saved_model.pbtxt"):
        return "; a SavedModel? use --saved_model=%s" % (os.path.dirname(path) or ".")
    if base.endswith((".h5", ".hdf5", ".keras")):
        return "; a Keras file? use --keras"
    return ""
