"""Levers on the network pass itself (forward + guided backward), measured side by side.

    python benchmarks/network_levers.py [--batches 1,8] [--rounds 5] [--levers a,b,...]

For each lever, MobileNet V1's graph is built with it (the same weights, the default layer and
guided rule) and the pass timed on random model-sized photos, the graphs taking turns within
each round (best of ``--rounds``); its arrays are compared with the baseline graph's (largest
difference relative to each array's largest value), so a lever that changes the answer shows.
Levers (gradient overrides active while the network's ops are created):

- ``pointwise``: a 1x1 stride-1 convolution's input gradient as a forward 1x1 convolution of the
  incoming gradient with the transposed filter (a matmul), instead of Conv2DBackpropInput;
- ``depthwise``: a depthwise convolution's input gradient as a depthwise convolution of the
  (zero-dilated, for stride 2) incoming gradient with the spatially flipped filter, instead of
  DepthwiseConv2dNativeBackpropInput;
- ``batchnorm``: an inference-mode batch norm's input gradient as one multiply by
  gamma / sqrt(variance + epsilon), instead of FusedBatchNormGradV3 (on TF 2 this is what
  ggcam.tf.guided gives every graph since round 3: there the baseline has it, and this lever
  is TensorFlow's own gradient instead);
- ``relu6grad``: the guided ReLU6 gradient as one Relu6Grad of the gated gradient, instead of
  the two ReluGrads and the ``6 - x`` it is made of (the same values);
- ``all``: pointwise, depthwise and batchnorm together.

Prints a table (ms/image, ratio to the baseline, largest array difference) and the forward
pass alone for the network-vs-forward ratio.
"""
import argparse
import contextlib
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ggcam.engine.graph import GuidedGradCamGraph  # noqa: E402
from ggcam.models.slim import SlimModel  # noqa: E402
from ggcam.tf import guided  # noqa: E402
from ggcam.tf.compat import VERSION, tf  # noqa: E402
from speed import best_time, interleaved_best  # noqa: E402

LEVERS = ("pointwise", "depthwise", "batchnorm")
CHOICES = LEVERS + ("relu6grad", "all")
_registered = set()


def _register():
    from tensorflow.python.framework import ops
    from tensorflow.python.ops import nn_grad
    if _registered:
        return

    def pointwise(op, grad):
        w = op.inputs[1]
        one_by_one = w.shape.as_list()[:2] == [1, 1] and list(op.get_attr("strides")) == [1, 1, 1, 1]
        if not one_by_one or op.get_attr("data_format") not in (b"NHWC", "NHWC"):
            return nn_grad._Conv2DGrad(op, grad)
        dx = tf.nn.conv2d(grad, tf.transpose(w, [0, 1, 3, 2]), strides=[1, 1, 1, 1], padding="VALID")
        return dx, None

    def depthwise(op, grad):
        x, w = op.inputs
        strides = list(op.get_attr("strides"))
        padding = op.get_attr("padding")
        padding = padding.decode() if isinstance(padding, bytes) else padding
        kh, kw, _, mult = w.shape.as_list()
        if mult != 1 or strides[1] != strides[2] or strides[1] not in (1, 2) or padding != "SAME":
            return nn_grad._DepthwiseConv2dNativeGrad(op, grad)
        s = strides[1]
        h_in, w_in = x.shape.as_list()[1:3]
        h_out, w_out = grad.shape.as_list()[1:3]
        z = grad
        if s == 2:  # zero-dilate: z[2o] = grad[o]
            n, c = tf.shape(grad)[0], grad.shape.as_list()[3]
            z = tf.reshape(tf.stack([z, tf.zeros_like(z)], axis=2), [n, 2 * h_out, w_out, c])[:, :2 * h_out - 1]
            z = tf.reshape(tf.stack([z, tf.zeros_like(z)], axis=3), [n, 2 * h_out - 1, 2 * w_out, c])[:, :, :2 * w_out - 1]
        pads = []
        for size_in, size_out, k in ((h_in, h_out, kh), (w_in, w_out, kw)):
            total = max((size_out - 1) * s + k - size_in, 0)
            top = total // 2
            dilated = (size_out - 1) * s + 1
            pads.append([k - 1 - top, size_in + top - dilated])
        z = tf.pad(z, [[0, 0], pads[0], pads[1], [0, 0]])
        dx = tf.nn.depthwise_conv2d(z, w[::-1, ::-1], strides=[1, 1, 1, 1], padding="VALID")
        return dx, None

    def batchnorm(op, grad, *rest):
        from ggcam.tf.compat import TF2
        if TF2:
            return nn_grad._FusedBatchNormV3Grad(op, grad, *rest)  # the baseline has the multiply
        _, gamma, _, _, variance = op.inputs
        scale = gamma * tf.rsqrt(variance + op.get_attr("epsilon"))
        return [grad * scale, None, None, None, None]

    def relu6grad(op, grad):
        from tensorflow.python.ops import gen_nn_ops
        return gen_nn_ops.relu6_grad(tf.nn.relu(grad), op.inputs[0])

    for name, fn in (("GGLeverPointwise", pointwise), ("GGLeverDepthwise", depthwise),
                     ("GGLeverBatchnorm", batchnorm), ("GGLeverRelu6Grad", relu6grad)):
        ops.RegisterGradient(name)(fn)
    _registered.add(True)


OP_TYPES = {"pointwise": ("Conv2D", "GGLeverPointwise"), "depthwise": ("DepthwiseConv2dNative", "GGLeverDepthwise"),
            "batchnorm": ("FusedBatchNormV3", "GGLeverBatchnorm"), "relu6grad": ("Relu6", "GGLeverRelu6Grad")}


@contextlib.contextmanager
def levers(chosen):
    """guided.override_map also overriding the chosen ops' gradients, while a graph is built."""
    _register()
    real = guided.override_map

    def with_levers(rule="exact"):
        found = real(rule)
        found.update(dict(OP_TYPES[name] for name in chosen))
        return found
    guided.override_map = with_levers
    try:
        yield
    finally:
        guided.override_map = real


def build(chosen):
    with levers(chosen):
        return GuidedGradCamGraph(SlimModel("mobilenet_v1"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--levers", default="pointwise,depthwise,batchnorm,all")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    names = [n for n in args.levers.split(",") if n]
    unknown = [n for n in names if n not in CHOICES]
    if unknown:
        parser.error("--levers: unknown %s; choose among %s" % (", ".join(unknown), ", ".join(CHOICES)))
    graphs = {"baseline": build(())}
    for name in names:
        graphs[name] = build(LEVERS if name == "all" else (name,))
    rng = np.random.RandomState(0)
    report = {"tf": VERSION, "rows": []}
    base = graphs["baseline"]
    for batch in [int(b) for b in args.batches.split(",")]:
        images = rng.uniform(0, 1, (batch,) + tuple(base.input_size) + (3,)).astype(np.float32)
        reference = base.run(images)
        gaps = {}
        for name, g in graphs.items():
            out = g.run(images)  # warm-up, and the arrays to compare
            gaps[name] = max(float(np.abs(out[k] - reference[k]).max() / max(np.abs(reference[k]).max(), 1e-30))
                             for k in ("logits", "conv_activations", "conv_gradient", "guided_backprop"))
        best = interleaved_best({name: (lambda g=g: g.run(images)) for name, g in graphs.items()}, args.rounds)
        forward = best_time(lambda: base.logits(images), args.rounds)
        print("\nTF %s, batch %d (forward alone %.1f ms/image)" % (VERSION, batch, 1000 * forward / batch))
        print("| lever | network pass ms/image | vs baseline | network vs forward | largest difference |")
        print("|---|---|---|---|---|")
        for name in graphs:
            row = {"batch": batch, "lever": name, "ms_per_image": 1000 * best[name] / batch,
                   "vs_baseline": best[name] / best["baseline"], "network_vs_forward": best[name] / forward,
                   "largest_difference": gaps[name]}
            report["rows"].append(row)
            print("| %s | %.2f | %.3f | %.2f | %.1e |" % (name, row["ms_per_image"], row["vs_baseline"],
                                                         row["network_vs_forward"], row["largest_difference"]))
    for g in graphs.values():
        g.close()
    if args.output:
        with open(args.output, "w") as f:
            json.dump(report, f, indent=1)



if __name__ == "__main__":
    main()
