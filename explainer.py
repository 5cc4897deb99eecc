"""The TensorFlow side: one graph and session that yield every array Guided Grad-CAM needs.

The graph is built once, with Relu and Relu6 gradients overridden by guided ones while the
model's ops are created; images and target labels are fed, so explaining more images or
other classes never adds ops (the graph is finalized).
"""
from typing import Dict, Optional, Sequence

import numpy as np

import guided_relu
import weights
from nets import mobilenet_v1 as mnet
from tf_setup import quiet_tensorflow

tf = quiet_tensorflow()

LAYER = mnet.LAST_CONV
PREDICTED = -1  # label value meaning "explain the top-1 class"


class CheckpointError(Exception):
    """The checkpoint is missing or does not fit the model; one line for the user."""


def preprocess(images: tf.Tensor) -> tf.Tensor:
    """RGB [N, H, W, 3] in [0, 1] -> model input [N, 224, 224, 3] in [-1, 1].

    Bilinear resize with antialiasing: identical to plain bilinear at 224x224, and when
    shrinking a larger photo every pixel contributes, so the gradient with respect to the
    photo is smooth instead of a lattice of sampled points.
    """
    size = [mnet.INPUT_SIZE, mnet.INPUT_SIZE]
    resized = tf.compat.v2.image.resize(images, size, method="bilinear", antialias=True)
    return (resized - 0.5) * 2.0


class GuidedGradCamGraph:
    """Owns a graph and session for MobileNet V1 with guided ReLUs.

    ``run(images, labels)`` returns, per batch, the arrays of ``--save_raw`` plus the guided
    gradient with respect to the fed photo. Use as a context manager or call ``close()``.
    """

    def __init__(self, checkpoint: str = weights.DEFAULT_CHECKPOINT,
                 guided_relu6: str = "exact", config: Optional[tf.ConfigProto] = None):
        problems = weights.checkpoint_problems(checkpoint)
        if problems:
            raise CheckpointError("%s; fetch it with: %s"
                                  % (problems[0], weights.fetch_command(checkpoint)))
        self.graph = tf.Graph()
        overrides = guided_relu.override_map(guided_relu6)
        with self.graph.as_default(), self.graph.gradient_override_map(overrides):
            self.images = tf.placeholder(tf.float32, [None, None, None, 3], name="images")
            self.labels = tf.placeholder(tf.int32, [None], name="labels")
            self.model_input = preprocess(self.images)
            logits, end_points = mnet.build(self.model_input)
            conv = end_points[LAYER]
            target = tf.where(self.labels < 0, tf.argmax(logits, axis=1, output_type=tf.int32),
                              self.labels)
            # Images in a batch are independent (inference-mode batch norm), so the gradient
            # of the summed target logits gives every image its own gradient in one pass.
            score = tf.reduce_sum(logits * tf.one_hot(target, mnet.NUM_CLASSES))
            conv_grad, input_grad, image_grad = tf.gradients(
                score, [conv, self.model_input, self.images])
            self.fetches = {
                "logits": logits,
                "label": target,
                "conv_activations": conv,
                "conv_gradient": conv_grad,
                "guided_backprop": input_grad,
                "guided_backprop_image": image_grad,
            }
            saver = tf.train.Saver(tf.global_variables())
        self.graph.finalize()
        self.session = tf.Session(graph=self.graph, config=config)
        try:
            saver.restore(self.session, checkpoint)
        except tf.errors.OpError as exc:
            self.session.close()
            raise CheckpointError("cannot restore %s: %s" % (checkpoint, exc.message.splitlines()[0]))

    def run(self, images: np.ndarray, labels: Optional[Sequence[int]] = None,
            fetch: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
        """Explain a batch of same-size photos.

        images: float32 [N, H, W, 3], RGB in [0, 1]. labels: N class indices in 0..1000,
        or ``PREDICTED`` (-1) for the top-1 class; None means top-1 for all.
        Returns batch arrays: logits [N, 1001], label [N], conv_activations and
        conv_gradient [N, 7, 7, 1024], guided_backprop [N, 224, 224, 3] (w.r.t. the model
        input in [-1, 1]), guided_backprop_image [N, H, W, 3] (w.r.t. the fed photo).
        ``fetch`` limits the names computed.
        """
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError("images must be [N, H, W, 3], got %s" % (images.shape,))
        if labels is None:
            labels = [PREDICTED] * len(images)
        labels = np.asarray(labels, dtype=np.int32).reshape(-1)
        if len(labels) != len(images):
            raise ValueError("got %d labels for %d images" % (len(labels), len(images)))
        if np.any((labels < PREDICTED) | (labels >= mnet.NUM_CLASSES)):
            raise ValueError("labels must be in 0..%d" % (mnet.NUM_CLASSES - 1))
        names = list(fetch) if fetch is not None else list(self.fetches)
        return self.session.run({n: self.fetches[n] for n in names},
                                {self.images: images, self.labels: labels})

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "GuidedGradCamGraph":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
