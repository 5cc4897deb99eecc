"""The seed's pipeline shape, for timing only: a new graph, model and checkpoint restore for
every image, the target label baked into the graph, and two separate tf.gradients calls
(last-conv gradient, then input gradient). Fusion uses the seed's order (--fusion=seed).
Written for the benchmark from the seed README's description; not used by the project.
"""
import os
import sys
from typing import List

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gradcam as gc  # noqa: E402
from ggcam.io import decoding  # noqa: E402
from ggcam.tf import guided as guided_relu
from nets import mobilenet_v1 as mnet  # noqa: E402
from ggcam.tf.compat import tf  # noqa: E402



def explain(path: str, checkpoint: str) -> List[np.ndarray]:
    """Guided Grad-CAM of one photo's top-1 class -> [heatmap, guided backprop, guided Grad-CAM]."""
    photo = decoding.load_image(path)
    graph = tf.Graph()
    with graph.as_default(), graph.gradient_override_map(guided_relu.override_map("seed")):
        image = tf.constant(photo[None].astype(np.float32) / 255.0)
        processed = (tf.image.resize_bilinear(image, [224, 224]) - 0.5) * 2.0
        logits, end_points = mnet.build(processed)
        conv = end_points[mnet.LAST_CONV]
        max_logit = tf.reduce_max(logits, axis=1)
        conv_gradient = tf.gradients(max_logit, conv)[0]
        guided_backprop = tf.gradients(max_logit, processed)[0]
        saver = tf.train.Saver()
        with tf.Session(graph=graph) as sess:
            saver.restore(sess, checkpoint)
            acts, grad, gbp = sess.run([conv, conv_gradient, guided_backprop])
    cam, gbp_pic, ggc = gc.gradcam(acts, grad, gbp, fusion="seed")
    return [gc.heatmap(cam), gc.to_uint8(gbp_pic), gc.to_uint8(ggc)]
