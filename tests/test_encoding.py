"""The PNG writer (ggcam.encoding.encode_png): what it writes reads back the same everywhere."""
import io

import cv2
import numpy as np
import pytest
from PIL import Image

from ggcam.io import encoding

pytestmark = pytest.mark.unit


@pytest.fixture(params=["isal", "zlib"])
def deflate(request, monkeypatch):
    """Each test runs with ISA-L's deflate (the pinned requirements) and with plain zlib."""
    if request.param == "isal" and encoding._isal_zlib is None:
        pytest.skip("isal is not installed (requirements.txt pins it)")
    if request.param == "zlib":
        monkeypatch.setattr(encoding, "_isal_zlib", None)
    return request.param


@pytest.mark.parametrize("shape", [(224, 224, 3), (300, 451, 3), (1, 1, 3), (7, 1, 3), (1, 9, 3), (37, 53), (1, 1)])
def test_png_reads_back_identically_with_pillow_and_opencv(shape, deflate):
    picture = np.random.RandomState(0).randint(0, 256, shape).astype(np.uint8)
    data = encoding.encode_picture(picture)
    with Image.open(io.BytesIO(data)) as img:
        img.load()  # verifies every chunk's CRC and the zlib stream
        assert img.format == "PNG" and img.mode == ("RGB" if len(shape) == 3 else "L")
        assert np.array_equal(np.asarray(img), picture)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if len(shape) == 3:
        decoded = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    assert np.array_equal(decoded.reshape(shape), picture)


def test_png_of_a_view_is_the_png_of_its_copy():
    base = np.random.RandomState(1).randint(0, 256, (40, 60, 3)).astype(np.uint8)
    view = base[::2, 5:45]  # not contiguous
    assert encoding.encode_picture(view) == encoding.encode_picture(view.copy())


def test_smooth_pictures_compress(deflate):
    ramp = np.tile(np.linspace(0, 255, 224).astype(np.uint8)[None, :, None], (224, 1, 3))
    assert len(encoding.encode_picture(ramp)) < ramp.nbytes / 4  # the Sub filter turns a ramp into runs


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 4), np.uint8),
                                 np.zeros((0, 4, 3), np.uint8), np.zeros(5, np.uint8)])
def test_encode_refuses_what_is_not_a_picture(bad):
    with pytest.raises(ValueError):
        encoding.encode_picture(bad)


def test_jpeg_keeps_rgb_order():
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 255
    with Image.open(io.BytesIO(encoding.encode_picture(red, ".jpg"))) as img:
        r, g, b = np.asarray(img.convert("RGB")).reshape(-1, 3).mean(axis=0)
    assert r > 240 and g < 15 and b < 15
