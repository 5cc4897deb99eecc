"""The graph's outputs, by name: what a graph run returns and what a method may ask for.

Shapes are per batch of N examples (the model-sized input is [N, h_in, w_in, 3], RGB in [0, 1];
the layer is [N, h, w, C] whatever its own axis order). The gradients are of the target's
score (a logit, not a probability). Importing this module loads no TensorFlow.
"""
from typing import Iterable, Tuple

LOGITS = "logits"                      # [N, K] the model's logits
LABEL = "label"                        # [N] int, the class each example explains
ACTIVATIONS = "conv_activations"       # [N, h, w, C] the Grad-CAM layer's feature maps
LAYER_GRADIENT = "conv_gradient"       # [N, h, w, C] unguided gradient of the score w.r.t. them
GUIDED_GRADIENT = "guided_backprop"    # [N, h_in, w_in, 3] guided gradient w.r.t. the model-sized input
PLAIN_GRADIENT = "plain_gradient"      # [N, h_in, w_in, 3] plain (vanilla) gradient w.r.t. it

# Each input gradient carried back through each photo's resize: a list of N [H, W, 3] arrays,
# w.r.t. the photo in [0, 1] (``run(..., photo_gradient=True)``).
PHOTO = {GUIDED_GRADIENT: "guided_backprop_image", PLAIN_GRADIENT: "plain_gradient_image"}

INPUT_GRADIENTS = (GUIDED_GRADIENT, PLAIN_GRADIENT)
# Every output a graph can give, and what it gives unless asked for more.
ALL = (LOGITS, LABEL, ACTIVATIONS, LAYER_GRADIENT, GUIDED_GRADIENT, PLAIN_GRADIENT)
STANDARD = (LOGITS, LABEL, ACTIVATIONS, LAYER_GRADIENT, GUIDED_GRADIENT)


def graph_outputs(names: Iterable[str]) -> Tuple[str, ...]:
    """The graph outputs behind ``names`` (a photo gradient stands for its input gradient), in
    ``ALL``'s order, always with the logits and labels. ValueError for a name no graph gives."""
    wanted = {LOGITS, LABEL}
    by_photo = {v: k for k, v in PHOTO.items()}
    for name in names:
        name = by_photo.get(name, name)
        if name not in ALL:
            raise ValueError("no graph output named %r (one of %s)" % (name, ", ".join(ALL + tuple(by_photo))))
        wanted.add(name)
    return tuple(n for n in ALL if n in wanted)
