"""Guided Grad-CAM over datasets that outgrow one machine: an Apache Beam pipeline.

    python beam_explain.py --image=photos/ --output_dir=out \\
        --runner=DirectRunner --direct_running_mode=multi_processing --direct_num_workers=2
    python beam_explain.py --image='gs://bucket/photos/*.jpg' --output_dir=gs://bucket/out \\
        --runner=DataflowRunner --project=P --region=R --temp_location=gs://bucket/tmp ...

The model, target and picture flags are inference.py's; any other --flag is one of Beam's
pipeline options (--runner, --direct_num_workers, Dataflow's, Flink's, Spark's, ...). Writes
one sub-folder per image and target (the pictures of inference.py), results as sharded JSONL
(results-SSSSS-of-NNNNN.jsonl) and one results.csv; with --metrics, deletion and insertion
AUCs per row and metrics_summary.{csv,json} (means with 95% confidence intervals). Needs
Apache Beam: `make beam-setup` (requirements-beam.txt).
"""
import argparse
import contextlib
import importlib
import logging
import os
import re
import sys
import threading
from typing import Callable, Iterator, List, Optional

from ggcam import cli
from ggcam.io import safe_files
from ggcam.targets import Target

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # holds ggcam
DEFAULT_OUTPUT = "gradcam_beam_output"
BASELINE_MAPS = ("random",)  # --metric_maps beside the methods made (as ggcam.runs.beam's)
MODEL_PATH_FLAGS = ("checkpoint", "graph", "saved_model", "keras", "meta_graph", "labels")

EPILOG = """Beam's pipeline options pass through, e.g.:
  --runner=DirectRunner --direct_running_mode=multi_processing --direct_num_workers=2
  --runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp --sdk_container_image=IMAGE
  --runner=FlinkRunner --flink_master=HOST:8081 --environment_type=DOCKER --environment_config=IMAGE
  --runner=SparkRunner --spark_master_url=spark://HOST:7077 --environment_type=DOCKER --environment_config=IMAGE
(docs/beam.md). Our --labels (class names) hides Dataflow's --labels."""


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser(description="Guided Grad-CAM over many images with Apache Beam: the model, target and "
                               "picture flags of inference.py, plus Beam's pipeline options.",
                   epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    cli.add_target_flags(p, images_help="photos: a folder, a quoted glob ('photos/**/*.jpg'), @list.txt or a file; a "
                                        "gs:// or s3:// glob, folder (ending in /) or file; repeatable",
                         labels_file_help="CSV of 'path,label' rows (as for inference.py); replaces --image")
    p.add_argument("--output_dir", default=None,
                   help="output folder, local or a gs:// / s3:// URL (default: ./%s)" % DEFAULT_OUTPUT)
    cli.add_output_flags(p)
    p.add_argument("--max_batch_size", type=int, default=8,
                   help="images per graph run: the photos are spread over about N/this batch keys, each "
                        "explained by one worker in graph runs of at most this many (default: %(default)s)")
    p.add_argument("--num_shards", type=int, default=0,
                   help="results-SSSSS-of-NNNNN.jsonl shards to write (default: by the number of rows)")
    p.add_argument("--metrics", action="store_true",
                   help="add each row's deletion and insertion AUC (evaluate.py's) and write "
                        "metrics_summary.csv/.json: means with 95%% confidence intervals")
    p.add_argument("--metric_maps", default=None,
                   help="--metrics: comma-separated maps among --methods and %s (default: guided_gradcam when "
                        "it is made, else the first of --methods)" % ", ".join(BASELINE_MAPS))
    p.add_argument("--metric_steps", type=int, default=16, help="--metrics: deletion / insertion steps (default: 16)")
    cli.add_method_flags(p)
    cli.add_model_flags(p)
    return p


def check_flags(args: argparse.Namespace) -> List[str]:
    """Usage errors among our flags; the maps --metrics scores (none without --metrics)."""
    cli.check_minimums(args, {"max_side": 32, "top_k_targets": 1, "max_batch_size": 1, "num_shards": 0,
                              "metric_steps": 1})
    if args.list_layers:
        raise cli.UsageError("--list_layers is inference.py's (python inference.py --list_layers ...)")
    cli.check_image_flags(args)
    methods = [m.name for m in cli.methods_from_flags(args)]
    choices = methods + list(BASELINE_MAPS)
    given = args.metric_maps if args.metric_maps is not None else (
        "guided_gradcam" if "guided_gradcam" in methods else methods[0])
    maps = [m.strip() for m in given.split(",") if m.strip()]
    unknown = [m for m in maps if m not in choices]
    if unknown or not maps:
        raise cli.UsageError("--metric_maps: choose among %s (the maps --methods makes, and the baselines)"
                             % ", ".join(choices))
    return maps if args.metrics else []


LOG_LEVEL_FLAG = "--default_sdk_harness_log_level"  # Beam's, for its worker harness


def log_level_asked(argv: List[str]) -> bool:
    """Whether the user set the workers' log level (then all of Beam's lines are shown)."""
    return any(a.split("=", 1)[0] == LOG_LEVEL_FLAG for a in argv)


def pipeline_options(beam_argv: List[str]):
    """Beam's PipelineOptions from the flags that are not ours; an unknown flag is a usage error."""
    try:
        from apache_beam.options.pipeline_options import PipelineOptions
    except ImportError:
        raise RuntimeError("Apache Beam is not installed; run: make beam-setup")
    try:  # the Dask runner's options (--dask_client_address, ...) exist once its module is loaded
        importlib.import_module("apache_beam.runners.dask.dask_runner")
    except ImportError:  # no Dask here (Beam's dask extra)
        pass
    if not log_level_asked(beam_argv):
        beam_argv = list(beam_argv) + ["%s=WARNING" % LOG_LEVEL_FLAG]  # the workers' INFO lines
    options = PipelineOptions(beam_argv)
    # what Beam's parsers do not know is kept under its own name (known options go by their dest)
    unknown = sorted(set(options.get_all_options(retain_unknown_options=True))
                     - set(options.get_all_options(retain_unknown_options=False)))
    if unknown:
        raise cli.UsageError("unknown option(s): %s (neither this program's nor Beam's)"
                             % ", ".join("--" + u for u in unknown))
    return options


def run(args: argparse.Namespace, beam_argv: List[str]) -> int:
    metric_maps = check_flags(args)
    model_kwargs = cli.model_kwargs(args)  # usage errors in the model flags, before anything is read
    for flag in MODEL_PATH_FLAGS:  # workers may run in another folder
        if model_kwargs.get(flag) and "://" not in model_kwargs[flag]:
            model_kwargs[flag] = os.path.abspath(model_kwargs[flag])
    names = cli.class_names(args)
    options = pipeline_options(beam_argv)
    runner = dask_runner(options)

    from ggcam.runs import beam as bp  # Beam loads here; TensorFlow only in the workers
    from apache_beam.io.filesystems import FileSystems
    import apache_beam as beam

    remote_specs, targets = [], [Target.best()]
    if args.labels_file:
        listed = cli.read_labels_file(args.labels_file, names)
    else:
        targets = cli.targets_from_flags(args, names)
        remote_specs = [s for s in args.image if bp.is_remote(s)]
        local_specs = [s for s in args.image if not bp.is_remote(s)]
        listed = [(p, targets) for p in cli.expand_images(local_specs)[0]] if local_specs else []
        for spec in remote_specs:
            pattern = spec + "*" if spec.endswith("/") else spec
            try:
                found = FileSystems.match([pattern], limits=[1])[0].metadata_list
            except Exception as exc:  # no file system for the scheme (Beam's extras), no access
                raise cli.UsageError("--image %s: %s" % (spec, str(exc).strip().splitlines()[0]))
            if not found:
                raise cli.UsageError("no files match %s" % spec)

    out_root = args.output_dir or DEFAULT_OUTPUT
    remote_out = bp.is_remote(out_root)
    if not remote_out:
        out_root = os.path.abspath(out_root)
        safe_files.check_writable(out_root)
        safe_files.ensure_writable_dir(out_root)
        # DirectRunner's worker processes import ggcam wherever they start (a clone's too)
        os.environ["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    settings = bp.Settings(out_root, model_kwargs, layer=args.layer, guided_relu6=args.guided_relu6,
                           fusion=args.fusion, max_side=args.max_side, save_raw=args.save_raw,
                           overwrite=args.overwrite, max_batch_size=args.max_batch_size, metric_maps=metric_maps,
                           metric_steps=args.metric_steps, methods=cli.methods_from_flags(args))
    jobs = [bp.job(path, ts) for path, ts in listed]
    lock = None if remote_out else safe_files.FolderLock(out_root).acquire()
    try:
        prior = bp.prior_shards(out_root)
        print("explaining %s%s into %s" % ("%d image(s)" % len(jobs) if jobs else "",
                                           "%s%d remote pattern(s)" % (" and " if jobs else "", len(remote_specs))
                                           if remote_specs else "", out_root), file=sys.stderr)
        if runner is not None:
            spread_on_dask(options, bp.batch_count(jobs, remote_specs, settings))
        p = beam.Pipeline(runner=runner, options=options)
        bp.build(p, jobs, remote_specs, [t.key for t in targets], settings, prior, args.num_shards)
        try:  # the DirectRunner finishes inside run(), others in wait_until_finish()
            result = p.run()
            result.wait_until_finish()
        except Exception as exc:
            raise RuntimeError(pipeline_error(exc))
    finally:
        if lock is not None:
            lock.release()
    counts = bp.read_counters(out_root, settings.run_id)
    if counts is None:
        raise RuntimeError("the pipeline finished without writing its counters (%s)" % bp.RUN_FILE)
    print("%d explanation(s), %d failed, %d already done; %d row(s) of earlier runs kept; see %s"
          % (counts["ok"], counts["failed"], counts["skipped"], counts["kept"],
             FileSystems.join(out_root, "results.csv")))
    print("the model's graph was built %d time(s) (once per worker process)" % counts["graphs"], file=sys.stderr)
    if metric_maps:
        summary = bp.read_summary(out_root)
        for r in (summary or {}).get("rows", []):
            if r["mean"] is None:
                print("%s %s: no rows" % (r["map"], r["measure"]))
            elif r["ci95_low"] is None:
                print("%s %s: mean %.4f (n=1, no interval)" % (r["map"], r["measure"], r["mean"]))
            else:
                print("%s %s: mean %.4f, 95%% CI [%.4f, %.4f] (n=%d)"
                      % (r["map"], r["measure"], r["mean"], r["ci95_low"], r["ci95_high"], r["n"]))
    return cli.EXIT_RUNTIME if counts["failed"] else cli.EXIT_OK


DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"


def dask_runner(options):
    """The runner object for --runner=DaskRunner (Beam knows it only by its full name), else None
    (Beam's choice); a usage error where Dask is missing."""
    if options.get_all_options().get("runner") not in ("DaskRunner", DASK_RUNNER):
        return None
    try:
        from apache_beam.runners.dask.dask_runner import DaskRunner
    except ImportError:
        raise cli.UsageError("--runner=DaskRunner needs Dask (Beam's dask extra): on the TF 2 runtime "
                             "`make beam-setup` installs it; Beam 2.48 on Python 3.7 cannot have it")
    return DaskRunner()


def spread_on_dask(options, num_batches: int) -> None:
    """Unless --dask_npartitions or --dask_partition_size says otherwise, one partition per batch
    key (up to 256): Dask's default of 128 items per partition would put a small run's images
    all in one task, on one worker."""
    from apache_beam.runners.dask.dask_runner import DaskOptions
    dask = options.view_as(DaskOptions)
    if not (dask.npartitions or dask.partition_size):
        dask.npartitions = min(256, max(2, num_batches))


_ERROR_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Za-z_]\w*(?:Error|Exception): (.+)$")


def pipeline_error(exc: Exception) -> str:
    """The cause of a failed pipeline in one line: the last ``...Error: message`` line of the
    (worker's) traceback Beam relays, without Beam's ``[while running ...]``."""
    text = str(exc).replace("\\n", "\n")
    causes = [m.group(1) for m in map(_ERROR_LINE.match, text.splitlines()) if m]
    message = causes[-1] if causes else (text.strip().splitlines() or [type(exc).__name__])[0]
    return re.sub(r"\s*\[while running '[^']*'\]", "", message).strip()


class _KnownArgs:
    """Parses our flags and leaves the rest (Beam's pipeline options) for ``run``."""

    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser

    def parse_args(self, argv):
        return self.parser.parse_known_args(argv)


# Lines Beam writes on every run that say nothing about this one: the worker harness's start-up
# (before --default_sdk_harness_log_level applies), the options it does not use, a GCP client
# library that is not installed. Shown when that level is asked for.
BEAM_NOISE = re.compile(r"^(?:INFO:__main__:Logging handler created\.|WARNING:__main__:No semi_persistent_directory found"
                        r"|WARNING:apache_beam\.options\.pipeline_options:Discarding unparseable args"
                        r"|WARNING:root:apitools not found)")


@contextlib.contextmanager
def stderr_filtered(drop: Callable[[str], bool]) -> Iterator[None]:
    """File descriptor 2 through a pipe while the block runs (the worker processes Beam starts
    inherit it): every line but those ``drop`` matches goes on to the real stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    out = os.dup(saved)  # the pump's own copy: it may outlive the block (a worker still closing)
    read, write = os.pipe()
    os.dup2(write, 2)
    os.close(write)

    def pump() -> None:
        with os.fdopen(read, "rb") as lines:
            for line in lines:
                if not drop(line.decode("utf-8", "replace")):
                    os.write(out, line)
        os.close(out)
    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # this process no longer writes into the pipe
        os.close(saved)
        thread.join(timeout=5)


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    # Beam logs each worker's progress at INFO; its warnings and errors still show.
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    logging.getLogger("apache_beam.io.filebasedsink").setLevel(logging.ERROR)  # "Deleting existing files"
    # worker processes' log lines, relayed (their errors still show)
    logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(logging.ERROR)
    asked = log_level_asked(sys.argv[1:] if argv is None else argv)
    with contextlib.nullcontext() if asked else stderr_filtered(lambda line: BEAM_NOISE.match(line) is not None):
        return cli.run_cli(lambda parsed: run(*parsed), _KnownArgs(build_parser()), argv)


if __name__ == "__main__":
    sys.exit(main())
