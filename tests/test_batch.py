"""Folder runs: inputs, targets, results files, gallery, re-runs, signals, mixed bad files."""
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from explanation import OUTPUT_FILES
import results as results_mod

CHELSEA = os.path.join(ROOT, "images", "chelsea.png")
COFFEE = os.path.join(ROOT, "images", "coffee.png")


def cli(*args, **kwargs):
    return subprocess.run([sys.executable, os.path.join(ROOT, "inference.py")] + list(args),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          stdin=subprocess.DEVNULL, cwd=ROOT, **kwargs)


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
def mixed_run(mixed, tmp_path_factory):
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
            assert abs(sum(t["probability"] for t in row["top5"])) <= 1.0
            assert row["seconds"] > 0
        else:
            assert row["error"] and row["folder"] == ""
    no_temp_files(out)


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
    assert "5 image(s) already done" in again.stdout
    assert os.stat(str(probe)).st_mtime_ns == before
    assert [(r["path"], r["status"]) for r in read_rows(out)[1]] == [(r["path"], r["status"]) for r in rows]
    # a deleted picture makes that image incomplete: only it is redone
    os.remove(str(out / good[1]["folder"] / "gradcam.png"))
    again = cli("--image=%s" % mixed_dir, "--output_dir=%s" % out, "--quiet")
    assert "4 image(s) already done" in again.stdout
    assert (out / good[1]["folder"] / "gradcam.png").exists()
    again = cli("--image=%s" % mixed_dir, "--output_dir=%s" % out, "--quiet", "--overwrite")
    assert "0 image(s) already done" in again.stdout
    assert os.stat(str(probe)).st_mtime_ns != before


def test_gallery_references_only_existing_files(mixed_run):
    out, _, _ = mixed_run
    page = (out / "index.html").read_text()
    refs = set(re.findall(r'(?:src|href)="([^"]+)"', page))
    assert len(refs) == 5 * 5
    from urllib.parse import unquote
    for ref in refs:
        assert (out / unquote(ref)).is_file(), ref
    assert "b_corrupt.png" in page and "corrupt or truncated" in page


def test_top_k_targets_give_one_folder_per_class(tmp_path):
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


def test_labels_file_with_names_and_indices(tmp_path):
    shutil.copy(CHELSEA, str(tmp_path / "cat.png"))
    (tmp_path / "targets.csv").write_text("path,label\ncat.png,tabby cat\ncat.png,968\n")
    out = tmp_path / "out"
    result = cli("--labels_file=%s" % (tmp_path / "targets.csv"), "--output_dir=%s" % out, "--quiet")
    assert result.returncode == 0, result.stderr
    _, rows = read_rows(out)
    assert [(r["target"], r["target_index"], r["folder"]) for r in rows] == [
        ("label:282", 282, "cat_282"), ("label:968", 968, "cat_968")]


def test_labels_file_with_an_ambiguous_name_is_a_usage_error(tmp_path):
    (tmp_path / "targets.csv").write_text("cat.png,crane\n")
    result = cli("--labels_file=%s" % (tmp_path / "targets.csv"))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: %s line 1: 'crane' matches 2 classes: 135 crane; 518 crane" % (tmp_path / "targets.csv"))


def test_list_file_and_glob(tmp_path):
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


def test_same_file_names_in_different_folders_get_different_outputs(tmp_path):
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
def test_signal_leaves_valid_results_and_no_partial_files(tmp_path, sig, code):
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
    assert "%d image(s) already done" % len(rows) in again.stdout
    assert len(read_rows(out)[1]) == 24


ARTIFACTS = os.path.join(ROOT, "tests", "artifacts")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--log-level=0", "--virtual-time-budget=10000"]


@pytest.fixture(scope="session")
def chromium():
    """Debian's Chromium, installed with apt-get when absent (skips if that is impossible)."""
    path = shutil.which("chromium")
    if path is None:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            pytest.skip("chromium is absent and cannot be installed here (needs root and apt-get)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
            done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  universal_newlines=True, timeout=1200)
            if done.returncode != 0:
                pytest.skip("chromium could not be installed: %s" % done.stdout.strip().splitlines()[-1:])
        path = shutil.which("chromium")
        if path is None:
            pytest.skip("chromium could not be installed")
    return path


def render(chromium, page, profile, *extra):
    """(DOM after load, console lines) of a page in headless Chromium."""
    result = subprocess.run([chromium] + CHROMIUM_FLAGS + ["--user-data-dir=%s" % profile] + list(extra)
                            + ["file://%s" % page], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, timeout=120)
    console = [l for l in result.stderr.splitlines() if ":CONSOLE" in l]
    return result.stdout, console


def test_gallery_renders_in_chromium_with_every_picture(chromium, mixed_run, tmp_path):
    out, _, _ = mixed_run
    page = out / "index.html"
    dom, console = render(chromium, page, tmp_path / "p1", "--dump-dom")
    assert 'data-images-loaded="25/25"' in dom
    assert console == []   # the page logs nothing, so any console line is an error or a warning
    os.makedirs(ARTIFACTS, exist_ok=True)
    shot = os.path.join(ARTIFACTS, "gallery.png")
    if os.path.exists(shot):
        os.remove(shot)
    render(chromium, page, tmp_path / "p2", "--screenshot=%s" % shot, "--window-size=1500,1400")
    assert Image.open(shot).size == (1500, 1400)
    assert np.asarray(Image.open(shot).convert("L")).std() > 10  # not a blank page

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
