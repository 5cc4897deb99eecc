"""The explanation methods, numpy only: each a ``Method`` (``ggcam.methods.base``) over named
graph outputs (``ggcam.outputs``), registered by name (``ggcam.methods.registry``).

A new method is one module here: a ``Method`` subclass and a ``register`` call. Guided versions
of CAM methods are made by name (``guided_gradcam``). ``maps`` makes the maps of a graph run.
"""
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ggcam import outputs as out
from ggcam.methods.base import Context, Method, Options  # noqa: F401
from ggcam.methods.registry import get, make, names, register  # noqa: F401

# What the command lines make unless told otherwise: the paper's three maps.
DEFAULT = ("gradcam", "guided_backprop", "guided_gradcam")


def resolve(methods: Union[str, Method, Sequence[Union[str, Method]]], fusion: str = "paper",
            options: Optional[Options] = None) -> List[Method]:
    """``methods`` (a name, a ``Method``, or a sequence of them) as ``Method`` objects, each name
    once, in order: names are made with ``fusion`` and ``options`` (``registry.make``), objects
    kept as given. ValueError for an unknown name."""
    if isinstance(methods, (str, Method)):
        methods = [methods]
    made = OrderedDict()  # type: Dict[str, Method]
    for m in methods:
        for method in [m] if isinstance(m, Method) else make([str(m)], fusion, options):
            made.setdefault(method.name, method)
    return list(made.values())


def needs(methods: Sequence[Method]) -> Tuple[str, ...]:
    """The graph outputs ``methods`` read from the explanation's run (``ggcam.outputs``), each
    once, in the contract's order."""
    wanted = {n for m in methods for n in m.needs}
    return tuple(n for n in out.ALL if n in wanted)


def graph_needs(methods: Sequence[Method]) -> Tuple[str, ...]:
    """The outputs a graph must be built with for ``methods``: what they read and what their
    graph work fetches."""
    wanted = {n for m in methods for n in tuple(m.needs) + tuple(m.uses)}
    return tuple(n for n in out.ALL if n in wanted)


def example(result: Mapping, i: int, photo_size: bool) -> Dict[str, np.ndarray]:
    """Example ``i``'s arrays of a graph run, the input gradients at the photo's size
    (``photo_size``, from the run's photo gradients) or at the model's input size."""
    arrays = {k: v[i] for k, v in result.items() if k not in out.PHOTO.values()}
    if photo_size:
        for name, photo in out.PHOTO.items():
            if photo in result:
                arrays[name] = result[photo][i]
    return arrays


def has_graph_work(methods: Sequence[Method]) -> bool:
    """Whether any of ``methods`` runs the graph again (``Method.graph_work``)."""
    return any(m.graph_work is not None for m in methods)


def graph_work(methods: Sequence[Method], graph, image: np.ndarray, target,
               arrays: Optional[Mapping[str, np.ndarray]] = None) -> Dict[str, np.ndarray]:
    """The arrays of the methods' graph work for one example (model-sized ``image`` [h, w, 3]
    in [0, 1], its ``target``, the model-sized ``arrays`` of its run), each method's work once
    (a guided method shares its CAM's)."""
    context = Context(graph, image, target, arrays)
    arrays, done = {}, set()
    for m in methods:
        work = m.graph_work
        owner = getattr(getattr(work, "__self__", None), "name", m.name)
        if work is not None and owner not in done:
            done.add(owner)
            arrays.update(work(context))
    return arrays


def maps(methods: Sequence[Method], arrays: Mapping[str, np.ndarray], size: Tuple[int, int]
         ) -> Dict[str, np.ndarray]:
    """Each method's map of one example at ``size``, by method name (``Method.compute``)."""
    return {m.name: m.compute(arrays, size) for m in methods}
