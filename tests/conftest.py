import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared"))
SEED_IMAGES = os.path.join(SHARED, "seed", "images")


@pytest.fixture(scope="session")
def seed_images() -> str:
    """The seed's example images, from ../shared (skips when it is absent)."""
    if not os.path.isdir(SEED_IMAGES):
        pytest.skip("../shared/seed/images is absent (the seed's demo image lives there)")
    return SEED_IMAGES


@pytest.fixture(scope="session")
def graph():
    """One graph with the real checkpoint and the default (exact) guided rule."""
    import explainer
    with explainer.GuidedGradCamGraph() as g:
        yield g
