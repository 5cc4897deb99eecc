"""Grad-CAM, guided backpropagation and their fusion, in numpy/OpenCV only.

Works on arrays from any framework. Conventions:
- ``conv_activations`` and ``conv_gradient``: [h, w, C] feature maps of the explained
  layer and the gradient of the target class score (a logit, not a probability) w.r.t.
  them. A leading batch axis of size 1 is accepted and dropped.
- ``guided_backprop``: [H, W, 3] gradient of the same score w.r.t. the input image;
  its H, W set the size of every picture.
- Pictures are float32 in [0, 1], RGB, [H, W] or [H, W, 3].
"""
import functools
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

FUSIONS = ("paper", "seed")

# What a person reads for each map, in panels, galleries and reports.
TITLES = {"gradcam": "Grad-CAM", "guided_backprop": "Guided Backprop", "guided_gradcam": "Guided Grad-CAM",
          "overlay": "Overlay"}

# Guided gradients are shown around mid-grey: 0.5 + 0.5 * g / s, clipped to [0, 1], where s is
# this percentile of |g|. Zero gradient is grey, as in the paper's figures; a percentile rather
# than the maximum keeps a handful of extreme pixels from washing out the picture.
DISPLAY_PERCENTILE = 99.5


def _drop_batch(a: np.ndarray, rank: int, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    if a.ndim == rank + 1 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != rank:
        raise ValueError("%s must have %d dimensions, got shape %s" % (name, rank, a.shape))
    return a


def compute_cam(conv_activations: np.ndarray, conv_gradient: np.ndarray) -> np.ndarray:
    """Unnormalised Grad-CAM [h, w], float32 >= 0.

    Channel weights are the spatial mean of the gradient; the CAM is the ReLU of the
    weighted sum of the feature maps.
    """
    acts = _drop_batch(conv_activations, 3, "conv_activations")
    grad = _drop_batch(conv_gradient, 3, "conv_gradient")
    if acts.shape != grad.shape:
        raise ValueError("conv_activations %s and conv_gradient %s differ in shape"
                         % (acts.shape, grad.shape))
    weights = grad.mean(axis=(0, 1))
    cam = np.tensordot(acts, weights, axes=([2], [0]))
    return np.maximum(cam, 0.0).astype(np.float32)


def normalize_max(x: np.ndarray) -> np.ndarray:
    """x / max(x) for x >= 0; all zeros (not NaN) when the maximum is not positive."""
    x = np.asarray(x, dtype=np.float32)
    peak = float(x.max()) if x.size else 0.0
    if not np.isfinite(peak) or peak <= 0.0:
        return np.zeros_like(x)
    return x / peak


def normalize_minmax(x: np.ndarray) -> np.ndarray:
    """(x - min) / (max - min) in [0, 1]; all zeros when x is constant."""
    x = np.asarray(x, dtype=np.float32)
    lo, hi = float(x.min()), float(x.max())
    if hi - lo <= 0.0:
        return np.zeros_like(x)
    return (x - lo) / (hi - lo)


def abs_percentile(x: np.ndarray, percentile: float) -> float:
    """``np.percentile(np.abs(x), percentile)`` (linear interpolation), for finite float arrays.

    A high percentile depends only on the few largest magnitudes: a threshold taken from a
    strided sample picks a superset of them in one pass, and only that set is partitioned
    (about 15x faster than np.percentile on a 224x224x3 gradient). The two order statistics
    are exact and numpy interpolates them: the result equals ``np.percentile``'s.
    """
    a = np.abs(np.asarray(x, dtype=np.float32)).ravel()
    n = a.size
    if n == 0:
        return 0.0
    # Rank arithmetic as np.percentile does it for float32 data: in float64 with numpy 1,
    # in float32 with numpy 2 (a Python number no longer widens a float32 operand).
    position = (n - 1) * np.true_divide(percentile, np.float32(100))
    lo = int(np.floor(position))
    hi = min(lo + 1, n - 1)
    weight = position - np.floor(position)
    top = n - lo  # the order statistics lo..n-1 are the `top` largest values
    pool = a
    if 64 * top < n:
        sample = a[::max(1, n // 4096)]
        # A sample rank with ample margin below the wanted one: the threshold then lies,
        # with overwhelming probability, under the lo-th value; checked below, not assumed.
        margin = max(4 * top * sample.size // n, 8)
        k = max(0, sample.size - margin)
        threshold = np.partition(sample, k)[k]
        candidates = a[a >= threshold]
        if candidates.size >= top:
            pool = candidates
    if pool is a:
        part, first = np.partition(a, [lo, hi]), lo
    else:
        first = pool.size - top  # lo's place in pool: every value left out ranks below lo
        part = np.partition(pool, [first, first + hi - lo])
    # numpy interpolates the two values itself, so the result is its own to the last bit.
    return float(np.quantile(part[[first, first + hi - lo]], weight))


def scale_signed(x: np.ndarray, percentile: float = DISPLAY_PERCENTILE) -> np.ndarray:
    """Display scaling of a signed gradient: zero -> 0.5, see ``DISPLAY_PERCENTILE``."""
    x = np.asarray(x, dtype=np.float32)
    scale = abs_percentile(x, percentile) if x.size else 0.0
    if scale <= 0.0:
        scale = float(np.abs(x).max()) if x.size else 0.0
    if scale <= 0.0:
        return np.full_like(x, 0.5)
    return np.clip(0.5 + 0.5 * x / scale, 0.0, 1.0)


def upsample(cam: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a [h, w] map to [height, width]."""
    # OpenCV takes the target size as (width, height).
    return cv2.resize(np.asarray(cam, dtype=np.float32), (int(width), int(height)),
                      interpolation=cv2.INTER_LINEAR)


def cam_image(cam: np.ndarray, height: int, width: int) -> np.ndarray:
    """A [h, w] CAM (``compute_cam``) upsampled to [height, width] and divided by its maximum
    (zeros when the CAM is all zero): the Grad-CAM map."""
    return normalize_max(np.maximum(upsample(cam, height, width), 0.0))


def fuse(guided_backprop: np.ndarray, cam_image: np.ndarray, fusion: str = "paper") -> np.ndarray:
    """Guided Grad-CAM [H, W, 3] from a guided gradient [H, W, 3] and ``cam_image`` [H, W],
    before any display scaling. "paper": their product; "seed": the min-max normalised
    gradient times the CAM."""
    if fusion not in FUSIONS:
        raise ValueError("fusion must be one of %s, got %r" % (", ".join(FUSIONS), fusion))
    gbp = normalize_minmax(guided_backprop) if fusion == "seed" else np.asarray(guided_backprop, np.float32)
    return (gbp * cam_image[..., None]).astype(np.float32)


def gradcam(conv_activations: np.ndarray, conv_gradient: np.ndarray,
            guided_backprop: np.ndarray, fusion: str = "paper"
            ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fuse the arrays of one image into (gradcam, guided_backprop, guided_gradcam).

    Inputs as in the module docstring. Returns float32 pictures in [0, 1]:
    gradcam [H, W] (CAM upsampled, divided by its maximum; zeros when the CAM is all zero),
    guided_backprop [H, W, 3] and guided_gradcam [H, W, 3], both scaled by ``scale_signed``.

    fusion="paper": guided Grad-CAM is the raw guided gradient times the upsampled CAM,
    scaled for display afterwards. fusion="seed": the min-max normalised guided gradient
    times the CAM (the seed's order, which turns zero gradient into a CAM-shaped blur).
    """
    if fusion not in FUSIONS:
        raise ValueError("fusion must be one of %s, got %r" % (", ".join(FUSIONS), fusion))
    gbp = _drop_batch(guided_backprop, 3, "guided_backprop")
    if not np.all(np.isfinite(gbp)):
        raise ValueError("guided_backprop contains NaN or infinite values")
    cam = compute_cam(conv_activations, conv_gradient)
    if not np.all(np.isfinite(cam)):
        raise ValueError("conv_activations or conv_gradient contain NaN or infinite values")
    cam_picture = cam_image(cam, gbp.shape[0], gbp.shape[1])
    fused = fuse(gbp, cam_picture, fusion)
    if fusion == "paper":
        fused = scale_signed(fused)
    return cam_picture, scale_signed(gbp), fused.astype(np.float32)


def to_uint8(picture: np.ndarray) -> np.ndarray:
    """[0, 1] float picture -> uint8 with the same shape."""
    return (np.clip(picture, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


@functools.lru_cache(maxsize=None)
def _colormap_table(colormap: int) -> np.ndarray:
    """OpenCV's colour map as an RGB lookup table, [256, 1, 3] uint8 (read-only)."""
    ramp = np.arange(256, dtype=np.uint8).reshape(256, 1)
    table = cv2.cvtColor(cv2.applyColorMap(ramp, colormap), cv2.COLOR_BGR2RGB)
    table.flags.writeable = False
    return table


def heatmap(cam_image: np.ndarray, colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
    """Colour a [H, W] map in [0, 1] -> RGB uint8 [H, W, 3] (blue low, red high for JET).

    The same pixels as ``cv2.applyColorMap`` then BGR->RGB, through a table made once:
    applyColorMap takes 6.5 ms on a 451x300 map in OpenCV 4.12 (the TF 2 pin) against
    0.2 ms in 4.8; the table lookup takes 0.25 ms on both (benchmarks/profile_job.py).
    """
    grey = to_uint8(cam_image)
    return cv2.LUT(cv2.merge([grey, grey, grey]), _colormap_table(colormap))


def overlay(image: np.ndarray, cam_image: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the heatmap of ``cam_image`` [H, W] over an RGB uint8 photo [H, W, 3] -> uint8."""
    image = np.asarray(image)
    if image.shape[:2] != cam_image.shape[:2]:
        cam_image = upsample(cam_image, image.shape[0], image.shape[1])
    blend = (1.0 - alpha) * image.astype(np.float32) + alpha * heatmap(cam_image).astype(np.float32)
    return np.clip(blend + 0.5, 0, 255).astype(np.uint8)


# Each panel tile's height in pixels (a display size, whatever the model's input size).
PANEL_TILE_HEIGHT = 224
# Wider panels are shrunk to fit: a 10000x40 panorama would otherwise give a 286756 px panel.
MAX_PANEL_WIDTH = 2400


def panel(pictures: Sequence[np.ndarray], captions: Optional[Sequence[str]] = None,
          height: int = PANEL_TILE_HEIGHT, gap: int = 6, caption_height: int = 28,
          max_width: int = MAX_PANEL_WIDTH) -> np.ndarray:
    """Side-by-side RGB uint8 panel of pictures (uint8, or float in [0, 1]; grey or RGB),
    each resized to ``height`` rows keeping its aspect ratio, with a caption under each.

    When the tiles would make the panel wider than ``max_width`` pixels, all tiles are
    scaled down by one factor to fit (each keeps at least one pixel per side).
    """
    pictures = [np.asarray(p) for p in pictures]
    widths = [pic.shape[1] * height / float(pic.shape[0]) for pic in pictures]
    room = max_width - gap * (len(pictures) + 1)
    scale = min(1.0, room / sum(widths)) if room > 0 and sum(widths) > 0 else 1.0
    tile_height = max(1, int(round(height * scale)))
    tiles = []
    for pic, width in zip(pictures, widths):
        if pic.dtype != np.uint8:
            pic = to_uint8(pic)
        if pic.ndim == 2:
            pic = np.repeat(pic[..., None], 3, axis=2)
        size = (max(1, int(width * scale)), tile_height)
        tiles.append(cv2.resize(pic, size, interpolation=cv2.INTER_AREA))
    total = sum(t.shape[1] for t in tiles) + gap * (len(tiles) + 1)
    rows = tile_height + 2 * gap + (caption_height if captions else 0)
    out = np.full((rows, total, 3), 255, np.uint8)
    x = gap
    for i, tile in enumerate(tiles):
        out[gap:gap + tile_height, x:x + tile.shape[1]] = tile
        if captions and i < len(captions):
            _caption(out, captions[i], x, tile.shape[1], gap + tile_height, caption_height)
        x += tile.shape[1] + gap
    return out


def _caption(out: np.ndarray, text: str, x: int, width: int, top: int, height: int) -> None:
    font, scale, thickness = cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1
    # Shrink long captions to fit under their tile.
    while scale > 0.3 and cv2.getTextSize(text, font, scale, thickness)[0][0] > width - 4:
        scale -= 0.05
    (text_w, text_h), _ = cv2.getTextSize(text, font, scale, thickness)
    org = (x + max(0, (width - text_w) // 2), top + (height + text_h) // 2)
    cv2.putText(out, text, org, font, scale, (0, 0, 0), thickness, cv2.LINE_AA)
