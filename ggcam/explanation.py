"""One explained (image, target) pair: its arrays, its pictures and how to save them.

numpy, OpenCV and Pillow only, like ``ggcam.core.gradcam``. The pictures are the maps of the
chosen methods (``ggcam.methods``; default the paper's three), the first CAM method's map laid
over the photo, and a panel of them all.
"""
import io
import os
import zlib
from typing import BinaryIO, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from ggcam import methods as methods_mod
from ggcam import outputs as out
from ggcam.core import gradcam as gc
from ggcam.io import encoding, safe_files
from ggcam import targets
from ggcam.methods.base import Method
from ggcam.targets import Target

INPUT_FILE = "input.jpg"
RAW_FILE = "raw.npz"
OVERLAY, PANEL = "overlay", "panel"


def overlay_name(cam: Method, first: bool) -> str:
    """The overlay picture of a CAM method: 'overlay' for the first one, 'overlay_<name>' after."""
    return OVERLAY if first else "%s_%s" % (OVERLAY, cam.name)


def picture_names(methods: Sequence[Union[str, Method]] = methods_mod.DEFAULT) -> Tuple[str, ...]:
    """The pictures of an explanation by ``methods``: one per method, each CAM method's overlay
    (``overlay_name``), the panel. Each is written as <name>.png."""
    chosen = methods_mod.resolve(methods)
    cams = [m for m in chosen if m.cam]
    return tuple([m.name for m in chosen] + [overlay_name(m, i == 0) for i, m in enumerate(cams)] + [PANEL])


PICTURES = picture_names()  # the default methods' pictures
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
    """The explanation of one photo for one target.

    ``arrays``: the example's graph outputs by name (``ggcam.outputs``; float32 unless noted):
    ``logits`` [K] (K classes), ``label`` (int, the explained class), ``conv_activations`` and
    ``conv_gradient`` [h, w, C] (the Grad-CAM layer's feature maps and the unguided gradient of
    the class logit w.r.t. them), ``guided_backprop`` [H_in, W_in, 3] (guided gradient w.r.t.
    the model-sized RGB image in [0, 1]) and its photo-sized ``guided_backprop_image``
    [H, W, 3] (w.r.t. the photo in [0, 1]), and whatever else the methods read. ``photo``:
    uint8 RGB [H, W, 3], as fed. ``methods``: the methods whose maps are the pictures (names or
    ``Method`` objects; default ``ggcam.methods.DEFAULT``; ``fusion`` for their guided ones).
    ``requested`` is the target asked for; ``model`` and ``layer`` name what was explained;
    ``output_function`` ("softmax", "sigmoid" or "none", as the model has it) what its
    probabilities are; ``preprocessing`` and ``feeds`` (JSON: placeholder -> the value fed)
    what the network was fed. Each array is also an attribute (``e.conv_activations``).
    """

    def __init__(self, photo: np.ndarray, names: List[str], arrays: Mapping[str, np.ndarray],
                 requested: Optional[Target] = None, source: Optional[str] = None,
                 methods: Sequence[Union[str, Method]] = methods_mod.DEFAULT, fusion: str = "paper",
                 model: str = "", layer: str = "", output_function: str = "softmax", preprocessing: str = "",
                 feeds: str = "{}"):
        self.photo, self.names, self.source, self.fusion = photo, names, source, fusion
        self.model, self.layer, self.output_function = model, layer, output_function
        self.preprocessing, self.feeds = preprocessing, feeds
        self.methods = methods_mod.resolve(methods, fusion)
        self.arrays = {k: np.asarray(v, np.int64 if k == out.LABEL else np.float32) for k, v in arrays.items()}
        missing = [n for n in methods_mod.needs(self.methods) if n not in self.arrays]
        if missing:
            raise ValueError("the methods %s need %s" % (", ".join(m.name for m in self.methods), ", ".join(missing)))
        self.logits = self.arrays[out.LOGITS]
        self.label = int(self.arrays[out.LABEL])
        self.requested = requested if requested is not None else Target.best()
        self.picture_names = picture_names(self.methods)
        self._maps = None  # type: Optional[Dict[str, np.ndarray]]
        self._pictures = {}  # type: Dict[str, np.ndarray]

    def __getattr__(self, name: str):  # e.conv_activations, e.guided_backprop_image, e.cam, ...
        arrays = self.__dict__.get("arrays", {})
        if name in arrays:
            return arrays[name]
        if name == "cam" and out.ACTIVATIONS in arrays and out.LAYER_GRADIENT in arrays:
            return gc.compute_cam(arrays[out.ACTIVATIONS], arrays[out.LAYER_GRADIENT])
        raise AttributeError("%r has no attribute or array %r" % (type(self).__name__, name))

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
        """The public raw.npz arrays: the logits and label, the model-sized graph outputs the
        methods read, the methods' own arrays (Grad-CAM's ``cam`` [h, w]) and what was explained."""
        model_sized = {k: v for k, v in self.arrays.items() if k not in out.PHOTO.values()}
        data = {out.LOGITS: self.logits, out.LABEL: np.asarray(self.label)}
        data.update((n, model_sized[n]) for n in methods_mod.needs(self.methods))
        data.update((k, v) for k, v in model_sized.items() if k not in out.ALL)  # the methods' graph work
        for m in self.methods:
            data.update(m.raw(model_sized))
        data.update(model=np.asarray(self.model), layer=np.asarray(self.layer),
                    preprocessing=np.asarray(self.preprocessing), feeds=np.asarray(self.feeds),
                    output_function=np.asarray(self.output_function))
        return data

    def maps(self) -> Dict[str, np.ndarray]:
        """Each method's map at the photo's size, before display scaling (``Method.compute``),
        computed once. ValueError when the network gave NaN or infinite values."""
        if self._maps is None:
            for name, value in self.arrays.items():
                if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
                    raise ValueError("the network produced NaN or infinite values (%s)" % name)
            photo_sized = methods_mod.example({k: [v] for k, v in self.arrays.items()}, 0, photo_size=True)
            self._maps = methods_mod.maps(self.methods, photo_sized, self.photo.shape[:2])
        return self._maps

    def map(self, name: str) -> np.ndarray:
        """Method ``name``'s map at the photo's size, before display scaling."""
        found = self.maps()
        if name not in found:
            raise KeyError("no method %r in this explanation (it has %s)" % (name, ", ".join(found)))
        return found[name]

    def input_maps(self, size: Tuple[int, int]) -> Dict[str, np.ndarray]:
        """Each method's map at the model's input ``size`` (h_in, w_in), from the model-sized
        gradients, as the faithfulness measures use them (``ggcam.evaluation``)."""
        model_sized = methods_mod.example({k: [v] for k, v in self.arrays.items()}, 0, photo_size=False)
        return methods_mod.maps(self.methods, model_sized, size)

    def picture(self, name: str) -> np.ndarray:
        """One uint8 RGB picture at the photo's size (a name from ``picture_names``), computed once."""
        if name not in self._pictures:
            by_name = {m.name: m for m in self.methods}
            overlays = {overlay_name(m, i == 0): m for i, m in enumerate(m for m in self.methods if m.cam)}
            if name in by_name:
                pic = by_name[name].display(self.maps()[name])
            elif name in overlays:
                pic = gc.overlay(self.photo, self.maps()[overlays[name].name])
            elif name == PANEL:  # each method, and the first CAM's overlay
                shown = [m.name for m in self.methods] + [OVERLAY] * (OVERLAY in overlays)
                pic = gc.panel([self.photo] + [self.picture(n) for n in shown],
                               [self.caption] + [by_name[n].title if n in by_name else gc.TITLES[n] for n in shown])
            else:
                raise KeyError("no picture named %r (one of %s)" % (name, ", ".join(self.picture_names)))
            self._pictures[name] = pic
        return self._pictures[name]

    def pictures(self) -> Dict[str, np.ndarray]:
        """All uint8 RGB pictures at the photo's size, keyed by ``picture_names``."""
        return {name: self.picture(name) for name in self.picture_names}

    def overlay(self, method: Optional[str] = None) -> Image.Image:
        """A CAM method's heatmap over the photo (default the first CAM method's), as a PIL image."""
        if method is None:
            return Image.fromarray(self.picture(OVERLAY))
        cams = [m.name for m in self.methods if m.cam]
        if method not in cams:
            raise KeyError("no CAM method %r in this explanation (its CAM methods: %s)"
                           % (method, ", ".join(cams) or "none"))
        return Image.fromarray(self.picture(overlay_name(self.methods[[m.name for m in self.methods].index(method)],
                                                         cams.index(method) == 0)))

    def panel(self) -> Image.Image:
        """The photo, each method's picture and the overlay side by side."""
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
        data += [(name + ".png", encoding.encode_picture(pictures[name])) for name in self.picture_names]
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


def expected_files(save_raw: bool = False, methods: Sequence[Union[str, Method]] = methods_mod.DEFAULT
                   ) -> Tuple[str, ...]:
    """The files one explanation by ``methods`` writes."""
    return (INPUT_FILE,) + tuple(n + ".png" for n in picture_names(methods)) + ((RAW_FILE,) if save_raw else ())


def is_complete(folder: str, record: Optional[Dict[str, Dict[str, int]]], save_raw: bool = False,
                open_file: Optional[Callable[[str], BinaryIO]] = None,
                methods: Sequence[Union[str, Method]] = methods_mod.DEFAULT) -> bool:
    """Whether ``folder`` holds every file of an explanation, each with the size and checksum
    in ``record`` (from ``Explanation.save_files``) and every file ``methods`` make: a zero-byte, truncated or altered file,
    or a missing record, makes it incomplete. ``open_file(path)`` opens a file for reading
    (default: the local ``open``; the Beam pipeline passes its file systems' opener)."""
    if not isinstance(record, dict) or not set(expected_files(save_raw, methods)) <= set(record):
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
