"""Folder runs: inputs, targets, results files, gallery, re-runs, signals, mixed bad files.

Runs call ``inference.main`` in this process with the session's shared graphs (see
conftest.py), except the signal tests, which need a process to interrupt. The input,
folder-name, target and results/gallery helpers are tested directly first.
"""
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from urllib.parse import unquote

import numpy as np
from ggcam.models.imagenet import load_labels
import pytest
from PIL import Image

from ggcam.runs import gallery, naming
import inference
from ggcam import cli as cli_mod
from ggcam import labels as labels_mod
from ggcam import targets
from conftest import ROOT, keep_artifact, run_main
from ggcam.explanation import OUTPUT_FILES
from ggcam.runs import results as results_mod

pytestmark = pytest.mark.graph

CHELSEA = os.path.join(ROOT, "images", "chelsea.png")
COFFEE = os.path.join(ROOT, "images", "coffee.png")


def cli(*args):
    """inference.py in this process: .returncode, .stdout, .stderr (needs shared_graphs)."""
    return run_main(inference.main, *args)


def read_rows(out):
    with open(str(out / results_mod.CSV_FILE), newline="") as f:
        csv_rows = list(csv.DictReader(f))
    with open(str(out / results_mod.JSONL_FILE)) as f:
        json_rows = [json.loads(line) for line in f]
    assert [r["path"] for r in csv_rows] == [r["path"] for r in json_rows]
    return csv_rows, json_rows


def no_temp_files(folder):
    leftovers = [os.path.join(d, f) for d, _, files in os.walk(str(folder)) for f in files
                 if f.startswith((".tmp-", ".probe-"))]
    assert leftovers == []


# ----------------------------------------------------------------------------- helpers, no TensorFlow

@pytest.fixture
def photo_tree(tmp_path):
    """a.png, b.jpg, notes.txt and sub/c.PNG under tmp_path (empty files: nothing is decoded)."""
    for name in ("a.png", "b.jpg", "notes.txt", os.path.join("sub", "c.PNG")):
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"")
    return tmp_path


@pytest.mark.unit
def test_expand_images_folder_keeps_image_extensions_sorted_and_counts_the_rest(photo_tree, capsys):
    paths, single = cli_mod.expand_images([str(photo_tree)])
    assert paths == [str(photo_tree / "a.png"), str(photo_tree / "b.jpg")]  # not recursive
    assert single is False
    err = capsys.readouterr().err
    assert "skipped 1 file(s) in %s without an image extension: notes.txt" % photo_tree in err
    assert "1 sub-folder(s) of %s not entered; to include them, a ** glob such as --image='%s'" % (
        photo_tree, os.path.join(str(photo_tree), "**", "*.jpg")) in err


@pytest.mark.unit
def test_expand_images_glob_list_and_plain_file(photo_tree):
    paths, single = cli_mod.expand_images([str(photo_tree / "**" / "*.PNG")])
    assert paths == [str(photo_tree / "sub" / "c.PNG")] and single is False
    (photo_tree / "list.txt").write_text("# a comment\na.png\n\nsub/c.PNG\n")
    paths, single = cli_mod.expand_images(["@%s" % (photo_tree / "list.txt")])
    assert paths == [str(photo_tree / "a.png"), str(photo_tree / "sub" / "c.PNG")] and single is False
    paths, single = cli_mod.expand_images([str(photo_tree / "a.png")])
    assert paths == [str(photo_tree / "a.png")] and single is True
    with pytest.raises(cli_mod.UsageError, match="no files match"):
        cli_mod.expand_images([str(photo_tree / "zz*.png")])
    with pytest.raises(cli_mod.UsageError, match="cannot read"):
        cli_mod.expand_images(["@%s" % (photo_tree / "missing.txt")])


@pytest.mark.unit
def test_read_labels_file_names_indices_header_and_errors(tmp_path):
    names = load_labels()
    csv_path = tmp_path / "targets.csv"
    csv_path.write_text("path,label\ncat.png,tabby cat\n# a comment\n\ncat.png,968\ndog.png,1\n")
    assert cli_mod.read_labels_file(str(csv_path), names) == [
        (str(tmp_path / "cat.png"), [targets.Target.of(282), targets.Target.of(968)]),
        (str(tmp_path / "dog.png"), [targets.Target.of(1)])]
    csv_path.write_text("cat.png,crane\n")
    with pytest.raises(cli_mod.UsageError, match=r"line 1: 'crane' matches 2 classes"):
        cli_mod.read_labels_file(str(csv_path), names)
    csv_path.write_text("cat.png\n")
    with pytest.raises(cli_mod.UsageError, match="line 1: expected 'path,label', got 1 fields"):
        cli_mod.read_labels_file(str(csv_path), names)
    csv_path.write_text("path,label\n")
    with pytest.raises(cli_mod.UsageError, match="lists no images"):
        cli_mod.read_labels_file(str(csv_path), names)


@pytest.mark.unit
def test_folder_names_are_file_names_made_unique_by_a_hash():
    stems = naming.folder_names(["/x/a/cat.png", "/x/b/cat.png", "/x/dog.jpg"])
    assert stems["/x/dog.jpg"] == "dog"
    first, second = stems["/x/a/cat.png"], stems["/x/b/cat.png"]
    assert first != second and first.startswith("cat-") and second.startswith("cat-")
    assert len(first) == len("cat-") + 8
    assert naming.folder_names(["/x/a/cat.png", "/x/b/cat.png"]) == {
        "/x/a/cat.png": first, "/x/b/cat.png": second}                      # stable


@pytest.mark.unit
def test_target_keys_and_label_parsing():
    assert targets.Target.of(282).key == "label:282" and targets.Target.of(0).key == "label:0"
    assert targets.Target.best().key == "top:1" and targets.Target.best(3).key == "top:3"
    assert targets.Target.from_key("top:3") == targets.Target.best(3)
    names = load_labels()
    assert labels_mod.resolve("282", names) == 282 and labels_mod.resolve(" 7 ", names) == 7
    assert labels_mod.resolve("Tabby Cat", names) == 282                   # a synonym, any case
    assert labels_mod.resolve("espresso", names) == 968
    for bad, message in (("1001", "must be in 0..1000"), ("-1", "must be in 0..1000"),
                         ("crane", "matches 2 classes"), ("unicorn", "no class named"), (" ", "empty")):
        with pytest.raises(labels_mod.LabelError, match=message):
            labels_mod.resolve(bad, names)


def result_rows():
    top5 = [{"index": 286 - i, "name": "class %d, synonym" % (286 - i), "probability": 0.5 / (i + 1)}
            for i in range(5)]
    return [
        {"path": "/p/a b.png", "target": "top:1", "target_index": 286, "target_name": "Egyptian cat",
         "probability": 0.5, "top5": top5, "status": "ok", "error": "", "seconds": 0.25,
         "folder": "a b_286"},
        {"path": "/p/<bad>.png", "target": "label:282", "target_index": 282, "target_name": "",
         "probability": "", "top5": [], "status": "failed", "error": "/p/<bad>.png: not an image file",
         "seconds": 0.001, "folder": ""},
    ]


@pytest.mark.unit
def test_results_write_and_read_round_trip(tmp_path):
    rows = result_rows()
    results_mod.write(str(tmp_path), rows)
    assert results_mod.read(str(tmp_path)) == rows
    with open(str(tmp_path / results_mod.CSV_FILE), newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == results_mod.COLUMNS
    assert table[0]["top1_index"] == "286" and table[0]["top5_probability"] == "%.6f" % 0.1
    assert table[0]["probability"] == "0.500000" and table[0]["seconds"] == "0.250"
    assert table[1]["status"] == "failed" and table[1]["top1_index"] == ""
    assert sorted(os.listdir(str(tmp_path))) == [results_mod.CSV_FILE, results_mod.JSONL_FILE]
    assert results_mod.read(str(tmp_path / "nowhere")) == []
    (tmp_path / results_mod.JSONL_FILE).write_text("{not json\n")
    assert results_mod.read(str(tmp_path)) == []


@pytest.mark.unit
def test_gallery_write_links_pictures_and_escapes_errors(tmp_path):
    path = gallery.write(str(tmp_path), result_rows(), title="Run <1>")
    assert path == str(tmp_path / gallery.INDEX_FILE)
    page = open(path, encoding="utf-8").read()
    refs = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sorted(set(refs)) == sorted("a%20b_286/" + f for f, _ in gallery.columns({}))
    assert "<title>Run &lt;1&gt;</title>" in page
    assert "/p/&lt;bad&gt;.png: not an image file" in page and "<bad>" not in page
    assert "1 explained, 1 failed" in page
    assert "p = 0.500" in page and "Egyptian cat" in page
    assert os.listdir(str(tmp_path)) == [gallery.INDEX_FILE]


# ----------------------------------------------------------------------------- folder runs

@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A folder mixing good, corrupt, greyscale, RGBA, 16-bit, huge and non-image files."""
    d = tmp_path_factory.mktemp("mixed")
    rgb = np.asarray(Image.open(CHELSEA).convert("RGB"))
    shutil.copy(CHELSEA, str(d / "a_good.png"))
    (d / "b_corrupt.png").write_bytes(open(CHELSEA, "rb").read()[:4000])
    Image.fromarray(rgb).convert("L").save(str(d / "c_grey.png"))
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)]), "RGBA").save(str(d / "d_rgba.png"))
    Image.fromarray(np.asarray(Image.fromarray(rgb).convert("L"), np.uint16) * 257).save(str(d / "e_16bit.png"))
    # 12000 x 9000: a smooth picture with the cat pasted in the middle, as a JPEG
    yy, xx = np.mgrid[0:9000:16, 0:12000:16]
    small = np.dstack([(xx / 47) % 256, (yy / 35) % 256, ((xx + yy) / 82) % 256]).astype(np.uint8)
    huge = Image.fromarray(small).resize((12000, 9000), Image.NEAREST)
    huge.paste(Image.fromarray(rgb).resize((4510, 3000)), (3700, 3000))
    huge.save(str(d / "f_huge.jpg"), quality=80)
    (d / "g_text.jpg").write_text("plain text, not a JPEG\n")
    (d / "notes.txt").write_text("not an image, and not named like one\n")
    return d


@pytest.fixture(scope="module")
def mixed_run(mixed, tmp_path_factory, shared_graphs):
    out = tmp_path_factory.mktemp("mixed_out") / "out"
    start = time.perf_counter()
    result = cli("--image=%s" % mixed, "--output_dir=%s" % out, "--batch_size=3")
    return out, result, time.perf_counter() - start


def test_mixed_folder_reports_failures_and_goes_on(mixed_run):
    out, result, _ = mixed_run
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "skipped 1 file(s)" in result.stderr             # notes.txt, said out loud
    errors = [l for l in result.stderr.splitlines() if l.startswith("error: ")]
    assert len(errors) == 2
    assert any("b_corrupt.png" in e and "corrupt or truncated" in e for e in errors)
    assert any("g_text.jpg" in e and "not an image file" in e for e in errors)
    csv_rows, json_rows = read_rows(out)
    status = {os.path.basename(r["path"]): r["status"] for r in csv_rows}
    assert status == {"a_good.png": "ok", "b_corrupt.png": "failed", "c_grey.png": "ok",
                      "d_rgba.png": "ok", "e_16bit.png": "ok", "f_huge.jpg": "ok", "g_text.jpg": "failed"}
    for row in json_rows:
        if row["status"] == "ok":
            assert sorted(os.listdir(str(out / row["folder"]))) == sorted(OUTPUT_FILES)
            assert len(row["top5"]) == 5 and row["target"] == "top:1"
            assert row["seconds"] > 0
        else:
            assert row["error"] and row["folder"] == ""
    no_temp_files(out)


def softmax(logits):
    z = np.exp(logits.astype(np.float64) - logits.max())
    return z / z.sum()


def test_top5_are_the_five_best_classes_with_their_softmax_probabilities(mixed_run):
    from ggcam import explainer
    out, _, _ = mixed_run
    ok = [r for r in read_rows(out)[1] if r["status"] == "ok"]
    with explainer.Explainer() as ex:
        explained = ex.explain([r["path"] for r in ok])
    for row, again in zip(ok, explained):
        probs = softmax(again.logits)
        best = np.argsort(-probs)[:5]
        assert [t["index"] for t in row["top5"]] == [int(i) for i in best], row["path"]
        np.testing.assert_allclose([t["probability"] for t in row["top5"]], probs[best], rtol=1e-3, atol=1e-5,
                                   err_msg=row["path"])
        assert 0 < sum(t["probability"] for t in row["top5"]) <= 1.0 + 1e-6
        # the explained class is the top-1 class, with the same probability
        assert row["target_index"] == row["top5"][0]["index"]
        assert row["probability"] == pytest.approx(row["top5"][0]["probability"], rel=1e-6)


def test_huge_image_is_shrunk_to_max_side(mixed_run):
    out, _, _ = mixed_run
    _, rows = read_rows(out)
    huge = [r for r in rows if r["path"].endswith("f_huge.jpg")][0]
    assert Image.open(str(out / huge["folder"] / "overlay.png")).size == (2048, 1536)


def test_rerun_skips_complete_outputs_and_overwrite_redoes_them(mixed_run):
    out, _, _ = mixed_run
    _, rows = read_rows(out)
    good = [r for r in rows if r["status"] == "ok"]
    probe = out / good[0]["folder"] / "panel.png"
    before = os.stat(str(probe)).st_mtime_ns
    mixed_dir = os.path.dirname(good[0]["path"])
    again = cli("--image=%s" % mixed_dir, "--output_dir=%s" % out, "--quiet")
    assert again.returncode == 1                              # the two bad files still fail
    assert "0 explanation(s) made and 2 failed by this run, 5 already done" in again.stdout
    assert os.stat(str(probe)).st_mtime_ns == before
    assert [(r["path"], r["status"]) for r in read_rows(out)[1]] == [(r["path"], r["status"]) for r in rows]
    # a deleted picture makes that image incomplete: only it is redone
    os.remove(str(out / good[1]["folder"] / "gradcam.png"))
    again = cli("--image=%s" % mixed_dir, "--output_dir=%s" % out, "--quiet")
    assert "1 explanation(s) made and 2 failed by this run, 4 already done" in again.stdout
    assert (out / good[1]["folder"] / "gradcam.png").exists()
    again = cli("--image=%s" % mixed_dir, "--output_dir=%s" % out, "--quiet", "--overwrite")
    assert "5 explanation(s) made and 2 failed by this run, 0 already done" in again.stdout
    assert os.stat(str(probe)).st_mtime_ns != before


def test_gallery_references_only_existing_files(mixed_run):
    out, _, _ = mixed_run
    page = (out / "index.html").read_text()
    refs = set(re.findall(r'(?:src|href)="([^"]+)"', page))
    assert len(refs) == 5 * 5
    for ref in refs:
        assert (out / unquote(ref)).is_file(), ref
    assert "b_corrupt.png" in page and "corrupt or truncated" in page


def test_top_k_targets_give_one_folder_per_class(shared_graphs, tmp_path):
    out = tmp_path / "out"
    result = cli("--image=%s" % CHELSEA, "--image=%s" % COFFEE, "--top_k_targets=3",
                 "--output_dir=%s" % out, "--quiet")
    assert result.returncode == 0, result.stderr
    _, rows = read_rows(out)
    assert [(os.path.basename(r["path"]), r["target"]) for r in rows] == [
        ("chelsea.png", "top:1"), ("chelsea.png", "top:2"), ("chelsea.png", "top:3"),
        ("coffee.png", "top:1"), ("coffee.png", "top:2"), ("coffee.png", "top:3")]
    for r in rows:
        rank = int(r["target"].split(":")[1])
        assert r["target_index"] == r["top5"][rank - 1]["index"]
        assert r["folder"] == "%s_%d" % (os.path.splitext(os.path.basename(r["path"]))[0], r["target_index"])
    assert rows[0]["target_index"] == 286 and rows[3]["target_index"] == 968


def test_labels_file_with_names_and_indices(shared_graphs, tmp_path):
    shutil.copy(CHELSEA, str(tmp_path / "cat.png"))
    (tmp_path / "targets.csv").write_text("path,label\ncat.png,tabby cat\ncat.png,968\n")
    out = tmp_path / "out"
    result = cli("--labels_file=%s" % (tmp_path / "targets.csv"), "--output_dir=%s" % out, "--quiet")
    assert result.returncode == 0, result.stderr
    _, rows = read_rows(out)
    assert [(r["target"], r["target_index"], r["folder"]) for r in rows] == [
        ("label:282", 282, "cat_282"), ("label:968", 968, "cat_968")]


@pytest.mark.unit
def test_labels_file_with_an_ambiguous_name_is_a_usage_error(tmp_path):
    (tmp_path / "targets.csv").write_text("cat.png,crane\n")
    result = cli("--labels_file=%s" % (tmp_path / "targets.csv"))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: %s line 1: 'crane' matches 2 classes: 135 crane; 518 crane" % (tmp_path / "targets.csv"))


def test_list_file_and_glob(shared_graphs, tmp_path):
    for name in ("one.png", "two.png"):
        shutil.copy(CHELSEA, str(tmp_path / name))
    (tmp_path / "list.txt").write_text("# two photos\none.png\n\ntwo.png\n")
    out = tmp_path / "out_list"
    result = cli("--image=@%s" % (tmp_path / "list.txt"), "--output_dir=%s" % out, "--quiet", "--label=282")
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(str(out))) == ["index.html", "one_282", "results.csv", "results.jsonl", "two_282"]
    out = tmp_path / "out_glob"
    result = cli("--image=%s" % (tmp_path / "t*.png"), "--output_dir=%s" % out, "--quiet")
    assert result.returncode == 0, result.stderr
    assert [os.path.basename(r["path"]) for r in read_rows(out)[1]] == ["two.png"]
    result = cli("--image=%s" % (tmp_path / "zz*.png"))
    assert result.returncode == 2 and "no files match" in result.stderr


def test_same_file_names_in_different_folders_get_different_outputs(shared_graphs, tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        shutil.copy(CHELSEA, str(tmp_path / sub / "cat.png"))
    out = tmp_path / "out"
    result = cli("--image=%s" % (tmp_path / "a" / "cat.png"), "--image=%s" % (tmp_path / "b" / "cat.png"),
                 "--output_dir=%s" % out, "--quiet")
    assert result.returncode == 0, result.stderr
    folders = [r["folder"] for r in read_rows(out)[1]]
    assert len(set(folders)) == 2 and all(f.startswith("cat-") for f in folders)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.e2e
def test_signal_leaves_valid_results_and_no_partial_files(shared_graphs, tmp_path, sig, code):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(24):
        shutil.copy(CHELSEA, str(photos / ("cat%02d.png" % i)))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "inference.py"), "--image=%s" % photos,
                             "--output_dir=%s" % out, "--batch_size=4", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                            stdin=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.time() + 120
    while not (out / results_mod.JSONL_FILE).exists() and time.time() < deadline:
        time.sleep(0.05)
    assert (out / results_mod.JSONL_FILE).exists(), proc.communicate()
    time.sleep(0.3)  # interrupt in the middle of a later batch
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    csv_rows, rows = read_rows(out)
    assert 4 <= len(rows) < 24
    assert all(r["status"] == "ok" for r in rows)
    for r in rows:
        assert sorted(os.listdir(str(out / r["folder"]))) == sorted(OUTPUT_FILES)
    no_temp_files(out)
    # the next run picks up where this one stopped
    again = cli("--image=%s" % photos, "--output_dir=%s" % out, "--batch_size=8", "--quiet")
    assert again.returncode == 0
    assert "%d explanation(s) made and 0 failed by this run, %d already done" % (24 - len(rows), len(rows)) in again.stdout
    assert len(read_rows(out)[1]) == 24


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--log-level=0", "--virtual-time-budget=10000"]


@pytest.fixture(scope="session")
def chromium():
    """Chromium, which `make browser-setup` (run by `make test-all`) installs: no test installs it."""
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("chromium is absent: `make browser-setup` installs it (with apt, as root)")
    return path


def render(chromium, page, profile, *extra):
    """(DOM after load, console lines) of a page in headless Chromium."""
    result = subprocess.run([chromium] + CHROMIUM_FLAGS + ["--user-data-dir=%s" % profile] + list(extra)
                            + ["file://%s" % page], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, timeout=120)
    console = [l for l in result.stderr.splitlines() if ":CONSOLE" in l]
    return result.stdout, console


@pytest.mark.extended
@pytest.mark.e2e
def test_gallery_renders_in_chromium_with_every_picture(chromium, mixed_run, tmp_path):
    out, _, _ = mixed_run
    page = out / "index.html"
    dom, console = render(chromium, page, tmp_path / "p1", "--dump-dom")
    assert 'data-images-loaded="25/25"' in dom
    assert console == []   # the page logs nothing, so any console line is an error or a warning
    shot = str(tmp_path / "gallery.png")
    render(chromium, page, tmp_path / "p2", "--screenshot=%s" % shot, "--window-size=1500,1400")
    assert Image.open(shot).size == (1500, 1400)
    assert np.asarray(Image.open(shot).convert("L")).std() > 10  # not a blank page
    keep_artifact(shot)  # into $GRADCAM_TEST_ARTIFACTS when set, for a person to look at

    # The checks can fail: a missing picture and a console error are both caught.
    broken = tmp_path / "broken"
    shutil.copytree(str(out), str(broken))
    first = [r for r in read_rows(out)[1] if r["status"] == "ok"][0]
    os.remove(str(broken / first["folder"] / "overlay.png"))
    with open(str(broken / "index.html"), "a") as f:
        f.write("<script>console.error('planted');</script>")
    dom, console = render(chromium, broken / "index.html", tmp_path / "p3", "--dump-dom")
    assert 'data-images-loaded="24/25"' in dom and "1 of 25 pictures could not be loaded" in dom
    assert len(console) == 1 and "planted" in console[0]
