"""The TF-slim model zoo as a plain table: every fact about each network, no TensorFlow.

Checkpoint URLs, class counts, input sizes and preprocessing follow the slim model zoo's
README and its preprocessing code (Inception, ResNet v2, MobileNet: [-1, 1]; VGG and
ResNet v1: RGB 0..255 minus the ImageNet channel means). The network code is tf_slim 1.1.0's
(``tf_slim.nets``), except MobileNet V1, which is this project's ``ggcam/nets/mobilenet_v1.py``.

Archives: the 2016/2017 ones (Inception, ResNet, VGG) hold the checkpoint as one file named
``checkpoint`` (TensorFlow's first checkpoint format); the MobileNet one holds
``checkpoint.index`` and ``checkpoint.data-00000-of-00001``. ``ggcam.weights.checkpoints`` reads either
and always writes the second form at ``checkpoints/<checkpoint>``.
"""
import os
from typing import NamedTuple, Optional, Tuple

from ggcam.paths import checkpoint_dir

IMAGENET_MEANS = (123.68, 116.78, 103.94)  # slim's vgg_preprocessing _R_MEAN, _G_MEAN, _B_MEAN
SLIM_URL = "http://download.tensorflow.org/models/"


class ZooEntry(NamedTuple):
    name: str
    module: str            # where the network function lives
    function: str          # the network function: fn(images, num_classes, is_training=False, **network_args)
    arg_scope: str         # the arg-scope function in the same module
    input_size: Tuple[int, int]
    num_classes: int       # 1001: index 0 is "background"; 1000: the usual ImageNet numbering
    input_range: Optional[Tuple[float, float]]
    mean_rgb: Optional[Tuple[float, float, float]]
    default_layer: str     # an end-point name: the last feature map before global pooling, after its activation
    checkpoint: str        # the checkpoint's name in the archive, and its prefix's file name under checkpoints/
    url: str               # the official archive
    network_args: Tuple[Tuple[str, object], ...] = ()     # more keyword arguments of the network function
    # End points the network function does not return: (end-point name, op name inside the
    # network's name scope); the op's first output becomes the end point.
    extra_end_points: Tuple[Tuple[str, str], ...] = ()


ZOO = {e.name: e for e in (
    ZooEntry("mobilenet_v1", "ggcam.nets.mobilenet_v1", "mobilenet_v1", "mobilenet_v1_arg_scope", (224, 224), 1001,
             (-1.0, 1.0), None, "Conv2d_13_pointwise", "mobilenet_v1_1.0_224.ckpt",
             SLIM_URL + "mobilenet_v1_2018_02_22/mobilenet_v1_1.0_224.tgz"),
    ZooEntry("inception_v1", "tf_slim.nets.inception_v1", "inception_v1", "inception_v1_arg_scope", (224, 224), 1001,
             (-1.0, 1.0), None, "Mixed_5c", "inception_v1.ckpt", SLIM_URL + "inception_v1_2016_08_28.tar.gz"),
    # The auxiliary head (on Mixed_6e) only serves training: left out, its ops and variables
    # would be dead weight (the official checkpoint's AuxLogits variables are simply not read).
    ZooEntry("inception_v3", "tf_slim.nets.inception_v3", "inception_v3", "inception_v3_arg_scope", (299, 299), 1001,
             (-1.0, 1.0), None, "Mixed_7c", "inception_v3.ckpt", SLIM_URL + "inception_v3_2016_08_28.tar.gz",
             network_args=(("create_aux_logits", False),)),
    ZooEntry("resnet_v1_50", "tf_slim.nets.resnet_v1", "resnet_v1_50", "resnet_arg_scope", (224, 224), 1000,
             None, IMAGENET_MEANS, "resnet_v1_50/block4", "resnet_v1_50.ckpt",
             SLIM_URL + "resnet_v1_50_2016_08_28.tar.gz"),
    # Evaluated at 299 with Inception preprocessing (slim README: "ResNet V2 models use Inception
    # pre-processing and input image size of 299"). Its block4 end point is the sum of the last
    # residual unit, *before* the final batch norm + ReLU ("postnorm"), which tf_slim does not
    # return as an end point: it is added here and is the default layer.
    ZooEntry("resnet_v2_50", "tf_slim.nets.resnet_v2", "resnet_v2_50", "resnet_arg_scope", (299, 299), 1001,
             (-1.0, 1.0), None, "resnet_v2_50/postnorm", "resnet_v2_50.ckpt",
             SLIM_URL + "resnet_v2_50_2017_04_14.tar.gz",
             extra_end_points=(("resnet_v2_50/postnorm", "postnorm/Relu"),)),
    ZooEntry("vgg_16", "tf_slim.nets.vgg", "vgg_16", "vgg_arg_scope", (224, 224), 1000,
             None, IMAGENET_MEANS, "vgg_16/conv5/conv5_3", "vgg_16.ckpt", SLIM_URL + "vgg_16_2016_08_28.tar.gz"),
)}
DEFAULT_MODEL = "mobilenet_v1"


def entry(name: str) -> ZooEntry:
    """The zoo entry named ``name``; KeyError listing the names otherwise."""
    try:
        return ZOO[name]
    except KeyError:
        raise KeyError("unknown model %r (one of %s)" % (name, ", ".join(ZOO)))


def default_checkpoint(name: str) -> str:
    """checkpoints/<the official checkpoint's file name>, the prefix ``weights.py`` writes."""
    return os.path.join(checkpoint_dir(), entry(name).checkpoint)
