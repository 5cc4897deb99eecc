"""Methods by name: each module of ``ggcam/methods`` registers its own; ``guided_<X>`` is made
from any CAM method X (``ggcam.methods.guided``)."""
from collections import OrderedDict
from typing import List, Sequence

from ggcam.methods.base import Method

_METHODS = OrderedDict()  # type: Dict[str, Method]


def register(method: Method) -> Method:
    """Make ``method`` known by its name (a method's module calls this once; a notebook may
    register its own)."""
    if not method.name or method.name.startswith("guided_") and method.name != "guided_backprop":
        raise ValueError("a method's name must not be empty or start with 'guided_' (kept for composites): %r"
                         % method.name)
    _METHODS[method.name] = method
    return method


def names() -> List[str]:
    """Every method name: the registered ones, and guided_X for each CAM method X."""
    _load()
    found = list(_METHODS)
    return found + ["guided_" + m.name for m in _METHODS.values() if m.cam]


def get(name: str, fusion: str = "paper") -> Method:
    """The method called ``name``; ValueError listing the known ones otherwise."""
    _load()
    from ggcam.methods.guided import PREFIX, Guided
    if name in _METHODS:
        return _METHODS[name]
    inner = _METHODS.get(name[len(PREFIX):]) if name.startswith(PREFIX) else None
    if inner is not None and inner.cam:
        return Guided(inner, fusion)
    raise ValueError("no method named %r (one of %s)" % (name, ", ".join(names())))


def make(names_: Sequence[str], fusion: str = "paper") -> List[Method]:
    """The methods called ``names_``, each once, in order; ValueError for an unknown one or none."""
    chosen = list(OrderedDict.fromkeys(names_))
    if not chosen:
        raise ValueError("no methods given (one or more of %s)" % ", ".join(names()))
    return [get(n, fusion) for n in chosen]


_loaded = [False]


def _load() -> None:
    """Import every module of the package once: each registers its methods."""
    if _loaded[0]:
        return
    _loaded[0] = True
    import importlib
    import pkgutil
    import ggcam.methods as package
    for module in pkgutil.iter_modules(package.__path__):
        if module.name not in ("base", "registry", "guided"):
            importlib.import_module("ggcam.methods." + module.name)
