"""A model file the user has not said they trust, read, built and run in a process of its own
for its whole life: this process never imports it, so nothing it does (a kernel that crashes
on a photo's values, one that never returns, a file read at any moment) reaches this one.

``RemoteGraph`` has ``GuidedGradCamGraph``'s interface (``run``, ``logits``, ``resize``,
``photo_gradient``, ``layer_table``, ``randomizer``, ``close``) and forwards each call to the
child (``serve``), through ``ggcam.engine.isolation.Child``: requests pickled from here, answers
as JSON and ``.npy`` arrays. Building has ``GGCAM_CHECK_TIMEOUT`` seconds, each call
``GGCAM_RUN_TIMEOUT``; past them, or when the child dies, the model is stopped and the call
raises ModelError with one line that says so.
"""
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from ggcam import outputs as out
from ggcam.engine import isolation
from ggcam.models.base import Model, ModelError
from ggcam.targets import as_target

# Seconds past a run's time limit before the child is stopped from here.
_GRACE = 5.0
# What the parent may ask of the child's graph (anything else is refused there).
_CALLS = ("run", "logits", "resize", "photo_gradient", "model_inputs", "logits_fed")


def serve(channel: isolation.Channel, model: Model, layer: Optional[str], guided_relu6: str, config,
          outputs: Sequence[str] = out.STANDARD) -> None:
    """The child's side: build the graph, answer its facts, then serve calls until told to stop."""
    from ggcam.engine.graph import GuidedGradCamGraph  # TensorFlow loads here, in the child
    graph = GuidedGradCamGraph(model, layer, guided_relu6, config, outputs=outputs)
    channel.answer({"model": model.facts(), "layer_name": graph.layer_name, "outputs": list(graph.outputs),
                    "plain_layer_pass": graph.plain_layer_pass, "layers": graph.layer_table(),
                    "weight_layers": graph.weight_layers()})
    randomizer = None
    while True:
        try:
            name, args = channel.receive()
        except EOFError:
            return
        if name == "close":
            return
        try:
            if name in _CALLS:
                value = getattr(graph, name)(*args)
            elif name == "randomizer":
                randomizer = graph.randomizer(*args)
                value = list(randomizer.names.items())
            elif name in ("randomize", "restore") and randomizer is not None:
                value = getattr(randomizer, name)(*args)
            else:
                raise ModelError("unknown request %r" % (name,))
        except Exception as exc:  # one line back; the graph stays up for the next call
            channel.fail(exc)
            continue
        channel.answer(value)


class RemoteGraph:
    """A graph for ``model`` in a child process (module docstring); use as a context manager
    or call ``close()``. ``model`` gets the facts the child found (``Model.adopt_facts``)."""

    def __init__(self, model: Model, layer: Optional[str] = None, guided_relu6: str = "exact", config=None,
                 outputs: Sequence[str] = out.STANDARD):
        self.model = model
        self.closed = True
        self._child = isolation.Child("serve", "ggcam.engine.worker:serve",
                                      (model, layer, guided_relu6, config, tuple(outputs)),
                                      model.path, model.file_sizes(), error=ModelError)
        try:
            facts = self._child.receive(isolation.check_timeout(), "being read", isolation.TIMEOUT_ENV)
        except BaseException:
            self._child.close()
            raise
        model.adopt_facts(facts["model"])
        self.layer_name, self.plain_layer_pass = facts["layer_name"], facts["plain_layer_pass"]
        self.outputs = tuple(facts["outputs"])
        self._layers = [tuple(row) for row in facts["layers"]]
        self._weight_layers = facts["weight_layers"]
        self.closed = False

    @property
    def input_size(self):
        return self.model.input_size

    def _call(self, name: str, *args):
        if self.closed:
            raise RuntimeError("this explainer is closed; make a new one (or use it inside its 'with' block)")
        seconds = isolation.run_timeout()
        try:
            # TensorFlow's own deadline (the graph's run option) says it first; a kernel that
            # never returns is stopped here, a little later.
            return self._child.request((name, args), seconds + _GRACE if seconds else 0, "running", limit=seconds)
        except ModelError:
            if self._child._process is None:  # stopped or dead: no later call can be served
                self.closed = True
            raise

    def run(self, photos: Union[np.ndarray, Sequence[np.ndarray]], targets: Optional[Sequence] = None,
            photo_gradient: bool = True, outputs: Optional[Sequence[str]] = None
            ) -> Dict[str, Union[np.ndarray, List[np.ndarray]]]:
        """As ``GuidedGradCamGraph.run``."""
        photos = [np.asarray(p, dtype=np.float32) for p in photos]
        targets = None if targets is None else [t if hasattr(t, "kind") else as_target(t) for t in targets]
        return self._call("run", photos, targets, photo_gradient, None if outputs is None else list(outputs))

    def logits(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        return self._call("logits", np.asarray(images, dtype=np.float32), batch_size)

    def resize(self, photo: np.ndarray) -> np.ndarray:
        return self._call("resize", np.asarray(photo, dtype=np.float32))

    def model_inputs(self, images: np.ndarray) -> np.ndarray:
        return self._call("model_inputs", np.asarray(images, dtype=np.float32))

    def logits_fed(self, at: str, values: np.ndarray, image: np.ndarray, batch_size: int = 32) -> np.ndarray:
        return self._call("logits_fed", str(at), np.asarray(values, dtype=np.float32),
                          np.asarray(image, dtype=np.float32), int(batch_size))

    def photo_gradient(self, grad: np.ndarray, photo_shape: Sequence[int]) -> np.ndarray:
        return self._call("photo_gradient", np.asarray(grad, dtype=np.float32), [int(d) for d in photo_shape])

    def layer_table(self) -> List[tuple]:
        """As ``GuidedGradCamGraph.layer_table``."""
        return list(self._layers)

    def weight_layers(self) -> Optional[List[str]]:
        return self._weight_layers

    def randomizer(self, seed: int = 0) -> "RemoteRandomizer":
        return RemoteRandomizer(self, seed)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self._child._send(("close", ()))
            finally:
                self._child.close()
        else:
            self._child.close()

    def __enter__(self) -> "RemoteGraph":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RemoteRandomizer:
    """``WeightRandomizer``'s interface over a ``RemoteGraph``: the child randomises its weights."""

    def __init__(self, graph: RemoteGraph, seed: int):
        self._graph = graph
        self.names = OrderedDict((k, v) for k, v in graph._call("randomizer", seed))

    def randomize(self, layer: str) -> None:
        self._graph._call("randomize", layer)

    def restore(self, layers: Optional[Sequence[str]] = None) -> None:
        self._graph._call("restore", None if layers is None else list(layers))
