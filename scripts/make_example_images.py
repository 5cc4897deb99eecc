"""Write the example photos in images/ from photos bundled with scikit-image.

    python scripts/make_example_images.py    (needs scikit-image; any Python 3)

chelsea.png and coffee.png are scikit-image's ``data.chelsea()`` and ``data.coffee()``
(public domain / CC0, see skimage/data/README.txt); cat_and_coffee.png puts the two
side by side at the same height, for class-targeted explanations.
"""
import os

import numpy as np
from PIL import Image
from skimage import data

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "images")


def main() -> None:
    cat, coffee = data.chelsea(), data.coffee()
    Image.fromarray(cat).save(os.path.join(OUT, "chelsea.png"))
    Image.fromarray(coffee).save(os.path.join(OUT, "coffee.png"))
    height = 300
    tiles = []
    for photo in (cat, coffee):
        width = int(round(photo.shape[1] * height / photo.shape[0]))
        tiles.append(np.asarray(Image.fromarray(photo).resize((width, height), Image.LANCZOS)))
    Image.fromarray(np.concatenate(tiles, axis=1)).save(os.path.join(OUT, "cat_and_coffee.png"))


if __name__ == "__main__":
    main()
