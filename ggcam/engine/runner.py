"""Where a model's graph runs: ``open_graph`` gives a ``GuidedGradCamGraph`` in this process, or
for a model file the user has not said they trust a ``RemoteGraph`` (``ggcam.engine.worker``),
the same interface over a process of its own."""
from typing import Optional, Sequence

from ggcam import outputs as out
from ggcam.engine.graph import GuidedGradCamGraph
from ggcam.models.base import Model


def open_graph(model: Model, layer: Optional[str] = None, guided_relu6: str = "exact", config=None,
               cache: bool = False, outputs: Sequence[str] = out.STANDARD):
    """The graph for ``model`` (``GuidedGradCamGraph``'s arguments): in a process of its own
    when it comes from a file the user has not said they trust, else in this one."""
    if model.untrusted:
        from ggcam.engine.worker import RemoteGraph  # starts a process only when needed
        return RemoteGraph(model, layer, guided_relu6, config, outputs=outputs)
    return GuidedGradCamGraph(model, layer, guided_relu6, config, cache=cache, outputs=outputs)
