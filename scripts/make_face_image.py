"""Write examples/grace_hopper_face.png, the face the README's Keras example explains.

    .venv/bin/python scripts/make_face_image.py    (needs matplotlib, which requirements.txt has)

A crop of matplotlib's bundled sample photo ``grace_hopper.jpg`` (US Navy photograph of
Rear Admiral Grace M. Hopper, public domain).
"""
import os

import matplotlib
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOX = (150, 130, 370, 350)  # left, top, right, bottom: the face, square


def main() -> None:
    path = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    with Image.open(path) as img:
        img.convert("RGB").crop(BOX).save(os.path.join(ROOT, "examples", "grace_hopper_face.png"))


if __name__ == "__main__":
    main()
