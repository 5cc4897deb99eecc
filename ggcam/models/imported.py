"""What the model files TensorFlow 1 writes share: frozen GraphDefs (``frozen_graph.py``), MetaGraphs
+ checkpoints (``meta_graph.py``), SavedModels (``saved_model.py``) and a session's graph
(``session_graph.py``).

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
import json
import os
import re
from collections import OrderedDict
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

from ggcam.tf import guided as guided_relu
from ggcam.models import composites, detect, safety
from ggcam.models.feeds import feed_plan, feed_tensor
from ggcam.models.base import FileModel, ModelError, close_matches
from ggcam.models.graph_def import VARIABLE_OPS, Nodes, hold_weights, op_name, path_graph_def, stand_ins, tensor_name
from ggcam.tf.compat import error_line, registered_ops, tf

# Op types whose outputs feed an image in from outside the graph: the image is fed at the
# first 4-D float tensor after them.
_SOURCE = re.compile(r"Dequeue|IteratorGetNext|ReaderRead|OptionalGetValue")
# Placeholders of these types hold undecoded or integer images: fed after them, like a queue.
_SOURCE_PLACEHOLDER_DTYPES = (tf.uint8, tf.uint16, tf.string)
# Rank-2 float outputs that are not logits (top-k values).
_NOT_OUTPUTS = ("TopKV2", "TopK")
_GRADIENTS = re.compile(r"^gradients(_\d+)?$")
_OURS = re.compile(r"^ggcam(_\d+)?(/|$)")  # the explainer's name scopes


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


def _canonical(t: tf.Tensor) -> tf.Tensor:
    """What an output is made of: behind its Softmax/Sigmoid and any reshapes or identities."""
    return detect.through(detect.logits_behind(t))


# ----------------------------------------------------------------------------- the models

class ImportedModel(FileModel):
    """What frozen graphs, MetaGraphs, SavedModels and a session's graph share (see the module
    docstring); ``feeds``: tensor or op name -> value, for extra placeholders."""

    def __init__(self, path: str, **kwargs):
        super().__init__(path, **kwargs)
        self.name = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
        self._feeds = {}  # type: Dict[str, Dict]  # after prepare: tensor name -> feed_plan
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
        """Import the path (``path_graph_def``) into the current graph under ``scope`` ('' for
        none), its input replaced by ``source``: the rest of the file is neither imported nor run."""
        fed = dict({name: tf.as_dtype(plan["dtype"]) for name, plan in self._feeds.items()},
                   **{self._input_name: self._input_dtype})
        pruned, keys = path_graph_def(self._graph_def, self._path_nodes, fed)
        hold_weights(pruned)
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
        nodes = Nodes(graph_def)
        registered = registered_ops()
        replace = {n.name for n in graph_def.node if n.op not in registered and n.op not in nodes.functions}
        hazards = set()  # type: Set[str]
        if not self.trust_model:
            replace |= safety.calls_of(graph_def.node, safety.unsafe_functions(graph_def.library))
            hazards = safety.build_time_hazards(graph_def) - replace
        scratch_def, replaced = stand_ins(graph_def, replace, hazards, strip_constants=True)
        scratch = tf.Graph()
        with scratch.as_default():
            try:
                tf.import_graph_def(scratch_def, name="")
            except (ValueError, TypeError, tf.errors.OpError) as exc:
                raise ModelError("cannot import %s: %s" % (self.path, error_line(exc)))
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

    _FACTS = FileModel._FACTS + ("_feeds",)

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

    def _choose_logits(self, graph: tf.Graph, nodes: Nodes, source: tf.Tensor, replaced: Set[str],
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

    def _graph_outputs(self, graph: tf.Graph, nodes: Nodes, source: tf.Tensor, replaced: Set[str]) -> List[tf.Tensor]:
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

    def _check_path(self, graph: tf.Graph, nodes: Nodes, logits: tf.Tensor, source: tf.Tensor) -> None:
        """The ops the explanation runs: refuse unsafe ones, other placeholders, variables
        without weights."""
        input_op = source.op.name
        path = nodes.ancestors(logits.op.name, stop=input_op)
        if input_op not in path:
            raise ModelError("the logits %s of %s do not depend on the input %s"
                             % (logits.name, self.path, source.name))
        fed = {source.name: source.dtype.base_dtype}
        fed.update((name, tf.as_dtype(plan["dtype"])) for name, plan in self._feeds.items())
        fed_ops = {op_name(name): name for name in fed}
        path = nodes.ancestors(logits.op.name, stop=set(fed_ops))
        if input_op not in path:
            raise ModelError("the logits %s of %s do not depend on the input %s"
                             % (logits.name, self.path, source.name))
        ordered = [n for n in nodes.graph_def.node if n.name in path and n.name not in fed_ops]
        pruned, _ = path_graph_def(nodes.graph_def, path, fed)
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
                op = op_name(ref)
                if op in fed_ops and (ref.startswith("^") or tensor_name(ref) != tensor_name(fed_ops[op])):
                    # Only the image (and the fed values) go in: the fed ops themselves, and
                    # anything behind them, never run.
                    what = "the image" if op == input_op else "the value fed"
                    raise ModelError("op %s of %s depends on the %s op %s other than through %s %s (%s); "
                                     "name the tensor to feed with %s"
                                     % (n.name, self.path, "input" if op == input_op else "fed", op, what,
                                        fed_ops[op], "a control input" if ref.startswith("^") else "its output " + ref,
                                        "--input_tensor" if op == input_op else "--feed"))
        self._path_nodes = path
        self._check_variables([n for n in ordered if n.op in VARIABLE_OPS])

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
            raise ModelError("cannot import %s: %s" % (self.path, error_line(exc)))
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
        if op_name(name) not in self._file_names():
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
