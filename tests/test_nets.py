"""ggcam/nets/mobilenet_v1.py (and the nets/ entry in the clone): names, shapes and the real checkpoint."""
import numpy as np
import pytest

from ggcam.weights import checkpoints
from ggcam.models import zoo
from nets import mobilenet_v1 as mnet
from ggcam.tf.compat import tf

pytestmark = pytest.mark.graph


END_POINTS = (["Conv2d_0"]
              + ["Conv2d_%d_%s" % (i, kind) for i in range(1, 14) for kind in ("depthwise", "pointwise")]
              + ["AvgPool_1a", "Logits", "Predictions"])


def test_end_points_and_shapes():
    with tf.Graph().as_default():
        logits, end_points = mnet.build(mnet.input_placeholder())
        assert list(end_points) == END_POINTS
        assert logits.shape.as_list() == [None, 1001]
        assert end_points["Conv2d_0"].shape.as_list() == [None, 112, 112, 32]
        assert end_points["Conv2d_13_pointwise"].shape.as_list() == [None, 7, 7, 1024]
        assert end_points["Predictions"].shape.as_list() == [None, 1001]


def test_depth_multiplier_min_depth_and_squeeze():
    with tf.Graph().as_default():
        logits, end_points = mnet.build(mnet.input_placeholder(), depth_multiplier=0.25,
                                        min_depth=16, num_classes=10, spatial_squeeze=False)
        assert end_points["Conv2d_0"].shape.as_list()[-1] == 16        # max(32 * 0.25, 16)
        assert end_points["Conv2d_13_pointwise"].shape.as_list()[-1] == 256
        assert logits.shape.as_list() == [None, 1, 1, 10]


def test_real_checkpoint_restores_with_no_missing_and_no_unused_variables():
    in_checkpoint = dict(tf.train.list_variables(zoo.default_checkpoint("mobilenet_v1")))
    with tf.Graph().as_default():
        logits, _ = mnet.build(mnet.input_placeholder())
        model = {v.op.name: v.shape.as_list() for v in tf.global_variables()}
        assert set(model) == set(in_checkpoint)
        assert len(model) == 137
        for name, shape in model.items():
            assert list(in_checkpoint[name]) == shape, name
        saver = tf.train.Saver()
        with tf.Session() as sess:
            saver.restore(sess, zoo.default_checkpoint("mobilenet_v1"))
            out = sess.run(logits, {"input:0": checkpoints.probe_input()})
    assert np.all(np.isfinite(out)) and out.std() > 0.1
