"""A model file is a program: refuse the ops of it that would touch anything outside the graph.

The explanation runs the ops its fetched tensors depend on. Among TensorFlow's ops some read
or write files (checkpoint I/O, readers, summaries, file-backed datasets and tables), run
Python (``tf.py_func``), or reach the network or a debugger. ``check_ops`` refuses such an op
with one line naming it, unless the user trusts the file; an op type this TensorFlow does not
know is refused always (importing it would fail anyway).

A few of those ops are stateless (``ReadFile``, ``MatchingFiles``, ``ImmutableConst``...):
TensorFlow may run them while it *builds* a graph, when a shape depends on their value
(shape inference evaluates constant subgraphs). ``build_time_hazards`` names them, so the
importer can leave them out of a graph before any import.
"""
from typing import Dict, Iterable, List, Optional, Set, Union

from ggcam.models.base import ModelError
from ggcam.tf_compat import tf

_FILES = "reads or writes files"
_PYTHON = "runs Python code"
_NETWORK = "reaches the network or a debugger"

# Exact op types, by what they do.
_DENIED = {}  # type: Dict[str, str]
for _kind, _types in (
        (_FILES, ("ReadFile", "WriteFile", "MatchingFiles", "Save", "SaveV2", "SaveSlices", "Restore",
                  "RestoreV2", "RestoreSlice", "MergeV2Checkpoints", "ImmutableConst", "LoadAndRemapMatrix",
                  "GenerateVocabRemapping", "TFRecordDataset", "FixedLengthRecordDataset",
                  "FixedLengthRecordDatasetV2", "TextLineDataset", "CSVDataset", "ExperimentalCSVDataset",
                  "LMDBDataset", "ExperimentalLMDBDataset", "SqlDataset", "ExperimentalSqlDataset",
                  "CacheDataset", "CacheDatasetV2", "SnapshotDataset", "SaveDataset", "LoadDataset",
                  "MatchingFilesDataset", "ExperimentalMatchingFilesDataset", "RecordInput", "ImportEvent",
                  "CreateSummaryFileWriter", "CreateSummaryDbWriter", "DecodeProtoV2", "EncodeProto",
                  "BoostedTreesExampleDebugOutputs")),
        (_PYTHON, ("PyFunc", "PyFuncStateless", "EagerPyFunc")),
        (_NETWORK, ("Rpc", "TryRpc", "RemoteCall", "RemoteFusedGraphExecute", "Copy", "CopyHost",
                    "_Send", "_Recv", "_HostSend", "_HostRecv", "XlaSend", "XlaRecv",
                    "GcsConfigureCredentials", "GcsConfigureBlockCache", "BigQueryReader"))):
    for _t in _types:
        _DENIED[_t] = _kind
# Families, by a part of the type name (``ReadVariableOp`` contains none of these).
_DENIED_PARTS = (("Reader", _FILES), ("SummaryWriter", _FILES), ("InitializeTableFromTextFile", _FILES),
                 ("Debug", _NETWORK), ("Collective", _NETWORK), ("TPUEmbedding", _NETWORK))


def _denied_part(op_type: str) -> Optional[str]:
    for part, kind in _DENIED_PARTS:
        if part in op_type:
            return kind
    if op_type.startswith("Write") and op_type.endswith("Summary"):  # WriteScalarSummary, WriteImageSummary...
        return _FILES
    return None


def registered_ops() -> Dict[str, object]:
    """Op type -> OpDef of every op this TensorFlow knows."""
    from tensorflow.python.framework import op_def_registry
    return op_def_registry.get_registered_ops()


def op_kind(op_type: str, attrs=None) -> Optional[str]:
    """What an op of type ``op_type`` does outside the graph ('reads or writes files', ...),
    or None when it only computes. ``attrs``: the node's attributes (a ``NodeDef.attr`` map)."""
    kind = _DENIED.get(op_type) or _denied_part(op_type)
    if kind:
        return kind
    if op_type == "PrintV2" and attrs is not None and "output_stream" in attrs:
        # Printing to the log is harmless; "file://..." appends to a file.
        if attrs["output_stream"].s.decode("utf-8", "replace").startswith("file://"):
            return _FILES
    return None


def build_time_hazards() -> Set[str]:
    """Denied op types TensorFlow may run while a graph is built (stateless ones: shape
    inference evaluates constant subgraphs made of them)."""
    registered = registered_ops()
    return {t for t in list(_DENIED) + [t for t in registered if _denied_part(t)]
            if t in registered and not registered[t].is_stateful}


def _type_and_attrs(op):
    if isinstance(op, tf.Operation):
        return op.type, op.node_def.attr
    return op.op, op.attr


def function_bodies(nodes: Iterable, library) -> List:
    """The NodeDefs of the library functions ``nodes`` call (by type or through a function
    attribute, as If, While and PartitionedCall do), recursively."""
    if library is None or not len(library.function):
        return []
    functions = {f.signature.name: f for f in library.function}
    seen, found, stack = set(), [], list(nodes)
    while stack:
        node = stack.pop()
        op_type, attrs = _type_and_attrs(node)
        called = [op_type] if op_type in functions else []
        for value in attrs.values():
            if value.HasField("func"):
                called.append(value.func.name)
            elif value.HasField("list"):
                called.extend(f.name for f in value.list.func)
        for name in called:
            if name in functions and name not in seen:
                seen.add(name)
                found.extend(functions[name].node_def)
                stack.extend(functions[name].node_def)
    return found


def check_ops(ops_or_nodes: Iterable[Union[tf.Operation, object]], trust_model: bool, what: str,
              library=None) -> None:
    """Raise ModelError naming the first op that reads or writes files, runs Python or reaches
    the network (unless ``trust_model``), or whose type TensorFlow does not know (always).

    ops_or_nodes: tf.Operations or GraphDef NodeDefs (those the explanation will run);
    what: the model file, for the message; library: the graph's FunctionDefLibrary, whose
    functions the ops call are checked too.
    """
    nodes = list(ops_or_nodes)
    nodes += function_bodies(nodes, library)
    functions = {f.signature.name for f in library.function} if library is not None else set()
    registered = registered_ops()
    for node in nodes:
        op_type, attrs = _type_and_attrs(node)
        if op_type not in registered and op_type not in functions:
            raise ModelError("%s: op %s has type %s, which TensorFlow %s does not know (a custom op, or one "
                             "of a newer TensorFlow); cannot run it" % (what, node.name, op_type, tf.VERSION))
        kind = op_kind(op_type, attrs)
        if kind and not trust_model:
            raise ModelError("%s: op %s (%s) %s; refusing to run it (pass --trust_model if you trust this file)"
                             % (what, node.name, op_type, kind))
