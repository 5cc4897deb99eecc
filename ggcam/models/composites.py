"""Activations TensorFlow builds from several element-wise ops, found in a GraphDef and gated.

swish/SiLU (``x * sigmoid(x)``), GELU (``0.5 * x * (1 + erf(x / sqrt 2))`` and its tanh form),
hard-swish (``x * relu6(x + 3) / 6``) and mish (``x * tanh(softplus(x))``) are made of ops that
each have their own gradient, so an override of single op types cannot guide them (and a
frozen swish whose custom gradient was lost fails outright). What makes one of them an
activation here: a tensor computed by element-wise ops from exactly one non-constant tensor
``x``, using ``x`` more than once (a product of ``x`` and a function of it) and at least one
nonlinear op, and not part of a larger such expression. Squeeze-and-excitation gates
(``x * sigmoid(fc(pool(x)))``) have two sources and are not activations.

``gate_composites(graph_def)`` puts a gate node (``guided_relu.gate``'s identity) on the output of
each, in place, rewiring its consumers; the caller makes the inner ops' gradients plain after
the import (``guided_relu.make_plain``). No TensorFlow needed but the GraphDef.
"""
from collections import OrderedDict
from typing import List, NamedTuple, Optional, Set

# Element-wise ops an activation is made of (shapes broadcast with constants only).
_UNARY = frozenset(("Sigmoid", "Tanh", "Erf", "Softplus", "Relu", "Relu6", "Neg", "Square", "Exp", "Abs",
                    "Reciprocal", "Sqrt", "Rsqrt", "Softsign"))
_BINARY = frozenset(("Mul", "Add", "AddV2", "Sub", "RealDiv", "Div", "Maximum", "Minimum", "Pow"))
_NONLINEAR = frozenset(("Sigmoid", "Tanh", "Erf", "Softplus", "Relu", "Relu6", "Exp", "Softsign"))
_PASS = frozenset(("Identity", "IdentityN", "StopGradient"))  # output k is input k


class Composite(NamedTuple):
    output: str        # the activation's output tensor, 'node:k'
    source: str        # the tensor it is a function of
    inner: List[str]   # its element-wise nodes (and pass-through ones), output node last
    kind: str          # what it looks like: swish, gelu, hard_swish, mish or "x * f(x)"


def _ref(ref: str) -> str:
    return ref if ":" in ref else ref + ":0"


def _kind(types: Set[str]) -> str:
    if "Erf" in types or ("Tanh" in types and "Pow" in types):
        return "gelu"
    if "Softplus" in types and "Tanh" in types:
        return "mish"
    if "Relu6" in types:
        return "hard_swish"
    if "Sigmoid" in types:
        return "swish"
    return "x * f(x)"


class _Analysis:
    def __init__(self, graph_def, path: Optional[Set[str]] = None):
        self.nodes = OrderedDict((n.name, n) for n in graph_def.node)
        self.path = path
        self._roots = {}  # type: Dict[str, Optional[frozenset]]
        self.consumers = {}  # type: Dict[str, List[str]]  # tensor -> consumer node names
        for n in graph_def.node:
            for ref in n.input:
                if not ref.startswith("^"):
                    self.consumers.setdefault(_ref(ref), []).append(n.name)

    def _constant(self, ref: str) -> bool:
        node = self.nodes.get(ref.split(":")[0])
        while node is not None and node.op == "Identity" and node.input:
            node = self.nodes.get(node.input[0].split(":")[0])
        return node is not None and node.op == "Const"

    def data_inputs(self, node) -> List[str]:
        return [_ref(r) for r in node.input if not r.startswith("^")]

    def roots(self, ref: str) -> frozenset:
        """The non-constant tensors ``ref`` is an element-wise function of (itself if it is not
        made by an element-wise op)."""
        if ref in self._roots:
            return self._roots[ref]
        self._roots[ref] = frozenset([ref])  # a cycle (loops) ends the walk
        name, k = ref.rsplit(":", 1)
        node = self.nodes.get(name)
        found = frozenset([ref])
        if node is not None:
            inputs = self.data_inputs(node)
            if node.op in _PASS and int(k) < len(inputs):
                found = self.roots(inputs[int(k)])
            elif k == "0" and (node.op in _UNARY or node.op in _BINARY):
                found = frozenset().union(*[self.roots(r) for r in inputs if not self._constant(r)] or [frozenset()])
        self._roots[ref] = found
        return found

    def inner(self, ref: str, source: str) -> List[str]:
        """The nodes between ``source`` and ``ref`` (``ref``'s node last)."""
        seen, order, stack = set(), [], [ref]
        while stack:
            r = stack.pop()
            name = r.split(":")[0]
            if r == source or name in seen or self._constant(r):
                continue
            seen.add(name)
            order.append(name)
            stack.extend(self.data_inputs(self.nodes[name]))
        return list(reversed(order))

    def candidate(self, ref: str) -> Optional[Composite]:
        roots = self.roots(ref)
        if len(roots) != 1 or ref in roots:
            return None
        (source,) = roots
        inner = self.inner(ref, source)
        types = {self.nodes[n].op for n in inner}
        uses = sum(1 for n in inner for r in self.data_inputs(self.nodes[n]) if r == source)
        if not types & _NONLINEAR or uses < 2:
            return None
        return Composite(ref, source, inner, _kind(types))


def find(graph_def, path: Optional[Set[str]] = None) -> List[Composite]:
    """The composite activations of ``graph_def`` (among the nodes of ``path``, when given),
    each the largest expression of its kind, in graph order."""
    a = _Analysis(graph_def, path)
    found = OrderedDict()  # type: OrderedDict[str, Composite]
    for node in graph_def.node:
        if path is not None and node.name not in path:
            continue
        if node.op not in _UNARY and node.op not in _BINARY and node.op not in _PASS:
            continue
        for k in range(len(a.data_inputs(node)) if node.op == "IdentityN" else 1):
            c = a.candidate("%s:%d" % (node.name, k))
            if c is None:
                continue
            # A larger expression over the same source reads this one: that one is the activation.
            larger = any(a.candidate("%s:%d" % (consumer, 0)) is not None
                         and a.roots("%s:0" % consumer) == frozenset([c.source])
                         for consumer in a.consumers.get(c.output, ()))
            if not larger:
                found[c.output] = c
    # Keep the largest: drop those whose nodes lie inside another's.
    inside = {n for c in found.values() for n in c.inner[:-1]}
    return [c for c in found.values() if c.output.split(":")[0] not in inside]


def gate_composites(graph_def, path: Optional[Set[str]] = None) -> List[Composite]:
    """Put a gate after each composite activation of ``graph_def`` (in place; see the module
    docstring); returns them. The gate is an Identity named ``<node>/ggcam_gate`` carrying
    ``guided_relu.GATE`` as its gradient."""
    from ggcam.tf import guided as guided_relu
    composites = find(graph_def, path)
    for c in composites:
        name, k = c.output.rsplit(":", 1)
        gate = graph_def.node.add()
        gate.name, gate.op = "%s/ggcam_gate%s" % (name, "" if k == "0" else "_" + k), "Identity"
        gate.input.append(c.output if k != "0" else name)
        producer = next(n for n in graph_def.node if n.name == name)
        dtype = producer.attr["T"].type if "T" in producer.attr and producer.op != "IdentityN" \
            else producer.attr["T"].list.type[int(k)]
        gate.attr["T"].type = dtype
        gate.attr["_gradient_op_type"].s = guided_relu.GATE.encode()
        for node in graph_def.node:
            if node is gate:
                continue
            for i, ref in enumerate(node.input):
                if not ref.startswith("^") and _ref(ref) == c.output:
                    node.input[i] = gate.name
    return composites
