"""GraphDef surgery for imported model files: nodes and their consumers, stand-ins that let
TensorFlow import a file without evaluating any of it, the path the explainer imports, and the
attributes a file's ops carry for TensorFlow's own bookkeeping."""
from collections import OrderedDict
from typing import Dict, Iterable, List, Set, Tuple

from ggcam.models import safety
from ggcam.tf.compat import registered_ops, tf

_BIG_CONST = 4096  # bytes: constants larger than this are left empty in the scratch graph
# Op types of variables (a MetaGraph's or SavedModel's weights).
VARIABLE_OPS = ("VariableV2", "Variable", "VarHandleOp", "AutoReloadVariable")


def op_name(ref: str) -> str:
    """'^name', 'name:1' or 'name' -> 'name'."""
    return ref.lstrip("^").split(":")[0]


def tensor_name(ref: str) -> str:
    """A data input 'name' or 'name:k' -> 'name:k'."""
    return ref if ":" in ref else ref + ":0"


class Nodes:
    """A GraphDef's nodes by name, and who consumes each (data and control inputs)."""

    def __init__(self, graph_def):
        self.graph_def = graph_def
        self.by_name = OrderedDict((n.name, n) for n in graph_def.node)
        self.consumers = {name: [] for name in self.by_name}  # type: Dict[str, List[str]]
        for n in graph_def.node:
            for ref in n.input:
                source = op_name(ref)
                if source in self.consumers:
                    self.consumers[source].append(n.name)
        self.functions = {f.signature.name for f in graph_def.library.function}

    def descendants(self, start: str) -> Set[str]:
        """``start`` and every node that depends on it."""
        seen, stack = set(), [start]
        while stack:
            name = stack.pop()
            if name not in seen and name in self.consumers:
                seen.add(name)
                stack.extend(self.consumers[name])
        return seen

    def ancestors(self, start: str, stop: Set[str] = frozenset()) -> Set[str]:
        """``start`` and every node it depends on, not looking behind the nodes of ``stop``."""
        seen, stack = set(), [start]
        while stack:
            name = stack.pop()
            if name in seen or name not in self.by_name:
                continue
            seen.add(name)
            if name not in stop:
                stack.extend(op_name(ref) for ref in self.by_name[name].input)
        return seen


def registered_op_def(op_type: str):
    """The OpDef TensorFlow has registered for ``op_type``, or None."""
    return registered_ops().get(op_type)


def _attr(node, op_def, name: str):
    if name in node.attr:
        return node.attr[name]
    for a in op_def.attr:
        if a.name == name and a.HasField("default_value"):
            return a.default_value
    return None


def output_dtypes(node) -> List[int]:
    """The DataType of each output of ``node`` (a guess for op types TensorFlow does not know)."""
    op_def = registered_op_def(node.op)
    if op_def is None:
        for key in ("dtype", "T", "out_type"):
            if key in node.attr and node.attr[key].type:
                return [node.attr[key].type]
        return [tf.float32.as_datatype_enum]
    types = []
    for arg in op_def.output_arg:
        if arg.type_list_attr:
            value = _attr(node, op_def, arg.type_list_attr)
            types += list(value.list.type) if value is not None else []
            continue
        if arg.type:
            t = arg.type
        else:
            value = _attr(node, op_def, arg.type_attr)
            t = value.type if value is not None else tf.float32.as_datatype_enum
        count = _attr(node, op_def, arg.number_attr).i if arg.number_attr else 1
        types += [t] * count
    return types


def stand_ins(graph_def, replace: Set[str], isolate: Set[str], strip_constants: bool) -> Tuple[object, Set[str]]:
    """A copy of ``graph_def`` that TensorFlow can import without running anything of ``isolate``
    or ``replace``, and the names of the nodes it made placeholders.

    TensorFlow runs small constant subgraphs while it builds a graph, when a static shape
    depends on their value (``ReadFile`` of a constant path does read the file). Each node of
    ``isolate`` that has inputs gets them through a PlaceholderWithDefault (never evaluated at
    build time: the op keeps its shape function, only values are hidden); one without inputs,
    and each node of ``replace`` (op types TensorFlow does not know), becomes placeholders of
    its output types, one per output (op types TensorFlow does not know, calls of functions that
    hold ops not on the allowlist: shape inference looks into the functions a node calls). With
    ``strip_constants``, large constants keep their shape but lose their values (zeros: enough
    for dtypes and static shapes).
    """
    out = tf.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    out.library.CopyFrom(graph_def.library)
    by_name = {n.name: n for n in graph_def.node}
    renamed = {}  # type: Dict[str, str]  # 'node:k' of a replaced node -> its k-th placeholder
    placeholders = set()  # type: Set[str]
    for node in graph_def.node:
        op_def = registered_op_def(node.op)
        data = [i for i, ref in enumerate(node.input) if not ref.startswith("^")]
        if node.name in isolate and data and op_def is not None and not any(a.is_ref for a in op_def.input_arg):
            copy = out.node.add()
            copy.CopyFrom(node)
            for i in data:
                source, _, k = node.input[i].partition(":")
                producer = by_name.get(source)
                types = output_dtypes(producer) if producer is not None else []
                k = int(k or 0)
                hold = out.node.add()
                hold.name, hold.op = "%s/_ggcam_input_%d" % (node.name, i), "PlaceholderWithDefault"
                hold.input.append(node.input[i])
                hold.attr["dtype"].type = tf.as_dtype(types[k] if k < len(types) else tf.float32).base_dtype \
                    .as_datatype_enum
                hold.attr["shape"].shape.unknown_rank = True
                copy.input[i] = hold.name
            continue
        if node.name in replace or node.name in isolate:
            placeholders.add(node.name)
            for k, dtype in enumerate(output_dtypes(node) or [tf.float32.as_datatype_enum]):
                p = out.node.add()
                p.name = node.name if k == 0 else "%s/_ggcam_output_%d" % (node.name, k)
                p.op = "Placeholder"
                p.attr["dtype"].type = tf.as_dtype(dtype).base_dtype.as_datatype_enum
                if k == 0 and "shape" in node.attr and node.attr["shape"].HasField("shape"):
                    p.attr["shape"].CopyFrom(node.attr["shape"])  # ImmutableConst's
                if k:
                    renamed["%s:%d" % (node.name, k)] = p.name
            continue
        if strip_constants and node.op == "Const" and "value" in node.attr \
                and node.attr["value"].tensor.ByteSize() > _BIG_CONST:
            c = out.node.add()
            c.name, c.op = node.name, node.op
            c.attr["dtype"].CopyFrom(node.attr["dtype"])
            c.attr["value"].tensor.dtype = node.attr["value"].tensor.dtype
            c.attr["value"].tensor.tensor_shape.CopyFrom(node.attr["value"].tensor.tensor_shape)
            continue
        out.node.add().CopyFrom(node)
    if renamed:
        for node in out.node:
            for i, ref in enumerate(node.input):
                if ref in renamed:
                    node.input[i] = renamed[ref]
    return out, placeholders


def hold_weights(graph_def) -> None:
    """Put a PlaceholderWithDefault between each float constant of rank >= 2 (the weights of a
    frozen graph) and its consumers, in place.

    Works around intel-tensorflow 1.15's MKL kernels: a Conv2D whose filter is a constant
    (directly, or once grappler has removed the Identity between them) gets a gradient of
    zeros or garbage with respect to its input when the batch size is not fixed. A
    PlaceholderWithDefault is neither folded nor a constant, so the filter is not one, and it
    forwards its input without a copy. Shapes and values are unchanged.
    """
    held = {}  # type: Dict[str, str]
    for node in list(graph_def.node):
        if node.op != "Const" or "value" not in node.attr or "dtype" not in node.attr:
            continue
        tensor = node.attr["value"].tensor
        if not tf.as_dtype(node.attr["dtype"].type).is_floating or len(tensor.tensor_shape.dim) < 2:
            continue
        hold = graph_def.node.add()
        hold.name, hold.op = node.name + "/_ggcam_hold", "PlaceholderWithDefault"
        hold.input.append(node.name)
        hold.attr["dtype"].CopyFrom(node.attr["dtype"])
        hold.attr["shape"].shape.CopyFrom(tensor.tensor_shape)
        held[node.name] = hold.name
    if not held:
        return
    for node in graph_def.node:
        if node.op == "PlaceholderWithDefault" and node.name.endswith("/_ggcam_hold"):
            continue
        for i, ref in enumerate(node.input):
            name = ref[:-2] if ref.endswith(":0") else ref
            if name in held:
                node.input[i] = held[name]


def drop_bookkeeping(node) -> None:
    """Remove the attributes a file's ops carry for TensorFlow's own bookkeeping, in place:
    ``_output_shapes`` hints, colocation (``_class``), gradient overrides
    (``_gradient_op_type``), kernel labels and the like; what the op computes is unchanged.

    TensorFlow 2's importer merges ``_output_shapes`` into the imported ops' static shapes, so a
    graph saved with a fixed batch (a queue's ``dequeue_many(2)``) would keep it where our image,
    of any batch size, replaces its input; colocation may name ops left out of the import; and
    a gradient override written into the file would replace the gradient of its op (a
    convolution's, say) with any other registered one, so the maps would be wrong.
    """
    for key in [k for k in node.attr if k.startswith("_")]:
        del node.attr[key]


def called_functions(nodes: Iterable, library) -> Set[str]:
    """The library functions ``nodes`` call (by type or through a function attribute, as If,
    While and PartitionedCall do), with their gradient functions, recursively."""
    functions = {f.signature.name: f for f in library.function}
    gradients = {g.function_name: g.gradient_func for g in library.gradient}
    seen, stack = set(), list(nodes)
    while stack:
        node = stack.pop()
        called = [node.op] if node.op in functions else []
        for value in node.attr.values():
            called.extend(safety.function_names(value))
        for name in called:
            for f in (name, gradients.get(name)):
                if f in functions and f not in seen:
                    seen.add(f)
                    stack.extend(functions[f].node_def)
    return seen


def path_graph_def(graph_def, path: Set[str], fed: Dict[str, tf.DType]):
    """The GraphDef the explainer imports: the nodes of ``path`` in file order, each fed op
    (``fed``: tensor name -> dtype, the image's and the ``--feed`` ones) replaced by a
    placeholder of its name (a queue or reader would need its own inputs), the file's
    bookkeeping attributes dropped, and the library cut to the functions they call. Returns
    it and the ``input_map`` key of each fed tensor."""
    out = tf.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    fed_ops = {op_name(name): dtype for name, dtype in fed.items()}
    for node in graph_def.node:
        if node.name not in path:
            continue
        n = out.node.add()
        if node.name in fed_ops:
            n.name, n.op = node.name, "Placeholder"
            n.attr["dtype"].type = fed_ops[node.name].as_datatype_enum
            continue
        n.CopyFrom(node)
        n.device = ""
        drop_bookkeeping(n)
    keys = {}
    for name in fed:
        key = tensor_name(name)
        if not key.endswith(":0"):  # the fed tensor is a later output of its op: the placeholder's
            for node in out.node:
                for i, ref in enumerate(node.input):
                    if ref == key:
                        node.input[i] = op_name(key)
            key = op_name(key) + ":0"
        keys[name] = key
    keep = called_functions(out.node, graph_def.library)
    out.library.function.extend(f for f in graph_def.library.function if f.signature.name in keep)
    out.library.gradient.extend(g for g in graph_def.library.gradient if g.function_name in keep)
    return out, keys


def slice_infos(meta_graph) -> Dict[str, object]:
    """Op name -> SaveSliceInfoDef of each part of a partitioned variable in a MetaGraph's
    variable collections."""
    from tensorflow.core.framework import variable_pb2
    found = {}
    for key in (tf.GraphKeys.GLOBAL_VARIABLES, tf.GraphKeys.LOCAL_VARIABLES, tf.GraphKeys.MODEL_VARIABLES,
                tf.GraphKeys.TRAINABLE_VARIABLES):
        if key not in meta_graph.collection_def:
            continue
        for data in meta_graph.collection_def[key].bytes_list.value:
            vd = variable_pb2.VariableDef()
            try:
                vd.ParseFromString(data)
            except Exception:  # protobuf's DecodeError: not a variable after all
                continue
            if vd.variable_name and vd.HasField("save_slice_info_def"):
                found[op_name(vd.variable_name)] = vd.save_slice_info_def
    return found
