"""Explain MobileNet V1 decisions with Grad-CAM, guided backprop and Guided Grad-CAM.

    python inference.py --image=cat.jpg --label=282
    python inference.py --image=photos/ --top_k_targets=3 --output_dir=out

One image: the pictures go to --output_dir (default ./<image name>_<class>). A folder, a
glob, an @list.txt or a --labels_file: one sub-folder per image and target, results.csv,
results.jsonl and index.html in --output_dir (default ./gradcam_output).
"""
import argparse
import csv
import glob
import hashlib
import os
import signal
import sys
import time
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import image_io
import labels as labels_mod
import results as results_mod
import targets

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2
DEFAULT_BATCH_OUTPUT = "gradcam_output"
# Measured with benchmarks/tf_build.py: 8 gave the most images/s on a 2-core machine.
DEFAULT_BATCH_SIZE = 8
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                    ".ppm", ".pgm", ".pbm", ".pnm")
GLOB_CHARS = "*?["


class UsageError(Exception):
    """Bad command-line input; exits with status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        raise UsageError("%s (see --help)" % message)


def build_parser() -> argparse.ArgumentParser:
    import gradcam
    import guided_relu
    p = _Parser(description="Guided Grad-CAM for TF-slim MobileNet V1 (TensorFlow 1.15).")
    p.add_argument("--image", action="append", default=None,
                   help="photo to explain; or a folder, a quoted glob ('photos/*.jpg') or @list.txt "
                        "(one path per line, relative to the list's folder); repeatable")
    p.add_argument("--label", default=None,
                   help="class to explain for every image: an index 0..1000 in the 1001-class "
                        "numbering (0 = background, 282 = tabby cat) or a name ('tabby cat'); "
                        "default: the top-1 class")
    p.add_argument("--top_k_targets", type=int, default=None,
                   help="explain each of the K best classes of every image")
    p.add_argument("--labels_file", default=None,
                   help="CSV of 'path,label' rows (label: index or name; a path may repeat), "
                        "paths relative to the CSV's folder; replaces --image")
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint prefix (default: checkpoints/mobilenet_v1_1.0_224.ckpt)")
    p.add_argument("--output_dir", default=None,
                   help="output folder (default: ./<image name>_<class> for one image, "
                        "./%s otherwise)" % DEFAULT_BATCH_OUTPUT)
    p.add_argument("--top_k", type=int, default=5,
                   help="one image: print the K best classes: index, name, logit, probability (0: none)")
    p.add_argument("--guided_relu6", choices=guided_relu.RULES, default="exact",
                   help="exact: true ReLU6 derivative (no gradient through saturated units); "
                        "seed: the seed's rule (gradient also passes where output = 6); "
                        "plain: no guidance, the vanilla gradient")
    p.add_argument("--fusion", choices=gradcam.FUSIONS, default="paper",
                   help="paper: raw guided gradient x CAM, then scaled for display; "
                        "seed: min-max normalised guided gradient x CAM")
    p.add_argument("--batch_size", type=int, default=DEFAULT_BATCH_SIZE,
                   help="images per graph run (default: %(default)s)")
    p.add_argument("--max_side", type=int, default=image_io.DEFAULT_MAX_SIDE,
                   help="shrink photos longer than this many pixels first (default: %(default)s)")
    p.add_argument("--save_raw", action="store_true", help="also write raw.npz (see README)")
    p.add_argument("--overwrite", action="store_true",
                   help="redo images whose outputs are already complete (default: skip them)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--show", action="store_true",
                   help="open the panel (one image) or index.html (several) in a viewer")
    return p


# ----------------------------------------------------------------------------- inputs

def _read_list(path: str) -> List[str]:
    try:
        # utf-8-sig: a byte-order mark (as some editors write) must not become part of a path
        with open(path, encoding="utf-8-sig") as f:
            lines = [l.strip() for l in f]
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError("cannot read %s: %s" % (path, getattr(exc, "strerror", None) or exc))
    base = os.path.dirname(path)
    return [os.path.join(base, l) for l in lines if l and not l.startswith("#")]


def _dangling(path: str) -> bool:
    """A symlink that points to itself, into a loop or nowhere."""
    return os.path.islink(path) and not os.path.exists(path)


def _note(message: str) -> None:
    print("note: %s" % message, file=sys.stderr)


def unique_paths(paths: Sequence[str]) -> Tuple[List[str], int]:
    """``paths`` without repeats of the same file (compared by real path, so a file reached
    through a symlink or a ``**`` glob over a symlink loop counts once), first-seen order;
    and how many were dropped."""
    seen, kept = set(), []
    for p in paths:
        real = os.path.realpath(p)
        if real not in seen:
            seen.add(real)
            kept.append(p)
    return kept, len(paths) - len(kept)


def expand_images(specs: Sequence[str]) -> Tuple[List[str], bool]:
    """Paths named by --image values, each file once, and whether they name exactly one plain file."""
    paths, dangling = [], []
    for spec in specs:
        if spec.startswith("@"):
            paths.extend(_read_list(spec[1:]))
        elif os.path.isdir(spec):
            skipped = 0
            for name in sorted(os.listdir(spec)):
                full = os.path.join(spec, name)
                if _dangling(full):
                    dangling.append(full)
                elif not os.path.isfile(full):
                    continue
                elif name.lower().endswith(IMAGE_EXTENSIONS):
                    paths.append(full)
                else:
                    skipped += 1
            if skipped:
                _note("skipped %d file(s) in %s without an image extension" % (skipped, spec))
        elif any(c in spec for c in GLOB_CHARS) and not os.path.lexists(spec):
            matches = sorted(glob.glob(spec, recursive=True))
            dangling.extend(p for p in matches if _dangling(p))
            found = [p for p in matches if os.path.isfile(p)]
            if not found:
                raise UsageError("no files match %s" % spec)
            paths.extend(found)
        else:
            paths.append(spec)
    if dangling:
        _note("skipped %d symlink(s) pointing to themselves, into a loop or nowhere: %s"
              % (len(dangling), ", ".join(dangling[:3]) + (" ..." if len(dangling) > 3 else "")))
    paths, repeated = unique_paths(paths)
    if repeated:
        _note("%d path(s) named a file already listed; each file is explained once" % repeated)
    if not paths:
        raise UsageError("no images found in %s" % ", ".join(specs))
    plain = all(not s.startswith("@") and not os.path.isdir(s)
                and not (any(c in s for c in GLOB_CHARS) and not os.path.lexists(s)) for s in specs)
    return paths, plain and len(paths) == 1


def read_labels_file(path: str, names: List[str]) -> List[Tuple[str, List[int]]]:
    """(image path, [class indices]) from a 'path,label' CSV, in first-seen order; a file
    named twice (even by different paths) is one image with the classes of both rows."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError("cannot read %s: %s" % (path, getattr(exc, "strerror", None) or exc))
    base, jobs, order = os.path.dirname(path), {}, []
    for n, row in enumerate(rows, start=1):
        if not row or not "".join(row).strip() or row[0].startswith("#"):
            continue
        if n == 1 and [c.strip().lower() for c in row[:2]] == ["path", "label"]:
            continue
        if len(row) != 2:
            raise UsageError("%s line %d: expected 'path,label', got %d fields" % (path, n, len(row)))
        try:
            label = labels_mod.resolve(row[1], names)
        except labels_mod.LabelError as exc:
            raise UsageError("%s line %d: %s" % (path, n, exc))
        image = os.path.join(base, row[0].strip())
        real = os.path.realpath(image)
        if real not in jobs:
            jobs[real] = (image, [])
            order.append(real)
        if label not in jobs[real][1]:
            jobs[real][1].append(label)
    if not order:
        raise UsageError("%s lists no images" % path)
    return [jobs[r] for r in order]


def folder_names(paths: Sequence[str]) -> Dict[str, str]:
    """A folder-name stem per path: the file name, made unique with a hash where needed."""
    stems = {p: os.path.splitext(os.path.basename(p))[0] or "image" for p in paths}
    counts = {}
    for p in set(paths):
        counts[stems[p]] = counts.get(stems[p], 0) + 1
    return {p: s if counts[s] == 1 else "%s-%s" % (s, _short_hash(p)) for p, s in stems.items()}


def _short_hash(path: str) -> str:
    return hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:8]


# ----------------------------------------------------------------------------- one image

def print_top(top: Sequence[Tuple[int, str, float, float]]) -> None:
    """The best classes as a table: index, name (shortened to fit), logit, probability."""
    if not top:
        return
    width = 40
    print("%5s  %-*s %9s %8s" % ("class", width, "name", "logit", "p"))
    for index, name, logit, prob in top:
        if len(name) > width:
            name = name[:width - 3] + "..."
        print("%5d  %-*s %9.3f %8.4f" % (index, width, name, logit, prob))


def run_single(args: argparse.Namespace, path: str, code: int) -> int:
    photo = image_io.load_image(path, args.max_side)
    image_io.check_writable(args.output_dir or ".")
    import explainer  # TensorFlow loads only once the input is known to be usable
    with explainer.Explainer(fusion=args.fusion, **_graph_kwargs(args)) as ex:
        (result,), = ex.explain_photos([photo], [[code]], [path])
    print_top(result.top(args.top_k))
    stem = os.path.splitext(os.path.basename(path))[0]
    out_dir = args.output_dir or "%s_%d" % (stem, result.label)
    image_io.ensure_writable_dir(out_dir)
    with image_io.FolderLock(out_dir):
        result.save(out_dir, save_raw=args.save_raw)
    print("explained class %d (%s), logit %.3f; pictures in %s"
          % (result.label, result.name, result.logits[result.label], out_dir))
    if args.show:
        show(os.path.join(out_dir, "panel.png"))
    return EXIT_OK


def _graph_kwargs(args: argparse.Namespace) -> Dict:
    kwargs = {"guided_relu6": args.guided_relu6, "max_side": args.max_side}
    if args.checkpoint:
        kwargs["checkpoint"] = args.checkpoint
    return kwargs


# ----------------------------------------------------------------------------- many images

def _row(path: str, code: int, folder: str = "", result=None, error: str = "", seconds: float = 0.0,
         files: Optional[Dict] = None) -> Dict:
    row = {"path": path, "real_path": os.path.realpath(path), "target": targets.key(code),
           "status": "failed" if error else "ok", "error": error, "seconds": round(seconds, 4),
           "folder": folder}
    if result is not None:
        row.update(target_index=result.label, target_name=result.name, probability=result.probability,
                   top5=[{"index": i, "name": n, "probability": p} for i, n, _, p in result.top(5)],
                   files=files or {})
    else:
        row.update(target_index=code if code >= 0 else "", target_name="", probability="", top5=[])
    return row


def _row_key(row: Dict) -> Tuple[str, str]:
    return row.get("real_path") or os.path.realpath(row["path"]), row["target"]


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def run_batch(args: argparse.Namespace, jobs: List[Tuple[str, List[int]]]) -> int:
    out_root = args.output_dir or DEFAULT_BATCH_OUTPUT
    image_io.check_writable(out_root)
    image_io.ensure_writable_dir(out_root)
    with image_io.FolderLock(out_root):
        return _run_batch_locked(args, jobs, out_root)


def _run_batch_locked(args: argparse.Namespace, jobs: List[Tuple[str, List[int]]], out_root: str) -> int:
    import gallery
    from explanation import is_complete
    from tqdm import tqdm

    # Every row of earlier runs into this folder stays listed; this run's rows replace the
    # rows of the same image and target (newest wins).
    rows = OrderedDict((_row_key(r), r) for r in results_mod.read(out_root) if r.get("path") and r.get("target"))
    folder_owner = {r["folder"]: key[0] for key, r in rows.items() if r.get("folder")}
    job_keys = [(p, [(os.path.realpath(p), targets.key(c)) for c in codes]) for p, codes in jobs]

    def finished(key) -> bool:
        row = rows.get(key)
        return (not args.overwrite and row is not None and row.get("status") == "ok" and bool(row.get("folder"))
                and is_complete(os.path.join(out_root, row["folder"]), row.get("files"), args.save_raw))

    todo = [(p, [c for c, k in zip(codes, keys) if not finished(k)])
            for (p, codes), (_, keys) in zip(jobs, job_keys)]
    todo = [(p, codes) for p, codes in todo if codes]
    skipped = len(jobs) - len(todo)
    stems = folder_names([p for p, _ in jobs])

    def folder_for(path: str, label: int) -> str:
        folder = "%s_%d" % (stems[path], label)
        owner = folder_owner.setdefault(folder, os.path.realpath(path))
        if owner != os.path.realpath(path):  # an earlier run's image of the same file name
            folder = "%s-%s_%d" % (stems[path], _short_hash(path), label)
            folder_owner[folder] = os.path.realpath(path)
        return folder

    def write_reports() -> None:
        listed = list(rows.values())
        results_mod.write(out_root, listed)
        gallery.write(out_root, listed)

    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    bar = tqdm(total=len(jobs), initial=skipped, unit="img", file=sys.stderr, disable=args.quiet,
               dynamic_ncols=True)
    explainer_obj = None
    finished_now = 0
    try:
        for start in range(0, len(todo), args.batch_size):
            chunk = todo[start:start + args.batch_size]
            photos, loaded, load_seconds = [], [], {}
            for path, codes in chunk:
                t0 = time.perf_counter()
                try:
                    photos.append(image_io.load_image(path, args.max_side))
                    loaded.append((path, codes))
                except image_io.ImageError as exc:
                    bar.write("error: %s" % exc, file=sys.stderr)
                    for c in codes:
                        row = _row(path, c, error=str(exc), seconds=time.perf_counter() - t0)
                        rows[_row_key(row)] = row
                load_seconds[path] = time.perf_counter() - t0
            if loaded:
                if explainer_obj is None:
                    import explainer
                    explainer_obj = explainer.Explainer(fusion=args.fusion, **_graph_kwargs(args))
                t0 = time.perf_counter()
                per_image = explainer_obj.explain_photos(photos, [c for _, c in loaded], [p for p, _ in loaded])
                share = (time.perf_counter() - t0) / sum(len(c) for _, c in loaded)
                for (path, codes), results in zip(loaded, per_image):
                    for code, result in zip(codes, results):
                        t1 = time.perf_counter()
                        folder = folder_for(path, result.label)
                        try:
                            files = result.save_files(os.path.join(out_root, folder), save_raw=args.save_raw)
                            seconds = load_seconds[path] / len(codes) + share + time.perf_counter() - t1
                            row = _row(path, code, folder, result, seconds=seconds, files=files)
                        except (OSError, ValueError) as exc:
                            message = "%s: %s" % (path, exc)
                            bar.write("error: %s" % message, file=sys.stderr)
                            row = _row(path, code, folder, error=message)
                        rows[_row_key(row)] = row
                        finished_now += 1
            write_reports()
            bar.update(len(chunk))
    except KeyboardInterrupt as exc:
        bar.close()
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        write_reports()
        print("interrupted: results in %s cover %d explanation(s) finished by this run"
              % (out_root, finished_now), file=sys.stderr)
        return 143 if isinstance(exc, _Terminated) else 130
    except Exception:
        bar.close()
        write_reports()  # what finished stays recorded; the error is reported by main()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        if explainer_obj is not None:
            explainer_obj.close()
    bar.close()
    write_reports()
    mine = [rows[k] for _, keys in job_keys for k in keys if k in rows]
    failed = sum(1 for r in mine if r["status"] != "ok")
    others = len(rows) - len(mine)
    print("%d explanation(s) of %d image(s), %d failed, %d image(s) already done%s; see %s"
          % (len(mine) - failed, len(jobs), failed, skipped,
             "; %d row(s) of earlier runs kept" % others if others else "",
             os.path.join(out_root, gallery.INDEX_FILE)))
    if args.show:
        show(os.path.join(out_root, gallery.INDEX_FILE))
    return EXIT_RUNTIME if failed else EXIT_OK


# ----------------------------------------------------------------------------- common

def show(path: str) -> None:
    """Open a picture or page in the system's viewer, or say why it cannot be shown."""
    headless = sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    opened = False
    if not headless:
        if path.endswith(".html"):
            import webbrowser
            opened = webbrowser.open("file://" + os.path.abspath(path))
        else:
            from PIL import Image, ImageShow
            opened = bool(ImageShow.show(Image.open(path), title=os.path.basename(path)))
    if not opened:
        print("warning: --show: no display or viewer available; see %s" % path, file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    for flag in ("top_k", "batch_size", "max_side", "top_k_targets"):
        value = getattr(args, flag)
        minimum = {"top_k": 0, "max_side": 32}.get(flag, 1)
        if value is not None and value < minimum:
            raise UsageError("--%s must be at least %d" % (flag, minimum))
    if args.top_k_targets is not None and args.top_k_targets > labels_mod.NUM_CLASSES:
        raise UsageError("--top_k_targets must be at most %d" % labels_mod.NUM_CLASSES)
    if args.labels_file and (args.image or args.label is not None or args.top_k_targets):
        raise UsageError("--labels_file gives the images and their labels; drop --image, --label and --top_k_targets")
    if args.label is not None and args.top_k_targets:
        raise UsageError("use either --label or --top_k_targets")
    if not args.labels_file and not args.image:
        raise UsageError("the following arguments are required: --image (or --labels_file)")
    names = labels_mod.load_labels()
    codes = [-1]
    if args.top_k_targets:
        codes = [-r for r in range(1, args.top_k_targets + 1)]
    elif args.label is not None:
        try:
            codes = [labels_mod.resolve(args.label, names)]
        except labels_mod.LabelError as exc:
            raise UsageError("--label: %s" % exc)
    if args.labels_file:
        return run_batch(args, read_labels_file(args.labels_file, names))
    paths, single = expand_images(args.image)
    if single and len(codes) == 1:
        return run_single(args, paths[0], codes[0])
    return run_batch(args, [(p, codes) for p in paths])


def run_cli(run_fn: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser,
            argv: Optional[List[str]] = None) -> int:
    """Parse ``argv`` and call ``run_fn``; every failure becomes one line on stderr and an
    exit status: 2 for usage errors, 130 when interrupted, 1 otherwise."""
    try:
        return run_fn(parser.parse_args(argv))
    except UsageError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # every other failure is reported in one line, no traceback
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print("error: %s" % message, file=sys.stderr)
        return EXIT_RUNTIME


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    return run_cli(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
