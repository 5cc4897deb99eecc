"""Where the network pass's time goes, by op type: TensorFlow's own trace of one graph run.

    python benchmarks/profile_ops.py [--batches 1,8] [--repeats 5] [--photo 224x224] [--output F.json]

Builds MobileNet V1's graph as the job does (forward pass, guided backward pass, the layer's
gradient), runs it on random photos of ``--photo`` size (224x224 as `make bench` feeds it: no
resize; 451x300 adds the resize and its adjoint, as for images/chelsea.png), and traces the
best of ``--repeats`` runs (RunOptions FULL_TRACE, RunMetadata step
stats). Each op's time is its own (start to end, as the trace records it), summed per op type
and per group: forward convolutions, the input gradients of the depthwise and the other
convolutions, the guided gates, batch norm, the resize and its adjoint, copies and layout
conversions, the rest. Two cores run ops side by side, so the sum exceeds the wall time; the
table gives each group's share of the sum and its wall-time equivalent (share x wall time).
Also times the same batch's forward pass alone (the logits). Prints Markdown tables.
"""
import argparse
import collections
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ggcam.engine.graph import GuidedGradCamGraph  # noqa: E402
from ggcam.models.slim import SlimModel  # noqa: E402
from ggcam.tf.compat import VERSION, tf  # noqa: E402
from speed import best_time  # noqa: E402


# Op types by group, matched on the type with oneDNN's "_Mkl" / "_MklNative" prefixes removed.
GROUPS = [
    ("forward convolutions (with what Grappler fused into them)",
     ("Conv2D", "DepthwiseConv2dNative", "FusedConv2D", "FusedDepthwiseConv2dNative", "MatMul", "BiasAdd",
      "Conv2DWithBias", "FusedMatMul")),
    ("depthwise input gradient", ("DepthwiseConv2dNativeBackpropInput",)),
    ("other convolutions' input gradient", ("Conv2DBackpropInput", "Conv2DBackpropFilter",
                                            "DepthwiseConv2dNativeBackpropFilter")),
    ("guided gates and ReLU6 derivative", ("Relu", "Relu6", "ReluGrad", "Relu6Grad", "Sub", "Maximum", "Minimum",
                                           "Greater", "Less", "Select", "SelectV2", "Cast", "Mul", "LogicalAnd")),
    ("batch norm and its gradient", ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3", "FusedBatchNormGrad",
                                     "FusedBatchNormGradV2", "FusedBatchNormGradV3")),
    ("resize and its adjoint", ("ResizeBilinear", "ResizeBilinearGrad", "ScaleAndTranslate",
                                "ScaleAndTranslateGrad", "ResizeArea")),
    ("copies and layout conversions", ("MklToTf", "ToTf", "TfToMkl", "Transpose", "Identity", "Reshape", "Squeeze",
                                       "ExpandDims", "ConcatV2", "Pack", "Tile", "Pad", "Slice", "StridedSlice",
                                       "InputConversion", "Snapshot", "Const", "Recv", "Send", "Retval", "Arg",
                                       "HostRecv", "HostSend")),
]


def group_of(op_type: str) -> str:
    base = op_type
    for prefix in ("_MklNative", "_Mkl", "_"):
        if base.startswith(prefix) and base[len(prefix):]:
            base = base[len(prefix):]
            break
    for name, types in GROUPS:
        if base in types or op_type in types:
            return name
    return "other"


def traced(graph: GuidedGradCamGraph, photos, repeats: int):
    """(best wall seconds, {op type: summed op microseconds}) over ``repeats`` traced runs."""
    session = graph.session
    options = tf.RunOptions(trace_level=tf.RunOptions.FULL_TRACE)
    best = None

    class Traced:  # graph.run's session.run calls (the pass, then each photo's adjoint), traced
        def __init__(self):
            self.metadata = []

        def run(self, fetches, feeds, options=None):
            self.metadata.append(tf.RunMetadata())
            return session.run(fetches, feeds, options=trace_options, run_metadata=self.metadata[-1])

        def __getattr__(self, name):
            return getattr(session, name)
    trace_options = options
    proxy = Traced()
    graph.session = proxy
    try:
        for _ in range(repeats):
            proxy.metadata = []
            t0 = time.perf_counter()
            graph.run(photos)
            seconds = time.perf_counter() - t0
            if best is None or seconds < best[0]:
                best = (seconds, proxy.metadata)
    finally:
        graph.session = session
    types = {op.name: op.type for op in graph.graph.get_operations()}
    per_type = collections.Counter()
    # "/host:CPU" repeats the kernels' time as host-side records (TF 1.15): the device's own only
    for dev in [d for metadata in best[1] for d in metadata.step_stats.dev_stats if not d.device.startswith("/host:")]:
        for node in dev.node_stats:
            name = node.node_name.split(":")[0]
            # the kernel that ran ("name = Type(inputs)"): Grappler's fusions and oneDNN's rewrites
            # keep a graph op's name under another type
            label = node.timeline_label.split(" = ", 1)[1].strip().split("(")[0] if " = " in node.timeline_label else ""
            op_type = label or types.get(name) or "?"
            per_type[op_type] += node.all_end_rel_micros
    return best[0], per_type


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--photo", default="224x224", help="WIDTHxHEIGHT of the random photos")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    width, height = (int(v) for v in args.photo.lower().split("x"))
    rng = np.random.RandomState(0)
    report = {"tf": VERSION, "photo": args.photo, "batches": []}
    with GuidedGradCamGraph(SlimModel("mobilenet_v1")) as graph:
        for batch in [int(b) for b in args.batches.split(",")]:
            photos = [rng.uniform(0, 1, (height, width, 3)).astype(np.float32) for _ in range(batch)]
            graph.run(photos)  # warm-up: allocations, oneDNN's kernel preparation
            pass_s = best_time(lambda: graph.run(photos), args.repeats)
            model_sized = np.stack([graph.resize(p) for p in photos])
            graph.logits(model_sized)  # warm-up of the forward-only run
            forward_s = best_time(lambda: graph.logits(model_sized), args.repeats)
            wall, per_type = traced(graph, photos, args.repeats)
            total = float(sum(per_type.values()))
            groups = collections.Counter()
            for op_type, micros in per_type.items():
                groups[group_of(op_type)] += micros
            rows = [{"group": g, "share": m / total, "ms_per_image": m / total * pass_s * 1000.0 / batch}
                    for g, m in groups.most_common()]
            top = [{"op": t, "share": m / total} for t, m in per_type.most_common(15)]
            report["batches"].append({"batch": batch, "network_pass_ms_per_image": pass_s * 1000.0 / batch,
                                      "forward_ms_per_image": forward_s * 1000.0 / batch,
                                      "network_vs_forward": pass_s / forward_s, "traced_wall_s": wall,
                                      "groups": rows, "top_ops": top})
            print("\nTF %s, batch %d: network pass %.1f ms/image, forward alone %.1f ms/image (%.2fx)"
                  % (VERSION, batch, pass_s * 1000.0 / batch, forward_s * 1000.0 / batch, pass_s / forward_s))
            print("\n| group | share of op time | ms/image (share x pass) |\n|---|---|---|")
            for r in rows:
                print("| %s | %.1f%% | %.1f |" % (r["group"], 100 * r["share"], r["ms_per_image"]))
            print("\n| op type | share |\n|---|---|")
            for r in top:
                print("| `%s` | %.1f%% |" % (r["op"], 100 * r["share"]))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
