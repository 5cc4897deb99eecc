"""The class kind of target: a fixed class, or the r-th best class of each image.

Everything a person reads about a target (its results key, its caption) is decided here; its
score in the graph is the logit of the class (``ClassKind``).
"""
from typing import Dict, NamedTuple, Optional, Sequence, Union

import numpy as np

from ggcam.targets.base import KindOps, TargetKind, register


class Target(NamedTuple):
    """A class index (``Target.of(282)``) or the r-th best class (``Target.best(2)``)."""
    index: Optional[int] = None
    rank: Optional[int] = None

    @staticmethod
    def of(index: int) -> "Target":
        if int(index) < 0:
            raise ValueError("a class index is at least 0, got %d" % int(index))
        return Target(index=int(index))

    @staticmethod
    def best(rank: int = 1) -> "Target":
        if int(rank) < 1:
            raise ValueError("a rank starts at 1, got %d" % int(rank))
        return Target(rank=int(rank))

    @property
    def key(self) -> str:
        """'label:N' for a fixed class, 'top:R' for the R-th best class (results files)."""
        return "label:%d" % self.index if self.index is not None else "top:%d" % self.rank

    kind = "class"  # a class attribute, not a field: the kind of every Target

    @staticmethod
    def from_key(key: str) -> "Target":
        kind, _, value = key.partition(":")
        if kind == "label":
            return Target.of(int(value))
        if kind == "top":
            return Target.best(int(value))
        raise ValueError("not a target key: %r" % key)

    @property
    def caption_kind(self) -> str:
        """'Predicted' for the best class, 'Rank R' for the R-th best, 'Target' for a chosen class."""
        if self.index is not None:
            return "Target"
        return "Predicted" if self.rank == 1 else "Rank %d" % self.rank


TargetLike = Union[Target, int, np.integer]


def as_target(target: TargetLike) -> Target:
    """A Target, or a class index (int >= 0) taken as ``Target.of``."""
    if isinstance(target, Target):
        return target
    return Target.of(int(target))


def encode(targets: Sequence[TargetLike], num_classes: int) -> np.ndarray:
    """The graph's int32 feed: a class index >= 0, or -r for the r-th best class."""
    codes = []
    for t in targets:
        t = as_target(t)
        if t.index is not None:
            if t.index >= num_classes:
                raise ValueError("class %d is out of range: the model has classes 0..%d" % (t.index, num_classes - 1))
            codes.append(t.index)
        else:
            if t.rank > num_classes:
                raise ValueError("rank %d is out of range: the model has %d classes" % (t.rank, num_classes))
            codes.append(-t.rank)
    return np.asarray(codes, dtype=np.int32).reshape(-1)


def caption(target, name: str) -> str:
    """A picture caption such as 'Rank 2: tabby' (first synonym of the class name).

    target: a target of any kind with a ``caption_kind``, or its results key.
    """
    if isinstance(target, str):
        from ggcam.targets.base import from_key
        target = from_key(target)
    return "%s: %s" % (target.caption_kind, name.split(",")[0])


class ClassKind(TargetKind):
    """Targets given by class: one int32 feed per example, the class index (>= 0) or minus the
    rank (-r: the r-th best class of that example). The score is the class's logit."""
    name = "class"
    prefixes = ("label", "top")

    def build(self, logits, num_classes: int) -> KindOps:
        from ggcam.tf.compat import tf  # the graph is being built: TensorFlow is loaded
        codes = tf.placeholder(tf.int32, [None], name="targets")
        deepest_rank = tf.maximum(1, tf.reduce_max(-codes))
        _, ranked = tf.nn.top_k(logits, k=deepest_rank)
        rows = tf.range(tf.shape(codes)[0])
        by_rank = tf.gather_nd(ranked, tf.stack([rows, tf.maximum(-codes - 1, 0)], axis=1))
        label = tf.where(codes >= 0, codes, by_rank)
        score = tf.reduce_sum(logits * tf.one_hot(label, num_classes), axis=1)
        return KindOps({"targets": codes}, score, label)

    def feed(self, targets: Sequence[Optional[Target]], num_classes: int) -> Dict[str, np.ndarray]:
        return {"targets": encode([Target.best() if t is None else t for t in targets], num_classes)}

    def parse(self, key: str) -> Target:
        return Target.from_key(key)


CLASS_KIND = register(ClassKind())
