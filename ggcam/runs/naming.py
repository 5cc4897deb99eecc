"""How runs name their inputs and outputs: which files are images, and a folder per image."""
import hashlib
import os
from typing import Dict, Sequence

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                    ".ppm", ".pgm", ".pbm", ".pnm")
GLOB_CHARS = "*?["


def short_hash(path: str) -> str:
    return hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:8]


def folder_names(paths: Sequence[str]) -> Dict[str, str]:
    """A folder-name stem per path: the file name, made unique with a hash where needed."""
    stems = {p: os.path.splitext(os.path.basename(p))[0] or "image" for p in paths}
    counts = {}  # type: Dict[str, int]
    for p in set(paths):
        counts[stems[p]] = counts.get(stems[p], 0) + 1
    return {p: s if counts[s] == 1 else "%s-%s" % (s, short_hash(p)) for p, s in stems.items()}
