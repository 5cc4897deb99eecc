"""What a target kind is: how a target turns the model's output into the score to explain.

A kind is one module under ``ggcam/targets`` with one ``TargetKind`` subclass registered by
``register``. It makes its own placeholders and its per-example score when the graph is built
(``build``; once per model), and their values for each batch (``feed``). A model says which
kinds its output supports (``Model.target_kinds``); the graph builds those and nothing else.
"""
from collections import OrderedDict
from typing import Any, Dict, NamedTuple, Optional, Sequence

import numpy as np


class KindOps(NamedTuple):
    """A kind's ops in a built graph: its placeholders by name, the score of each example [N]
    (float) and the class each example explains [N] (int32)."""
    feeds: Dict[str, Any]
    score: Any
    label: Any


class TargetKind:
    """One kind of target. ``name``: its name in ``Model.target_kinds``; ``prefixes``: the
    results-key prefixes of its targets ('label:282' -> 'label')."""
    name = ""
    prefixes = ()  # type: Sequence[str]

    def build(self, logits, num_classes: int) -> KindOps:
        """The kind's ops over ``logits`` [N, K] (TensorFlow, in the graph being built)."""
        raise NotImplementedError

    def feed(self, targets: Sequence[Optional[Any]], num_classes: int) -> Dict[str, np.ndarray]:
        """The values of the placeholders ``build`` made, by name, for a batch: ``targets`` has
        one entry per example, None where the example's target is of another kind (give it any
        valid value: its score is not used). ValueError for a target the model cannot have."""
        raise NotImplementedError

    def parse(self, key: str):
        """The target a results key names ('label:282')."""
        raise NotImplementedError


_KINDS = OrderedDict()  # type: Dict[str, TargetKind]


def register(kind: TargetKind) -> TargetKind:
    """Make ``kind`` known by its name (a module of a new kind calls this once)."""
    _KINDS[kind.name] = kind
    return kind


def kind(name: str) -> TargetKind:
    """The registered kind called ``name``; ValueError listing the known ones otherwise."""
    if name not in _KINDS:
        raise ValueError("no target kind named %r (one of %s)" % (name, ", ".join(_KINDS)))
    return _KINDS[name]


def from_key(key: str):
    """The target a results key names, whatever its kind ('label:282', 'top:2', ...)."""
    prefix = key.partition(":")[0]
    for k in _KINDS.values():
        if prefix in k.prefixes:
            return k.parse(key)
    raise ValueError("not a target key: %r" % key)
