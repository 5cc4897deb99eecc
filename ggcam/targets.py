"""What to explain: a fixed class, or the r-th best class of each image.

Everything a person reads about a target (its results key, its caption) is decided here.
"""
from typing import NamedTuple, Optional, Sequence, Union

import numpy as np


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


def caption(target: Union[Target, str], name: str) -> str:
    """A picture caption such as 'Rank 2: tabby' (first synonym of the class name).

    target: a Target or its key.
    """
    if isinstance(target, str):
        target = Target.from_key(target)
    return "%s: %s" % (target.caption_kind, name.split(",")[0])
