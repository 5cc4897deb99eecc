"""Methods by name: each module of ``ggcam/methods`` registers its own; ``guided_<X>`` is made
from any CAM method X (``ggcam.methods.guided``)."""
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

from ggcam.methods.base import Method, Options

_METHODS = OrderedDict()  # type: Dict[str, Method]
# How lists show them: the CAM family from Grad-CAM, then the input-gradient family (others after).
ORDER = ("gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam", "scorecam", "ablationcam",
         "guided_backprop", "saliency", "integrated_gradients")


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
    found = sorted(_METHODS, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
    return found + ["guided_" + n for n in found if _METHODS[n].cam]


def get(name: str, fusion: str = "paper", options: Optional[Options] = None) -> Method:
    """The method called ``name``, with ``options`` applied (``Method.configured``); ValueError
    listing the known ones otherwise. ``<X>_smoothgrad`` is SmoothGrad over X."""
    _load()
    from ggcam.methods.guided import PREFIX, Guided
    from ggcam.methods.smoothgrad import SUFFIX, SmoothGrad
    options = options or Options()
    if name in _METHODS:
        return _METHODS[name].configured(options)
    inner = _METHODS.get(name[len(PREFIX):]) if name.startswith(PREFIX) else None
    if inner is not None and inner.cam:
        return Guided(inner.configured(options), fusion)
    if name.endswith(SUFFIX) and name[:-len(SUFFIX)] in _METHODS and _METHODS[name[:-len(SUFFIX)]].smoothable:
        return SmoothGrad(_METHODS[name[:-len(SUFFIX)]].configured(options), options.smoothgrad or 25,
                          options.smoothgrad_noise)
    raise ValueError("no method named %r (one of %s)" % (name, ", ".join(names())))


def make(names_: Sequence[str], fusion: str = "paper", options: Optional[Options] = None) -> List[Method]:
    """The methods called ``names_``, each once, in order; with ``options.smoothgrad`` each
    input-gradient method among them is SmoothGrad over it. ValueError for an unknown one or none."""
    from ggcam.methods.smoothgrad import SmoothGrad
    options = options or Options()
    chosen = list(OrderedDict.fromkeys(names_))
    if not chosen:
        raise ValueError("no methods given (one or more of %s)" % ", ".join(names()))
    made = [get(n, fusion, options) for n in chosen]
    if options.smoothgrad:
        made = [SmoothGrad(m, options.smoothgrad, options.smoothgrad_noise) if m.smoothable else m for m in made]
    return made


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
        if module.name not in ("base", "registry", "guided", "smoothgrad"):
            importlib.import_module("ggcam.methods." + module.name)
