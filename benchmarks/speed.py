"""make bench: the full Guided Grad-CAM job, side by side, on this machine.

    .venv/bin/python benchmarks/speed.py [--images 32] [--batches 1,8,32] [--repeats 5]

The full job per image: JPEG decode, preprocessing, forward, backward, fusion and the pictures
encoded as PNG in memory (disk writes excluded). Inputs are 224x224 JPEGs cut from the example
photos, so every tool sees the same pixels and no resize is needed.

a. this project: the batched path (``Explainer.explain_photos`` + ``Explanation.pictures``),
   making and encoding the same three pictures as (c) (overlay, guided backprop, Guided
   Grad-CAM), and again with all five pictures the CLI writes (plus heatmap and panel); and the
   single-image CLI as a new process (cold start: process start to first picture written,
   and to exit);
b. the seed's pipeline shape (benchmarks/seed_pipeline.py): a graph per image, two
   ``tf.gradients`` calls, three pictures; it cannot batch;
c. pytorch-grad-cam's recipe (benchmarks/peer_pytorch_grad_cam.py) on a PyTorch MobileNet V1
   with the same weights, three pictures per image, in benchmarks/.venv-torch;
d. this project's network pass alone (decode, forward and guided backward pass, fetching
   every array the job uses): what a user waits for before any picture; and the forward pass
   alone (decode + forward), the old floor.

Cold start: a new ``inference.py`` process on one photo, to its first picture written, next
to a new ``python -c "import tensorflow"``, paired run by run, its graph in the graph cache
(ggcam/engine/cache.py) as from the second run on; the first run ever (graph built, then
cached) apart; and ``inference.py --help``.

Prints a table, writes benchmarks/results.json and ends with
``speedup_vs_pytorch_grad_cam=<x> speedup_vs_pytorch_grad_cam_b1=<x1> overhead_vs_network=<y>
network_vs_forward=<w> cold_start_vs_tf_import=<z>`` (batch 8 but the b1 figure, three
pictures; network_vs_forward: the network pass over the forward pass alone; the cold-start
ratio is the median of the pairs' ratios).
"""
import argparse
import concurrent.futures
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
HERE = os.path.join(ROOT, "benchmarks")
TORCH_PYTHON = os.path.join(HERE, ".venv-torch", "bin", "python")

from ggcam import explainer  # noqa: E402
from ggcam.weights import checkpoints  # noqa: E402
from ggcam import explanation  # noqa: E402
from ggcam.io import decoding, encoding  # noqa: E402
from ggcam.models import zoo  # noqa: E402
from ggcam.targets import Target  # noqa: E402
from ggcam.tf.compat import VERSION, tf  # noqa: E402


def make_inputs(folder: str, n: int, seed: int = 0) -> List[str]:
    """n 224x224 JPEGs: random crops (flipped at random) of the example photos."""
    rng = np.random.RandomState(seed)
    photos = [np.asarray(Image.open(os.path.join(ROOT, "images", f)).convert("RGB"))
              for f in ("chelsea.png", "coffee.png", "cat_and_coffee.png")]
    paths = []
    for i in range(n):
        p = photos[i % len(photos)]
        side = int(rng.randint(min(p.shape[:2]) // 2, min(p.shape[:2]) + 1))
        y, x = rng.randint(0, p.shape[0] - side + 1), rng.randint(0, p.shape[1] - side + 1)
        crop = Image.fromarray(p[y:y + side, x:x + side]).resize((224, 224), Image.BILINEAR)
        if rng.rand() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        paths.append(os.path.join(folder, "in%03d.jpg" % i))
        crop.save(paths[-1], quality=90)
    return paths


def encode_png(picture: np.ndarray) -> int:
    return len(encoding.encode_picture(picture, ".png"))  # what save_picture writes


SAME_AS_PEER = ("overlay", "guided_backprop", "guided_gradcam")  # the three pictures of (c)


def ours(ex: "explainer.Explainer", paths: List[str], batch: int, overlap: bool = False,
         encoded: Sequence[str] = SAME_AS_PEER) -> None:
    """The project's batched full job, making and encoding the ``encoded`` pictures;
    overlap=True encodes on a second thread while the next batch runs."""
    def finish(results):
        for per_image in results:
            for r in per_image:
                for name in encoded:
                    encode_png(r.picture(name))
    pool = concurrent.futures.ThreadPoolExecutor(1) if overlap else None
    pending = None
    for start in range(0, len(paths), batch):
        photos = [decoding.load_image(p) for p in paths[start:start + batch]]
        results = ex.explain_photos(photos, [[Target.best()]] * len(photos))
        if pool is None:
            finish(results)
        else:
            if pending is not None:
                pending.result()
            pending = pool.submit(finish, results)
    if pool is not None:
        if pending is not None:
            pending.result()
        pool.shutdown()


def forward_only(graph: "ggcam.engine.graph.GuidedGradCamGraph", paths: List[str], batch: int) -> None:
    for start in range(0, len(paths), batch):
        photos = [decoding.load_image(p).astype(np.float32) / 255.0 for p in paths[start:start + batch]]
        graph.logits(np.stack(photos))


def network_pass(graph: "ggcam.engine.graph.GuidedGradCamGraph", paths: List[str], batch: int) -> None:
    """Decode, forward and guided backward pass, fetching what the job needs; no picture."""
    for start in range(0, len(paths), batch):
        photos = [decoding.load_image(p).astype(np.float32) / 255.0 for p in paths[start:start + batch]]
        graph.run(photos)


def seed_shape(paths: List[str]) -> None:
    import seed_pipeline
    for p in paths:
        for picture in seed_pipeline.explain(p, zoo.default_checkpoint("mobilenet_v1")):
            encode_png(picture)


def best_time(fn: Callable[[], None], repeats: int) -> float:
    return interleaved_best({"": fn}, repeats)[""]


def interleaved_best(fns: Dict[str, Callable[[], None]], repeats: int) -> Dict[str, float]:
    """Best seconds of each of ``fns``, run in turn once per round: on a shared machine the slow
    spells then fall on every variant alike, so ratios between them hold."""
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def row(tool: str, batch: int, n: int, seconds: float, **extra) -> Dict:
    return dict(tool=tool, batch=batch, images=n, images_per_s=n / seconds,
                ms_per_image=1000.0 * seconds / n, **extra)


def _wall(argv: List[str], **kwargs) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   stdin=subprocess.DEVNULL, **kwargs)
    return time.perf_counter() - start


def cli_run(path: str, env: Dict[str, str]) -> Tuple[float, float]:
    """One new inference.py process on ``path``: seconds to its first picture on disk, to exit."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "inference.py"), "--image=%s" % path,
                                 "--output_dir=%s" % out, "--top_k=0"], stdout=subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL, env=env)
        first = None
        while proc.poll() is None:
            if first is None and any(not f.startswith(".") for f in os.listdir(out)):
                first = time.perf_counter() - start
            time.sleep(0.005)
        done = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError("inference.py failed")
    return (first if first is not None else done), done


def cold_start(path: str, repeats: int) -> Dict:
    """The single-image CLI in a new process: seconds to the first picture on disk and to exit,
    each run paired with a new ``python -c "import tensorflow"`` just before it; the first run
    ever (its graph not yet in the graph cache, a fresh one here); and --help."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, GGCAM_GRAPH_CACHE=cache)
        miss_first, miss_exit = cli_run(path, env)
        firsts, exits, tf_imports = [], [], []
        for _ in range(repeats):
            tf_imports.append(_wall([sys.executable, "-c", "import tensorflow"]))
            first, done = cli_run(path, env)
            firsts.append(first)
            exits.append(done)
    ratios = [f / t for f, t in zip(firsts, tf_imports)]
    helps = [_wall([sys.executable, os.path.join(ROOT, "inference.py"), "--help"]) for _ in range(repeats)]
    return {"first_picture_s": min(firsts), "exit_s": min(exits), "runs": repeats,
            "tf_import_s": min(tf_imports), "pairs": [list(p) for p in zip(firsts, tf_imports)],
            "vs_tf_import": statistics.median(ratios), "help_s": min(helps),
            "graph_not_cached": {"first_picture_s": miss_first, "exit_s": miss_exit}}


def torch_peer(paths: List[str], batches: List[int], repeats: int, folder: str) -> Optional[Dict]:
    """pytorch-grad-cam rows and the logits check, or None without the torch venv."""
    if not os.path.exists(TORCH_PYTHON):
        return None
    with tf.Graph().as_default():
        reader = tf.train.load_checkpoint(zoo.default_checkpoint("mobilenet_v1"))
        names = list(checkpoints.expected_variables("mobilenet_v1"))
    exported = os.path.join(folder, "weights.npz")
    np.savez(exported, **{n: reader.get_tensor(n) for n in names})
    reference = os.path.join(folder, "reference.npz")
    inputs = np.concatenate([checkpoints.probe_input(),
                             (np.stack([decoding.load_image(p) for p in paths[:4]]) / 127.5 - 1.0).astype(np.float32)])
    np.savez(reference, inputs=inputs, logits=checkpoints.model_logits("mobilenet_v1", zoo.default_checkpoint("mobilenet_v1"), inputs))
    script = os.path.join(HERE, "peer_pytorch_grad_cam.py")
    check = subprocess.run([TORCH_PYTHON, script, "--weights=%s" % exported, "--check=%s" % reference],
                           stdout=subprocess.PIPE, universal_newlines=True, check=True)
    result = {"check": json.loads(check.stdout.strip().splitlines()[-1]), "rows": []}
    run = subprocess.run([TORCH_PYTHON, script, "--weights=%s" % exported, "--images=%s" % folder,
                          "--batches=%s" % ",".join(map(str, batches)), "--repeats=%d" % repeats],
                         stdout=subprocess.PIPE, universal_newlines=True, check=True)
    result["rows"] = [json.loads(l) for l in run.stdout.splitlines() if l.startswith("{")]
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    return result


def session_config(intra: int, inter: int) -> "tf.ConfigProto":
    return tf.ConfigProto(intra_op_parallelism_threads=intra, inter_op_parallelism_threads=inter)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--levers", action="store_true", help="also time thread and overlap settings")
    parser.add_argument("--output", default=os.path.join(HERE, "results.json"))
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    rows, report = [], {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                                    "tensorflow": VERSION}}
    with tempfile.TemporaryDirectory() as folder:
        paths = make_inputs(folder, args.images)
        n = len(paths)
        peer = torch_peer(paths, batches, args.repeats, folder)
        if peer:
            rows += peer["rows"]
            report["pytorch_grad_cam_logits_max_abs_diff"] = peer["check"]["max_abs_logits_diff"]
            report["pytorch_grad_cam_peak_rss_mb"] = peer["peak_rss_mb"]
        report["cold_start"] = cold_start(paths[0], args.repeats)

        with explainer.Explainer() as ex:
            for batch in batches:
                variants = {
                    "this project": lambda: ours(ex, paths, batch),
                    "this project, 5 pictures": lambda: ours(ex, paths, batch, encoded=explanation.PICTURES),
                    "network pass (floor)": lambda: network_pass(ex.graph, paths, batch),
                    "forward only": lambda: forward_only(ex.graph, paths, batch)}
                ours(ex, paths[:batch], batch)  # warm-ups
                network_pass(ex.graph, paths[:batch], batch)
                forward_only(ex.graph, paths[:batch], batch)
                for tool, seconds in interleaved_best(variants, args.repeats).items():
                    rows.append(row(tool, batch, n, seconds))
        report["this_project_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

        if args.levers:
            levers = []
            for intra, inter, overlap in ((0, 0, False), (2, 1, False), (1, 2, False), (2, 2, False), (0, 0, True)):
                with explainer.Explainer(config=session_config(intra, inter)) as ex:
                    ours(ex, paths[:8], 8, overlap)
                    seconds = best_time(lambda: ours(ex, paths, 8, overlap), args.repeats)
                levers.append(row("this project", 8, n, seconds, intra_op_threads=intra or "default",
                                  inter_op_threads=inter or "default", overlap_encoding=overlap))
            report["levers_batch8"] = levers

        seed_n = min(n, 8)
        seed_shape(paths[:1])  # warm-up
        rows.append(row("seed pipeline shape", 1, seed_n, best_time(lambda: seed_shape(paths[:seed_n]), 1)))

    report["rows"] = rows
    by = {(r["tool"], r["batch"]): r for r in rows}
    print("%-22s %6s %10s %12s" % ("tool", "batch", "images/s", "ms/image"))
    for r in rows:
        print("%-22s %6d %10.2f %12.1f" % (r["tool"], r["batch"], r["images_per_s"], r["ms_per_image"]))
    cold = report["cold_start"]
    print("cold start (CLI, one image): first picture %.2f s, exit %.2f s; import tensorflow alone %.2f s; "
          "--help %.2f s; graph not yet cached: first picture %.2f s" % (
              cold["first_picture_s"], cold["exit_s"], cold["tf_import_s"], cold["help_s"],
              cold["graph_not_cached"]["first_picture_s"]))
    print("peak RSS: this project %.0f MB%s" % (report["this_project_peak_rss_mb"],
          ", pytorch-grad-cam %.0f MB" % report["pytorch_grad_cam_peak_rss_mb"] if peer else ""))
    if peer:
        print("pytorch-grad-cam model vs ours: max |logits difference| %.2e" % report["pytorch_grad_cam_logits_max_abs_diff"])
    for lever in report.get("levers_batch8", []):
        print("lever batch 8: intra=%s inter=%s overlap=%s -> %.2f images/s" % (
            lever["intra_op_threads"], lever["inter_op_threads"], lever["overlap_encoding"], lever["images_per_s"]))

    def ratio(tool: str, over: str, batch: int = 8, field: str = "ms_per_image") -> float:
        if (tool, batch) not in by or (over, batch) not in by:
            return float("nan")
        return by[(tool, batch)][field] / by[(over, batch)][field]

    for batch in batches:
        report.setdefault("by_batch", {})[str(batch)] = {
            "speedup_vs_pytorch_grad_cam": ratio("this project", "pytorch-grad-cam", batch, "images_per_s"),
            "overhead_vs_network": ratio("this project", "network pass (floor)", batch),
            "overhead_vs_network_5_pictures": ratio("this project, 5 pictures", "network pass (floor)", batch),
            "overhead_vs_forward": ratio("this project", "forward only", batch),
            "network_vs_forward": ratio("network pass (floor)", "forward only", batch)}
        print("batch %d: speedup_vs_pytorch_grad_cam %.2f, overhead_vs_network %.2f (5 pictures: %.2f), "
              "overhead_vs_forward %.2f, network_vs_forward %.2f"
              % ((batch,) + tuple(report["by_batch"][str(batch)].values())))
    eight = report.get("by_batch", {}).get("8", {})
    report["speedup_vs_pytorch_grad_cam"] = eight.get("speedup_vs_pytorch_grad_cam", float("nan"))
    report["speedup_vs_pytorch_grad_cam_b1"] = report.get("by_batch", {}).get("1", {}).get(
        "speedup_vs_pytorch_grad_cam", float("nan"))
    report["overhead_vs_network"] = eight.get("overhead_vs_network", float("nan"))
    report["network_vs_forward"] = eight.get("network_vs_forward", float("nan"))
    report["cold_start_vs_tf_import"] = cold["vs_tf_import"]
    with open(args.output, "w") as f:
        json.dump(report, f, indent=2)
    print("speedup_vs_pytorch_grad_cam=%.2f speedup_vs_pytorch_grad_cam_b1=%.2f overhead_vs_network=%.2f "
          "network_vs_forward=%.2f cold_start_vs_tf_import=%.2f" % (
              report["speedup_vs_pytorch_grad_cam"], report["speedup_vs_pytorch_grad_cam_b1"],
              report["overhead_vs_network"], report["network_vs_forward"], report["cold_start_vs_tf_import"]))


if __name__ == "__main__":
    main()
