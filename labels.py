"""ImageNet class names in the 1001-class slim numbering (0 = background)."""
import os
from typing import List

LABELS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "labels.txt")
NUM_CLASSES = 1001


def load_labels(path: str = LABELS_FILE) -> List[str]:
    """1001 class names; index i is the model's output i (tabby cat is 282)."""
    if not os.path.exists(path):
        raise FileNotFoundError("%s is missing; make it with: make labels.txt" % path)
    with open(path, encoding="utf-8") as f:
        names = [line.rstrip("\n") for line in f]
    if len(names) != NUM_CLASSES or names[0] != "background":
        raise ValueError("%s must have %d lines starting with 'background'" % (path, NUM_CLASSES))
    return names
