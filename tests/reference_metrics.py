"""Run by tests/test_metrics.py under .venv-reference: our Spearman and SSIM next to scipy's and
scikit-image's on the same maps. Prints one JSON object: the largest differences found."""
import json
import os
import sys

import numpy as np
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ggcam.evaluation import metrics  # noqa: E402  (numpy and OpenCV only)


def main() -> None:
    rng = np.random.default_rng(0)
    spearman_gap, ssim_gap, ssim_mean_gap = 0.0, 0.0, 0.0
    for shape in [(7, 7), (14, 14), (56, 56), (224, 224, 3)]:
        for noise in (0.1, 0.7, 3.0):
            a = rng.normal(size=shape)
            b = a + rng.normal(scale=noise, size=shape)
            if shape == (14, 14):
                b = np.round(b, 1)  # ties
            ia, ib = metrics.importance(a), metrics.importance(b)
            ref = spearmanr(ia.ravel(), ib.ravel()).statistic
            spearman_gap = max(spearman_gap, abs(metrics.spearman(a, b) - ref))
            if min(shape[:2]) < 11:  # scikit-image's window (11 px at sigma 1.5) does not fit
                continue
            x, y = ia / ia.max(), ib / ib.max()
            mean, full = structural_similarity(x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                               data_range=1.0, full=True)
            ours = metrics.ssim_map(a, b)
            ssim_gap = max(ssim_gap, float(np.abs(ours - full).max()))
            pad = 5  # scikit-image's mean leaves out (window - 1) / 2 pixels at each border
            ssim_mean_gap = max(ssim_mean_gap, abs(float(ours[pad:-pad, pad:-pad].mean()) - mean))
    print(json.dumps({"spearman": spearman_gap, "ssim_map": ssim_gap, "ssim_interior_mean": ssim_mean_gap}))


if __name__ == "__main__":
    main()
