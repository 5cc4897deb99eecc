"""inference.py end to end, and every kind of bad input.

Most runs call ``inference.main`` in this process with the session's shared graphs (see
conftest.py); one single-image run and the ``--help`` import check start a real process.
"""
import inspect
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

import gradcam as gc
import inference
from ggcam.explanation import OUTPUT_FILES
from ggcam.models import zoo
from ggcam.models.slim import network_variables
from conftest import ROOT, run_main
from ggcam.tf.compat import tf

CHELSEA = os.path.join(ROOT, "images", "chelsea.png")
PICTURE_FILES = sorted(OUTPUT_FILES)

pytestmark = [pytest.mark.graph, pytest.mark.usefixtures("shared_graphs")]


def cli(*args):
    """inference.py in this process: .returncode, .stdout, .stderr."""
    return run_main(inference.main, *args)


def cli_process(*args):
    """inference.py in a new process."""
    return subprocess.run([sys.executable, os.path.join(ROOT, "inference.py")] + list(args),
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, stdin=subprocess.DEVNULL)


def assert_one_line_error(result, code, *fragments):
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def chelsea_run(tmp_path_factory):
    """The one single-image run in a new process, as a person runs it."""
    out = tmp_path_factory.mktemp("cli") / "chelsea"
    result = cli_process("--image=%s" % CHELSEA, "--label=282", "--output_dir=%s" % out, "--save_raw",
                         "--top_k=3")
    assert result.returncode == 0, result.stderr
    return out, result


@pytest.mark.e2e
@pytest.mark.smoke
def test_writes_every_picture_and_raw_arrays(chelsea_run):
    out, result = chelsea_run
    assert sorted(os.listdir(str(out))) == sorted(PICTURE_FILES + ["raw.npz"])
    h, w = np.asarray(Image.open(CHELSEA)).shape[:2]
    for name in ("gradcam", "guided_backprop", "guided_gradcam", "overlay"):
        assert Image.open(str(out / (name + ".png"))).size == (w, h), name
    raw = np.load(str(out / "raw.npz"))
    shapes = {"logits": (1001,), "label": (), "conv_activations": (7, 7, 1024),
              "conv_gradient": (7, 7, 1024), "guided_backprop": (224, 224, 3), "cam": (7, 7)}
    assert sorted(raw.files) == sorted(list(shapes) + ["model", "layer", "preprocessing", "feeds", "output_function"])
    assert str(raw["preprocessing"]) == "RGB, [0, 1] scaled to [-1, 1]" and str(raw["feeds"]) == "{}"
    assert str(raw["output_function"]) == "softmax"
    for name, shape in shapes.items():
        assert raw[name].shape == shape, name
    assert int(raw["label"]) == 282
    assert str(raw["model"]) == "mobilenet_v1" and str(raw["layer"]) == "Conv2d_13_pointwise"
    for name in shapes:
        if name != "label":
            assert raw[name].dtype == np.float32, name
    np.testing.assert_allclose(raw["cam"], gc.compute_cam(raw["conv_activations"], raw["conv_gradient"]))
    assert np.all(raw["cam"] >= 0) and raw["cam"].max() > 0


@pytest.mark.e2e  # chelsea_run: the one CLI process, shared with the smoke test
@pytest.mark.smoke
def test_top_k_lines_and_summary(chelsea_run):
    _, result = chelsea_run
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 + 3 + 1                                     # header, 3 classes, summary
    assert lines[0].split() == ["class", "name", "logit", "p"]
    assert lines[1].split()[0] == "286" and "Egyptian cat" in lines[1]  # top-1 for Chelsea
    assert "explained class 282 (tabby, tabby cat)" in lines[-1]


def panel_tiles(panel):
    """The five picture tiles of a panel, left to right, found by the white gaps between them."""
    params = inspect.signature(gc.panel).parameters
    gap, caption_height = params["gap"].default, params["caption_height"].default
    tile_height = panel.shape[0] - 2 * gap - caption_height
    band = panel[gap:gap + tile_height]
    filled = np.flatnonzero((band != 255).any(axis=(0, 2)))
    starts = [filled[0]] + [b for a, b in zip(filled[:-1], filled[1:]) if b > a + 1]
    ends = [a + 1 for a, b in zip(filled[:-1], filled[1:]) if b > a + 1] + [filled[-1] + 1]
    return [band[:, x0:x1] for x0, x1 in zip(starts, ends)]


def resized(picture, tile):
    return cv2.resize(picture, (tile.shape[1], tile.shape[0]), interpolation=cv2.INTER_AREA).astype(int)


@pytest.mark.e2e  # chelsea_run: the one CLI process, shared with the smoke test
@pytest.mark.smoke
def test_colours_on_disk_are_rgb(chelsea_run):
    out, _ = chelsea_run
    raw = np.load(str(out / "raw.npz"))
    on_disk = np.asarray(Image.open(str(out / "gradcam.png")).convert("RGB"))
    h, w = on_disk.shape[:2]
    cam = gc.normalize_max(gc.upsample(raw["cam"], h, w))
    hot = np.unravel_index(np.argmax(cam), cam.shape)
    cold = np.unravel_index(np.argmin(cam), cam.shape)
    assert on_disk[hot][0] > 100 and on_disk[hot][2] < 50     # red where the CAM peaks
    assert on_disk[cold][2] > 100 and on_disk[cold][0] < 50   # blue where it is lowest
    np.testing.assert_array_equal(np.asarray(Image.open(str(out / "gradcam.png"))), gc.heatmap(cam))


@pytest.mark.e2e  # chelsea_run: the one CLI process, shared with the smoke test
@pytest.mark.smoke
def test_panel_on_disk_keeps_the_photo_colours_and_holds_the_heatmap(chelsea_run):
    out, _ = chelsea_run
    panel = np.asarray(Image.open(str(out / "panel.png")).convert("RGB"))
    tiles = panel_tiles(panel)
    assert len(tiles) == 5, [t.shape for t in tiles]
    photo_tile, heatmap_tile = tiles[0].astype(int), tiles[1].astype(int)
    # the photo in the panel keeps its colours: Chelsea's fur is orange (R > B), as in the photo
    photo = np.asarray(Image.open(CHELSEA).convert("RGB"))
    assert photo[..., 0].mean() > photo[..., 2].mean() + 20
    red, blue = photo_tile[..., 0].mean(), photo_tile[..., 2].mean()
    assert red > blue + 20, "photo tile: mean R %.1f, mean B %.1f" % (red, blue)
    diff = np.abs(photo_tile - resized(photo, photo_tile)).mean()
    assert diff < 3, "photo tile differs from the photo by %.1f per value" % diff
    # the second tile is gradcam.png, not the photo or another picture
    gradcam_png = np.asarray(Image.open(str(out / "gradcam.png")).convert("RGB"))
    diff = np.abs(heatmap_tile - resized(gradcam_png, heatmap_tile)).mean()
    assert diff < 3, "heatmap tile differs from gradcam.png by %.1f per value" % diff
    assert np.abs(heatmap_tile - resized(photo, heatmap_tile)).mean() > 30


def test_default_output_folder_is_named_after_image_and_class(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("--image=%s" % CHELSEA, "--top_k=0")
    assert result.returncode == 0, result.stderr
    assert os.listdir(str(tmp_path)) == ["chelsea_286"]
    assert sorted(os.listdir(str(tmp_path / "chelsea_286"))) == PICTURE_FILES


def write_variants(folder):
    rgb = np.asarray(Image.open(CHELSEA).convert("RGB"))
    paths = {}
    paths["grey"] = str(folder / "grey.png")
    Image.fromarray(rgb).convert("L").save(paths["grey"])
    paths["rgba"] = str(folder / "rgba.png")
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 200, np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(paths["rgba"])
    paths["16bit"] = str(folder / "sixteen.png")
    grey16 = (np.asarray(Image.fromarray(rgb).convert("L"), np.uint16) * 257)
    Image.fromarray(grey16.astype(np.uint16)).save(paths["16bit"])
    assert Image.open(paths["16bit"]).mode.startswith("I")
    return paths


@pytest.mark.parametrize("kind", ["grey", "rgba", "16bit"])
def test_grey_rgba_and_16_bit_images_are_converted(tmp_path, kind):
    path = write_variants(tmp_path)[kind]
    out = tmp_path / "out"
    result = cli("--image=%s" % path, "--output_dir=%s" % out, "--top_k=1")
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(str(out))) == PICTURE_FILES
    gbp = np.asarray(Image.open(str(out / "guided_backprop.png")))
    assert gbp.std() > 1  # a real picture, not a flat grey one


def test_16_bit_image_is_scaled_not_clipped(tmp_path):
    from ggcam.io import decoding
    paths = write_variants(tmp_path)
    np.testing.assert_array_equal(decoding.load_image(paths["16bit"]), decoding.load_image(paths["grey"]))


def bad_files(folder):
    text = folder / "notes.png"
    text.write_text("not an image at all\n")
    truncated = folder / "truncated.png"
    truncated.write_bytes(open(CHELSEA, "rb").read()[:5000])
    corrupt = folder / "corrupt.jpg"
    Image.open(CHELSEA).convert("RGB").save(str(corrupt), quality=90)
    data = corrupt.read_bytes()
    corrupt.write_bytes(data[:len(data) // 2])  # a JPEG cut in the middle of its scan
    return {"text": str(text), "truncated": str(truncated), "corrupt": str(corrupt)}


@pytest.mark.parametrize("kind, fragment", [
    ("missing", "image not found"),
    ("text", "not an image file"),
    ("truncated", "corrupt or truncated image"),
    ("corrupt", "corrupt or truncated image"),
])
def test_bad_images(tmp_path, kind, fragment):
    paths = bad_files(tmp_path)
    paths["missing"] = str(tmp_path / "nope.jpg")
    out = tmp_path / "out"
    result = cli("--image=%s" % paths[kind], "--output_dir=%s" % out)
    assert_one_line_error(result, 1, fragment)
    assert not out.exists()


def test_unreadable_image(tmp_path):
    if os.geteuid() == 0:
        # root reads any file; a path whose parent is a file is unreadable for everyone
        path = os.path.join(CHELSEA, "inside.png")
        result = cli("--image=%s" % path, "--output_dir=%s" % (tmp_path / "out"))
        assert_one_line_error(result, 1, "image not found")
    else:
        path = tmp_path / "locked.png"
        path.write_bytes(open(CHELSEA, "rb").read())
        path.chmod(0)
        result = cli("--image=%s" % path, "--output_dir=%s" % (tmp_path / "out"))
        assert_one_line_error(result, 1, "permission denied")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, fragment", [
    (["--label=1001"], "--label: label must be in 0..1000, got 1001"),
    (["--label=-1"], "--label: label must be in 0..1000, got -1"),
    (["--label=cat"], "'cat' matches 7 classes: 282 tabby, tabby cat; 283 tiger cat"),
    (["--label=unicorn"], "no class named 'unicorn'"),
    (["--label=1", "--top_k_targets=2"], "either --label or --top_k_targets"),
    (["--batch_size=0"], "--batch_size must be at least 1"),
    (["--guided_relu6=soft"], "invalid choice"),
    (["--bogus"], "unrecognized arguments"),
])
def test_usage_errors_exit_2(tmp_path, args, fragment):
    result = cli("--image=%s" % CHELSEA, "--output_dir=%s" % (tmp_path / "out"), *args)
    assert_one_line_error(result, 2, fragment)
    assert not (tmp_path / "out").exists()


def test_a_folder_that_does_not_exist_is_a_usage_error(tmp_path):
    result = cli("--image=%s/" % (tmp_path / "photos"), "--top_k_targets=3", "--output_dir=%s" % (tmp_path / "out"))
    assert_one_line_error(result, 2, "--image: no such folder: ")
    assert not (tmp_path / "out").exists()


def test_missing_image_flag_is_a_usage_error():
    assert_one_line_error(cli(), 2, "--image")


def test_missing_checkpoint_prints_the_fetch_command(tmp_path):
    prefix = str(tmp_path / "nowhere" / zoo.entry("mobilenet_v1").checkpoint)
    result = cli("--image=%s" % CHELSEA, "--checkpoint=%s" % prefix, "--output_dir=%s" % (tmp_path / "out"))
    assert_one_line_error(result, 1, "no checkpoint at", "python weights.py --checkpoint=%s" % prefix)
    assert not (tmp_path / "out").exists()


def test_mismatched_checkpoint_names_what_is_missing(tmp_path):
    graph = tf.Graph()
    with graph.as_default():
        variables = [tf.Variable(np.zeros(s, np.float32), name=n)
                     for n, s in network_variables("mobilenet_v1").items() if "Conv2d_7_depthwise" not in n]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            prefix = str(tmp_path / "bad" / zoo.entry("mobilenet_v1").checkpoint)
            tf.train.Saver(variables).save(sess, prefix, write_meta_graph=False, write_state=False)
    result = cli("--image=%s" % CHELSEA, "--checkpoint=%s" % prefix, "--output_dir=%s" % (tmp_path / "out"))
    assert_one_line_error(result, 1, "lacks 5 model variable(s)", "Conv2d_7_depthwise", "--force")
    assert not (tmp_path / "out").exists()


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    result = cli("--image=%s" % CHELSEA, "--output_dir=%s" % (blocker / "out"))
    assert_one_line_error(result, 1, "output folder not writable")
    assert blocker.read_text() == "x"


def test_help_lists_every_flag():
    result = cli("--help")
    assert result.returncode == 0
    for flag in ("--image", "--label", "--checkpoint", "--output_dir", "--top_k", "--guided_relu6",
                 "--show", "--save_raw", "--fusion", "--max_side"):
        assert flag in result.stdout


@pytest.mark.e2e
@pytest.mark.smoke
def test_help_does_not_load_tensorflow():
    # A new process: this one has TensorFlow loaded already.
    code = ("import sys, inference\n"
            "try:\n"
            "    inference.main(['--help'])\n"
            "except SystemExit as exc:\n"
            "    assert exc.code in (0, None), exc.code\n"
            "print('tensorflow loaded:', 'tensorflow' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert "--image" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "tensorflow loaded: False"


def test_show_without_a_display_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    result = cli("--image=%s" % CHELSEA, "--output_dir=%s" % (tmp_path / "out"), "--show", "--top_k=0")
    assert result.returncode == 0, result.stderr
    assert "--show: no display" in result.stderr
    assert (tmp_path / "out" / "panel.png").exists()
