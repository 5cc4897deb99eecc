"""A model file is a program: only ops known to be pure computation may run.

An explanation runs the ops its fetched tensors depend on, and TensorFlow has ops that read
or write files, run Python, reach the network, or run a graph held in a string; every release
adds more. So the rule is an allowlist (``ALLOWED``): the op types pure inference of an image
classifier and its gradients need, each of which computes its outputs from its inputs and
nothing else (arithmetic, nn, image resizing, array, control flow, function calls, variables
and random initial values). Anything else is refused in one line naming the op and its node,
unless the user trusts the file; an op type this TensorFlow does not know is refused always.
The list was derived from the graphs the slim zoo, the tests' models and the real model files
of ``make example-models`` make on both runtimes (``tests/test_safety.py`` checks it covers them).

``check_graph_def`` checks what will run: every node of a GraphDef and every function of its
library, gradient functions included, and every function reference in an attribute (also the
attributes a caller hands a function body, and those nested inside them). ``check_graph``
applies it to a built ``tf.Graph`` just before a session is made for it: whatever path built
the graph (an import, a Keras rebuild, the gradient ops, a cache entry), this is what runs.
``check_nodes`` is the early check on the part of a file the explanation will use, for the
one-line message before any heavy work.
"""
import re
from typing import Dict, Iterable, Iterator, List, Set, Tuple, Union

from ggcam.models.base import ModelError
from ggcam.tf.compat import registered_ops, tf

# Pure computation, by kind. An op type missing from a runtime is simply not known there.
_ALLOWED_KINDS = {
    "constants, inputs and identities": (
        "Const", "Placeholder", "PlaceholderV2", "PlaceholderWithDefault", "NoOp", "Identity", "IdentityN",
        "Snapshot", "StopGradient", "PreventGradient", "EnsureShape", "CheckNumerics", "CheckNumericsV2",
        "Assert", "GuaranteeConst", "ControlTrigger"),
    "element-wise math": (
        "Abs", "Acos", "Acosh", "Add", "AddN", "AddV2", "AccumulateNV2", "Asin", "Asinh", "Atan", "Atan2", "Atanh",
        "Ceil", "ClipByValue", "Cos", "Cosh", "Div", "DivNoNan", "Erf", "Erfc", "Erfinv", "Exp", "Expm1", "Floor",
        "FloorDiv", "FloorMod", "Inv", "InvGrad", "IsFinite", "IsInf", "IsNan", "Log", "Log1p", "Maximum",
        "Minimum", "Mod", "Mul", "MulNoNan", "Neg", "Pow", "RealDiv", "Reciprocal", "ReciprocalGrad", "Rint",
        "Round", "Rsqrt", "RsqrtGrad", "Sign", "Sin", "Sinh", "Sqrt", "SqrtGrad", "Square", "SquaredDifference",
        "Sub", "Tan", "Tanh", "TanhGrad", "TruncateDiv", "TruncateMod", "Xdivy", "Xlogy", "Xlog1py", "Lgamma",
        "Digamma", "Ndtri", "Cast", "Equal", "NotEqual", "Greater", "GreaterEqual", "Less", "LessEqual",
        "LogicalAnd", "LogicalNot", "LogicalOr", "ApproximateEqual", "Select", "SelectV2", "BitwiseAnd",
        "BitwiseOr", "BitwiseXor", "Invert", "LeftShift", "RightShift", "Cumsum", "Cumprod", "Einsum"),
    "reductions and ranking": (
        "All", "Any", "ArgMax", "ArgMin", "Max", "Mean", "Min", "Prod", "Sum", "EuclideanNorm", "L2Loss",
        "TopK", "TopKV2", "InTopK", "InTopKV2", "NthElement"),
    "matrices": (
        "MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "MatrixBandPart", "BatchMatrixBandPart",
        "MatrixDiag", "MatrixDiagV2", "MatrixDiagV3", "MatrixDiagPart", "MatrixDiagPartV2", "MatrixDiagPartV3",
        "MatrixSetDiag", "MatrixSetDiagV2", "MatrixSetDiagV3", "Diag", "DiagPart"),
    "neural-network layers and their gradients": (
        "BiasAdd", "BiasAddV1", "BiasAddGrad", "Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter",
        "Conv3D", "Conv3DBackpropInputV2", "Conv3DBackpropFilterV2", "DepthwiseConv2dNative",
        "DepthwiseConv2dNativeBackpropInput", "DepthwiseConv2dNativeBackpropFilter", "FusedBatchNorm",
        "FusedBatchNormV2", "FusedBatchNormV3", "FusedBatchNormGrad", "FusedBatchNormGradV2",
        "FusedBatchNormGradV3", "BatchNormWithGlobalNormalization", "BatchNormWithGlobalNormalizationGrad",
        "LRN", "LRNGrad", "AvgPool", "AvgPoolGrad", "AvgPool3D", "AvgPool3DGrad", "MaxPool", "MaxPoolV2",
        "MaxPoolGrad", "MaxPoolGradV2", "MaxPoolGradGrad", "MaxPoolGradGradV2", "MaxPoolWithArgmax",
        "MaxPoolGradWithArgmax", "MaxPoolGradGradWithArgmax", "MaxPool3D", "MaxPool3DGrad", "Dilation2D",
        "Dilation2DBackpropInput", "Dilation2DBackpropFilter", "Relu", "Relu6", "ReluGrad", "Relu6Grad", "Elu",
        "EluGrad", "Selu", "SeluGrad", "LeakyRelu", "LeakyReluGrad", "Softplus", "SoftplusGrad", "Softsign",
        "SoftsignGrad", "Sigmoid", "SigmoidGrad", "Softmax", "LogSoftmax", "SoftmaxCrossEntropyWithLogits",
        "SparseSoftmaxCrossEntropyWithLogits", "DataFormatDimMap", "DataFormatVecPermute", "DepthToSpace",
        "SpaceToDepth", "SpaceToBatch", "SpaceToBatchND", "BatchToSpace", "BatchToSpaceND",
        "ExtractImagePatches"),
    "image resizing and colour": (
        "ResizeBilinear", "ResizeBilinearGrad", "ResizeNearestNeighbor", "ResizeNearestNeighborGrad",
        "ResizeBicubic", "ResizeBicubicGrad", "ResizeArea", "ScaleAndTranslate", "ScaleAndTranslateGrad",
        "CropAndResize", "CropAndResizeGradImage", "CropAndResizeGradBoxes", "AdjustContrastv2",
        "AdjustSaturation", "AdjustHue", "RGBToHSV", "HSVToRGB"),
    "array shaping, slicing and gathering": (
        "Reshape", "Squeeze", "ExpandDims", "Transpose", "ConjugateTranspose", "InvertPermutation", "Concat",
        "ConcatV2", "ConcatOffset", "Pack", "Unpack", "Split", "SplitV", "Slice", "StridedSlice",
        "StridedSliceGrad", "Pad", "PadV2", "MirrorPad", "MirrorPadGrad", "Tile", "TileGrad", "Gather", "GatherV2",
        "GatherNd", "ScatterNd", "TensorScatterUpdate", "TensorScatterAdd", "TensorScatterSub", "Shape", "ShapeN",
        "Size", "Rank", "Fill", "ZerosLike", "OnesLike", "Range", "LinSpace", "OneHot", "BroadcastTo",
        "BroadcastArgs", "BroadcastGradientArgs", "Reverse", "ReverseV2", "ReverseSequence", "Roll", "Where",
        "Unique", "DynamicStitch", "ParallelDynamicStitch", "DynamicPartition", "UnsortedSegmentSum",
        "UnsortedSegmentMax", "UnsortedSegmentMin", "UnsortedSegmentProd", "SegmentSum", "SegmentMean",
        "SegmentMax", "SegmentMin", "SegmentProd", "ListDiff", "UnravelIndex", "LowerBound", "UpperBound",
        "Bucketize", "HistogramFixedWidth", "InplaceAdd", "InplaceSub", "InplaceUpdate", "Cross"),
    "control flow and function calls (every function called is checked too)": (
        "Switch", "Merge", "Enter", "Exit", "NextIteration", "LoopCond", "RefSwitch", "RefMerge", "RefEnter",
        "RefExit", "RefNextIteration", "RefIdentity", "RefSelect", "If", "StatelessIf", "While",
        "StatelessWhile", "Case", "StatelessCase", "PartitionedCall", "StatefulPartitionedCall",
        "SymbolicGradient"),
    "variables (held in the session, set from checkpoints by this project)": (
        "VariableV2", "Variable", "VarHandleOp", "ReadVariableOp", "Assign", "AssignVariableOp", "AssignAdd",
        "AssignSub", "AssignAddVariableOp", "AssignSubVariableOp", "VarIsInitializedOp", "IsVariableInitialized",
        "VariableShape"),
    "random numbers (variables' initial values)": (
        "RandomUniform", "RandomUniformInt", "RandomStandardNormal", "TruncatedNormal",
        "ParameterizedTruncatedNormal", "RandomShuffle", "StatelessRandomUniform", "StatelessRandomUniformV2",
        "StatelessRandomNormal", "StatelessRandomNormalV2", "StatelessTruncatedNormal",
        "StatelessTruncatedNormalV2", "StatelessRandomUniformInt", "StatelessRandomUniformIntV2",
        "StatelessRandomUniformFullInt", "StatelessRandomUniformFullIntV2", "StatelessRandomGetKeyCounter",
        "StatelessRandomGetAlg", "StatelessRandomGetKeyCounterAlg"),
}
ALLOWED = frozenset(t for types in _ALLOWED_KINDS.values() for t in types)
# Kernels only backward passes need. A model file has no reason to hold them, and TensorFlow
# checks their inputs less (they expect what the forward op made): allowed only where this
# project's own ``tf.gradients`` made them, under its name scope (``OURS``).
# (The input gradients of convolutions stay allowed: transposed convolutions are made of them.)
GRADIENT_ONLY = frozenset(t for t in ALLOWED if re.search(r"Grad($|V\d|Grad|With|Image|Boxes)|BackpropFilter", t)) \
    | {"SymbolicGradient"}
OURS = "ggcam/"

# Only for messages: what a refused op probably does, by its type name. Never a reason to
# allow anything (the allowlist decides); an op matching none is "not known to be pure".
_HINTS = (  # the gravest first: a refusal names the gravest op found
    (r"PyFunc|EagerPyFunc", "runs Python code"),
    (r"File|Save|Restore|Checkpoint|Record|Summary|Reader|Matching|ImmutableConst|Vocab|Remap|Lmdb|LMDB|Sql|"
     r"Csv|CSV|Snapshot.*Dataset|Dump|Event", "reads or writes files"),
    (r"Rpc|Remote|Send|Recv|Gcs|BigQuery|Collective|Nccl|Debug|Tpu|TPU|Xla|Infeed|Outfeed|Service",
     "reaches the network, another device or a debugger"),
    (r"FromGraph", "runs a graph held in a string"),
    (r"Print", "prints to a stream or a file"),
    (r"Sampler", "samples candidates (which may read a vocabulary file)"),
    (r"Table|Lookup", "uses a lookup table (which may be read from a file)"),
    (r"Queue|Stage|Barrier|Accumulator|Map(Peek|Stage|Unstage|Clear|Size)", "uses a queue shared across runs"),
    (r"Dataset|Iterator|Optional", "runs a dataset pipeline (which may read files or run a graph held in a string)"),
)


def _rank(op_type: str) -> int:
    """Where the hint of ``op_type`` stands in ``_HINTS`` (len(_HINTS) for none)."""
    for i, (pattern, _) in enumerate(_HINTS):
        if re.search(pattern, op_type):
            return i
    return len(_HINTS)


def _hint(op_type: str) -> str:
    for pattern, what in _HINTS:
        if re.search(pattern, op_type):
            return what
    return "is not on the list of op types known to be pure computation (ggcam/models/safety.py)"


def _does(op_type: str) -> str:
    hint = _hint(op_type)
    return hint if hint.startswith("is ") else "%s (not pure computation)" % hint


NodeLike = Union[tf.Operation, object]  # a tf.Operation or a NodeDef


def _type_and_attrs(node: NodeLike):
    if isinstance(node, tf.Operation):
        return node.type, node.node_def.attr
    return node.op, node.attr


def function_names(value) -> Iterator[str]:
    """Every function an AttrValue names, with those in the attributes a call hands over."""
    if value.HasField("func"):
        yield value.func.name
        for inner in value.func.attr.values():
            for name in function_names(inner):
                yield name
    elif value.HasField("list"):
        for func in value.list.func:
            yield func.name
            for inner in func.attr.values():
                for name in function_names(inner):
                    yield name


def problems(nodes: Iterable[NodeLike], library=None, trust_model: bool = False,
             ours: bool = False) -> List[Tuple[str, str, str]]:
    """(node name, op type, what is wrong) for each node or library function that may not run,
    in order: types TensorFlow does not know (always), and unless ``trust_model``, types not
    on the allowlist, references to functions the library lacks, and the same inside every
    function of ``library`` (a FunctionDefLibrary; its gradient table too). ``ours``: the
    nodes may include this project's backward passes (``GRADIENT_ONLY`` kernels under ``OURS``)."""
    functions = {f.signature.name: f for f in library.function} if library is not None else {}
    registered = registered_ops()
    found = []  # type: List[Tuple[str, str, str]]

    def check(node: NodeLike, where: str) -> None:
        op_type, attrs = _type_and_attrs(node)
        name = where + node.name
        if op_type not in registered and op_type not in functions:
            found.append((name, op_type, "has a type TensorFlow %s does not know (a custom op, or one of a newer "
                                         "TensorFlow); cannot run it" % tf.VERSION))
            return
        if trust_model:
            return
        if op_type not in functions and op_type not in ALLOWED:
            found.append((name, op_type, _does(op_type)))
            return
        if op_type in GRADIENT_ONLY and not (ours and not where and node.name.startswith(OURS)):
            found.append((name, op_type, "is a gradient kernel, which a model has no reason to hold"))
            return
        for value in attrs.values():
            for called in function_names(value):
                if called not in functions:
                    found.append((name, op_type, "calls %s, which is not a function of the model's library" % called))

    for node in nodes:
        check(node, "")
    if not trust_model and library is not None:
        for f in library.function:
            for node in f.node_def:
                check(node, "function %s: " % f.signature.name)
            for value in f.attr.values():
                for called in function_names(value):
                    if called not in functions:
                        found.append(("function " + f.signature.name, "function",
                                      "names %s, which is not a function of the model's library" % called))
        for gradient in library.gradient:
            if gradient.gradient_func not in functions:
                found.append(("function " + gradient.function_name, "gradient",
                              "has gradient %s, which is not a function of the model's library"
                              % gradient.gradient_func))
        for registered_gradient in getattr(library, "registered_gradients", ()):
            found.append(("function " + registered_gradient.gradient_func, "gradient",
                          "takes the gradient registered for op type %s, which this project does not check"
                          % registered_gradient.registered_op_type))
    return found


# Ops a graph may grow to when TensorFlow inlines its function calls (a real classifier's
# graph has thousands; a file of functions each calling the last twice has 2**depth).
MAX_INLINED_OPS = 200000


def inlined_size(graph_def) -> float:
    """How many ops ``graph_def`` has once every function call is inlined (inf when a function
    calls itself, directly or not)."""
    bodies = {f.signature.name: f for f in graph_def.library.function}
    sizes = {}  # type: Dict[str, float]

    def size(name: str) -> float:
        # Depth first without recursion (a crafted library can nest deeply): callees first.
        stack, open_ = [name], set()
        while stack:
            f = stack[-1]
            if f in sizes:
                stack.pop()
                continue
            pending = [g for n in bodies[f].node_def for g in calls(n) if g in bodies and g not in sizes]
            if pending and f not in open_:
                if any(g in open_ or g == f for g in pending):
                    return float("inf")  # a function that calls itself
                open_.add(f)
                stack.extend(pending)
                continue
            if pending:  # back at f with callees still open: a cycle through them
                return float("inf")
            sizes[f] = sum(1 + sum(sizes[g] for g in calls(n) if g in bodies) for n in bodies[f].node_def)
            open_.discard(f)
            stack.pop()
        return sizes[name]

    total = 0.0
    for node in graph_def.node:
        total += 1 + sum(size(g) for g in calls(node) if g in bodies)
        if total > MAX_INLINED_OPS:
            return total
    return total


def _raise(what: str, found: List[Tuple[str, str, str]]) -> None:
    name, op_type, wrong = min(found, key=lambda f: (0 if "does not know" in f[2] else 1 + _rank(f[1])))
    more = " (and %d more)" % (len(found) - 1) if len(found) > 1 else ""
    if "does not know" in wrong:
        raise ModelError("%s: op %s has type %s, which TensorFlow %s does not know (a custom op, or one of a newer "
                         "TensorFlow); cannot run it%s" % (what, name, op_type, tf.VERSION, more))
    raise ModelError("%s: op %s (%s) %s%s; refusing to run it (pass --trust_model if you trust this file)"
                     % (what, name, op_type, wrong, more))


def check_nodes(nodes: Iterable[NodeLike], trust_model: bool, what: str, library=None, ours: bool = False) -> None:
    """Raise ModelError naming the first of ``nodes`` (tf.Operations or NodeDefs) or of the
    library's functions that may not run (see ``problems``). ``what``: the file, for the message."""
    found = problems(nodes, library, trust_model, ours)
    if found:
        _raise(what, found)


def check_graph_def(graph_def, trust_model: bool, what: str, ours: bool = False) -> None:
    """``check_nodes`` on every node of ``graph_def`` and its whole function library, and
    (unless trusted) its size once functions are inlined (``MAX_INLINED_OPS``). ``ours``: a
    graph this project built (it holds its backward passes)."""
    check_nodes(graph_def.node, trust_model, what, graph_def.library, ours)
    if not trust_model and graph_def.library.function:
        size = inlined_size(graph_def)
        if size > MAX_INLINED_OPS:
            raise ModelError("%s: its function calls %s when TensorFlow inlines them; refusing it (pass --trust_model "
                             "if you trust this file)" % (what, "never end (a function calls itself)" if size == float(
                                 "inf") else "grow the graph to more than %d ops" % MAX_INLINED_OPS))


def check_graph(graph: tf.Graph, trust_model: bool, what: str) -> None:
    """The check of what runs: every op of a built graph, and every function it holds."""
    check_graph_def(graph.as_graph_def(add_shapes=False), trust_model, what, ours=True)


def not_allowed(types: Iterable[str]) -> Set[str]:
    """The op types among ``types`` that the allowlist does not name."""
    return set(types) - ALLOWED


def allowed_kinds() -> Dict[str, Tuple[str, ...]]:
    """The allowlist by kind (for the docs and tests)."""
    return dict(_ALLOWED_KINDS)


def calls(node: NodeLike) -> Set[str]:
    """The functions a node calls: by its type, or through a function attribute."""
    op_type, attrs = _type_and_attrs(node)
    return {op_type} | {name for value in attrs.values() for name in function_names(value)}


def unsafe_functions(library) -> Set[str]:
    """The functions of ``library`` that hold an op not on the allowlist, or call such a function."""
    bodies = {f.signature.name: f for f in library.function}
    unsafe = {name for name, f in bodies.items()
              if any(n.op not in ALLOWED and n.op not in bodies for n in f.node_def)}
    changed = True
    while changed:
        changed = False
        for name, f in bodies.items():
            if name not in unsafe and any(calls(n) - set(bodies) - ALLOWED or calls(n) & unsafe for n in f.node_def):
                unsafe.add(name)
                changed = True
    return unsafe


def calls_of(nodes: Iterable[NodeLike], functions: Set[str]) -> Set[str]:
    """The names of the nodes that call one of ``functions``."""
    return {node.name for node in nodes if calls(node) & functions} if functions else set()


def build_time_hazards(graph_def) -> Set[str]:
    """The nodes of ``graph_def`` a scratch import must not evaluate: every op not on the
    allowlist. TensorFlow runs small constant subgraphs while it builds a graph, when a static
    shape depends on their value (``ReadFile`` of a constant path does read the file)."""
    functions = {f.signature.name for f in graph_def.library.function}
    return {n.name for n in graph_def.node if n.op not in ALLOWED and n.op not in functions}
