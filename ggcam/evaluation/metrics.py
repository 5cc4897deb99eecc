"""Scores for saliency maps, numpy/OpenCV only: rank correlation, SSIM, deletion and
insertion curves (Petsiuk et al., BMVC 2018), the pointing game (Zhang et al., 2016).

Maps are float arrays [H, W] (a 3-channel map is first reduced with ``importance``).
"""
from typing import Callable, Dict, Sequence, Tuple

import cv2
import numpy as np


def importance(saliency: np.ndarray) -> np.ndarray:
    """[H, W] or [H, W, C] map -> [H, W] float64 importance: |x|, summed over channels."""
    a = np.abs(np.asarray(saliency, dtype=np.float64))
    return a.sum(axis=2) if a.ndim == 3 else a


def rankdata(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of a flat array, ties sharing their average rank."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    starts = np.cumsum(counts) - counts
    return (starts + (counts - 1) / 2.0)[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps' absolute values (``importance``), between -1 and 1.

    A constant map has no ranking: two constant maps score 1, one constant map scores 0.
    """
    ra, rb = rankdata(importance(a).ravel()), rankdata(importance(b).ravel())
    sa, sb = ra.std(), rb.std()
    if sa == 0 or sb == 0:
        return 1.0 if sa == sb else 0.0
    return float(np.mean((ra - ra.mean()) * (rb - rb.mean())) / (sa * sb))


def ssim_map(a: np.ndarray, b: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """[H, W] float64 structural similarity (Wang et al., 2004) at every pixel of two maps'
    ``importance``, each divided by its maximum so both lie in [0, 1]; Gaussian window sigma
    1.5, K1 0.01, K2 0.03, borders reflected: scikit-image's ``structural_similarity(...,
    gaussian_weights=True, use_sample_covariance=False, data_range=1, full=True)`` map, up to its
    window's truncation at 3.5 sigma (checked in tests/test_metrics.py)."""
    x, y = (importance(m) for m in (a, b))
    x, y = (m / m.max() if m.max() > 0 else m for m in (x, y))
    c1, c2 = 0.01 ** 2, 0.03 ** 2

    def blur(m):
        return cv2.GaussianBlur(m, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


def ssim(a: np.ndarray, b: np.ndarray, sigma: float = 1.5) -> float:
    """Mean of ``ssim_map`` over every pixel, between -1 and 1. scikit-image averages only the
    pixels a whole window away from the border, which leaves nothing of a 7x7 CAM."""
    return float(ssim_map(a, b, sigma).mean())


def auc(curve: Sequence[float]) -> float:
    """Area under a curve sampled at evenly spaced fractions 0..1 (trapezoid rule)."""
    y = np.asarray(curve, dtype=np.float64)
    return float(((y[1:] + y[:-1]) / 2.0).mean()) if len(y) > 1 else float(y[0])


def perturbation_batch(image: np.ndarray, saliency: np.ndarray, baseline: np.ndarray,
                       steps: int, insert: bool, rng: np.random.RandomState = None) -> np.ndarray:
    """Images [steps + 1, H, W, C] for a deletion (insert=False) or insertion curve.

    Pixels are taken in order of decreasing ``importance(saliency)`` (ties broken at random
    with ``rng``), ``steps`` equal shares at a time. Deletion replaces them in ``image`` by
    ``baseline``; insertion puts them from ``image`` into ``baseline``. Image k has the first
    k/steps of the pixels changed.
    """
    h, w = image.shape[:2]
    score = importance(saliency).ravel()
    rng = rng or np.random.RandomState(0)
    order = np.lexsort((rng.random_sample(score.size), -score))  # by score desc, random ties
    start, end = (baseline, image) if insert else (image, baseline)
    out = np.repeat(start[None].astype(np.float32), steps + 1, axis=0).reshape(steps + 1, h * w, -1)
    flat_end = end.reshape(h * w, -1)
    for k in range(1, steps + 1):
        chosen = order[:int(round(k * h * w / float(steps)))]
        out[k, chosen] = flat_end[chosen]
    return out.reshape((steps + 1,) + image.shape)


def deletion_insertion(image: np.ndarray, saliency: np.ndarray, predict: Callable[[np.ndarray], np.ndarray],
                       blurred: np.ndarray, constant: float, steps: int = 16) -> Dict[str, object]:
    """Deletion (constant baseline) and insertion (blurred baseline) curves and their AUCs.

    image, blurred: [H, W, C]; saliency: [H, W] or [H, W, C]; predict: batch [N, H, W, C] ->
    target-class probabilities [N]. Returns deletion / insertion curves (steps + 1 values)
    and deletion_auc / insertion_auc (lower deletion and higher insertion are better).
    """
    deletion = predict(perturbation_batch(image, saliency, np.full_like(image, constant), steps, False))
    insertion = predict(perturbation_batch(image, saliency, blurred, steps, True))
    return {"deletion": [float(v) for v in deletion], "insertion": [float(v) for v in insertion],
            "deletion_auc": auc(deletion), "insertion_auc": auc(insertion)}


def peak(saliency: np.ndarray) -> Tuple[int, int]:
    """(x, y) of the map's maximum importance (the first one in row order on ties)."""
    score = importance(saliency)
    y, x = np.unravel_index(int(np.argmax(score)), score.shape)
    return int(x), int(y)


def pointing_hit(saliency: np.ndarray, boxes: Sequence[Sequence[float]], tolerance: float = 15.0) -> bool:
    """Whether the map's peak lies within ``tolerance`` pixels of any [x0, y0, x1, y1] box."""
    x, y = peak(saliency)
    for x0, y0, x1, y1 in boxes:
        dx = max(x0 - x, 0.0, x - x1)
        dy = max(y0 - y, 0.0, y - y1)
        if (dx * dx + dy * dy) ** 0.5 <= tolerance:
            return True
    return False
