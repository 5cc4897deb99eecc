"""Guided Grad-CAM over datasets that outgrow one machine: an Apache Beam pipeline.

    listed images ─┐                                         earlier rows (results-*.jsonl)
    remote globs ──┴─ one per file ─ folder stems ─┬─ CoGroupByKey ─┘
                                                   Plan: skip complete outputs, keep other rows
                                                   Decode (spread over workers; bad image: failed row)
                                                   RunInference(ExplainHandler): one graph per worker
                                                       process, batches of --min/--max_batch_size
                                                   Save: pictures via FileSystems, one row per target
    all rows ─ results-SSSSS-of-NNNNN.jsonl, results.csv, metrics_summary.{csv,json} (--metrics)

The rules are the command line's: ``naming.folder_names`` and ``folder.explanation_folder``
name the folders, ``folder.make_row`` and ``results.COLUMNS`` make the rows,
``Explanation.encoded_files`` the files, ``explanation.is_complete`` decides what a re-run
skips. Every file goes through Beam's ``FileSystems`` (local paths, ``gs://``, ``s3://`` with
Beam's extras), written to a temporary name and renamed. Importing this module loads Beam but
no TensorFlow; the model handler loads it in the workers.
"""
import csv
import io
import json
import os
import posixpath
import re
import sys
import tempfile
import time
import uuid
import zlib
from collections import ChainMap
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference

from ggcam import methods as methods_mod
from ggcam.methods.base import Method
from ggcam.runs import folder as folder_run
from ggcam.runs import naming
from ggcam.io import decoding
from ggcam.runs import results as results_mod
from ggcam.explanation import file_record, is_complete
from ggcam.targets import Target

NAMESPACE = "ggcam"
COUNTERS = ("ok", "failed", "skipped", "kept")  # explained now; failed now; complete already; other rows kept
SHARD_PREFIX = "results"
SHARD_SUFFIX = ".jsonl"
SHARD_RE = re.compile(r"^results-(\d{5,})-of-(\d{5,})\.jsonl$")
SUMMARY_FILE = "metrics_summary"
BASELINE_MAPS = ("random",)  # --metric_maps beside the methods made
DEFAULT_METRIC_MAPS = ("guided_gradcam",)


# ----------------------------------------------------------------------------- settings and paths

class Settings:
    """What every worker needs to know; small and picklable."""

    def __init__(self, out_root: str, model_kwargs: Dict, layer: Optional[str] = None,
                 guided_relu6: str = "exact", fusion: str = "paper", max_side: int = decoding.DEFAULT_MAX_SIDE,
                 save_raw: bool = False, overwrite: bool = False, min_batch_size: int = 1,
                 max_batch_size: int = 8, metric_maps: Sequence[str] = (), metric_steps: int = 16,
                 methods: Sequence[Union[str, Method]] = methods_mod.DEFAULT):
        # methods: names or Method objects (configured ones, as the command line makes them)
        self.out_root, self.model_kwargs, self.layer = out_root, dict(model_kwargs), layer
        self.guided_relu6, self.fusion, self.max_side = guided_relu6, fusion, max_side
        self.save_raw, self.overwrite = save_raw, overwrite
        self.min_batch_size, self.max_batch_size = min_batch_size, max_batch_size
        self.metric_maps, self.metric_steps = tuple(metric_maps), metric_steps
        self.methods = tuple(methods)

    @property
    def metric_columns(self) -> List[str]:
        return metric_columns(self.metric_maps)


def metric_columns(maps: Sequence[str]) -> List[str]:
    """The results columns ``--metrics`` adds: deletion and insertion AUC of each map."""
    return ["%s_auc_%s" % (kind, m) for m in maps for kind in ("deletion", "insertion")]


def is_remote(path: str) -> bool:
    """A URL of one of Beam's file systems (gs://, s3://, ...) rather than a local path."""
    return "://" in path


def real_path(path: str) -> str:
    """A file's identity: its real path, or the URL itself."""
    return path if is_remote(path) else os.path.realpath(path)


def _open(path: str):
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to a temporary name in the same folder, then rename it into place."""
    folder, name = posixpath.split(path) if is_remote(path) else os.path.split(path)
    tmp = FileSystems.join(folder, ".tmp-%s-%s" % (uuid.uuid4().hex[:12], name))
    try:
        with FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            f.write(data)
        FileSystems.rename([tmp], [path])
    except BaseException:
        try:
            FileSystems.delete([tmp])
        except Exception:  # nothing to clean up, or the file system is gone
            pass
        raise


# ----------------------------------------------------------------------------- the job list

def job(path: str, targets: Sequence[Target]) -> Dict:
    """An image to explain: as given, where workers read it (absolute, or the URL), its identity."""
    return {"path": path, "read": path if is_remote(path) else os.path.abspath(path),
            "real": real_path(path), "targets": [t.key for t in targets]}


def match_remote(spec: str, targets: Sequence[str]) -> Iterable[Dict]:
    """Jobs for a remote --image: a glob, a folder (ending in '/': its image files) or one file."""
    keys = list(targets)
    if spec.endswith("/"):
        pattern, images_only = spec + "*", True
    elif any(c in spec for c in naming.GLOB_CHARS):
        pattern, images_only = spec, False
    else:
        yield {"path": spec, "read": spec, "real": spec, "targets": keys}
        return
    for result in FileSystems.match([pattern]):
        for meta in result.metadata_list:
            if meta.path.endswith("/") or (images_only and not meta.path.lower().endswith(naming.IMAGE_EXTENSIONS)):
                continue
            yield {"path": meta.path, "read": meta.path, "real": meta.path, "targets": keys}


def merge_same_file(item: Tuple[str, Iterable[Dict]]) -> Dict:
    """One job per file (several names of one file are one image), its targets in first-seen order."""
    _, jobs = item
    jobs = list(jobs)
    first = dict(jobs[0])
    for other in jobs[1:]:
        first["targets"] += [t for t in other["targets"] if t not in first["targets"]]
    return first


def _stem(path: str) -> str:
    return naming.folder_names([path])[path]


def assign_stems(item: Tuple[str, Iterable[Dict]]) -> Iterable[Dict]:
    """``naming.folder_names`` over the files sharing a file-name stem (what it depends on)."""
    _, jobs = item
    jobs = list(jobs)
    stems = naming.folder_names([j["path"] for j in jobs])
    for j in jobs:
        yield dict(j, stem=stems[j["path"]])


def row_real(row: Dict) -> str:
    """The identity of an earlier row's file: its real path as recorded, or the URL."""
    return row.get("real_path") or real_path(row["path"])


def parse_row(line: str) -> Iterable[Dict]:
    """A results row from a JSONL line; a damaged line loses that row only (the image is redone)."""
    try:
        row = json.loads(line) if line.strip() else None
    except ValueError:
        return
    if isinstance(row, dict) and row.get("path") and row.get("target"):
        yield row


def prior_shards(out_root: str) -> List[str]:
    """The newest complete set of an earlier run's results-SSSSS-of-NNNNN.jsonl shards."""
    pattern = FileSystems.join(out_root, "%s-*-of-*%s" % (SHARD_PREFIX, SHARD_SUFFIX))
    try:
        found = [m for r in FileSystems.match([pattern]) for m in r.metadata_list]
    except Exception:  # nothing there yet (some file systems raise instead of matching nothing)
        return []
    sets = {}
    for meta in found:
        m = SHARD_RE.match(posixpath.basename(meta.path))
        if m:
            sets.setdefault(int(m.group(2)), {})[int(m.group(1))] = meta
    complete = [(max(x.last_updated_in_seconds for x in shards.values()), n, shards)
                for n, shards in sets.items() if set(shards) == set(range(n))]
    if not complete:
        return []
    _, _, shards = max(complete, key=lambda c: (c[0], c[1]))
    return [shards[i].path for i in sorted(shards)]


def remove_stale_shards(written: List[str], out_root: str) -> None:
    """Delete results shards of earlier runs with another shard count than this run's."""
    counts = {int(m.group(2)) for m in (SHARD_RE.match(posixpath.basename(p)) for p in written) if m}
    if len(counts) != 1:
        return
    pattern = FileSystems.join(out_root, "%s-*-of-*%s" % (SHARD_PREFIX, SHARD_SUFFIX))
    stale = [meta.path for r in FileSystems.match([pattern]) for meta in r.metadata_list
             if SHARD_RE.match(posixpath.basename(meta.path))
             and int(SHARD_RE.match(posixpath.basename(meta.path)).group(2)) not in counts]
    if stale:
        FileSystems.delete(stale)


# ----------------------------------------------------------------------------- rows

def _row(j: Dict, target_key: str, **kwargs) -> Dict:
    """``folder.make_row`` with the identity the driver computed (workers may run elsewhere)."""
    row = folder_run.make_row(j["path"], Target.from_key(target_key), **kwargs)
    row["real_path"] = j["real"]
    return row


def failed_rows(j: Dict, error: str, seconds: float = 0.0) -> List[Dict]:
    share = seconds / max(1, len(j["targets"]))
    return [_row(j, key, error=error, seconds=share) for key in j["targets"]]


def json_line(row: Dict) -> str:
    return json.dumps(row, sort_keys=True)


def csv_header(extra: Sequence[str] = ()) -> str:
    return _csv_line(list(results_mod.COLUMNS) + list(extra))


def csv_line(row: Dict, extra: Sequence[str] = ()) -> str:
    flat = results_mod.csv_row(row)
    values = [flat.get(c, "") for c in results_mod.COLUMNS]
    values += ["%.6f" % row[c] if isinstance(row.get(c), float) else row.get(c, "") for c in extra]
    return _csv_line(values)


def _csv_line(values: Sequence) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(values)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- confidence intervals

# Student's t, 0.975 quantile, for 1..30 degrees of freedom.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)
_Z975 = 1.959964


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (a table up to 30, then
    the Cornish-Fisher expansion, within 1e-4; it tends to the normal 1.96)."""
    if df < 1:
        raise ValueError("degrees of freedom must be at least 1")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    g1 = (z ** 3 + z) / 4.0
    g2 = (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96.0
    g3 = (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384.0
    return z + g1 / df + g2 / df ** 2 + g3 / df ** 3


def mean_ci(n: int, total: float, total_sq: float) -> Dict:
    """Mean and 95% confidence interval of the mean from a count, sum and sum of squares:
    mean +- t(0.975, n - 1) * s / sqrt(n), s the sample standard deviation."""
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "ci95_low": None, "ci95_high": None}
    mean = total / n
    if n == 1:
        return {"n": 1, "mean": mean, "std": None, "ci95_low": None, "ci95_high": None}
    std = max(0.0, (total_sq - n * mean * mean) / (n - 1)) ** 0.5
    half = t975(n - 1) * std / n ** 0.5
    return {"n": n, "mean": mean, "std": std, "ci95_low": mean - half, "ci95_high": mean + half}


class MetricSums(beam.CombineFn):
    """Per metric column: count, sum and sum of squares of the rows that have it."""

    def __init__(self, columns: Sequence[str]):
        self.columns = list(columns)

    def create_accumulator(self):
        return {c: [0, 0.0, 0.0] for c in self.columns}

    def add_input(self, acc, row):
        if row.get("status") == "ok":
            for c in self.columns:
                v = row.get(c)
                if isinstance(v, (int, float)) and np.isfinite(v):
                    acc[c][0] += 1
                    acc[c][1] += float(v)
                    acc[c][2] += float(v) * float(v)
        return acc

    def merge_accumulators(self, accs):
        out = self.create_accumulator()
        for acc in accs:
            for c in self.columns:
                for i in range(3):
                    out[c][i] += acc[c][i]
        return out

    def extract_output(self, acc):
        return acc


def summary_rows(sums: Dict[str, List[float]], maps: Sequence[str]) -> List[Dict]:
    rows = []
    for m in maps:
        for kind in ("deletion", "insertion"):
            stats = mean_ci(*sums["%s_auc_%s" % (kind, m)])
            rows.append(dict(map=m, measure="%s_auc" % kind, **stats))
    return rows


def write_summary(sums: Dict[str, List[float]], out_root: str, maps: Sequence[str]) -> None:
    """metrics_summary.json and .csv: per map and measure, n, mean, std and the 95% CI."""
    rows = summary_rows(sums, maps)
    doc = {"confidence": 0.95, "interval": "mean +- t(0.975, n-1) * std / sqrt(n)", "rows": rows}
    write_atomic(FileSystems.join(out_root, SUMMARY_FILE + ".json"), json.dumps(doc, indent=1).encode())
    fields = ["map", "measure", "n", "mean", "std", "ci95_low", "ci95_high"]
    lines = [_csv_line(fields)] + [_csv_line(["" if r[f] is None else ("%.6f" % r[f] if isinstance(r[f], float)
                                                                        else r[f]) for f in fields]) for r in rows]
    write_atomic(FileSystems.join(out_root, SUMMARY_FILE + ".csv"), ("\n".join(lines) + "\n").encode())


# ----------------------------------------------------------------------------- DoFns

class Plan(beam.DoFn):
    """Per file: which targets to explain; earlier rows that are complete (skipped) or belong
    to no target of this run (kept) go straight to the results."""
    ROWS = "rows"

    def __init__(self, settings: Settings):
        self.s = settings
        self.skipped = Metrics.counter(NAMESPACE, "skipped")
        self.kept = Metrics.counter(NAMESPACE, "kept")

    def finished(self, row: Dict) -> bool:
        if self.s.overwrite or row.get("status") != "ok" or not row.get("folder"):
            return False
        if any(not isinstance(row.get(c), (int, float)) for c in self.s.metric_columns):
            return False
        folder = FileSystems.join(self.s.out_root, row["folder"])
        return is_complete(folder, row.get("files"), self.s.save_raw, open_file=_open, methods=self.s.methods)

    def process(self, item):
        _, grouped = item
        jobs, prior = list(grouped["jobs"]), grouped["prior"]
        latest = {}
        for row in prior:
            latest[row["target"]] = row
        if jobs:
            j = jobs[0]
            todo = []
            for key in j["targets"]:
                row = latest.pop(key, None)
                if row is not None and self.finished(row):
                    self.skipped.inc()
                    yield beam.pvalue.TaggedOutput(self.ROWS, row)
                else:
                    todo.append(key)
            if todo:
                yield dict(j, targets=todo)
        for row in latest.values():
            self.kept.inc()
            yield beam.pvalue.TaggedOutput(self.ROWS, row)


def read_photo(j: Dict, max_side: int) -> np.ndarray:
    """The photo as the command line reads it (``decoding.load_image``); a remote one is
    copied to a temporary local file first. ImageError names the path as given."""
    try:
        if not is_remote(j["read"]):
            return decoding.load_image(j["read"], max_side)
        try:
            with _open(j["read"]) as f:
                data = f.read()
        except Exception as exc:
            raise decoding.ImageError("image not readable: %s (%s)" % (j["read"], str(exc).splitlines()[0]))
        suffix = os.path.splitext(posixpath.basename(j["read"]))[1]
        with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
            tmp.write(data)
            tmp.flush()
            try:
                return decoding.load_image(tmp.name, max_side)
            except decoding.ImageError as exc:
                raise decoding.ImageError(str(exc).replace(tmp.name, j["read"]))
    except decoding.ImageError as exc:
        raise decoding.ImageError(str(exc).replace(j["read"], j["path"]))


class Decode(beam.DoFn):
    """Job -> (job, photo, seconds); a bad image becomes failed rows (never a failed pipeline)."""
    ROWS = "rows"

    def __init__(self, settings: Settings):
        self.s = settings
        self.failed = Metrics.counter(NAMESPACE, "failed")

    def process(self, j):
        t0 = time.perf_counter()
        try:
            photo = read_photo(j, self.s.max_side)
        except Exception as exc:  # ImageError, and whatever else a broken file may raise
            message = str(exc) if isinstance(exc, decoding.ImageError) else "%s: %s" % (j["path"], exc)
            print("error: %s" % message, file=sys.stderr)
            self.failed.inc(len(j["targets"]))
            for row in failed_rows(j, message, time.perf_counter() - t0):
                yield beam.pvalue.TaggedOutput(self.ROWS, row)
            return
        yield j, photo, time.perf_counter() - t0


class ExplainHandler(ModelHandler):
    """RunInference's model handler: the model is an ``Explainer`` (graph built once per worker
    process, shared by its threads); an example is (job, photo, decode seconds); the inference
    is ``{"explanations": [...], "metrics": [...], "seconds": s}`` or ``{"error": message}``."""

    def __init__(self, settings: Settings):
        super().__init__()
        self.s = settings

    def load_model(self):
        from ggcam.explainer import Explainer  # TensorFlow loads here, in the worker
        return Explainer(layer=self.s.layer, guided_relu6=self.s.guided_relu6, fusion=self.s.fusion,
                         max_side=self.s.max_side, methods=self.s.methods, **self.s.model_kwargs)

    def batch_elements_kwargs(self):
        return {"min_batch_size": self.s.min_batch_size, "max_batch_size": self.s.max_batch_size}

    def get_num_bytes(self, batch) -> int:  # the default pickles the batch just to measure it
        return int(sum(photo.nbytes for _, photo, _ in batch))

    def get_metrics_namespace(self) -> str:
        return NAMESPACE

    def run_inference(self, batch, model, inference_args=None):
        t0 = time.perf_counter()
        targets = [[Target.from_key(k) for k in j["targets"]] for j, _, _ in batch]
        try:
            outcomes = model.explain_photos([p for _, p, _ in batch], targets, [j["path"] for j, _, _ in batch])
        except Exception:  # one bad photo must not fail the others: explain them one by one
            outcomes = []
            for (j, photo, _), ts in zip(batch, targets):
                try:
                    outcomes.append(model.explain_photos([photo], [ts], [j["path"]])[0])
                except Exception as exc:
                    outcomes.append(exc)
        share = (time.perf_counter() - t0) / max(1, sum(len(t) for t in targets))
        for (j, photo, decode_seconds), outcome in zip(batch, outcomes):
            example = (j, photo, decode_seconds)
            if isinstance(outcome, Exception):
                message = str(outcome).strip().splitlines()[0] if str(outcome).strip() else type(outcome).__name__
                yield PredictionResult(example, {"error": "%s: %s" % (j["path"], message)})
                continue
            scores = []
            for e in outcome:
                t1 = time.perf_counter()
                try:
                    scores.append((self.faithfulness(model, photo, e, j["path"]), time.perf_counter() - t1))
                except Exception as exc:
                    scores.append((exc, time.perf_counter() - t1))
            yield PredictionResult(example, {"explanations": outcome, "metrics": scores, "seconds": share})

    def faithfulness(self, model, photo: np.ndarray, e, path: str) -> Dict[str, float]:
        """Deletion and insertion AUC of each --metric_maps map (``evaluate.py``'s measure: the
        model-sized input, grey deletion, blurred insertion, ``--metric_steps`` steps)."""
        if not self.s.metric_maps:
            return {}
        import cv2
        from ggcam.evaluation import checks as evaluation
        from ggcam.evaluation import metrics
        from ggcam.explanation import scores as model_scores
        image = model.graph.resize(photo.astype(np.float32) / 255.0)
        maps = e.input_maps(image.shape[:2])
        seed = zlib.crc32(("%s|%s" % (path, e.requested.key)).encode()) & 0x7FFFFFFF
        maps["random"] = np.random.RandomState(seed).random_sample(image.shape[:2])
        blurred = cv2.GaussianBlur(image, (0, 0), evaluation.BLUR_SIGMA)

        def predict(batch: np.ndarray) -> np.ndarray:
            return model_scores(model.graph.logits(batch), model.graph.model.output_function)[:, e.label]

        out = {}
        for m in self.s.metric_maps:
            scores = metrics.deletion_insertion(image, maps[m], predict, blurred, evaluation.GREY, self.s.metric_steps)
            out["deletion_auc_" + m] = scores["deletion_auc"]
            out["insertion_auc_" + m] = scores["insertion_auc"]
        return out


class Save(beam.DoFn):
    """PredictionResult -> one row per target: the folder's files written atomically through
    FileSystems, the row made by ``folder.make_row`` (failed with its error on any problem)."""

    def __init__(self, settings: Settings):
        self.s = settings
        self.ok = Metrics.counter(NAMESPACE, "ok")
        self.failed = Metrics.counter(NAMESPACE, "failed")

    def process(self, prediction: PredictionResult, owners: Dict[str, str]):
        (j, _, decode_seconds), out = prediction.example, prediction.inference
        if "error" in out:
            print("error: %s" % out["error"], file=sys.stderr)
            self.failed.inc(len(j["targets"]))
            yield from failed_rows(j, out["error"])
            return
        owners = ChainMap({}, owners)  # this image's folders, over the earlier runs' (read-only side input)
        for key, e, (scores, metric_seconds) in zip(j["targets"], out["explanations"], out["metrics"]):
            t1 = time.perf_counter()
            folder = folder_run.explanation_folder(j["stem"], j["path"], e.label, owners, real=j["real"])
            try:
                if isinstance(scores, Exception):
                    raise ValueError("faithfulness metrics: %s" % scores)
                record = {}
                target_dir = FileSystems.join(self.s.out_root, folder)
                for name, blob in e.encoded_files(self.s.save_raw):
                    write_atomic(FileSystems.join(target_dir, name), blob)
                    record[name] = file_record(blob)
                seconds = (decode_seconds / len(j["targets"]) + out["seconds"] + metric_seconds
                           + time.perf_counter() - t1)
                row = _row(j, key, folder=folder, result=e, seconds=seconds, files=record)
                row.update(scores)
                self.ok.inc()
            except Exception as exc:  # OSError (BeamIOError), ValueError (NaN), anything: a failed row
                message = "%s: %s" % (j["path"], str(exc).strip().splitlines()[0] if str(exc).strip()
                                      else type(exc).__name__)
                print("error: %s" % message, file=sys.stderr)
                row = _row(j, key, folder=folder, error=message)
                self.failed.inc()
            yield row


# ----------------------------------------------------------------------------- the pipeline

def build(p: beam.Pipeline, jobs: Sequence[Dict], remote_specs: Sequence[str], remote_targets: Sequence[str],
          settings: Settings, prior_files: Sequence[str]):
    """Add the pipeline to ``p``. jobs: ``job()`` dicts of local images (the driver listed them
    with the command line's rules); remote_specs: URLs matched by the workers, each explained
    for ``remote_targets``; prior_files: the earlier run's results shards. Returns the rows."""
    out_root = settings.out_root
    listed = p | "ListedImages" >> beam.Create(list(jobs))
    remote = (p | "RemoteSpecs" >> beam.Create(list(remote_specs))
              | "MatchRemote" >> beam.FlatMap(match_remote, list(remote_targets)))
    images = ((listed, remote) | "AllImages" >> beam.Flatten()
              | "ByFile" >> beam.Map(lambda j: (j["real"], j))
              | "OnePerFile" >> beam.GroupByKey()
              | "MergeTargets" >> beam.Map(merge_same_file)
              | "ByStem" >> beam.Map(lambda j: (_stem(j["path"]), j))
              | "SameStem" >> beam.GroupByKey()
              | "FolderStems" >> beam.FlatMap(assign_stems)
              | "KeyImages" >> beam.Map(lambda j: (j["real"], j)))
    if prior_files:
        prior = (p | "EarlierShards" >> beam.Create(list(prior_files))
                 | "ReadEarlier" >> beam.io.ReadAllFromText()
                 | "ParseEarlier" >> beam.FlatMap(parse_row))
    else:
        prior = p | "NoEarlierRows" >> beam.Create([])
    owners = (prior | "FolderOwners" >> beam.FlatMap(
        lambda r: [(r["folder"], row_real(r))] if r.get("folder") else []))
    planned = ({"jobs": images, "prior": prior | "KeyEarlier" >> beam.Map(lambda r: (row_real(r), r))}
               | "JoinEarlier" >> beam.CoGroupByKey()
               | "Plan" >> beam.ParDo(Plan(settings)).with_outputs(Plan.ROWS, main="todo"))
    decoded = (planned.todo
               | "Decode" >> beam.ParDo(Decode(settings)).with_outputs(Decode.ROWS, main="photos"))
    saved = (decoded.photos
             | "Explain" >> RunInference(ExplainHandler(settings))
             | "Save" >> beam.ParDo(Save(settings), owners=beam.pvalue.AsDict(owners)))
    rows = (planned[Plan.ROWS], decoded[Decode.ROWS], saved) | "AllRows" >> beam.Flatten()

    written = (rows | "ToJson" >> beam.Map(json_line)
               | "WriteJsonl" >> beam.io.WriteToText(FileSystems.join(out_root, SHARD_PREFIX),
                                                     file_name_suffix=SHARD_SUFFIX))
    (written | "ShardNames" >> beam.combiners.ToList()
     | "RemoveStaleShards" >> beam.Map(remove_stale_shards, out_root))
    extra = settings.metric_columns
    (rows | "ToCsv" >> beam.Map(csv_line, extra)
     | "WriteCsv" >> beam.io.WriteToText(FileSystems.join(out_root, results_mod.CSV_FILE), num_shards=1,
                                         shard_name_template="", header=csv_header(extra)))
    if settings.metric_maps:
        (rows | "MetricSums" >> beam.CombineGlobally(MetricSums(extra))
         | "WriteSummary" >> beam.Map(write_summary, out_root, list(settings.metric_maps)))
    return rows


def counters(result) -> Dict[str, int]:
    """The pipeline's ok / failed / skipped / kept counters, and ``graphs``: how many times a
    worker built the model's graph (RunInference's model-load timings, one per load); committed
    values where the runner has them, else attempted."""
    from apache_beam.metrics.metric import MetricsFilter
    found = dict({name: 0 for name in COUNTERS}, graphs=0)
    try:
        query = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    except Exception:  # a runner without metrics
        return found
    for c in query["counters"]:
        if c.key.metric.name in COUNTERS:
            value = c.committed if c.committed is not None else c.attempted
            found[c.key.metric.name] += int(value or 0)
    for d in query["distributions"]:
        if d.key.metric.name == "load_model_latency_milli_secs":
            value = d.committed if d.committed is not None else d.attempted
            found["graphs"] += int(value.count) if value is not None else 0
    return found


def read_summary(out_root: str) -> Optional[Dict]:
    try:
        with _open(FileSystems.join(out_root, SUMMARY_FILE + ".json")) as f:
            return json.loads(f.read().decode("utf-8"))
    except Exception:
        return None
