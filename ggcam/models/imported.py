"""Model files made by TensorFlow 1: frozen GraphDefs, SavedModels and MetaGraphs + checkpoints.

``prepare()`` reads the file and decides everything before the explainer's graph exists: the
file is imported once into a scratch graph (large constants left empty, every op not on the
allowlist of ``safety`` cut off from its inputs so that nothing of it is evaluated while the
graph is built) only to learn dtypes and static shapes; the input, the logits and their number
of classes, the input size and the largest batch are chosen there (given by the user, or found
automatically, each automatic choice said in ``notes``), and the ops the explanation will run
(those the logits depend on, from the input up: "the path") are checked by ``safety``. For a
file the user does not trust, ``prepare`` runs in a child process (``ggcam.engine.isolation``), and
``adopt`` takes its decisions.

``_create`` then imports the path, and nothing else, into the explainer's graph, where the
guided-ReLU override is active: the file's input op replaced by a placeholder of its name,
mapped to our preprocessed image (``input_map``), the file's own bookkeeping attributes
(colocation, gradient overrides, shape hints) dropped, and its function library cut to the
functions the path calls. A MetaGraph's or SavedModel's variables on the path become variables
again (``tf.Variable`` over the imported op and an assignment of our own), set from the
checkpoint by reading its tensors (no Saver, and none of the file's own save or restore ops).

Names: users always type names as they are in the file (``--layer=MobilenetV1/.../Relu6``,
``input:0``). The import keeps them unless they would clash with ops already in the graph;
then it goes under a scope, and ``_scoped`` adds it.
"""
import glob
import json
import os
import re
import warnings
from collections import OrderedDict
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import numpy as np

from ggcam.tf import guided as guided_relu
from ggcam.models import composites, detect, safety
from ggcam.models.feeds import feed_plan, feed_tensor
from ggcam.models.base import Model, ModelError, close_matches, group_layers, load_variables, variable_over
from ggcam.models.slim import checkpoint_exists, checkpoint_problems
from ggcam.tf.compat import error_line, registered_ops, tf

# Op types whose outputs feed an image in from outside the graph: the image is fed at the
# first 4-D float tensor after them.
_SOURCE = re.compile(r"Dequeue|IteratorGetNext|ReaderRead|OptionalGetValue")
# Placeholders of these types hold undecoded or integer images: fed after them, like a queue.
_SOURCE_PLACEHOLDER_DTYPES = (tf.uint8, tf.uint16, tf.string)
_VARIABLE_OPS = ("VariableV2", "Variable", "VarHandleOp", "AutoReloadVariable")
# Rank-2 float outputs that are not logits (top-k values).
_NOT_OUTPUTS = ("TopKV2", "TopK")
_GRADIENTS = re.compile(r"^gradients(_\d+)?$")
_OURS = re.compile(r"^ggcam(_\d+)?(/|$)")  # the explainer's name scopes
_BIG_CONST = 4096  # bytes: constants larger than this are left empty in the scratch graph
_SERVE = "serve"


def _op_name(ref: str) -> str:
    """'^name', 'name:1' or 'name' -> 'name'."""
    return ref.lstrip("^").split(":")[0]


def _tensor_name(ref: str) -> str:
    """A data input 'name' or 'name:k' -> 'name:k'."""
    return ref if ":" in ref else ref + ":0"


def _image_channels(t: tf.Tensor) -> Optional[int]:
    """The axis of a 4-D tensor's 1 or 3 colour channels: 3 (channels last, preferred), 1
    (channels first), or None."""
    dims = t.shape.as_list()
    if dims[3] in (1, 3):
        return 3
    return 1 if dims[1] in (1, 3) else None


def _shape(t: tf.Tensor) -> str:
    return str([d if d is not None else "?" for d in t.shape.as_list()]) if t.shape.ndims is not None else "[unknown]"


def _lookup(graph: tf.Graph, name: str) -> Optional[tf.Tensor]:
    """The tensor ``name`` ('op:k') or the first output of op ``name``; None if absent."""
    try:
        if ":" in name:
            return graph.get_tensor_by_name(name)
        op = graph.get_operation_by_name(name)
        return op.outputs[0] if op.outputs else None
    except (KeyError, ValueError):
        return None


def _first_line(exc: Exception) -> str:
    return error_line(exc)


# ----------------------------------------------------------------------------- reading files

def _read(path: str, what: str) -> bytes:
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


def _valid_graph(graph_def) -> bool:
    return len(graph_def.node) > 0 and all(n.name and n.op for n in graph_def.node)


def _parse(data: bytes, make, valid, path: str, what: str, hint: str = ""):
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


def _hint(path: str, kind: str) -> str:
    """Which flag a file that failed to parse as ``kind`` probably wants."""
    base = os.path.basename(path)
    if kind != "meta_graph" and base.endswith(".meta"):
        return "; a MetaGraph? use --meta_graph with --checkpoint"
    if kind != "saved_model" and base in ("saved_model.pb", "saved_model.pbtxt"):
        return "; a SavedModel? use --saved_model=%s" % (os.path.dirname(path) or ".")
    if base.endswith((".h5", ".hdf5", ".keras")):
        return "; a Keras file? use --keras"
    return ""


# ----------------------------------------------------------------------------- GraphDef helpers

class _Nodes:
    """A GraphDef's nodes by name, and who consumes each (data and control inputs)."""

    def __init__(self, graph_def):
        self.graph_def = graph_def
        self.by_name = OrderedDict((n.name, n) for n in graph_def.node)
        self.consumers = {name: [] for name in self.by_name}  # type: Dict[str, List[str]]
        for n in graph_def.node:
            for ref in n.input:
                source = _op_name(ref)
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
                stack.extend(_op_name(ref) for ref in self.by_name[name].input)
        return seen


def _op_def(op_type: str):
    from tensorflow.python.framework import op_def_registry
    return op_def_registry.get_registered_ops().get(op_type)


def _attr(node, op_def, name: str):
    if name in node.attr:
        return node.attr[name]
    for a in op_def.attr:
        if a.name == name and a.HasField("default_value"):
            return a.default_value
    return None


def _output_dtypes(node) -> List[int]:
    """The DataType of each output of ``node`` (a guess for op types TensorFlow does not know)."""
    op_def = _op_def(node.op)
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


def _stand_ins(graph_def, replace: Set[str], isolate: Set[str], strip_constants: bool) -> Tuple[object, Set[str]]:
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
        op_def = _op_def(node.op)
        data = [i for i, ref in enumerate(node.input) if not ref.startswith("^")]
        if node.name in isolate and data and op_def is not None and not any(a.is_ref for a in op_def.input_arg):
            copy = out.node.add()
            copy.CopyFrom(node)
            for i in data:
                source, _, k = node.input[i].partition(":")
                producer = by_name.get(source)
                types = _output_dtypes(producer) if producer is not None else []
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
            for k, dtype in enumerate(_output_dtypes(node) or [tf.float32.as_datatype_enum]):
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


def _hold_weights(graph_def) -> None:
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


def _drop_bookkeeping(node) -> None:
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


def _called_functions(nodes: Iterable, library) -> Set[str]:
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


def _path_graph_def(graph_def, path: Set[str], fed: Dict[str, tf.DType]):
    """The GraphDef the explainer imports: the nodes of ``path`` in file order, each fed op
    (``fed``: tensor name -> dtype, the image's and the ``--feed`` ones) replaced by a
    placeholder of its name (a queue or reader would need its own inputs), the file's
    bookkeeping attributes dropped, and the library cut to the functions they call. Returns
    it and the ``input_map`` key of each fed tensor."""
    out = tf.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    fed_ops = {_op_name(name): dtype for name, dtype in fed.items()}
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
        _drop_bookkeeping(n)
    keys = {}
    for name in fed:
        key = _tensor_name(name)
        if not key.endswith(":0"):  # the fed tensor is a later output of its op: the placeholder's
            for node in out.node:
                for i, ref in enumerate(node.input):
                    if ref == key:
                        node.input[i] = _op_name(key)
            key = _op_name(key) + ":0"
        keys[name] = key
    keep = _called_functions(out.node, graph_def.library)
    out.library.function.extend(f for f in graph_def.library.function if f.signature.name in keep)
    out.library.gradient.extend(g for g in graph_def.library.gradient if g.function_name in keep)
    return out, keys


def _canonical(t: tf.Tensor) -> tf.Tensor:
    """What an output is made of: behind its Softmax/Sigmoid and any reshapes or identities."""
    t = detect.logits_behind(t)
    while t.op.type in detect.PASS_THROUGH and t.op.inputs:
        t = t.op.inputs[0]
    return t


def _slice_infos(meta_graph) -> Dict[str, object]:
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
                found[_op_name(vd.variable_name)] = vd.save_slice_info_def
    return found


# ----------------------------------------------------------------------------- the models

class _ImportedModel(Model):
    """What frozen graphs, MetaGraphs and SavedModels share (see the module docstring)."""

    def __init__(self, path: str, input_tensor: Optional[str] = None, logits_tensor: Optional[str] = None,
                 input_range: Optional[Tuple[float, float]] = None, class_names: Optional[List[str]] = None,
                 trust_model: bool = False, channel_order: str = "rgb", mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None, feeds: Optional[Dict[str, object]] = None):
        super().__init__()
        self.path = path
        self.name = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
        self.feeds = dict(feeds or {})  # tensor or op name -> value, for extra placeholders
        self._feeds = {}  # type: Dict[str, Dict]  # after prepare: tensor name -> feed_plan
        self.input_tensor, self.logits_tensor = input_tensor, logits_tensor
        self.set_preprocessing(input_range, channel_order, mean, std)
        self.class_names = list(class_names) if class_names else None
        self.trust_model = trust_model
        # Set by prepare: names as in the file.
        self._graph_def = None
        self._input_name = ""   # the tensor our image replaces ('input:0')
        self._input_dtype = tf.float32
        self._logits_name = ""
        self._path_nodes = set()  # type: Set[str]  # the nodes the logits depend on, from the input up
        # Set by _create.
        self._prefix = ""       # the import scope + "/", or ""
        self._source = None     # type: Optional[tf.Tensor]  # the tensor fed in place of the input
        self._layers = None     # type: Optional[OrderedDict]
        self._between = None    # type: Optional[Set[tf.Operation]]

    # --------------------------------------------------------------- to be given by the kinds

    def _load(self):
        """Read the file: returns its GraphDef. Raises ModelError."""
        raise NotImplementedError

    def _signature_names(self) -> Tuple[Dict[str, str], Dict[str, str]]:
        """Signature input and output keys -> tensor names (SavedModels only)."""
        return {}, {}

    def _import(self, source: tf.Tensor, scope: str) -> None:
        """Import the path (``_path_graph_def``) into the current graph under ``scope`` ('' for
        none), its input replaced by ``source``: the rest of the file is neither imported nor run."""
        fed = dict({name: tf.as_dtype(plan["dtype"]) for name, plan in self._feeds.items()},
                   **{self._input_name: self._input_dtype})
        pruned, keys = _path_graph_def(self._graph_def, self._path_nodes, fed)
        _hold_weights(pruned)
        found = composites.gate_composites(pruned) if self.guided else []
        mapped = {keys[self._input_name]: source}
        for name, plan in self._feeds.items():
            mapped[keys[name]] = feed_tensor(plan, source)
        tf.import_graph_def(pruned, input_map=mapped, name=scope)
        graph, prefix = tf.get_default_graph(), scope + "/" if scope else ""
        for c in found:
            inner = [graph.get_operation_by_name(prefix + name) for name in c.inner]
            guided_relu.make_plain(inner)
            for op in inner:
                graph.add_to_collection(guided_relu.COMPOSITE_OPS, op)
        if found:
            kinds = sorted({c.kind for c in found})
            self.notes.append("guided backprop: %d activation(s) made of several ops (%s) guided at their output"
                              % (len(found), ", ".join(kinds)))

    # --------------------------------------------------------------- prepare

    def prepare(self) -> None:
        self.notes = []
        graph_def = self._load()
        nodes = _Nodes(graph_def)
        registered = registered_ops()
        replace = {n.name for n in graph_def.node if n.op not in registered and n.op not in nodes.functions}
        hazards = set()  # type: Set[str]
        if not self.trust_model:
            replace |= safety.calls_of(graph_def.node, safety.unsafe_functions(graph_def.library))
            hazards = safety.build_time_hazards(graph_def) - replace
        stand_ins, replaced = _stand_ins(graph_def, replace, hazards, strip_constants=True)
        scratch = tf.Graph()
        with scratch.as_default():
            try:
                tf.import_graph_def(stand_ins, name="")
            except (ValueError, TypeError, tf.errors.OpError) as exc:
                raise ModelError("cannot import %s: %s" % (self.path, _first_line(exc)))
        inputs, outputs = self._signature_names()

        source, how = self._choose_input(scratch, replaced, inputs)
        self._input_name, self._input_dtype = source.name, source.dtype.base_dtype
        if source.shape.ndims != 4:
            raise ModelError("input %s of %s has shape %s, not an image [batch, height, width, channels]"
                             % (source.name, self.path, _shape(source)))
        batch, height, width, channels = source.shape.as_list()
        self.input_layout = "NHWC"
        if _image_channels(source) == 1:  # channels first (NCHW): fed through a transpose
            self.input_layout = "NCHW"
            batch, channels, height, width = source.shape.as_list()
        if height is None or width is None:
            raise ModelError("input %s of %s has no fixed size (shape %s); name an input of known size with "
                             "--input_tensor" % (source.name, self.path, _shape(source)))
        if channels not in (1, 3):
            raise ModelError("input %s of %s has %s channels; only greyscale (1) or RGB (3) images can be "
                             "explained" % (source.name, self.path, channels))
        if not source.dtype.is_floating:
            raise ModelError("input %s of %s is %s; the image must be fed as floats: name a float tensor after it "
                             "with --input_tensor" % (source.name, self.path, source.dtype.base_dtype.name))
        self.input_size, self.channels = (height, width), channels
        if not self.input_tensor:
            grey = ", the photo's luminance" if channels == 1 else ""
            self.notes.append("input: %s %s%s%s (found automatically; --input_tensor to choose)"
                              % (source.name, [height, width, channels], how, grey))
        if self.input_layout == "NCHW":
            self.notes.append("input %s takes channels first %s: the image is transposed to it in the graph"
                              % (source.name, [channels, height, width]))
        if batch is not None:
            # Graphs exported with a fixed batch (the image-retraining script's take one image).
            self.max_batch = 1
            if batch == 1:
                self.notes.append("the graph takes one image at a time (input %s has batch size 1): images are "
                                  "run one by one" % source.name)
            else:
                self.notes.append("input %s has a fixed batch size of %d: images are run one by one, which works "
                                  "only if the graph does not depend on that size" % (source.name, batch))
        self.notes.append(self.preprocessing_note())

        self._feeds = self._resolve_feeds(scratch, inputs, source)
        logits = self._choose_logits(scratch, nodes, source, replaced, outputs)
        self._check_path(scratch, nodes, logits, source)  # refusals first: they say most about the file
        if logits.shape.ndims != 2 or logits.shape.as_list()[-1] is None:
            raise ModelError("logits %s of %s must be [batch, classes], got shape %s"
                             % (logits.name, self.path, _shape(logits)))
        self._logits_name = logits.name
        self.num_classes = logits.shape.as_list()[-1]
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ModelError("%d class names given for the %d classes of %s"
                             % (len(self.class_names), self.num_classes, self.path))

        self._graph_def = graph_def

    _FACTS = Model._FACTS + ("_feeds",)

    def prepared_state(self) -> Dict:
        return {"notes": list(self.notes), "input_size": list(self.input_size), "channels": self.channels,
                "max_batch": self.max_batch, "num_classes": self.num_classes, "input": self._input_name,
                "input_dtype": self._input_dtype.name, "input_layout": self.input_layout, "logits": self._logits_name,
                "output_function": self.output_function, "path": sorted(self._path_nodes), "feeds": self._feeds}

    def adopt(self, state: Dict) -> None:
        self._graph_def = self._load()
        self.notes = list(state["notes"])
        self.input_size, self.channels = tuple(state["input_size"]), state["channels"]
        self.max_batch, self.num_classes = state["max_batch"], state["num_classes"]
        self._input_name, self._input_dtype = state["input"], tf.as_dtype(state["input_dtype"])
        self.input_layout = state["input_layout"]
        self._logits_name, self._path_nodes = state["logits"], set(state["path"])
        self.output_function, self._feeds = state["output_function"], state["feeds"]

    def _resolve_feeds(self, graph: tf.Graph, keys: Dict[str, str], source: tf.Tensor) -> Dict[str, Dict]:
        """Tensor name -> {"value", "dtype", "batched"} for each ``feeds`` entry: the value
        checked against the tensor's dtype and shape; "batched" when the tensor has one more
        axis than the value, a batch axis (the value is then repeated for every image)."""
        plans = {}
        for name, value in self.feeds.items():
            t = self._user_tensor(graph, name, "--feed", keys)
            if t.op is source.op:
                raise ModelError("--feed %s: that is the image input of %s" % (name, self.path))
            plans[t.name] = feed_plan(name, value, t)
        if plans:
            self.notes.append("fed: %s" % ", ".join("%s=%s%s" % (k, json.dumps(p["value"]), " (for every image)"
                                                                  if p["batched"] else "") for k, p in plans.items()))
        return plans

    def _user_tensor(self, graph: tf.Graph, name: str, flag: str, keys: Dict[str, str]) -> tf.Tensor:
        """The tensor a flag names: a signature key, a tensor name or an op name of the file."""
        t = _lookup(graph, keys.get(name, name))
        if t is None:
            names = [op.name for op in graph.get_operations()]
            if ":" in name:
                names = [n + ":0" for n in names]
            raise ModelError("no tensor named %r in %s (for %s)%s"
                             % (name, self.path, flag, close_matches(name, list(keys) + names)))
        return t

    def _choose_input(self, graph: tf.Graph, replaced: Set[str],
                      signature_inputs: Dict[str, str]) -> Tuple[tf.Tensor, str]:
        """The tensor our image replaces, and how it was found ('' when the user named it)."""
        if self.input_tensor:
            return self._user_tensor(graph, self.input_tensor, "--input_tensor", signature_inputs), ""
        if signature_inputs:
            given = [_lookup(graph, n) for n in signature_inputs.values()]
            given = [t for t in given if t is not None]
            if len(given) == 1:
                t = given[0]
                if t.dtype.is_floating and t.shape.ndims == 4:
                    return t, ", the signature's input %r" % list(signature_inputs)[0]
                return self._after_sources(graph, [t.op], "the signature's input")
        placeholders = [op for op in graph.get_operations() if op.type == "Placeholder" and op.name not in replaced]
        images = [op.outputs[0] for op in placeholders if op.outputs[0].dtype.is_floating
                  and op.outputs[0].shape.ndims == 4 and _image_channels(op.outputs[0]) is not None]
        if signature_inputs:  # several inputs: the image among them
            images = [t for t in images if t.name in signature_inputs.values()]
        if len(images) == 1:
            return images[0], ""
        if len(images) > 1:
            raise ModelError("%s has %d image placeholders (%s); name the input with --input_tensor"
                             % (self.path, len(images), ", ".join("%s %s" % (t.name, _shape(t)) for t in images)))
        sources = [op for op in graph.get_operations() if op.name not in replaced and (
            _SOURCE.search(op.type) or op.type == "Placeholder" and op.outputs[0].dtype in _SOURCE_PLACEHOLDER_DTYPES)]
        if not sources:
            seen = ", ".join("%s (%s %s)" % (op.name, op.outputs[0].dtype.name, _shape(op.outputs[0]))
                             for op in placeholders[:5])
            raise ModelError("found no image input in %s (a float placeholder [batch, height, width, 1 or 3], or channels first%s); "
                             "name it with --input_tensor" % (self.path, "; its placeholders: " + seen if seen else ""))
        return self._after_sources(graph, sources, "")

    def _after_sources(self, graph: tf.Graph, sources: Sequence[tf.Operation], what: str) -> Tuple[tf.Tensor, str]:
        """The first 4-D float tensor after each of ``sources`` (queues, readers, iterators,
        undecoded images): exactly one must be found."""
        found = OrderedDict()  # type: OrderedDict[str, Tuple[tf.Tensor, tf.Operation]]
        for source in sources:
            seen, queue = {source}, [source]
            while queue:
                op = queue.pop(0)
                hit = [t for t in op.outputs if t.dtype.is_floating and t.shape.ndims == 4]
                if hit:
                    found.setdefault(hit[0].name, (hit[0], source))
                    break
                for t in op.outputs:
                    for c in t.consumers():
                        if c not in seen:
                            seen.add(c)
                            queue.append(c)
        if len(found) != 1:
            names = ", ".join(op.name for op in sources[:5])
            raise ModelError("%s: %s after %s; name the input with --input_tensor"
                             % (self.path, "no 4-D float tensor" if not found else
                                "several 4-D float tensors (%s)" % ", ".join(found), names))
        t, source = list(found.values())[0]
        what = what or "the %s op %s" % (source.type, source.name)
        return t, ", the first 4-D float tensor from %s on: the image is fed there" % what

    def _choose_logits(self, graph: tf.Graph, nodes: _Nodes, source: tf.Tensor, replaced: Set[str],
                       signature_outputs: Dict[str, str]) -> tf.Tensor:
        if self.logits_tensor:
            output = self._user_tensor(graph, self.logits_tensor, "--logits_tensor", signature_outputs)
            logits = detect.logits_behind(output)
            activation = detect.activation_of(output)
            if activation is not None:  # probabilities saturate the gradient: their logits, as when found
                self.notes.append("logits: %s, the input of %s %s, which --logits_tensor names (probabilities "
                                  "would saturate the gradient)" % (logits.name, activation.type, activation.name))
            self.output_function = detect.output_function(logits, output)
            return logits
        if signature_outputs:
            named = [(k, _lookup(graph, v)) for k, v in signature_outputs.items()]
            outputs = [t for _, t in named if t is not None and t.dtype.is_floating and t.shape.ndims == 2]
            if not outputs:
                raise ModelError("the signature's outputs (%s) hold no float [batch, classes] tensor; name the "
                                 "logits with --logits_tensor" % ", ".join(
                                     "%s: %s" % (k, t.name if t is not None else "?") for k, t in named))
        else:
            outputs = self._graph_outputs(graph, nodes, source, replaced)
            # An output that feeds an op left out of the scratch graph is not the model's last:
            # the refusal of that op says more than explaining the wrong tensor would.
            blocked = [nodes.by_name[n] for t in outputs for n in nodes.consumers.get(t.op.name, ()) if n in replaced]
            if blocked:
                safety.check_nodes(blocked, self.trust_model, self.path, nodes.graph_def.library)
        if len({_canonical(t) for t in outputs}) > 1:
            raise ModelError("%s has %d outputs that could be the logits (%s); name one with --logits_tensor"
                             % (self.path, len(outputs), ", ".join("%s %s" % (t.name, _shape(t)) for t in outputs)))
        # Several names for the same values (logits and their Softmax): the raw ones.
        raw = [t for t in outputs if detect.logits_behind(t) is t]
        output = raw[0] if raw else outputs[0]
        logits = detect.logits_behind(output)
        if logits is output:
            self.notes.append("logits: %s, the model's output (found automatically; --logits_tensor to choose)"
                              % logits.name)
        else:
            activation = detect.activation_of(output)
            self.notes.append("logits: %s, the input of %s %s (found automatically; --logits_tensor to choose)"
                              % (logits.name, activation.type, activation.name))
        self.output_function = detect.output_function(logits, output)
        return logits

    def _graph_outputs(self, graph: tf.Graph, nodes: _Nodes, source: tf.Tensor, replaced: Set[str]) -> List[tf.Tensor]:
        """The model's outputs: float [batch, k] tensors (or of unknown shape) computed from the
        input that no later such tensor is computed from (so also outputs read by an ArgMax)."""
        downstream, stack = set(), [source.op]
        while stack:
            op = stack.pop()
            if op not in downstream:
                downstream.add(op)
                stack.extend(c for t in op.outputs for c in t.consumers())

        def candidate(t: tf.Tensor) -> bool:
            # Unknown ranks too (behind a py_func, say, shapes are unknown up to the output), but
            # then only where nothing reads the op (not a batch norm's unused side outputs).
            rank_fits = t.shape.ndims == 2 or t.shape.ndims is None and not any(u.consumers() for u in t.op.outputs)
            return (t.dtype.is_floating and t.dtype == t.dtype.base_dtype and rank_fits
                    and t.op.type not in _NOT_OUTPUTS and t.op is not source.op
                    and not any(_GRADIENTS.match(part) for part in t.op.name.split("/")))

        later = {}  # type: Dict[tf.Operation, bool]  # whether a candidate is computed from the op's outputs
        for op in reversed(graph.get_operations()):  # imported in topological order
            if op in downstream:
                later[op] = any(candidate(u) or later.get(c, False)
                                for t in op.outputs for c in t.consumers() for u in c.outputs)
        outputs = [t for op in graph.get_operations() if op in downstream for t in op.outputs
                   if candidate(t) and not any(candidate(u) or later.get(c, False)
                                               for c in t.consumers() for u in c.outputs)]
        if not outputs:
            # The outputs may hang on an op left out of the scratch graph: say why it was.
            after = nodes.descendants(source.op.name)
            suspects = sorted((n for n in replaced if n in after), key=lambda n: -len(nodes.descendants(n)))
            safety.check_nodes([nodes.by_name[n] for n in suspects], self.trust_model, self.path)
            raise ModelError("found no output of %s that could be the logits (a float [batch, classes] tensor "
                             "computed from %s); name it with --logits_tensor" % (self.path, source.name))
        return outputs

    def _check_path(self, graph: tf.Graph, nodes: _Nodes, logits: tf.Tensor, source: tf.Tensor) -> None:
        """The ops the explanation runs: refuse unsafe ones, other placeholders, variables
        without weights."""
        input_op = source.op.name
        path = nodes.ancestors(logits.op.name, stop=input_op)
        if input_op not in path:
            raise ModelError("the logits %s of %s do not depend on the input %s"
                             % (logits.name, self.path, source.name))
        fed = {source.name: source.dtype.base_dtype}
        fed.update((name, tf.as_dtype(plan["dtype"])) for name, plan in self._feeds.items())
        fed_ops = {_op_name(name): name for name in fed}
        path = nodes.ancestors(logits.op.name, stop=set(fed_ops))
        if input_op not in path:
            raise ModelError("the logits %s of %s do not depend on the input %s"
                             % (logits.name, self.path, source.name))
        ordered = [n for n in nodes.graph_def.node if n.name in path and n.name not in fed_ops]
        pruned, _ = _path_graph_def(nodes.graph_def, path, fed)
        safety.check_nodes(ordered, self.trust_model, self.path, pruned.library)
        unfed = [graph.get_operation_by_name(n.name).outputs[0] for n in ordered if n.op == "Placeholder"]
        if unfed:
            example = "false" if unfed[0].dtype == tf.bool else "1" if unfed[0].dtype.is_integer else "0.5"
            raise ModelError("the logits of %s also depend on placeholder%s %s; give %s with --feed NAME=VALUE "
                             "(e.g. --feed %s=%s)" % (
                                 self.path, "s" if len(unfed) > 1 else "",
                                 ", ".join("%s (%s %s)" % (t.op.name, t.dtype.base_dtype.name, _shape(t)) for t in unfed),
                                 "each a value" if len(unfed) > 1 else "it a value", unfed[0].op.name, example))
        for n in ordered:
            for ref in n.input:
                op = _op_name(ref)
                if op in fed_ops and (ref.startswith("^") or _tensor_name(ref) != _tensor_name(fed_ops[op])):
                    # Only the image (and the fed values) go in: the fed ops themselves, and
                    # anything behind them, never run.
                    what = "the image" if op == input_op else "the value fed"
                    raise ModelError("op %s of %s depends on the %s op %s other than through %s %s (%s); "
                                     "name the tensor to feed with %s"
                                     % (n.name, self.path, "input" if op == input_op else "fed", op, what,
                                        fed_ops[op], "a control input" if ref.startswith("^") else "its output " + ref,
                                        "--input_tensor" if op == input_op else "--feed"))
        self._path_nodes = path
        self._check_variables([n for n in ordered if n.op in _VARIABLE_OPS])

    def _check_variables(self, variables: List) -> None:
        """Variables on the path need weights (frozen graphs have none)."""

    # --------------------------------------------------------------- building

    def _import_scope(self, graph: tf.Graph, names: Iterable[str]) -> str:
        """'' when the file's names can be kept as they are, else a fresh scope.

        TensorFlow would rename a clashing op (``mul`` -> ``mul_1``), and the names the user
        types would then point at the wrong ops; ``ggcam*`` is where the explainer's own ops go.
        """
        taken = set()
        for op in graph.get_operations():
            parts = op.name.split("/")
            taken.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
        if not any(name in taken or _OURS.match(name) for name in names):
            return ""
        return graph.unique_name("imported", mark_as_used=False)

    def _create(self, model_input: tf.Tensor) -> tf.Tensor:
        graph = tf.get_default_graph()
        source = model_input if self._input_dtype == tf.float32 else tf.cast(model_input, self._input_dtype)
        if self.input_layout == "NCHW":
            source = tf.transpose(source, [0, 3, 1, 2], name="ggcam_channels_first")
        scope = self._import_scope(graph, self._imported_names())
        try:
            self._import(source, scope)
        except (ValueError, KeyError, TypeError, tf.errors.OpError) as exc:
            raise ModelError("cannot import %s: %s" % (self.path, _first_line(exc)))
        self._prefix = scope + "/" if scope else ""
        self._source = source
        logits = graph.get_tensor_by_name(self._scoped(self._logits_name))
        self._layers, self._between = None, None
        self.logits = logits
        feature_map = detect.last_feature_map(logits, source, self.layout)
        if feature_map is not None:
            self.default_layer = self._user_name(feature_map)
            self.notes.append("layer: %s %s, the last feature map before global pooling or flattening (found "
                              "automatically; --layer to choose)%s"
                              % (self.default_layer, self.layer_shape(feature_map), self._layout_note(feature_map)))
        return logits

    def _layout_source(self) -> Optional[tf.Tensor]:
        return self._source

    def _imported_names(self) -> Iterable[str]:
        return self._path_nodes

    def _user_name(self, t: tf.Tensor) -> str:
        """A layer's name as the user types it: its op name as in the file ('op:k' past output 0)."""
        name = t.op.name if t.value_index == 0 else t.name
        return name[len(self._prefix):] if name.startswith(self._prefix) else name

    def _scoped(self, name: str) -> str:
        return self._prefix + name

    # --------------------------------------------------------------- layers

    def layers(self) -> "OrderedDict[str, tf.Tensor]":
        """Every 4-D float tensor between the input and the logits, by name as in the file."""
        if self._layers is None:
            self._layers = OrderedDict((self._user_name(t), t)
                                       for t in detect.feature_maps(self.logits, self._source).values())
        return self._layers

    def layer(self, name: str) -> tf.Tensor:
        if not name:
            raise ModelError("found no 4-D feature map before the logits of %s; name one with --layer "
                             "(see --list_layers)" % self.path)
        tensor = super().layer(name)
        if self._between is None:
            self._between = detect.depends_on(self.logits, self._source)
        if tensor.op not in self._between or tensor is self._source:
            raise ModelError("layer %s of %s is not between the input and the logits; Grad-CAM needs a feature map "
                             "the logits are computed from (see --list_layers)" % (name, self.path))
        return tensor

    def _graph_tensor(self, name: str) -> Optional[tf.Tensor]:
        # Only the file's names: not our own ops, nor scoped names the user never sees.
        if _op_name(name) not in self._file_names():
            return None
        return _lookup(self.logits.graph, self._scoped(name))

    def _file_names(self) -> Set[str]:
        return self._path_nodes

    def describe(self) -> Dict[str, object]:
        facts = super().describe()
        facts["file"] = self.path
        if self._feeds:
            facts["feeds"] = {name: plan["value"] for name, plan in self._feeds.items()}
        return facts


class FrozenGraphModel(_ImportedModel):
    """A frozen GraphDef (``.pb``, binary or text): weights are constants, nothing to restore."""

    def _load(self):
        data = _read(self.path, "frozen graph")
        return _parse(data, tf.GraphDef, _valid_graph, self.path, "GraphDef", _hint(self.path, "graph"))

    def _check_variables(self, variables: List) -> None:
        if variables:
            raise ModelError("%s is not frozen: its logits read variable %s (freeze it, or use --meta_graph with "
                             "--checkpoint)" % (self.path, variables[0].name))

    def randomization_layers(self) -> None:
        """None: a frozen graph's weights are constants, randomisation does not apply."""
        return None


class MetaGraphModel(_ImportedModel):
    """A MetaGraph (``.meta``, written by ``tf.train.Saver``) with the checkpoint of its weights."""

    def __init__(self, path: str, checkpoint: Optional[str] = None, **kwargs):
        super().__init__(path, **kwargs)
        self.checkpoint = checkpoint
        self._meta_graph = None
        # After _create: (variable, its checkpoint key, the part of it (offset, size) per axis or None)
        self._variables = []  # type: List[Tuple[tf.Variable, str, Optional[Tuple[Tuple[int, int], ...]]]]

    def _read_meta_graph(self):
        data = _read(self.path, "MetaGraph file")
        return _parse(data, tf.MetaGraphDef, lambda m: _valid_graph(m.graph_def), self.path, "MetaGraph",
                      _hint(self.path, "meta_graph"))

    def _weights(self) -> Optional[str]:
        """The checkpoint prefix the weights are restored from."""
        if not self.checkpoint:
            return None
        if os.path.isdir(self.checkpoint):  # a training folder: its latest checkpoint
            return tf.train.latest_checkpoint(self.checkpoint) or self.checkpoint
        return self.checkpoint

    def _load(self):
        self._meta_graph = self._read_meta_graph()
        return self._meta_graph.graph_def

    def _check_variables(self, variables: List) -> None:
        if not variables:
            return
        prefix = self._weights()
        if not prefix:
            raise ModelError("%s reads variables (e.g. %s): give the checkpoint of its weights with --checkpoint"
                             % (self.path, variables[0].name))
        if not checkpoint_exists(prefix):
            raise ModelError("no checkpoint at %s (the weights of %s)" % (prefix, self.path))
        if not self.trust_model:
            self._check_weight_files(prefix)

    def _check_weight_files(self, prefix: str) -> None:
        """A stranger's checkpoint files must be files, not links: a data shard that is a symlink
        to another file would be read as weights (and its bytes show in logits and checksum
        errors). A training folder's latest checkpoint must lie in that folder."""
        if os.path.isdir(self.checkpoint) and os.path.commonpath(
                [os.path.realpath(self.checkpoint), os.path.realpath(prefix)]) != os.path.realpath(self.checkpoint):
            raise ModelError("the latest checkpoint of %s is %s, outside that folder; give the prefix with "
                             "--checkpoint (or --trust_model)" % (self.checkpoint, prefix))
        for f in sorted(glob.glob(glob.escape(prefix) + ".*")) + [prefix]:
            if os.path.islink(f):
                raise ModelError("refusing %s: its weight file %s is a symlink (to %s), not a file of its own; pass "
                                 "--trust_model to read it anyway" % (self.path, f, os.readlink(f)))

    def _import(self, source: tf.Tensor, scope: str) -> None:
        super()._import(source, scope)
        graph = tf.get_default_graph()
        prefix = scope + "/" if scope else ""
        slices = _slice_infos(self._meta_graph)
        # The variables the logits read, each with its key in the checkpoint (a partitioned
        # variable's parts are saved as slices of the whole one).
        self._variables, shapes = [], {}
        for node in self._graph_def.node:
            if node.name not in self._path_nodes or node.op not in _VARIABLE_OPS:
                continue
            info = slices.get(node.name)
            v = variable_over(graph.get_operation_by_name(prefix + node.name), info)
            if info is not None:
                key, part = info.full_name, tuple(zip(info.var_offset, info.var_shape))
                shapes[key] = tuple(info.full_shape)
            else:
                key, part = node.name, None
                shapes[key] = tuple(v.shape.as_list())
            self._variables.append((v, key, part))
        if self._variables:
            problems = checkpoint_problems(self._weights(), shapes)
            if problems:
                raise ModelError("%s (the weights of %s)" % (problems[0], self.path))

    def _checkpoint_values(self) -> List[Tuple[tf.Variable, Callable[[], np.ndarray]]]:
        """(variable, a function reading its value from the checkpoint) for each variable."""
        reader = tf.train.load_checkpoint(self._weights())

        def value(key: str, part) -> Callable[[], np.ndarray]:
            if part is None:
                return lambda: reader.get_tensor(key)
            return lambda: reader.get_tensor(key)[tuple(slice(o, o + n) for o, n in part)]

        return [(v, value(key, part)) for v, key, part in self._variables]

    def restore(self, session: tf.Session) -> None:
        if not self._variables:
            return
        try:
            load_variables(session, [(v.initializer, read) for v, read in self._checkpoint_values()])
        except (tf.errors.OpError, ValueError) as exc:
            raise ModelError("cannot restore %s: %s" % (self._weights(), _first_line(exc)))

    def file_sizes(self) -> List[int]:
        prefix = self._weights()
        weights = glob.glob(glob.escape(prefix) + ".*") if prefix else []
        return super().file_sizes() + [os.path.getsize(f) for f in weights if os.path.isfile(f)]

    def randomization_layers(self) -> Optional["OrderedDict[str, List[tf.Variable]]"]:
        """The weights the logits read, by layer (scope as in the file), last layer first."""
        return group_layers([v for v, _, _ in self._variables], self._prefix)

    def describe(self) -> Dict[str, object]:
        facts = super().describe()
        facts["checkpoint"] = self._weights()
        return facts


class SavedModelModel(MetaGraphModel):
    """A TF1 SavedModel folder: the MetaGraph tagged "serve", its signature, variables/variables."""

    def __init__(self, path: str, signature: str = "serving_default", **kwargs):
        super().__init__(path, checkpoint=os.path.join(path, "variables", "variables"), **kwargs)
        self.signature = signature
        self._signature = None

    def _read_meta_graph(self):
        from tensorflow.core.protobuf import saved_model_pb2
        if not os.path.isdir(self.path):
            if os.path.exists(self.path):
                raise ModelError("%s is a file: --saved_model takes the SavedModel's folder" % self.path)
            raise ModelError("no SavedModel at %s" % self.path)
        for name in ("saved_model.pb", "saved_model.pbtxt"):
            file = os.path.join(self.path, name)
            if os.path.exists(file):
                break
        else:
            raise ModelError("%s holds no saved_model.pb: not a SavedModel folder" % self.path)
        saved = _parse(_read(file, "SavedModel"), saved_model_pb2.SavedModel,
                       lambda s: len(s.meta_graphs) > 0 and all(_valid_graph(m.graph_def) for m in s.meta_graphs),
                       file, "SavedModel")
        tagged = [m for m in saved.meta_graphs if _SERVE in m.meta_info_def.tags]
        if not tagged and len(saved.meta_graphs) == 1:
            tagged = list(saved.meta_graphs)
            self.notes.append("SavedModel: its one graph, tagged %s (none is tagged %r)"
                              % (list(tagged[0].meta_info_def.tags), _SERVE))
        if not tagged:
            raise ModelError("%s has no graph tagged %r (its tags: %s)" % (self.path, _SERVE, "; ".join(
                ",".join(m.meta_info_def.tags) for m in saved.meta_graphs)))
        meta = tagged[0]
        signatures = meta.signature_def
        if self.signature in signatures:
            self._signature = signatures[self.signature]
        elif signatures:
            raise ModelError("%s has no signature %r (its signatures: %s); choose one with --signature"
                             % (self.path, self.signature, ", ".join(sorted(signatures))))
        else:
            self.notes.append("SavedModel: no signatures; input and logits found in its graph")
        return meta

    def _signature_names(self) -> Tuple[Dict[str, str], Dict[str, str]]:
        if self._signature is None:
            return {}, {}
        return (OrderedDict((k, v.name) for k, v in sorted(self._signature.inputs.items()) if v.name),
                OrderedDict((k, v.name) for k, v in sorted(self._signature.outputs.items()) if v.name))

    def _check_variables(self, variables: List) -> None:
        if variables and not checkpoint_exists(self.checkpoint):
            raise ModelError("%s reads variables (e.g. %s) but has no variables/variables.index"
                             % (self.path, variables[0].name))
        if variables and not self.trust_model:
            self._check_weight_files(self.checkpoint)


class SessionModel(MetaGraphModel):
    """A model in the user's own session (no file): its graph, rebuilt under the guided
    override from the GraphDef of ``session.graph`` (the user's graph is left as it is), its
    variables set to their values in ``session`` at restore time. The user's own code: trusted
    (only op types TensorFlow does not know are refused)."""

    def __init__(self, session: tf.Session, input_tensor=None, logits_tensor=None, **kwargs):
        names = [t.name if isinstance(t, (tf.Tensor, tf.Operation)) else t for t in (input_tensor, logits_tensor)]
        kwargs["trust_model"] = True
        super().__init__("the session's graph", input_tensor=names[0], logits_tensor=names[1], **kwargs)
        self.name = "session"
        self._session = session

    def _load(self):
        self._meta_graph = tf.train.export_meta_graph(graph=self._session.graph, clear_devices=True)
        return self._meta_graph.graph_def

    def _check_variables(self, variables: List) -> None:
        """Their values come from the session."""

    def _checkpoint_values(self) -> List[Tuple[tf.Variable, Callable[[], np.ndarray]]]:
        graph = self._session.graph

        def value(name: str) -> Callable[[], np.ndarray]:
            op = graph.get_operation_by_name(name)
            if op.type != "VarHandleOp":
                return lambda: self._session.run(op.outputs[0])
            reads = [c for c in op.outputs[0].consumers() if c.type == "ReadVariableOp"]
            if not reads:
                raise ModelError("cannot read variable %s of the session's graph: no op of it reads it" % name)
            return lambda: self._session.run(reads[0].outputs[0])

        return [(v, value(v.op.name[len(self._prefix):])) for v, _, _ in self._variables]

    def _import(self, source: tf.Tensor, scope: str) -> None:
        _ImportedModel._import(self, source, scope)  # variables made as for a MetaGraph, without a checkpoint
        graph, prefix = tf.get_default_graph(), scope + "/" if scope else ""
        slices = _slice_infos(self._meta_graph)
        self._variables = [(variable_over(graph.get_operation_by_name(prefix + n.name), slices.get(n.name)), n.name, None)
                           for n in self._graph_def.node if n.name in self._path_nodes and n.op in _VARIABLE_OPS]

    def restore(self, session: tf.Session) -> None:
        if self._variables:
            load_variables(session, [(v.initializer, read) for v, read in self._checkpoint_values()])

    def file_sizes(self) -> List[int]:
        return []

    def describe(self) -> Dict[str, object]:
        return _ImportedModel.describe(self)
