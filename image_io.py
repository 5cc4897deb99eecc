"""Reading photos into RGB arrays and writing pictures and arrays atomically."""
import os
import tempfile
from typing import Callable, Dict

import numpy as np
from PIL import Image, ImageOps

# Pictures are computed at the photo's resolution, capped on the longer side to keep
# memory bounded (the input gradient is a float32 array of the photo's size).
DEFAULT_MAX_SIDE = 2048

_UMASK = os.umask(0)
os.umask(_UMASK)


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


def load_image(path: str, max_side: int = DEFAULT_MAX_SIDE) -> np.ndarray:
    """Read a photo as RGB uint8 [H, W, 3].

    Greyscale, palette, RGBA (composited over white) and 16-bit images are converted;
    EXIF orientation is applied; a photo longer than ``max_side`` pixels is shrunk
    (area interpolation) to that size. Raises ImageError with a one-line reason.
    """
    if not os.path.exists(path):
        raise ImageError("image not found: %s" % path)
    if os.path.isdir(path):
        raise ImageError("image path is a folder: %s" % path)
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            rgb = _to_uint8_rgb(img)
    except Image.DecompressionBombError as exc:
        raise ImageError("image too large to decode safely: %s (%s)" % (path, exc))
    except Image.UnidentifiedImageError:
        raise ImageError("not an image file (or an unsupported format): %s" % path)
    except PermissionError:
        raise ImageError("image not readable (permission denied): %s" % path)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError("corrupt or truncated image: %s (%s)" % (path, exc))
    if rgb.ndim != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ImageError("image has no pixels: %s" % path)
    longest = max(rgb.shape[:2])
    if max_side and longest > max_side:
        scale = max_side / float(longest)
        size = (max(1, int(round(rgb.shape[1] * scale))), max(1, int(round(rgb.shape[0] * scale))))
        rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.BOX))
    return np.ascontiguousarray(rgb)


def _atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Write through a temporary file in the same folder, then rename into place."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=folder)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_picture(path: str, picture: np.ndarray) -> None:
    """Write an RGB (or grey) uint8 array atomically; the format follows the extension."""
    picture = np.asarray(picture)
    if picture.dtype != np.uint8:
        raise ValueError("save_picture expects uint8, got %s" % picture.dtype)
    fmt = "JPEG" if path.lower().endswith((".jpg", ".jpeg")) else "PNG"
    _atomic_write(path, lambda tmp: Image.fromarray(picture).save(tmp, format=fmt))


def save_arrays(path: str, arrays: Dict[str, np.ndarray]) -> None:
    """Write a .npz atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    _atomic_write(path, write)


def check_writable(folder: str) -> None:
    """Fail early if ``folder`` could not be created or written, without creating it."""
    path = os.path.abspath(folder)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path) or not os.access(path, os.W_OK | os.X_OK):
        raise OSError("output folder not writable: %s (%s is not a writable folder)" % (folder, path))


def ensure_writable_dir(folder: str) -> None:
    """Create ``folder`` if needed and check that files can be created in it."""
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=folder)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise OSError("output folder not writable: %s (%s)" % (folder, exc.strerror or exc))
