"""Matching a class given by index or name against a model's class names."""
import re
from typing import List, Optional


class LabelError(ValueError):
    """A class given by the user matches no class, or several; one line."""


def synonyms(name: str) -> List[str]:
    return [s.strip().lower() for s in name.split(",")]


def resolve(label, names: List[str]) -> int:
    """A class index (int or digits) or a class name -> index in 0..len(names) - 1.

    A name matches a class when it equals one of the class's comma-separated synonyms
    (case-insensitive); failing that, when it appears as whole words in exactly one class's name.
    """
    if isinstance(label, str) and label.strip().lstrip("-").isdigit():
        label = int(label.strip())
    if not isinstance(label, str):
        index = int(label)
        if not 0 <= index < len(names):
            raise LabelError("label must be in 0..%d, got %d" % (len(names) - 1, index))
        return index
    wanted = label.strip().lower()
    if not wanted:
        raise LabelError("empty class name")
    exact = [i for i, n in enumerate(names) if wanted in synonyms(n)]
    if len(exact) == 1:
        return exact[0]
    word = re.compile(r"\b%s\b" % re.escape(wanted))
    candidates = exact or [i for i, n in enumerate(names) if word.search(n.lower())]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise LabelError("no class named %r" % label)
    listed = "; ".join("%d %s" % (i, names[i]) for i in candidates[:8])
    more = " ..." if len(candidates) > 8 else ""
    raise LabelError("%r matches %d classes: %s%s" % (label, len(candidates), listed, more))


def target_of(label: str, names: Optional[List[str]]):
    """A class given as text (an index, or a name when ``names`` are known) -> its Target."""
    from ggcam.targets import Target
    if names is None:
        if not label.strip().isdigit():
            raise LabelError("this model's classes have no names: give an index, or --labels=FILE")
        return Target.of(int(label))
    return Target.of(resolve(label, names))
