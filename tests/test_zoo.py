"""The tf_slim networks of the zoo, each on a checkpoint of random weights saved here.

One module-scoped fixture per network builds it once, saves its variables (initialized by
their own initializers, seeded) and explains two photos of different sizes through
``GuidedGradCamGraph(SlimModel(name, checkpoint=prefix))``; the tests check what came out.
"""
import os
import shutil
from collections import namedtuple

import numpy as np
import pytest
from PIL import Image

from ggcam.tf import guided as guided_relu
from ggcam.engine.graph import GuidedGradCamGraph
from ggcam.models import safety
from ggcam.models.detect import depends_on
from ggcam.models.base import ModelError
from ggcam.models.slim import SlimModel, build_network
from ggcam.models.zoo import IMAGENET_MEANS, ZOO, entry
from ggcam.targets import Target
from ggcam.tf.compat import tf

pytestmark = pytest.mark.graph

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTOS = [os.path.join(ROOT, "images", n) for n in ("chelsea.png", "coffee.png")]
NETS = ["inception_v1", "inception_v3", "resnet_v1_50", "resnet_v2_50", "vgg_16"]

# What the slim zoo says (README table and footnote, preprocessing_factory): the facts are
# repeated here so an edit of the table has to be an edit of this too.
SLIM_ZOO = {
    #                 classes, input, preprocessing, default layer (the last map before pooling, after its activation)
    "mobilenet_v1": (1001, 224, "inception", "Conv2d_13_pointwise"),
    "inception_v1": (1001, 224, "inception", "Mixed_5c"),
    "inception_v3": (1001, 299, "inception", "Mixed_7c"),
    "resnet_v1_50": (1000, 224, "vgg", "resnet_v1_50/block4"),
    "resnet_v2_50": (1001, 299, "inception", "resnet_v2_50/postnorm"),
    "vgg_16": (1000, 224, "vgg", "vgg_16/conv5/conv5_3"),
}
OTHER_LAYER = {"inception_v1": "Mixed_4f", "inception_v3": "Mixed_6e", "resnet_v1_50": "resnet_v1_50/block3",
               "resnet_v2_50": "resnet_v2_50/block4", "vgg_16": "vgg_16/conv4/conv4_3"}
# The activation each default layer ends with (ResNet v2's block4 would be an AddV2).
DEFAULT_LAYER_OP = {"inception_v1": "ConcatV2", "inception_v3": "ConcatV2", "resnet_v1_50": "Relu",
                    "resnet_v2_50": "Relu", "vgg_16": "Relu"}

Net = namedtuple("Net", "name prefix model graph out end_points")


def load_photo(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0


def save_random_checkpoint(name, prefix, write_version=tf.train.SaverDef.V2):
    """Build ``name`` on a placeholder, initialize its variables (seeded) and save them.
    Returns the end points {name: static shape} of that build."""
    e = entry(name)
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        _, end_points = build_network(e, tf.placeholder(tf.float32, [None, e.input_size[0], e.input_size[1], 3]))
        saver = tf.train.Saver(write_version=write_version)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            saver.save(sess, prefix, write_meta_graph=False, write_state=False)
        return {k: v.shape.as_list() for k, v in end_points.items()}


@pytest.fixture(scope="module")
def photos():
    images = [load_photo(p) for p in PHOTOS]
    assert images[0].shape != images[1].shape
    return images


# The everyday tier builds ResNet v2 50 and VGG 16 (both preprocessings, both kinds of default
# layer); the three larger graphs (about 15 s more on this machine) only in the extended tier.
EVERYDAY_NETS = ("resnet_v2_50", "vgg_16")
NET_PARAMS = [n if n in EVERYDAY_NETS else pytest.param(n, marks=pytest.mark.extended) for n in NETS]


@pytest.fixture(scope="module", params=NET_PARAMS)
def net(request, tmp_path_factory, photos):
    name = request.param
    folder = tmp_path_factory.mktemp(name)
    prefix = str(folder / entry(name).checkpoint)
    end_points = save_random_checkpoint(name, prefix)
    model = SlimModel(name, checkpoint=prefix)
    graph = GuidedGradCamGraph(model)
    try:
        out = graph.run(photos, [Target.best(), Target.of(5)])
        yield Net(name, prefix, model, graph, out, end_points)
    finally:
        graph.close()
        shutil.rmtree(str(folder), ignore_errors=True)  # VGG's random weights are 528 MB


def test_zoo_table_matches_the_slim_zoo():
    for name, (classes, size, preprocessing, layer) in SLIM_ZOO.items():
        e = entry(name)
        assert (e.num_classes, e.input_size, e.default_layer) == (classes, (size, size), layer), name
        if preprocessing == "vgg":
            assert e.mean_rgb == IMAGENET_MEANS == (123.68, 116.78, 103.94) and e.input_range is None, name
        else:
            assert e.input_range == (-1.0, 1.0) and e.mean_rgb is None, name
        assert e.url.startswith("http://download.tensorflow.org/models/"), name
        assert e.checkpoint == ("mobilenet_v1_1.0_224.ckpt" if name == "mobilenet_v1" else name + ".ckpt")
    assert set(ZOO) == set(SLIM_ZOO)


def test_explains_a_batch_of_two_photos(net, photos):
    out, e = net.out, entry(net.name)
    height, width = e.input_size
    layer_shape = net.end_points[e.default_layer][1:]
    assert out["logits"].shape == (2, e.num_classes)
    assert out["label"].tolist() == [int(np.argmax(out["logits"][0])), 5]
    assert out["conv_activations"].shape == out["conv_gradient"].shape == tuple([2] + layer_shape)
    assert out["guided_backprop"].shape == (2, height, width, 3)
    assert [g.shape for g in out["guided_backprop_image"]] == [p.shape for p in photos]
    for key in ("logits", "conv_activations", "conv_gradient", "guided_backprop"):
        assert np.all(np.isfinite(out[key])), key
    assert all(np.all(np.isfinite(g)) for g in out["guided_backprop_image"])
    # The gradients reach the layer and the image (random weights still give a signal).
    assert np.any(out["conv_gradient"] != 0) and np.any(out["guided_backprop"] != 0)
    assert not np.array_equal(out["logits"][0], out["logits"][1])  # two photos, two answers


def test_the_allowlist_covers_the_network(net):
    """Every op type of the explained graph (network, gradients, the explainer's own ops) is on
    the model-file allowlist: the zoo passes the same check as a stranger's file."""
    types = {op.type for op in net.graph.graph.get_operations()}
    assert safety.not_allowed(types) == set()
    assert not types & {"SaveV2", "RestoreV2"}  # weights are fed, no Saver


def test_every_rectifier_is_guided(net):
    # The model's ops are at the graph's root; the explainer's own (the backward passes, whose
    # guided gradients are made of Relu ops too) are under "ggcam".
    ops = net.graph.graph.get_operations()
    rectifiers = [op for op in ops if op.type in ("Relu", "Relu6") and not op.name.startswith("ggcam")]
    on_path = [op for op in depends_on(net.model.logits, net.graph.images) if op.type in ("Relu", "Relu6")]
    assert on_path and set(on_path) <= set(rectifiers)
    assert [op.name for op in rectifiers if not guided_relu.is_guided(op)] == []


def test_layers_are_the_end_points(net):
    layers = net.model.layers()
    expected = [k for k, shape in net.end_points.items() if len(shape) == 4
                and k.rsplit("/", 1)[-1].lower() not in ("logits", "predictions")]
    assert list(layers) == expected
    default = layers[entry(net.name).default_layer]
    assert default.op.type == DEFAULT_LAYER_OP[net.name]
    assert net.graph.fetches["conv_activations"] is default
    assert default.shape.as_list()[1:3] != [1, 1]  # a feature map, not a pooled vector
    assert net.model.randomization_layers()


def test_resnet_v2_default_layer_is_after_the_final_activation(net):
    if net.name != "resnet_v2_50":
        pytest.skip("ResNet v2 only")
    layers = net.model.layers()
    block4, postnorm = layers["resnet_v2_50/block4"], layers["resnet_v2_50/postnorm"]
    assert block4.op.type == "AddV2"  # the residual sum, before batch norm + ReLU
    assert postnorm.op.type == "Relu" and postnorm.op.name.endswith("postnorm/Relu")
    assert list(layers)[-1] == "resnet_v2_50/postnorm"
    # The ReLU's input is the postnorm batch norm of block4.
    assert "postnorm" in postnorm.op.inputs[0].op.name


def test_preprocessing_of_a_constant_image(net):
    e = entry(net.name)
    x = np.full((1, e.input_size[0], e.input_size[1], 3), 0.25, np.float32)
    fed = net.graph.session.run(net.model.model_input, {net.graph.images: x})
    if SLIM_ZOO[net.name][2] == "vgg":
        expected = 255 * 0.25 - np.array([123.68, 116.78, 103.94], np.float32)
    else:
        expected = np.full(3, 2 * 0.25 - 1, np.float32)
    np.testing.assert_allclose(fed, np.broadcast_to(expected, fed.shape), rtol=1e-6, atol=1e-4)


def check_another_end_point(net):
    layer = OTHER_LAYER[net.name]
    assert layer != entry(net.name).default_layer
    h, w = entry(net.name).input_size
    image = np.linspace(0, 1, h * w * 3, dtype=np.float32).reshape(h, w, 3)  # model-sized: no resize
    with GuidedGradCamGraph(SlimModel(net.name, checkpoint=net.prefix), layer=layer) as graph:
        out = graph.run([image], [Target.best()], photo_gradient=False)
        assert graph.layer_name == layer
    assert out["conv_activations"].shape == out["conv_gradient"].shape == tuple([1] + net.end_points[layer][1:])
    assert np.all(np.isfinite(out["conv_gradient"])) and np.any(out["conv_gradient"] != 0)
    assert np.all(np.isfinite(out["guided_backprop"])) and np.any(out["guided_backprop"] != 0)
    # The same weights give the same logits as in the default layer's graph.
    np.testing.assert_allclose(out["logits"][0], net.graph.logits(image[None])[0], rtol=1e-4,
                               atol=1e-4 * np.abs(out["logits"]).max())


# A second graph per network: the everyday tier builds it for ResNet v2 (its block4 is below the
# postnorm ReLU, so Grad-CAM's weights take the plain backward pass) and VGG (quick to build);
# the larger graphs of the others only in the extended tier.
QUICK_OTHER_LAYER = EVERYDAY_NETS


def test_another_end_point_as_layer(net):
    if net.name not in QUICK_OTHER_LAYER:
        pytest.skip("extended tier: test_another_end_point_as_layer_of_the_larger_graphs")
    check_another_end_point(net)


@pytest.mark.extended
def test_another_end_point_as_layer_of_the_larger_graphs(net):
    if net.name in QUICK_OTHER_LAYER:
        pytest.skip("in the everyday tier: test_another_end_point_as_layer")
    check_another_end_point(net)


def test_missing_checkpoint_names_the_fetch_command(tmp_path):
    prefix = str(tmp_path / "vgg_16.ckpt")
    with pytest.raises(ModelError, match="no checkpoint at .*python weights.py --model=vgg_16 --source=official"):
        SlimModel("vgg_16", checkpoint=prefix).prepare()
