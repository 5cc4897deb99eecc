"""Ablation-CAM (Desai and Ramaswamy, WACV 2020), as pytorch-grad-cam 1.5.7 defines it: channel
weights (score - score with the channel ablated) / score, the score being the target's logit.
A channel is ablated by setting it to zero, or, when the layer's activations can be negative,
far below their minimum. The ablated layers are fed into the layer tensor of the same graph in
batches (``logits_fed``), so only the ops above the layer run. No gradient is used."""
import numpy as np

from ggcam import outputs as out
from ggcam.methods.base import CamMethod, weighted_cam
from ggcam.methods.registry import register

BATCH = 32  # ablated layers per graph run
FAR_BELOW = 1e7  # how far below the minimum a channel goes where activations can be negative


def ablated_value(activations: np.ndarray) -> float:
    """What an ablated channel is set to: 0, or far below the minimum of signed activations."""
    low = float(activations.min())
    return 0.0 if low >= 0.0 else low - FAR_BELOW


class AblationCam(CamMethod):
    name, title = "ablationcam", "Ablation-CAM"
    needs = (out.ACTIVATIONS,)

    def graph_work(self, context):
        got = context.outputs([out.LOGITS, out.ACTIVATIONS])
        activations = np.asarray(got[out.ACTIVATIONS], np.float32)
        label = context.target.index
        score = float(got[out.LOGITS][label])
        value = ablated_value(activations)
        channels = activations.shape[-1]
        scores = []
        for start in range(0, channels, BATCH):
            batch = np.repeat(activations[None], min(BATCH, channels - start), axis=0)
            for j in range(len(batch)):
                batch[j, ..., start + j] = value
            scores.append(context.graph.logits_fed("layer", batch, context.image, BATCH)[:, label])
        ablated = np.concatenate(scores).astype(np.float64)
        return {"ablationcam_weights": ((score - ablated) / score).astype(np.float32)}

    def layer_cam(self, arrays):
        return weighted_cam(np.asarray(arrays[out.ACTIVATIONS], np.float64),
                            np.asarray(arrays["ablationcam_weights"], np.float64)).astype(np.float32)


register(AblationCam())
