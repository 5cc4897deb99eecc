"""A frozen GraphDef (``.pb``, binary or text): weights are constants, nothing to restore."""
from typing import List

from ggcam.models.base import ModelError
from ggcam.models.imported import ImportedModel
from ggcam.models.model_files import flag_hint, parse_proto, read_file, valid_graph
from ggcam.tf.compat import tf


class FrozenGraphModel(ImportedModel):
    """A frozen GraphDef (``.pb``, binary or text): weights are constants, nothing to restore."""

    def _load(self):
        data = read_file(self.path, "frozen graph")
        return parse_proto(data, tf.GraphDef, valid_graph, self.path, "GraphDef", flag_hint(self.path, "graph"))

    def _check_variables(self, variables: List) -> None:
        if variables:
            raise ModelError("%s is not frozen: its logits read variable %s (freeze it, or use --meta_graph with "
                             "--checkpoint)" % (self.path, variables[0].name))

    def randomization_layers(self) -> None:
        """None: a frozen graph's weights are constants, randomisation does not apply."""
        return None
