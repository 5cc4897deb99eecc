"""A TF1 SavedModel folder: the MetaGraph tagged "serve", its signature, variables/variables."""
import os
from collections import OrderedDict
from typing import Dict, List, Tuple

from ggcam.models.base import ModelError
from ggcam.models.meta_graph import MetaGraphModel
from ggcam.models.model_files import parse_proto, read_file, valid_graph
from ggcam.models.slim import checkpoint_exists
from ggcam.tf.compat import tf

_SERVE = "serve"
OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"  # the key TF 2's object-based checkpoints start with


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
        saved = parse_proto(read_file(file, "SavedModel"), saved_model_pb2.SavedModel,
                       lambda s: len(s.meta_graphs) > 0 and all(valid_graph(m.graph_def) for m in s.meta_graphs),
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
        if variables:
            self._check_name_based(variables)
        if variables and not self.trust_model:
            self._check_weight_files(self.checkpoint)

    def _check_name_based(self, variables: List) -> None:
        """A SavedModel written by TensorFlow 2 (``tf.saved_model.save``, Keras ``save_format="tf"``)
        keys its weights by object path, not by the variables' names: refused in one line."""
        try:
            keys = {name for name, _ in tf.train.list_variables(self.checkpoint)}
        except Exception:  # unreadable: said when the weights are restored
            return
        if OBJECT_GRAPH in keys and not any(v.name in keys for v in variables):
            example = sorted(k for k in keys if k != OBJECT_GRAPH)[:1]
            raise ModelError("%s is a TensorFlow 2 SavedModel (tf.saved_model.save, or Keras save_format='tf'): its "
                             "weights are stored by object path (%s), not by variable name, and only TF1 SavedModels "
                             "are read; save the model as an HDF5 Keras file (model.save('model.h5')) and use --keras, "
                             "or freeze its graph" % (self.path, example[0] if example else OBJECT_GRAPH))
