"""Score-CAM (Wang et al., CVPR workshops 2020), as pytorch-grad-cam 1.5.7 defines it: each
channel of the layer upsampled bilinearly to the model's input, min-max normalised, multiplied
into the network's (preprocessed) input; the channel weights are the softmax over channels of
the target's logit for those inputs. The masked inputs go through the same graph in batches,
fed at the network's input (``logits_fed``). No gradient is used."""
import numpy as np

from ggcam import outputs as out
from ggcam.core import gradcam as gc
from ggcam.methods.base import CamMethod, weighted_cam
from ggcam.methods.registry import register

BATCH = 32  # masked inputs per graph run
EPS = 1e-8  # a constant channel normalises to 0, not NaN


class ScoreCam(CamMethod):
    name, title = "scorecam", "Score-CAM"
    needs = (out.ACTIVATIONS,)

    def masks(self, activations: np.ndarray, size) -> np.ndarray:
        """The channels [h, w, C] upsampled to ``size`` and min-max normalised: [C, H_in, W_in]."""
        up = np.stack([gc.upsample(activations[..., k], size[0], size[1]) for k in range(activations.shape[-1])])
        low, high = up.min(axis=(1, 2), keepdims=True), up.max(axis=(1, 2), keepdims=True)
        return (up - low) / (high - low + EPS)

    def graph_work(self, context):
        activations = np.asarray(context.outputs([out.ACTIVATIONS])[out.ACTIVATIONS], np.float32)
        graph, label = context.graph, context.target.index
        model_input = graph.model_inputs(context.image[None])[0]  # [H_in, W_in, c]
        scores = []
        for start in range(0, activations.shape[-1], BATCH):  # a batch of masked inputs at a time
            masks = self.masks(activations[..., start:start + BATCH], model_input.shape[:2])
            scores.append(graph.logits_fed("model_input", masks[..., None] * model_input[None], context.image,
                                           BATCH)[:, label])
        scores = np.concatenate(scores).astype(np.float64)
        weights = np.exp(scores - scores.max())
        return {"scorecam_weights": (weights / weights.sum()).astype(np.float32)}

    def layer_cam(self, arrays):
        return weighted_cam(np.asarray(arrays[out.ACTIVATIONS], np.float64),
                            np.asarray(arrays["scorecam_weights"], np.float64)).astype(np.float32)


register(ScoreCam())
