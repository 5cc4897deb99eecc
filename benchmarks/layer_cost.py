"""What --layer costs: the network pass with the Grad-CAM layer at different depths.

    .venv/bin/python benchmarks/layer_cost.py [--model mobilenet_v1] [--layers A,B] [--batch 8] [--repeats 5]

For a layer with rectifiers above it, Grad-CAM's weights need the unguided gradient there, so
the graph adds a second, plain backward pass from the logits down to that layer (see
ggcam/engine/graph.py). Prints, per layer, the best time of a forward + backward run over random images (all
graphs timed in rounds, so other load hits them alike) and the ratio to the default layer's.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ggcam.engine.graph import GuidedGradCamGraph  # noqa: E402
from ggcam.models import make_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mobilenet_v1")
    parser.add_argument("--layers", default="Conv2d_11_pointwise,Conv2d_7_pointwise,Conv2d_3_pointwise")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    graphs = [GuidedGradCamGraph(make_model(model=args.model), layer) for layer in [None] + args.layers.split(",")]
    images = np.random.RandomState(0).uniform(
        0, 1, (args.batch,) + tuple(graphs[0].input_size) + (3,)).astype(np.float32)
    best = [float("inf")] * len(graphs)
    for graph in graphs:
        graph.run(images, photo_gradient=False)  # warm-up: allocation and autotuning
    # Rounds over all graphs, best of each: load from other processes hits all of them alike.
    for _ in range(args.repeats):
        for i, graph in enumerate(graphs):
            start = time.perf_counter()
            graph.run(images, photo_gradient=False)
            best[i] = min(best[i], time.perf_counter() - start)
    for graph, seconds in zip(graphs, best):
        print(json.dumps({"model": args.model, "layer": graph.layer_name, "plain_layer_pass": graph.plain_layer_pass,
                          "batch": args.batch, "ms_per_image": round(1000 * seconds / args.batch, 2),
                          "vs_default_layer": round(seconds / best[0], 3)}))
        graph.close()


if __name__ == "__main__":
    main()
