"""A model in the user's own session: its graph rebuilt from the session's GraphDef, its
variables' values read from the session."""
from typing import Callable, Dict, List, Tuple

import numpy as np

from ggcam.models.base import ModelError, load_variables, variable_over
from ggcam.models.graph_def import VARIABLE_OPS, slice_infos
from ggcam.models.imported import ImportedModel
from ggcam.models.meta_graph import MetaGraphModel
from ggcam.tf.compat import tf


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
        ImportedModel._import(self, source, scope)  # variables made as for a MetaGraph, without a checkpoint
        graph, prefix = tf.get_default_graph(), scope + "/" if scope else ""
        slices = slice_infos(self._meta_graph)
        self._variables = [(variable_over(graph.get_operation_by_name(prefix + n.name), slices.get(n.name)), n.name, None)
                           for n in self._graph_def.node if n.name in self._path_nodes and n.op in VARIABLE_OPS]

    def restore(self, session: tf.Session) -> None:
        if self._variables:
            load_variables(session, [(v.initializer, read) for v, read in self._checkpoint_values()])

    def file_sizes(self) -> List[int]:
        return []

    def describe(self) -> Dict[str, object]:
        return ImportedModel.describe(self)
