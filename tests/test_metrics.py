"""ggcam/evaluation/metrics.py on synthetic cases with known answers."""
import numpy as np
import pytest

from ggcam.evaluation import metrics

pytestmark = pytest.mark.unit


def test_rankdata_averages_ties():
    np.testing.assert_array_equal(metrics.rankdata(np.array([3.0, 1.0, 3.0, 2.0])), [2.5, 0, 2.5, 1])


def test_spearman_known_values():
    x = np.random.RandomState(0).rand(20, 30)
    assert metrics.spearman(x, x) == pytest.approx(1.0)
    assert metrics.spearman(x, 2 * x + 5) == pytest.approx(1.0)          # monotone: same ranking
    assert metrics.spearman(x, 1.0 - x) == pytest.approx(-1.0)           # |1 - x| reverses the ranks
    assert metrics.spearman(x, -x) == pytest.approx(1.0)                 # absolute values are compared
    const = np.full((20, 30), 0.3)
    assert metrics.spearman(const, const) == 1.0 and metrics.spearman(x, const) == 0.0


def test_ssim_known_values():
    x = np.random.RandomState(0).rand(40, 40)
    assert metrics.ssim(x, x) == pytest.approx(1.0)
    assert metrics.ssim(x, 3 * x) == pytest.approx(1.0)                  # each map is scaled by its max
    noise = np.random.RandomState(1).rand(40, 40)
    assert abs(metrics.ssim(x, noise)) < 0.1
    rgb = np.dstack([x, x, x])
    assert metrics.ssim(rgb, x) == pytest.approx(1.0)                    # channels summed, then scaled


def test_auc_of_straight_lines():
    assert metrics.auc([1.0, 0.5, 0.0]) == pytest.approx(0.5)
    assert metrics.auc(np.ones(17)) == pytest.approx(1.0)


def mask_predictor(image, mask):
    """'Probability' = share of the mask's pixels still holding the original value 1."""
    def predict(batch):
        return np.array([(b[..., 0][mask] == 1.0).mean() for b in batch])
    return predict


def test_deletion_and_insertion_with_the_ground_truth_map():
    image = np.ones((32, 32, 1), np.float32)
    mask = np.zeros((32, 32), bool)
    mask[8:24, 8:24] = True                          # a quarter of the pixels
    predict = mask_predictor(image, mask)
    out = metrics.deletion_insertion(image, mask.astype(float), predict, np.zeros_like(image), 0.0, steps=16)
    # deletion removes the mask in the first 4 of 16 steps: 1, .75, .5, .25, 0, 0, ...
    np.testing.assert_allclose(out["deletion"][:6], [1, 0.75, 0.5, 0.25, 0, 0])
    assert out["deletion_auc"] == pytest.approx(0.125)
    assert out["insertion_auc"] == pytest.approx(0.875)


def test_random_and_constant_maps_score_near_one_half():
    image = np.ones((32, 32, 1), np.float32)
    mask = np.zeros((32, 32), bool)
    mask[8:24, 8:24] = True
    predict = mask_predictor(image, mask)
    for saliency in (np.random.RandomState(3).rand(32, 32), np.zeros((32, 32))):
        out = metrics.deletion_insertion(image, saliency, predict, np.zeros_like(image), 0.0, steps=32)
        assert 0.4 < out["deletion_auc"] < 0.6 and 0.4 < out["insertion_auc"] < 0.6


def test_perturbation_batch_changes_pixels_in_order():
    image = np.arange(16, dtype=np.float32).reshape(4, 4, 1)
    saliency = image[..., 0]                          # importance = value: the largest go first
    batch = metrics.perturbation_batch(image, saliency, np.full_like(image, -1.0), steps=4, insert=False)
    assert batch.shape == (5, 4, 4, 1)
    np.testing.assert_array_equal(batch[0], image)
    assert sorted(image[batch[1] == -1].tolist()) == [12, 13, 14, 15]
    assert np.all(batch[4] == -1)


def test_pointing_game_with_a_known_peak():
    saliency = np.zeros((100, 120))
    saliency[40, 50] = 1.0                            # peak at x = 50, y = 40
    assert metrics.peak(saliency) == (50, 40)
    assert metrics.pointing_hit(saliency, [[40, 30, 60, 50]])          # inside
    assert metrics.pointing_hit(saliency, [[60, 30, 80, 50]])          # 10 px left of the box
    assert not metrics.pointing_hit(saliency, [[66, 30, 80, 50]])      # 16 px away
    assert metrics.pointing_hit(saliency, [[60, 49, 80, 70]])          # corner 13.5 px away
    assert not metrics.pointing_hit(saliency, [[62, 52, 80, 70]])      # corner 17.0 px away
    assert metrics.pointing_hit(saliency, [[90, 90, 99, 99], [45, 45, 46, 55]])  # any box counts


@pytest.mark.e2e
@pytest.mark.extended
def test_spearman_and_ssim_agree_with_scipy_and_scikit_image():
    """Reference check against the libraries that define the metrics, in their own venv
    (.venv-reference, `make reference-setup`): Spearman equals scipy's, ties included; the SSIM
    map equals scikit-image's full map up to its window's truncation at 3.5 sigma (ours, OpenCV's,
    at 4 sigma), and so does the mean over the pixels scikit-image averages."""
    import json
    import os
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    python = os.path.join(root, ".venv-reference", "bin", "python")
    if not os.path.isfile(os.path.join(root, ".venv-reference", ".installed")):
        pytest.skip(".venv-reference is absent: `make reference-setup` makes it (`make test-all` does so first)")
    done = subprocess.run([python, os.path.join(root, "tests", "reference_metrics.py")], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
    assert done.returncode == 0, done.stderr
    gaps = json.loads(done.stdout)
    assert gaps["spearman"] < 1e-12, gaps
    assert gaps["ssim_map"] < 5e-3 and gaps["ssim_interior_mean"] < 1e-3, gaps
