"""Folder runs: many images and targets into one output folder, with results and a gallery.

One sub-folder per image and target; results.csv, results.jsonl and index.html list every
explanation made into the folder by any run (newest wins). One run at a time per folder.
"""
import os
import signal
import sys
import time
from collections import OrderedDict
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from ggcam import methods as methods_mod
from ggcam.io import decoding, safe_files
from ggcam.runs import gallery, naming
from ggcam.runs import results as results_mod
from ggcam.explanation import is_complete
from ggcam.targets import Target

DEFAULT_OUTPUT = "gradcam_output"


class Options:
    """How a folder run goes: ``output_dir`` (default ``DEFAULT_OUTPUT``); ``overwrite``: redo
    explanations whose files are complete; ``save_raw``: write raw.npz too; ``batch_size``
    images per graph run; ``max_side``: photos are shrunk to it first; ``quiet``: no progress
    bar; ``methods``: the maps made (names or ``Method`` objects, ``ggcam.methods``), what makes
    a folder complete."""

    def __init__(self, output_dir: Optional[str] = None, overwrite: bool = False, save_raw: bool = False,
                 batch_size: int = 8, max_side: int = decoding.DEFAULT_MAX_SIDE, quiet: bool = False,
                 methods: Sequence = methods_mod.DEFAULT):
        self.output_dir = output_dir or DEFAULT_OUTPUT
        self.overwrite, self.save_raw, self.quiet = overwrite, save_raw, quiet
        self.batch_size, self.max_side, self.methods = batch_size, max_side, tuple(methods)


class Summary(NamedTuple):
    """What a folder run did: explanations made and failed by this run (not those it found
    done), its images, explanations found complete from earlier runs (skipped), rows of earlier
    runs kept, the gallery's path ('' when the run wrote nothing: no image could be read and
    the folder held no earlier results)."""
    explained: int
    failed: int
    images: int
    skipped: int
    kept: int
    index: str


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a folder run; the results written cover what finished.
    ``signal``: the signal's number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signal = signum


def make_row(path: str, target: Target, folder: str = "", result=None, error: str = "", seconds: float = 0.0,
             files: Optional[Dict] = None) -> Dict:
    """One results row (results.csv / results.jsonl) of an image and target: explained when
    ``result`` (an Explanation) is given, failed with ``error`` otherwise."""
    row = {"path": path, "real_path": os.path.realpath(path), "target": target.key,
           "status": "failed" if error else "ok", "error": error, "seconds": round(seconds, 4),
           "folder": folder}
    if result is not None:
        row.update(target_index=result.label, target_name=result.name, probability=result.probability,
                   logit=float(result.logits[result.label]),
                   top5=[{"index": i, "name": n, "probability": p} for i, n, _, p in result.top(5)],
                   files=files or {})
    else:
        row.update(target_index=target.index if target.index is not None else "", target_name="", probability="", top5=[])
    return row


def _row_key(row: Dict) -> Tuple[str, str]:
    return row.get("real_path") or os.path.realpath(row["path"]), row["target"]


def explanation_folder(stem: str, path: str, label: int, owners: Dict[str, str], real: Optional[str] = None) -> str:
    """The sub-folder of ``path`` explained for class ``label``: ``<stem>_<label>`` (stem from
    ``naming.folder_names``), or with the path's hash added when ``owners`` (folder -> real path,
    updated here) gives that name to another file, such as an earlier run's image. ``real``:
    the path's identity when it is not ``os.path.realpath(path)`` (a URL)."""
    real = real or os.path.realpath(path)
    folder = "%s_%d" % (stem, label)
    owner = owners.setdefault(folder, real)
    if owner != real:  # an earlier run's image of the same file name
        folder = "%s-%s_%d" % (stem, naming.short_hash(path), label)
        owners[folder] = real
    return folder


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def run_batch(options: Options, jobs: List[Tuple[str, List[Target]]], make_explainer: Callable) -> Summary:
    """Explain ``jobs`` (image path, its targets) into ``options.output_dir`` with the Explainer
    ``make_explainer()`` returns (made only when something is left to do). Raises
    ``Interrupted`` after writing the reports when stopped by Ctrl-C or SIGTERM."""
    out_root = options.output_dir
    safe_files.check_writable(out_root)
    # The model is read before the folder is made: a model that is refused leaves nothing behind.
    built = [make_explainer()] if _pending(options, jobs, out_root)[1] else []
    made = safe_files.missing_folders(out_root)
    try:
        safe_files.ensure_writable_dir(out_root)
        with safe_files.FolderLock(out_root):  # read again under the lock: another run may have finished some
            summary = _run_batch_locked(options, jobs, out_root, lambda: built.pop() if built else make_explainer(),
                                        _pending(options, jobs, out_root))
    finally:
        for explainer in built:  # made but never handed over (no image could be read)
            explainer.close()
    if summary.explained or summary.skipped or summary.kept:
        return summary
    # Nothing could be done (no image could be read) and nothing was there before: write nothing.
    for name in results_mod.FILES + (gallery.INDEX_FILE,):
        try:
            os.remove(os.path.join(out_root, name))
        except OSError:
            pass
    safe_files.remove_empty_folders(made)
    return summary._replace(index="")


def _pending(options: Options, jobs: List[Tuple[str, List[Target]]], out_root: str):
    """(rows of earlier runs by key, the jobs with targets still to explain, each job's keys,
    how many jobs are done)."""
    # Every row of earlier runs into this folder stays listed; this run's rows replace the
    # rows of the same image and target (newest wins).
    rows = OrderedDict((_row_key(r), r) for r in results_mod.read(out_root) if r.get("path") and r.get("target"))
    job_keys = [(p, [(os.path.realpath(p), c.key) for c in targets]) for p, targets in jobs]

    def finished(key) -> bool:
        row = rows.get(key)
        return (not options.overwrite and row is not None and row.get("status") == "ok" and bool(row.get("folder"))
                and is_complete(os.path.join(out_root, row["folder"]), row.get("files"), options.save_raw,
                                methods=options.methods))

    todo = [(p, [c for c, k in zip(targets, keys) if not finished(k)])
            for (p, targets), (_, keys) in zip(jobs, job_keys)]
    done = sum(len(targets) for _, targets in jobs) - sum(len(targets) for _, targets in todo)
    todo = [(p, targets) for p, targets in todo if targets]
    return rows, todo, job_keys, done


def _run_batch_locked(options: Options, jobs: List[Tuple[str, List[Target]]], out_root: str,
                      make_explainer: Callable, state) -> Summary:
    from tqdm import tqdm

    rows, todo, job_keys, skipped = state  # skipped: explanations found complete
    folder_owner = {r["folder"]: key[0] for key, r in rows.items() if r.get("folder")}
    stems = naming.folder_names([p for p, _ in jobs])

    def folder_for(path: str, label: int) -> str:
        return explanation_folder(stems[path], path, label, folder_owner)

    def write_reports() -> None:
        listed = list(rows.values())
        results_mod.write(out_root, listed)
        gallery.write(out_root, listed)

    previous = {signal.SIGINT: signal.getsignal(signal.SIGINT),
                signal.SIGTERM: signal.signal(signal.SIGTERM, _on_sigterm)}
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), unit="img", file=sys.stderr, disable=options.quiet,
               dynamic_ncols=True)
    explainer_obj = None
    finished_now = 0
    made_now = set()  # the keys of the rows this run wrote
    try:
        for start in range(0, len(todo), options.batch_size):
            chunk = todo[start:start + options.batch_size]
            photos, loaded, load_seconds = [], [], {}
            for path, targets in chunk:
                t0 = time.perf_counter()
                try:
                    photos.append(decoding.load_image(path, options.max_side))
                    loaded.append((path, targets))
                except decoding.ImageError as exc:
                    bar.write("error: %s" % exc, file=sys.stderr)
                    for c in targets:
                        row = make_row(path, c, error=str(exc), seconds=time.perf_counter() - t0)
                        rows[_row_key(row)] = row
                        made_now.add(_row_key(row))
                load_seconds[path] = time.perf_counter() - t0
            if loaded:
                if explainer_obj is None:
                    explainer_obj = make_explainer()
                t0 = time.perf_counter()
                per_image = explainer_obj.explain_photos(photos, [c for _, c in loaded], [p for p, _ in loaded])
                share = (time.perf_counter() - t0) / sum(len(c) for _, c in loaded)
                for (path, targets), results in zip(loaded, per_image):
                    for target, result in zip(targets, results):
                        t1 = time.perf_counter()
                        folder = folder_for(path, result.label)
                        try:
                            files = result.save_files(os.path.join(out_root, folder), save_raw=options.save_raw)
                            seconds = load_seconds[path] / len(targets) + share + time.perf_counter() - t1
                            row = make_row(path, target, folder, result, seconds=seconds, files=files)
                        except (OSError, ValueError) as exc:
                            message = "%s: %s" % (path, exc)
                            bar.write("error: %s" % message, file=sys.stderr)
                            row = make_row(path, target, folder, error=message)
                        rows[_row_key(row)] = row
                        made_now.add(_row_key(row))
                        finished_now += 1
            write_reports()
            bar.update(len(chunk))
        if not todo:
            write_reports()  # a run with nothing left to do still lists earlier runs' rows
    except KeyboardInterrupt as exc:
        bar.close()
        # A second Ctrl-C must not cut the reports short; they take milliseconds.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        write_reports()
        raise Interrupted("interrupted: results in %s cover %d explanation(s) finished by this run"
                          % (out_root, finished_now), signal.SIGTERM if isinstance(exc, _Terminated) else signal.SIGINT)
    except Exception:
        bar.close()
        write_reports()  # what finished stays recorded; the caller reports the error
        raise
    finally:
        for sig, handler in previous.items():
            if handler is not None:  # None: set outside Python, cannot be put back
                signal.signal(sig, handler)
        if explainer_obj is not None:
            explainer_obj.close()
    bar.close()
    mine = {k for _, keys in job_keys for k in keys if k in rows}
    failed = sum(1 for k in made_now if rows[k]["status"] != "ok")
    return Summary(explained=len(made_now) - failed, failed=failed, images=len(jobs), skipped=skipped,
                   kept=len(rows) - len(mine), index=os.path.join(out_root, gallery.INDEX_FILE))
