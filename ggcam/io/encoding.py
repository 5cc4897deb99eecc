"""Pictures as PNG (own writer: Sub filter, ISA-L's deflate) and JPEG bytes."""
import struct
import zlib

import cv2
import numpy as np

try:
    from isal import isal_zlib as _isal_zlib
except ImportError:  # an environment without the pinned requirements: plain zlib
    _isal_zlib = None

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
    deflate. Measured on this project's pictures (docs/performance.md): OpenCV's encoder, which
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
