"""MobileNet V1 (Howard et al., 2017) in TF-slim, inference only.

Variable and end-point names follow the official slim checkpoints
(``mobilenet_v1_1.0_224.ckpt``), so those checkpoints restore unchanged.
"""
from collections import OrderedDict
from typing import Dict, Tuple

from ggcam.tf.compat import SLIM_BATCH_NORM, tf
import tf_slim as slim

SCOPE = "MobilenetV1"
NUM_CLASSES = 1001
INPUT_SIZE = 224
LAST_CONV = "Conv2d_13_pointwise"

# (stride, output channels) of the 13 depthwise-separable blocks after Conv2d_0.
_SEPARABLE_BLOCKS = (
    (1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512),
    (1, 512), (1, 512), (1, 512), (1, 512), (1, 512), (2, 1024), (1, 1024),
)
_FIRST_CONV_DEPTH = 32


def mobilenet_v1_arg_scope(batch_norm_epsilon: float = 0.001):
    """Arg scope for inference: batch norm with frozen statistics, ReLU6, SAME padding."""
    batch_norm_params = {
        "center": True,
        "scale": True,
        "epsilon": batch_norm_epsilon,
        "is_training": False,
    }
    batch_norm_params.update(SLIM_BATCH_NORM)  # updates_collections=None: needed on TF 2
    with slim.arg_scope(
        [slim.conv2d, slim.separable_conv2d],
        normalizer_fn=slim.batch_norm,
        activation_fn=tf.nn.relu6,
        padding="SAME",
    ):
        with slim.arg_scope([slim.batch_norm], **batch_norm_params) as scope:
            return scope


def mobilenet_v1(
    images: tf.Tensor,
    num_classes: int = NUM_CLASSES,
    depth_multiplier: float = 1.0,
    min_depth: int = 8,
    spatial_squeeze: bool = True,
    scope: str = SCOPE,
) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
    """Build MobileNet V1 in inference mode.

    images: float32 [N, H, W, 3] scaled to [-1, 1] (224x224 for the official weights).
    Returns (logits [N, num_classes] (or [N, 1, 1, num_classes] without squeeze),
    end_points) with end points ``Conv2d_0`` ... ``Conv2d_13_pointwise``, ``AvgPool_1a``,
    ``Logits`` and ``Predictions``. Call it inside ``mobilenet_v1_arg_scope()``.
    """
    if depth_multiplier <= 0:
        raise ValueError("depth_multiplier must be greater than zero")

    def depth(channels: int) -> int:
        return max(int(channels * depth_multiplier), min_depth)

    end_points = OrderedDict()
    with tf.variable_scope(scope, "MobilenetV1", [images]):
        net = slim.conv2d(images, depth(_FIRST_CONV_DEPTH), [3, 3], stride=2, scope="Conv2d_0")
        end_points["Conv2d_0"] = net
        for i, (stride, channels) in enumerate(_SEPARABLE_BLOCKS, start=1):
            name = "Conv2d_%d_depthwise" % i
            # num_outputs=None makes separable_conv2d depthwise only ("depthwise_weights").
            net = slim.separable_conv2d(net, None, [3, 3], depth_multiplier=1,
                                        stride=stride, scope=name)
            end_points[name] = net
            name = "Conv2d_%d_pointwise" % i
            net = slim.conv2d(net, depth(channels), [1, 1], stride=1, scope=name)
            end_points[name] = net

        with tf.variable_scope("Logits"):
            # Global average pool; equals the official 7x7 VALID pool at 224x224.
            net = tf.reduce_mean(net, axis=[1, 2], keepdims=True, name="AvgPool_1a")
            end_points["AvgPool_1a"] = net
            logits = slim.conv2d(net, num_classes, [1, 1], activation_fn=None,
                                 normalizer_fn=None, scope="Conv2d_1c_1x1")
            if spatial_squeeze:
                logits = tf.squeeze(logits, [1, 2], name="SpatialSqueeze")
        end_points["Logits"] = logits
        end_points["Predictions"] = tf.nn.softmax(logits, name="Predictions")
    return logits, end_points


def input_placeholder(size: int = INPUT_SIZE, name: str = "input") -> tf.Tensor:
    """float32 placeholder [None, size, size, 3] for inputs in [-1, 1]."""
    return tf.placeholder(tf.float32, [None, size, size, 3], name=name)


def build(images: tf.Tensor, **kwargs) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
    """``mobilenet_v1(images, **kwargs)`` inside ``mobilenet_v1_arg_scope()``."""
    with slim.arg_scope(mobilenet_v1_arg_scope()):
        return mobilenet_v1(images, **kwargs)
