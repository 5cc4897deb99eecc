"""Folder runs into one output folder: captions, locking, merging, completeness, repeated inputs."""
import csv
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from ggcam.runs import gallery
from ggcam.io import decoding, safe_files
import inference
from ggcam import cli
from ggcam.runs import results as results_mod
from ggcam import targets
from conftest import ROOT
from ggcam.explanation import OUTPUT_FILES, file_record, is_complete

pytestmark = pytest.mark.unit

CHELSEA = os.path.join(ROOT, "images", "chelsea.png")
COFFEE = os.path.join(ROOT, "images", "coffee.png")


def run(capsys, *args):
    code = inference.main(list(args) + ["--quiet"])
    out, err = capsys.readouterr()
    return code, out, err


def jsonl(folder):
    with open(os.path.join(str(folder), results_mod.JSONL_FILE)) as f:
        return [json.loads(line) for line in f]


# ----------------------------------------------------------------------------- captions

@pytest.mark.parametrize("target, expected", [
    (targets.Target.best(), "Predicted: tabby"), (targets.Target.best(2), "Rank 2: tabby"),
    (targets.Target.best(5), "Rank 5: tabby"), (targets.Target.of(282), "Target: tabby"),
    ("top:1", "Predicted: tabby"), ("top:3", "Rank 3: tabby"), ("label:282", "Target: tabby"),
])
def test_caption_says_predicted_only_for_the_top_class(target, expected):
    assert targets.caption(target, "tabby, tabby cat") == expected


def test_gallery_captions_ranked_and_chosen_targets(tmp_path):
    rows = [{"path": "a.png", "target": t, "status": "ok", "folder": "a_%d" % i, "target_index": i,
             "target_name": "class %d, synonym" % i, "probability": 0.5}
            for t, i in (("top:1", 1), ("top:2", 2), ("label:7", 7))]
    page = open(gallery.write(str(tmp_path), rows), encoding="utf-8").read()
    assert "Predicted: class 1 (1)" in page
    assert "Rank 2: class 2 (2)" in page and "Predicted: class 2" not in page
    assert "Target: class 7 (7)" in page


# ----------------------------------------------------------------------------- inputs

def test_labels_file_and_list_with_a_byte_order_mark(tmp_path):
    shutil.copy(CHELSEA, str(tmp_path / "cat.png"))
    (tmp_path / "labels.csv").write_bytes("\ufeffpath,label\ncat.png,282\n".encode("utf-8"))
    names = ["class %d" % i for i in range(1001)]
    assert cli.read_labels_file(str(tmp_path / "labels.csv"), names) == [(str(tmp_path / "cat.png"), [targets.Target.of(282)])]
    (tmp_path / "list.txt").write_bytes("\ufeffcat.png\n".encode("utf-8"))
    paths, _ = cli.expand_images(["@%s" % (tmp_path / "list.txt")])
    assert paths == [str(tmp_path / "cat.png")] and os.path.isfile(paths[0])


def test_the_same_file_named_twice_is_explained_once(tmp_path, capsys):
    shutil.copy(CHELSEA, str(tmp_path / "cat.png"))
    os.symlink("cat.png", str(tmp_path / "link.png"))
    a = str(tmp_path / "cat.png")
    paths, single = cli.expand_images([a, a, str(tmp_path / "." / "cat.png"), str(tmp_path / "link.png")])
    assert paths == [a] and single
    assert "3 path(s) named a file already listed" in capsys.readouterr().err
    # a folder and a ** glob over a symlink loop
    (tmp_path / "sub").mkdir()
    os.symlink("..", str(tmp_path / "sub" / "loop"))
    paths, single = cli.expand_images([str(tmp_path / "**" / "*.png")])
    assert sorted(map(os.path.realpath, paths)) == [os.path.realpath(a)] and not single
    # CSV rows naming one file by two paths are one image with both classes
    (tmp_path / "labels.csv").write_text("cat.png,282\nlink.png,286\n")
    jobs = cli.read_labels_file(str(tmp_path / "labels.csv"), ["c%d" % i for i in range(1001)])
    assert jobs == [(a, [targets.Target.of(282), targets.Target.of(286)])]


def test_self_referencing_symlinks_are_reported(tmp_path, capsys):
    shutil.copy(CHELSEA, str(tmp_path / "cat.png"))
    os.symlink("self.png", str(tmp_path / "self.png"))
    os.symlink("nowhere.png", str(tmp_path / "dangling.png"))
    paths, _ = cli.expand_images([str(tmp_path)])
    assert paths == [str(tmp_path / "cat.png")]
    err = capsys.readouterr().err
    assert "skipped 2 symlink(s) pointing to themselves, into a loop or nowhere" in err
    with pytest.raises(decoding.ImageError, match="image is a symlink pointing to itself"):
        decoding.load_image(str(tmp_path / "self.png"))


def test_huge_png_is_reduced_while_decoding_with_a_one_line_notice(tmp_path, capsys):
    path = str(tmp_path / "wide.png")
    Image.new("RGB", (10000, 9000), (200, 100, 50)).save(path, compress_level=1)
    rgb = decoding.load_image(path, max_side=1000)
    assert rgb.shape == (900, 1000, 3) and tuple(rgb[450, 500]) == (200, 100, 50)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("note: ") and "10000x9000" in err
    assert "DecompressionBomb" not in err


# ----------------------------------------------------------------------------- pictures

def test_panorama_panel_width_is_bounded():
    import gradcam as gc
    wide = np.zeros((40, 10000, 3), np.uint8)
    panel = gc.panel([wide] * 5, ["a"] * 5)
    assert panel.shape[1] <= gc.MAX_PANEL_WIDTH
    normal = gc.panel([np.zeros((224, 224, 3), np.uint8)] * 5, ["a"] * 5)
    assert normal.shape == (224 + 12 + 28, 5 * 224 + 6 * 6, 3)  # unchanged below the bound


# ----------------------------------------------------------------------------- completeness

def test_is_complete_checks_sizes_and_checksums(tmp_path):
    record = {}
    for name in OUTPUT_FILES:
        data = (name * 50).encode()
        (tmp_path / name).write_bytes(data)
        record[name] = file_record(data)
    assert is_complete(str(tmp_path), record)
    assert not is_complete(str(tmp_path), None)                    # no record: redo
    assert not is_complete(str(tmp_path), record, save_raw=True)   # raw.npz asked for, not there
    (tmp_path / "panel.png").write_bytes(b"")                     # zero bytes
    assert not is_complete(str(tmp_path), record)
    data = ("panel.png" * 50).encode()
    (tmp_path / "panel.png").write_bytes(data[:-1] + b"x")        # same size, other bytes
    assert not is_complete(str(tmp_path), record)


# ----------------------------------------------------------------------------- one folder, several runs

@pytest.mark.graph
def test_a_second_run_on_a_locked_folder_exits_without_writing(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    with safe_files.FolderLock(str(out)):
        code, _, err = run(capsys, "--image=%s" % CHELSEA, "--image=%s" % COFFEE, "--output_dir=%s" % out)
        assert code == 1
        assert err.strip().count("\n") == 0 and "in use by another run (pid %d" % os.getpid() in err
        assert os.listdir(str(out)) == [safe_files.LOCK_FILE]
    assert os.listdir(str(out)) == []                              # the lock file goes with the lock


def test_lock_of_a_dead_process_does_not_block(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / safe_files.LOCK_FILE).write_text("999999")                # left by a killed run
    with safe_files.FolderLock(str(out)) as lock:
        assert open(lock.path).read() == str(os.getpid())


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Run 1 explains chelsea; run 2, into the same folder, explains coffee and chelsea's 2nd class."""
    out = tmp_path_factory.mktemp("merge") / "out"
    first = inference.main(["--image=%s" % CHELSEA, "--image=%s" % COFFEE, "--output_dir=%s" % out, "--quiet",
                            "--save_raw"])
    rows_first = jsonl(out)
    second = inference.main(["--image=%s" % COFFEE, "--top_k_targets=2", "--output_dir=%s" % out, "--quiet",
                             "--save_raw"])
    return out, first, second, rows_first


@pytest.mark.graph
def test_later_runs_merge_with_earlier_results(two_runs):
    out, first, second, rows_first = two_runs
    assert first == 0 and second == 0
    rows = jsonl(out)
    keys = [(os.path.basename(r["path"]), r["target"]) for r in rows]
    assert keys == [("chelsea.png", "top:1"), ("coffee.png", "top:1"), ("coffee.png", "top:2")]
    with open(str(out / results_mod.CSV_FILE), newline="") as f:
        assert [(os.path.basename(r["path"]), r["target"]) for r in csv.DictReader(f)] == keys
    page = (out / gallery.INDEX_FILE).read_text()
    for row in rows:
        assert row["folder"] + "/overlay.png" in page
    # coffee top:1 was complete, so the second run kept its row (newest wins, same content)
    assert rows[1] == rows_first[1]


@pytest.mark.graph
def test_rerun_redoes_a_zero_byte_or_truncated_picture(two_runs, capsys):
    out = two_runs[0]
    rows = {(os.path.basename(r["path"]), r["target"]): r for r in jsonl(out)}
    chelsea = out / rows[("chelsea.png", "top:1")]["folder"]
    coffee = out / rows[("coffee.png", "top:2")]["folder"]
    (chelsea / "panel.png").write_bytes(b"")
    data = (coffee / "gradcam.png").read_bytes()
    (coffee / "gradcam.png").write_bytes(data[:len(data) // 2])
    untouched = os.stat(str(out / rows[("coffee.png", "top:1")]["folder"] / "panel.png")).st_mtime_ns
    code, stdout, _ = run(capsys, "--image=%s" % CHELSEA, "--image=%s" % COFFEE, "--top_k_targets=2",
                          "--output_dir=%s" % out, "--save_raw")
    assert code == 0
    assert Image.open(str(chelsea / "panel.png")).size[0] > 0
    Image.open(str(coffee / "gradcam.png")).load()                  # decodes in full again
    assert os.stat(str(out / rows[("coffee.png", "top:1")]["folder"] / "panel.png")).st_mtime_ns == untouched
    assert len(jsonl(out)) == 4                                      # chelsea top:2 added, nothing doubled


@pytest.mark.graph
def test_a_rerun_counts_what_it_made_and_what_it_found_done_apart(tmp_path, capsys):
    """After a run that finished part of the work (an interrupted one, or a picture lost since),
    the next run's line counts the explanations it makes, not those it finds complete."""
    out = tmp_path / "out"
    args = ("--image=%s" % COFFEE, "--image=%s" % CHELSEA, "--top_k_targets=2", "--output_dir=%s" % out)
    code, stdout, _ = run(capsys, *args)
    assert code == 0 and "4 explanation(s) made and 0 failed by this run, 0 already done, of 2 image(s)" in stdout
    row = [r for r in jsonl(out) if r["path"].endswith("chelsea.png") and r["target"] == "top:2"][0]
    os.remove(str(out / row["folder"] / "panel.png"))
    code, stdout, _ = run(capsys, *args)
    assert code == 0 and "1 explanation(s) made and 0 failed by this run, 3 already done, of 2 image(s)" in stdout


@pytest.mark.graph
def test_rerun_asking_for_raw_arrays_redoes_folders_without_them(tmp_path, capsys):
    out = tmp_path / "out"
    assert run(capsys, "--image=%s" % COFFEE, "--image=%s" % CHELSEA, "--output_dir=%s" % out)[0] == 0
    code, stdout, _ = run(capsys, "--image=%s" % COFFEE, "--image=%s" % CHELSEA, "--output_dir=%s" % out,
                          "--save_raw")
    assert code == 0 and "2 explanation(s) made and 0 failed by this run, 0 already done, of 2 image(s)" in stdout
    for row in jsonl(out):
        assert (out / row["folder"] / "raw.npz").is_file()


# ----------------------------------------------------------------------------- smaller defects

@pytest.mark.graph
def test_explain_after_close_is_a_clear_error():
    from types import SimpleNamespace
    from ggcam import explainer, outputs
    from ggcam.engine.graph import GuidedGradCamGraph
    graph = object.__new__(GuidedGradCamGraph)  # no TensorFlow graph needed: it is closed
    graph.closed, graph.built = True, SimpleNamespace(outputs=outputs.STANDARD)
    graph.model = SimpleNamespace(class_names=["c"] * 1001, describe=dict)
    ex = explainer.Explainer.from_graph(graph)
    with pytest.raises(RuntimeError, match="this explainer is closed"):
        ex.explain(np.zeros((8, 8, 3), np.uint8))


def test_top_classes_print_as_a_table_with_long_names_cut(capsys):
    long_name = "a very long class name, with synonyms, that goes on and on and on"
    cli.print_top([(282, long_name, 12.5, 0.91), (1000, "toilet tissue", -3.25, 0.0001)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["class", "name", "logit", "p"]
    assert lines[1].startswith("  282  a very long class name") and "..." in lines[1]
    # the numbers stay in their columns whatever the names
    assert [l[-18:].split() for l in lines[1:]] == [["12.500", "0.9100"], ["-3.250", "0.0001"]]
    assert len(lines[1]) == len(lines[2]) == len(lines[0])


@pytest.mark.graph
def test_evaluate_reports_a_non_image_and_goes_on(tmp_path, capsys):
    import evaluate
    shutil.copy(CHELSEA, str(tmp_path / "cat.png"))
    (tmp_path / "notes.jpg").write_text("not a picture")
    out = tmp_path / "eval"
    code = evaluate.main(["--image=%s" % tmp_path, "--output_dir=%s" % out, "--checks=deletion", "--steps=2"])
    captured = capsys.readouterr()
    assert code == 1
    assert "error: not an image file (or an unsupported format): %s" % (tmp_path / "notes.jpg") in captured.err
    assert "1 of 2 image(s) could not be read" in captured.err
    with open(str(out / "deletion_insertion.csv")) as f:
        assert {row["image"] for row in csv.DictReader(f)} == {"0"}
    assert "cat.png" in (out / "report.md").read_text()


@pytest.mark.graph
def test_a_run_that_can_read_no_image_writes_nothing(shared_graphs, tmp_path):
    """No image could be read and the folder held nothing: no folder, results or gallery."""
    import inference
    from conftest import run_main
    broken = tmp_path / "broken.jpg"
    broken.write_text("not a JPEG\n")
    out = tmp_path / "new" / "nested"
    result = run_main(inference.main, "--image=%s" % broken, "--top_k_targets=2", "--output_dir=%s" % out, "--quiet")
    assert result.returncode == 1, result.stderr
    assert "nothing written" in result.stdout and "broken.jpg" in result.stderr
    assert not (tmp_path / "new").exists()


@pytest.mark.graph
def test_an_output_folder_that_cannot_be_made_leaves_no_folders_behind(shared_graphs, tmp_path):
    import inference
    from conftest import ROOT, run_main
    out = tmp_path / "a" / "b" / ("x" * 300)  # too long a name for the file system
    result = run_main(inference.main, "--image=%s" % os.path.join(ROOT, "images", "chelsea.png"),
                      "--image=%s" % os.path.join(ROOT, "images", "coffee.png"), "--output_dir=%s" % out, "--quiet")
    assert result.returncode == 1 and "output folder not writable" in result.stderr, result.stderr
    assert not (tmp_path / "a").exists()
