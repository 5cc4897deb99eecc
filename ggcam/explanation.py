"""One explained (image, class) pair: its arrays, its pictures and how to save them.

numpy, OpenCV and Pillow only, like ``ggcam.core.gradcam``.
"""
import io
import os
import zlib
from typing import BinaryIO, Callable, Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from ggcam.core import gradcam as gc
from ggcam.io import encoding, safe_files
from ggcam import targets
from ggcam.targets import Target

PICTURES = ("gradcam", "guided_backprop", "guided_gradcam", "overlay", "panel")
INPUT_FILE = "input.jpg"
RAW_FILE = "raw.npz"
OUTPUT_FILES = tuple([INPUT_FILE] + [name + ".png" for name in PICTURES])


# How a model turns its logits into scores (``Model.output_function``).
OUTPUT_FUNCTIONS = ("softmax", "sigmoid", "none")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities from logits along the last axis: [K] -> [K], [N, K] -> [N, K]."""
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def scores(logits: np.ndarray, output_function: str) -> np.ndarray:
    """The model's own scores from its logits [..., K]: softmax probabilities (summing to 1),
    sigmoid probabilities (each class on its own, in [0, 1]), or the logits themselves for a
    model with no output function ("none")."""
    logits = np.asarray(logits, np.float64)
    if output_function == "softmax":
        return softmax(logits)
    if output_function == "sigmoid":
        return 1.0 / (1.0 + np.exp(-logits))
    if output_function == "none":
        return logits
    raise ValueError("output_function must be one of %s, got %r" % (", ".join(OUTPUT_FUNCTIONS), output_function))


def probabilities(logits: np.ndarray, output_function: str) -> Optional[np.ndarray]:
    """``scores`` when they are probabilities; None for a raw score ("none")."""
    return None if output_function == "none" else scores(logits, output_function)


class Explanation:
    """Guided Grad-CAM of one photo for one class.

    Arrays (float32 unless noted), named as in raw.npz: ``logits`` [K] (K classes),
    ``label`` (int, the explained class), ``conv_activations`` and ``conv_gradient``
    [h, w, C] (the Grad-CAM layer's feature maps and the unguided gradient of the class logit
    w.r.t. them), ``guided_backprop`` [H_in, W_in, 3] (guided gradient w.r.t. the model-sized
    RGB image in [0, 1]), ``cam`` [h, w]; plus ``photo`` (uint8 RGB [H, W, 3], as fed) and
    ``guided_backprop_image`` [H, W, 3] (w.r.t. the photo in [0, 1]). ``requested`` is the
    Target asked for; ``model`` and ``layer`` name what was explained; ``output_function``
    ("softmax", "sigmoid" or "none", as the model has it) what its probabilities are;
    ``preprocessing`` and ``feeds`` (JSON: placeholder -> the value fed) what the network was fed.
    """

    def __init__(self, photo: np.ndarray, names: List[str], logits: np.ndarray, label: int,
                 conv_activations: np.ndarray, conv_gradient: np.ndarray,
                 guided_backprop: np.ndarray, guided_backprop_image: np.ndarray,
                 requested: Optional[Target] = None, source: Optional[str] = None, fusion: str = "paper",
                 model: str = "", layer: str = "", output_function: str = "softmax", preprocessing: str = "",
                 feeds: str = "{}"):
        self.photo, self.names, self.source, self.fusion = photo, names, source, fusion
        self.model, self.layer, self.output_function = model, layer, output_function
        self.preprocessing, self.feeds = preprocessing, feeds
        self.logits = np.asarray(logits, np.float32)
        self.label = int(label)
        self.requested = requested if requested is not None else Target.best()
        self.conv_activations = np.asarray(conv_activations, np.float32)
        self.conv_gradient = np.asarray(conv_gradient, np.float32)
        self.guided_backprop = np.asarray(guided_backprop, np.float32)
        self.guided_backprop_image = np.asarray(guided_backprop_image, np.float32)
        self.cam = gc.compute_cam(self.conv_activations, self.conv_gradient)
        self._fusion = None  # type: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]
        self._pictures = {}  # type: Dict[str, np.ndarray]

    @property
    def name(self) -> str:
        """Name of the explained class."""
        return self.names[self.label]

    @property
    def probability(self) -> Optional[float]:
        """The model's probability of the explained class (its softmax or sigmoid), or None
        when the model has no output function."""
        probs = probabilities(self.logits, self.output_function)
        return None if probs is None else float(probs[self.label])

    def top(self, k: int = 5) -> List[Tuple[int, str, float, Optional[float]]]:
        """The k best classes: (index, name, logit, probability or None)."""
        probs = probabilities(self.logits, self.output_function)
        return [(int(i), self.names[i], float(self.logits[i]), None if probs is None else float(probs[i]))
                for i in np.argsort(-self.logits)[:k]]

    @property
    def caption(self) -> str:
        """The photo's caption in the panel, e.g. 'Predicted: Egyptian cat' or 'Rank 2: tabby'."""
        return targets.caption(self.requested, self.name)

    def raw(self) -> Dict[str, np.ndarray]:
        """The public raw.npz arrays (see the class docstring)."""
        return {
            "logits": self.logits,
            "label": np.asarray(self.label),
            "conv_activations": self.conv_activations,
            "conv_gradient": self.conv_gradient,
            "guided_backprop": self.guided_backprop,
            "cam": self.cam,
            "model": np.asarray(self.model),
            "layer": np.asarray(self.layer),
            "preprocessing": np.asarray(self.preprocessing),
            "feeds": np.asarray(self.feeds),
            "output_function": np.asarray(self.output_function),
        }

    def _fused(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """gradcam()'s three float pictures, computed once."""
        if self._fusion is None:
            for name, value in self.raw().items():
                if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
                    raise ValueError("the network produced NaN or infinite values (%s)" % name)
            self._fusion = gc.gradcam(self.conv_activations, self.conv_gradient,
                                      self.guided_backprop_image, fusion=self.fusion)
        return self._fusion

    def picture(self, name: str) -> np.ndarray:
        """One uint8 RGB picture at the photo's size (a name from ``PICTURES``), computed once."""
        if name not in self._pictures:
            cam, gbp, ggc = self._fused()
            if name == "gradcam":
                pic = gc.heatmap(cam)
            elif name == "guided_backprop":
                pic = gc.to_uint8(gbp)
            elif name == "guided_gradcam":
                pic = gc.to_uint8(ggc)
            elif name == "overlay":
                pic = gc.overlay(self.photo, cam)
            elif name == "panel":
                pic = gc.panel([self.photo] + [self.picture(n) for n in PICTURES[:4]],
                               [self.caption] + [gc.TITLES[n] for n in PICTURES[:4]])
            else:
                raise KeyError("no picture named %r (one of %s)" % (name, ", ".join(PICTURES)))
            self._pictures[name] = pic
        return self._pictures[name]

    def pictures(self) -> Dict[str, np.ndarray]:
        """All uint8 RGB pictures at the photo's size, keyed by ``PICTURES``."""
        return {name: self.picture(name) for name in PICTURES}

    def overlay(self) -> Image.Image:
        """Grad-CAM heatmap over the photo, as a PIL image."""
        return Image.fromarray(self.picture("overlay"))

    def panel(self) -> Image.Image:
        """Photo, Grad-CAM, guided backprop, Guided Grad-CAM and overlay side by side."""
        return Image.fromarray(self.picture("panel"))

    def _repr_png_(self) -> bytes:  # Jupyter shows the panel
        buffer = io.BytesIO()
        self.panel().save(buffer, format="PNG")
        return buffer.getvalue()

    def __repr__(self) -> str:
        p = self.probability
        return "<Explanation %s: class %d (%s), %s>" % (
            self.source or "array", self.label, self.name,
            "p=%.3f" % p if p is not None else "logit=%.3f" % self.logits[self.label])

    def save(self, folder: str, save_raw: bool = False) -> List[str]:
        """Write input.jpg, the pictures (and raw.npz) into ``folder``, each file atomically.

        All pictures are computed before the first file is written. Returns the paths.
        """
        return [os.path.join(folder, name) for name in self.save_files(folder, save_raw)]

    def encoded_files(self, save_raw: bool = False) -> List[Tuple[str, bytes]]:
        """(file name, bytes) of every file ``save_files`` writes, all computed up front."""
        pictures = self.pictures()
        data = [(INPUT_FILE, encoding.encode_picture(self.photo, ".jpg"))]
        data += [(name + ".png", encoding.encode_picture(pictures[name])) for name in PICTURES]
        if save_raw:
            buffer = io.BytesIO()
            np.savez(buffer, **self.raw())
            data.append((RAW_FILE, buffer.getvalue()))
        return data

    def save_files(self, folder: str, save_raw: bool = False) -> Dict[str, Dict[str, int]]:
        """Like ``save``; returns each written file's name -> {"bytes": size, "crc32": checksum},
        the record ``is_complete`` checks a folder against."""
        data = self.encoded_files(save_raw)
        os.makedirs(folder, exist_ok=True)
        record = {}
        for name, blob in data:
            safe_files.atomic_write_bytes(os.path.join(folder, name), blob)
            record[name] = file_record(blob)
        return record


def file_record(data: bytes) -> Dict[str, int]:
    """Size and CRC-32 of a file's bytes."""
    return {"bytes": len(data), "crc32": zlib.crc32(data) & 0xFFFFFFFF}


def expected_files(save_raw: bool = False) -> Tuple[str, ...]:
    """The files one explanation writes."""
    return OUTPUT_FILES + ((RAW_FILE,) if save_raw else ())


def is_complete(folder: str, record: Optional[Dict[str, Dict[str, int]]], save_raw: bool = False,
                open_file: Optional[Callable[[str], BinaryIO]] = None) -> bool:
    """Whether ``folder`` holds every file of an explanation, each with the size and checksum
    in ``record`` (from ``Explanation.save_files``): a zero-byte, truncated or altered file,
    or a missing record, makes it incomplete. ``open_file(path)`` opens a file for reading
    (default: the local ``open``; the Beam pipeline passes its file systems' opener)."""
    if not isinstance(record, dict) or not set(expected_files(save_raw)) <= set(record):
        return False
    for name, expected in record.items():
        try:
            path = os.path.join(folder, name)
            with (open_file(path) if open_file else open(path, "rb")) as f:
                if file_record(f.read()) != expected:
                    return False
        except OSError:
            return False
    return True
