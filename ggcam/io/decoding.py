"""Reading photos into RGB uint8 arrays: any file Pillow reads, bounded in size."""
import os
import sys
import warnings

import numpy as np
from PIL import Image, ImageOps

# Pictures are computed at the photo's resolution, capped on the longer side to keep
# memory bounded (the input gradient is a float32 array of the photo's size).
DEFAULT_MAX_SIDE = 2048


class ImageError(Exception):
    """The input image cannot be used; the message is one line for the user."""


def _to_uint8_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit (or 32-bit) greyscale: scale by the range of the stored bit depth, not clip.
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        if img.mode == "F":
            peak = max(float(arr.max()), 1e-12) if arr.max() > 1.0 else 1.0
        grey = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Transparent pixels are shown over white, as on a page.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(img.convert("RGB"))


def _shrink(rgb: np.ndarray, max_side: int) -> np.ndarray:
    longest = max(rgb.shape[:2])
    if max_side and longest > max_side:
        scale = max_side / float(longest)
        size = (max(1, int(round(rgb.shape[1] * scale))), max(1, int(round(rgb.shape[0] * scale))))
        rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.BOX))
    return np.ascontiguousarray(rgb)


def pil_to_rgb(img: Image.Image, max_side: int = DEFAULT_MAX_SIDE) -> np.ndarray:
    """A PIL image of any mode -> RGB uint8 [H, W, 3], shrunk to ``max_side`` (see load_image)."""
    rgb = _to_uint8_rgb(ImageOps.exif_transpose(_reduce(img, max_side)))
    if rgb.ndim != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ImageError("image has no pixels")
    return _shrink(rgb, max_side)


def array_to_rgb(array: np.ndarray, max_side: int = DEFAULT_MAX_SIDE) -> np.ndarray:
    """uint8 / uint16 / float ([0, 1]) array, [H, W], [H, W, 1], [H, W, 3] or [H, W, 4]
    (alpha over white) -> RGB uint8 [H, W, 3]."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)) or 0 in a.shape:
        raise ImageError("an image array must be [H, W], [H, W, 3] or [H, W, 4], got %s" % (a.shape,))
    if a.dtype == np.uint8:
        f = a.astype(np.float32) / 255.0
    elif a.dtype == np.uint16:
        f = a.astype(np.float32) / 65535.0
    elif np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)) or a.min() < 0.0 or a.max() > 1.0:
            raise ImageError("a float image array must hold finite values in [0, 1]")
        f = a.astype(np.float32)
    else:
        raise ImageError("unsupported image array type %s (use uint8, uint16 or float)" % a.dtype)
    if f.ndim == 2:
        f = np.repeat(f[..., None], 3, axis=2)
    elif f.shape[2] == 4:
        alpha = f[..., 3:]
        f = f[..., :3] * alpha + (1.0 - alpha)
    return _shrink((f * 255.0 + 0.5).astype(np.uint8), max_side)


# Pillow warns from this many pixels on (DecompressionBombWarning); we say it in one line.
_LARGE_PIXELS = Image.MAX_IMAGE_PIXELS or 89478485


def _notice_large(path: str, size, max_side: int) -> None:
    if size[0] * size[1] > _LARGE_PIXELS:
        print("note: %s is %dx%d pixels; it is shrunk to %d px on the longer side while decoding"
              % (path, size[0], size[1], max_side), file=sys.stderr)


def _reduce(img: Image.Image, max_side: int) -> Image.Image:
    """Shrink a decoded image by an integer factor (box average) that keeps it at least
    ``max_side`` long, before any conversion copies it: a 12000x9000 PNG then needs one
    full-size buffer instead of several."""
    factor = max(img.size) // max_side if max_side else 0
    if factor < 2:
        return img
    try:
        return img.reduce(factor)
    except (ValueError, NotImplementedError):  # modes reduce() does not take (e.g. palette)
        return img


def load_image(path: str, max_side: int = DEFAULT_MAX_SIDE) -> np.ndarray:
    """Read a photo as RGB uint8 [H, W, 3].

    Greyscale, palette, RGBA (composited over white) and 16-bit images are converted;
    EXIF orientation is applied; a photo longer than ``max_side`` pixels is shrunk
    (area interpolation) to that size. Raises ImageError with a one-line reason.
    """
    if not os.path.exists(path):
        if os.path.islink(path):
            raise ImageError("image is a symlink pointing to itself, into a loop or nowhere: %s" % path)
        raise ImageError("image not found: %s" % path)
    if os.path.isdir(path):
        raise ImageError("image path is a folder: %s" % path)
    try:
        with warnings.catch_warnings():
            # Large photos are expected; PIL's hard limit (DecompressionBombError) still holds.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if max_side and max(img.size) > max_side:
                    _notice_large(path, img.size, max_side)
                    img.draft(None, (max_side, max_side))  # JPEG: decode at a reduced scale
                img.load()
                return pil_to_rgb(img, max_side)
    except Image.DecompressionBombError as exc:
        raise ImageError("image too large to decode safely: %s (%s)" % (path, exc))
    except Image.UnidentifiedImageError:
        raise ImageError("not an image file (or an unsupported format): %s" % path)
    except PermissionError:
        raise ImageError("image not readable (permission denied): %s" % path)
    except ImageError as exc:
        raise ImageError("%s: %s" % (exc, path))
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError("corrupt or truncated image: %s (%s)" % (path, exc))
