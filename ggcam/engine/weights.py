"""Weights of a live graph re-initialised in place and put back: the model-randomisation
sanity check (Adebayo et al., 2018) of ``ggcam.evaluation``, on the graph's side so that a
model run in a process of its own (``ggcam.engine.worker``) is randomised there."""
from collections import OrderedDict
from typing import List, Optional, Sequence

import numpy as np


def not_applicable(model) -> str:
    """Why weight randomisation does not apply to ``model`` (its weights are constants)."""
    return "weight randomisation does not apply to %s: its weights are constants (frozen graph)" % model.name


def short_names(names: Sequence[str]) -> List[str]:
    """Layer names without the scope all of them share ("MobilenetV1/Conv2d_0" -> "Conv2d_0")."""
    parts = [n.split("/") for n in names]
    common = 0
    while parts and all(len(p) > common + 1 and p[common] == parts[0][common] for p in parts):
        common += 1
    return ["/".join(p[common:]) for p in parts]


class WeightRandomizer:
    """Re-initialises layers of a live graph in place (``Variable.load`` feeds the existing
    initializer ops, so nothing is added to the finalized graph) and restores them.

    ``layers``: the model's ``randomization_layers()`` (layer name -> variables, from the
    logits down); ``names``: layer name -> its short name (``short_names``). ValueError when
    the model's weights are constants.
    """

    def __init__(self, graph, seed: int = 0):
        layers = graph.model.randomization_layers()
        if layers is None:
            raise ValueError(not_applicable(graph.model))
        self.graph, self.rng = graph, np.random.RandomState(seed)
        self.layers = layers  # type: OrderedDict
        self.names = OrderedDict(zip(layers, short_names(list(layers))))
        self.trained = {v.op.name: graph.session.run(v) for vs in self.layers.values() for v in vs}

    def randomize(self, layer: str) -> None:
        for v in self.layers[layer]:
            value = self.trained[v.op.name]
            v.load(self.rng.normal(0.0, value.std(), value.shape).astype(np.float32), self.graph.session)

    def restore(self, layers: Optional[Sequence[str]] = None) -> None:
        for layer in layers if layers is not None else list(self.layers):
            for v in self.layers[layer]:
                v.load(self.trained[v.op.name], self.graph.session)
