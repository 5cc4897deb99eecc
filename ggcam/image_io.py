"""Reading photos into RGB arrays and writing pictures and arrays atomically."""
import os
import secrets
import struct
import sys
import tempfile
import warnings
import zlib
from typing import Callable, Dict, Optional

import cv2
import numpy as np
from PIL import Image, ImageOps

try:
    from isal import isal_zlib as _isal_zlib
except ImportError:  # an environment without the pinned requirements: plain zlib
    _isal_zlib = None

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


def _atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Write through a temporary file in the same folder, then rename into place.

    ``write`` must create the file it is given (mode "x"). The temporary name is chosen before
    the file exists, so an exception at any point, Ctrl-C and SIGTERM included, leaves neither
    a temporary file nor a partial ``path``. (Holding the signals back with a thread mask does
    not do that: the kernel hands them to TensorFlow's threads, and Python then raises in the
    main thread mid-write anyway.)
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, ".tmp-%s%s" % (secrets.token_hex(8), os.path.splitext(path)[1]))
    try:
        write(tmp)
        os.replace(tmp, path)
    except FileExistsError:
        raise  # another writer's file by that name (not ours to remove)
    except BaseException as exc:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        # Ctrl-C inside zipfile (np.savez) surfaces as the ValueError its cleanup raises;
        # callers that record a failed file and go on must see the interruption instead.
        cause = exc.__context__
        while cause is not None and not isinstance(exc, KeyboardInterrupt):
            if isinstance(cause, KeyboardInterrupt):
                raise cause
            cause = cause.__context__
        raise


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _deflate(data) -> bytes:
    """zlib-format stream of ``data``: ISA-L at level 1 when installed (requirements*.txt),
    else zlib at level 1 with Huffman coding only (the same files, about 3x slower)."""
    if _isal_zlib is not None:
        return _isal_zlib.compress(data, 1)
    packer = zlib.compressobj(1, zlib.DEFLATED, 15, 8, zlib.Z_HUFFMAN_ONLY)
    return packer.compress(data) + packer.flush()


def encode_png(picture: np.ndarray) -> bytes:
    """RGB [H, W, 3] or grey [H, W] uint8 array -> PNG bytes (8 bits per sample).

    Every row gets PNG's Sub filter (each byte minus the one a pixel to its left), then a fast
    deflate. Measured on this project's pictures (README, "Speed"): OpenCV's encoder, which
    tries filters row by row, takes 2x (zlib) to 6x (ISA-L) as long for files of about the
    same size.
    """
    height, width = picture.shape[:2]
    channels = 1 if picture.ndim == 2 else picture.shape[2]
    rows = picture.reshape(height, width * channels)
    filtered = np.empty((height, width * channels + 1), np.uint8)
    filtered[:, 0] = 1  # the Sub filter
    filtered[:, 1:channels + 1] = rows[:, :channels]
    np.subtract(rows[:, channels:], rows[:, :-channels], out=filtered[:, channels + 1:])  # wraps mod 256
    data = _deflate(filtered.data)
    header = struct.pack(">IIBBBBB", width, height, 8, 2 if channels == 3 else 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


def encode_picture(picture: np.ndarray, ext: str = ".png") -> bytes:
    """RGB (or grey) uint8 array -> PNG or JPEG bytes."""
    picture = np.ascontiguousarray(picture)
    if picture.dtype != np.uint8:
        raise ValueError("pictures must be uint8, got %s" % picture.dtype)
    if picture.ndim not in (2, 3) or (picture.ndim == 3 and picture.shape[2] != 3) or 0 in picture.shape:
        raise ValueError("pictures must be [H, W, 3] or [H, W], got shape %s" % (picture.shape,))
    if ext.lower() not in (".jpg", ".jpeg"):
        return encode_png(picture)
    if picture.ndim == 3:
        picture = cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)  # OpenCV stores BGR; the file is RGB
    ok, data = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise ValueError("could not encode a JPEG picture")
    return data.tobytes()


def save_picture(path: str, picture: np.ndarray) -> None:
    """Write an RGB (or grey) uint8 array atomically; the format follows the extension."""
    atomic_write_bytes(path, encode_picture(picture, os.path.splitext(path)[1]))


def atomic_write_text(path: str, text: str) -> None:
    """Write a UTF-8 text file atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(text)
    _atomic_write(path, write)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write a binary file atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "xb") as f:
            f.write(data)
    _atomic_write(path, write)


def save_arrays(path: str, arrays: Dict[str, np.ndarray]) -> None:
    """Write a .npz atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "xb") as f:
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
        with tempfile.TemporaryFile(dir=folder):  # unnamed where the OS allows: nothing left behind
            pass
    except OSError as exc:
        raise OSError("output folder not writable: %s (%s)" % (folder, exc.strerror or exc))


LOCK_FILE = ".gradcam.lock"


class FolderLocked(OSError):
    """Another process holds the output folder; one line for the user."""


class FolderLock:
    """An exclusive lock on an output folder, held for the lifetime of one run.

    ``fcntl.flock`` on ``<folder>/.gradcam.lock``, which holds the holder's pid: the kernel
    releases the lock when the holder dies, so a crashed run never blocks the next one. The
    file is removed on release.
    """

    def __init__(self, folder: str):
        self.path = os.path.join(folder, LOCK_FILE)
        self._fd = None  # type: Optional[int]

    def acquire(self) -> "FolderLock":
        import fcntl
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise FolderLocked("output folder %s is in use by another run (pid %s; lock file %s)"
                                   % (os.path.dirname(self.path) or ".", holder, self.path))
            # The holder may have removed the file between our open and our lock: lock anew.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode("ascii"))
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.remove(self.path)
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
