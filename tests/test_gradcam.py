"""ggcam.core.gradcam (gradcam.py in the clone) on hand-made arrays with exactly known answers."""
import subprocess
import sys

import cv2
import numpy as np
import pytest

import gradcam as gc
from conftest import ROOT

pytestmark = pytest.mark.unit


def test_cam_is_relu_of_gradient_weighted_maps():
    acts = np.zeros((2, 3, 2), np.float32)
    acts[..., 0] = [[1, 2, 3], [4, 5, 6]]
    acts[..., 1] = [[6, 5, 4], [3, 2, 1]]
    grad = np.zeros((2, 3, 2), np.float32)
    grad[..., 0] = [[1, 3, 2], [2, 3, 1]]        # channel weight: mean 2
    grad[..., 1] = [[-2, 0, -1], [-1, -1, -1]]   # channel weight: mean -1
    # relu(2 * A0 - 1 * A1), worked out by hand: [[2-6, 4-5, 6-4], [8-3, 10-2, 12-1]]
    np.testing.assert_array_equal(gc.compute_cam(acts, grad), [[0, 0, 2], [5, 8, 11]])


def test_batch_axis_of_one_is_accepted():
    acts = np.random.RandomState(0).rand(1, 3, 3, 4).astype(np.float32)
    np.testing.assert_array_equal(gc.compute_cam(acts, acts), gc.compute_cam(acts[0], acts[0]))


def test_all_negative_cam_gives_zeros_not_nan():
    acts = np.ones((7, 7, 4), np.float32)
    grad = -np.ones((7, 7, 4), np.float32)
    cam, gbp, ggc = gc.gradcam(acts, grad, np.ones((20, 30, 3), np.float32))
    assert cam.shape == (20, 30)
    assert np.all(cam == 0.0)
    assert np.all(np.isfinite(ggc)) and np.all(ggc == 0.5)  # zero product shows as grey


def test_non_square_upsampling_uses_width_height_order():
    # The hot cell is in the top row of a 2x3 map; after resizing to 40x90 (rows x cols) the
    # top band must be hot and the bottom band cold, with the requested shape.
    cam = np.array([[0, 1, 0], [0, 0, 0]], np.float32)
    up = gc.upsample(cam, 40, 90)
    assert up.shape == (40, 90)
    assert up[:10, 30:60].mean() > up[30:, 30:60].mean()
    acts = cam[..., None]
    out, _, _ = gc.gradcam(acts, np.ones_like(acts), np.zeros((40, 90, 3), np.float32))
    assert out.shape == (40, 90)
    assert np.unravel_index(out.argmax(), out.shape)[0] < 20


def test_guided_gradcam_is_raw_gradient_times_cam_then_scaled():
    acts = np.array([[1.0, 0.0]], np.float32)[..., None]      # [1, 2, 1]: left hot, right cold
    grad = np.ones_like(acts)
    gbp = np.zeros((1, 2, 3), np.float32)
    gbp[0, 0] = [2.0, -2.0, 0.0]
    gbp[0, 1] = [4.0, 4.0, 4.0]                               # strong gradient where CAM is 0
    cam, gbp_pic, ggc = gc.gradcam(acts, grad, gbp)
    np.testing.assert_allclose(cam, [[1.0, 0.0]])
    # product = [[2,-2,0],[0,0,0]]; scale = percentile 99.5 of |product| ~ 2 -> 0.5 +- 0.5
    np.testing.assert_allclose(ggc[0, 1], [0.5, 0.5, 0.5])
    assert ggc[0, 0, 0] > 0.99 and ggc[0, 0, 1] < 0.01 and ggc[0, 0, 2] == 0.5
    # the seed's order: min-max first, so zero gradient becomes mid-grey times the CAM
    _, _, seed = gc.gradcam(acts, grad, gbp, fusion="seed")
    np.testing.assert_allclose(seed[0, 0], [4 / 6.0, 0.0, 2 / 6.0], rtol=1e-6)
    np.testing.assert_allclose(seed[0, 1], [0.0, 0.0, 0.0])


def test_scale_signed_maps_zero_to_grey_and_is_bounded():
    x = np.linspace(-3, 5, 101, dtype=np.float32)
    y = gc.scale_signed(x)
    assert y.min() >= 0 and y.max() <= 1
    assert y[np.argmin(np.abs(x))] == pytest.approx(0.5, abs=0.02)
    assert np.all(gc.scale_signed(np.zeros((4, 4, 3))) == 0.5)


def test_normalizers_never_divide_by_zero():
    assert np.all(gc.normalize_max(np.zeros((3, 3))) == 0)
    assert np.all(gc.normalize_minmax(np.full((3, 3), 7.0)) == 0)
    np.testing.assert_allclose(gc.normalize_minmax(np.array([1.0, 3.0, 2.0])), [0, 1, 0.5])


def test_nan_inputs_are_refused():
    acts = np.ones((2, 2, 1), np.float32)
    with pytest.raises(ValueError):
        gc.gradcam(acts, acts, np.full((4, 4, 3), np.nan, np.float32))


def test_heatmap_is_rgb_red_for_high_and_blue_for_low():
    hm = gc.heatmap(np.array([[0.0, 1.0]], np.float32))
    low, high = hm[0, 0], hm[0, 1]
    assert low[2] > 100 and low[0] == 0          # blue in RGB order
    assert high[0] > 100 and high[2] == 0        # red in RGB order


@pytest.mark.parametrize("colormap", [cv2.COLORMAP_JET, cv2.COLORMAP_VIRIDIS])
@pytest.mark.parametrize("shape", [(1, 1), (7, 1), (1, 256), (300, 451)])
def test_heatmap_is_opencvs_colour_map_pixel_for_pixel(colormap, shape):
    cam = np.random.RandomState(1).rand(*shape).astype(np.float32)
    if shape == (1, 256):
        cam[0] = np.arange(256) / 255.0  # every level
    expected = cv2.cvtColor(cv2.applyColorMap(gc.to_uint8(cam), colormap), cv2.COLOR_BGR2RGB)
    got = gc.heatmap(cam, colormap)
    assert got.shape == shape + (3,) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)


def test_overlay_and_panel_shapes():
    photo = np.zeros((50, 80, 3), np.uint8)
    cam = np.ones((50, 80), np.float32)
    over = gc.overlay(photo, cam)
    assert over.shape == (50, 80, 3) and over.dtype == np.uint8
    assert over[..., 0].mean() > over[..., 2].mean()  # red heat over black
    pan = gc.panel([photo, cam, over], ["a", "b", "c"], height=100)
    assert pan.dtype == np.uint8 and pan.ndim == 3
    assert pan.shape[1] == 160 + 160 + 160 + 4 * 6
    assert pan.shape[0] == 100 + 2 * 6 + 28


@pytest.mark.e2e
@pytest.mark.smoke
def test_gradcam_module_does_not_import_tensorflow():
    code = "import sys, gradcam; sys.exit('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


@pytest.mark.parametrize("percentile", [99.5, 99.99, 50.0, 33.3, 1.0, 0.0, 100.0])
def test_abs_percentile_is_numpys_to_the_last_bit(percentile):
    rng = np.random.RandomState(3)
    arrays = [rng.normal(size=(224, 224, 3)), rng.standard_cauchy(size=(300, 451, 3)),
              np.zeros((50, 50, 3)), np.ones((3, 3)), rng.randint(-3, 4, size=(224, 224, 3)),
              np.r_[np.zeros(100000), rng.normal(size=10)],  # the top is a handful of values
              rng.normal(size=(224, 224, 3)) * (rng.rand(224, 224, 3) < 0.01)]
    arrays += [rng.normal(size=rng.randint(1, 3000)) for _ in range(40)]
    for x in arrays:
        x = x.astype(np.float32)
        assert gc.abs_percentile(x, percentile) == float(np.percentile(np.abs(x), percentile)), x.shape


def test_abs_percentile_falls_back_when_the_sampled_threshold_is_too_high():
    # The sample (every 100th value) sees 100 tens among zeros, while 3000 fives sit between
    # its points: its threshold (10) keeps too few values, so the full partition answers.
    x = np.zeros(409600, np.float32)
    x[np.arange(100) * 100] = 10.0
    x[np.arange(3000) * 100 + 1] = 5.0
    assert gc.abs_percentile(x, 99.5) == float(np.percentile(x, 99.5)) == 5.0
