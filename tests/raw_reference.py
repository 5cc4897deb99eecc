"""Fingerprints of the raw.npz arrays of the example images, to hold speed work to the same numbers.

``tests/data/raw_reference.json`` keeps, per runtime (tf1, tf2), what the code at the commit it
names computed for each example image and class: every logit, and for every other float
array its shape, the SHA-256 of its bytes, its sum, sum of magnitudes, maximum magnitude and 64
values at fixed positions. ``test_raw_reference.py`` recomputes them and compares: equal bytes,
or every value within 1e-5 of the array's scale (where a change reorders floating-point ops).

Write the current runtime's entry (only from code that is meant to be the reference):

    .venv/bin/python tests/raw_reference.py       # or .venv-tf2/bin/python
"""
import hashlib
import json
import os
import subprocess
import sys
from typing import Dict, List

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(ROOT, "tests", "data", "raw_reference.json")
IMAGES = ("chelsea.png", "coffee.png", "cat_and_coffee.png")
CLASSES = (None, 282)  # the best class, and tabby cat
SAMPLES = 64
# raw.npz's float arrays, and the photo-sized guided gradient the pictures are made from.
ARRAYS = ("logits", "conv_activations", "conv_gradient", "guided_backprop", "cam", "guided_backprop_image")


def _short(values: np.ndarray) -> List[float]:
    """float32 values as the shortest decimals that read back to the same float32."""
    return [float(str(v)) for v in np.asarray(values, np.float32).ravel()]


def fingerprint(a: np.ndarray) -> Dict:
    """A float array's shape, SHA-256, sums and 64 values at fixed positions (JSON-ready)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    flat = a.ravel()
    where = np.random.RandomState(0).randint(0, flat.size, SAMPLES)
    return {"shape": list(a.shape), "sha256": hashlib.sha256(flat.tobytes()).hexdigest(),
            "sum": float(flat.sum(dtype=np.float64)), "abs_sum": float(np.abs(flat).sum(dtype=np.float64)),
            "abs_max": float(np.abs(flat).max()), "samples": _short(flat[where])}


def compute(explainer) -> Dict[str, Dict]:
    """Fingerprints for every example image and class, keyed '<image>:<class or best>'."""
    from ggcam.targets import Target
    out = {}
    for name in IMAGES:
        for cls in CLASSES:
            target = Target.best() if cls is None else Target.of(cls)
            (e,), = explainer.explain_photos([_photo(name)], [[target]])
            arrays = dict(e.raw(), guided_backprop_image=e.guided_backprop_image)
            entry = {"label": int(e.label), "logits": _short(e.logits)}
            entry.update({k: fingerprint(arrays[k]) for k in ARRAYS if k != "logits"})
            out["%s:%s" % (name, "best" if cls is None else cls)] = entry
    return out


def _photo(name: str) -> np.ndarray:
    from ggcam.io import decoding
    return decoding.load_image(os.path.join(ROOT, "images", name))


def entry_of(raw) -> Dict:
    """The fingerprint entry of a raw.npz (its arrays; no guided_backprop_image)."""
    entry = {"label": int(raw["label"]), "logits": _short(raw["logits"])}
    entry.update({k: fingerprint(raw[k]) for k in ARRAYS[1:] if k in raw})
    return entry


def mismatches(reference: Dict, current: Dict) -> List[str]:
    """What of ``current`` (entries, each with any of the arrays) differs from ``reference``
    beyond 1e-5 of each array's scale (logits: of the largest magnitude)."""
    problems = []
    for key, now in current.items():
        ref = reference[key]
        if now["label"] != ref["label"]:
            problems.append("%s: label %d, reference %d" % (key, now["label"], ref["label"]))
        logits, ref_logits = np.array(now["logits"]), np.array(ref["logits"])
        if logits.shape != ref_logits.shape or np.abs(logits - ref_logits).max() > 1e-5 * max(1.0, np.abs(ref_logits).max()):
            problems.append("%s: logits differ" % key)
        for name in [n for n in ARRAYS[1:] if n in now]:  # raw.npz has no guided_backprop_image
            a, b = now[name], ref[name]
            if a["shape"] != b["shape"]:
                problems.append("%s %s: shape %s, reference %s" % (key, name, a["shape"], b["shape"]))
                continue
            if a["sha256"] == b["sha256"]:
                continue
            scale = max(1e-30, b["abs_max"])
            size = float(np.prod(b["shape"]))
            worst = max(np.abs(np.array(a["samples"]) - b["samples"]).max() / scale,
                        abs(a["abs_max"] - b["abs_max"]) / scale,
                        abs(a["sum"] - b["sum"]) / (scale * size), abs(a["abs_sum"] - b["abs_sum"]) / (scale * size))
            if worst > 1e-5:
                problems.append("%s %s: differs by %.2e of its scale" % (key, name, worst))
    return problems


def runtime() -> str:
    from ggcam.tf.compat import VERSION
    return "tf1" if VERSION.startswith("1.") else "tf2"


def main() -> None:
    sys.path.insert(0, ROOT)
    from ggcam.explainer import Explainer
    from ggcam.tf.compat import VERSION
    with Explainer() as ex:
        entries = compute(ex)
    data = {}
    if os.path.exists(REFERENCE):
        with open(REFERENCE) as f:
            data = json.load(f)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, stdout=subprocess.PIPE,
                            universal_newlines=True).stdout.strip()
    data[runtime()] = {"tensorflow": VERSION, "commit": commit, "entries": entries}
    os.makedirs(os.path.dirname(REFERENCE), exist_ok=True)
    with open(REFERENCE, "w") as f:
        json.dump(data, f, sort_keys=True)
    print("wrote %s entry (TensorFlow %s, commit %s) to %s" % (runtime(), VERSION, commit, REFERENCE))


if __name__ == "__main__":
    main()
