"""What to explain in each image: targets and their kinds (``ggcam.targets.base``).

The class kind (``ggcam.targets.classes``) is the one every classifier supports: a fixed class
(``Target.of(282)``) or the r-th best class (``Target.best(2)``). A new kind is one module
here that registers a ``TargetKind``; it is found by name from ``Model.target_kinds``.
"""
import importlib
import pkgutil

from ggcam.targets.base import KindOps, TargetKind, from_key, kind, register  # noqa: F401
from ggcam.targets.classes import CLASS_KIND, Target, TargetLike, as_target, caption, encode  # noqa: F401

for _module in pkgutil.iter_modules(__path__):  # every kind's module registers itself
    importlib.import_module("%s.%s" % (__name__, _module.name))
