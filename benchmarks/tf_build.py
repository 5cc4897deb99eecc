"""Time the graph's forward + guided backward pass to choose a TensorFlow build.

    .venv/bin/python benchmarks/tf_build.py [--batches 1,8,32] [--repeats 5]

Run it once in a venv per build (stock tensorflow==1.15.5, intel-tensorflow==1.15.2) and
compare the printed images/s. Inputs are random 224x224 images; decode, fusion and picture
encoding are not included.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ggcam.engine.graph import GuidedGradCamGraph  # noqa: E402
from ggcam.models.slim import SlimModel  # noqa: E402
from ggcam.tf.compat import VERSION  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.RandomState(0)
    rows = []
    with GuidedGradCamGraph(SlimModel("mobilenet_v1")) as graph:
        for batch in [int(b) for b in args.batches.split(",")]:
            images = rng.uniform(0, 1, (batch,) + tuple(graph.input_size) + (3,)).astype(np.float32)
            graph.run(images)  # warm-up: first run allocates and autotunes
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                graph.run(images)
                times.append(time.perf_counter() - start)
            best = min(times)
            rows.append({"tf": VERSION, "batch": batch, "best_s": best,
                         "median_s": float(np.median(times)), "images_per_s": batch / best})
            print(json.dumps(rows[-1]))


if __name__ == "__main__":
    main()
