import contextlib
import importlib.abc
import io
import os
import shutil
import sys
from typing import Callable, List, Optional

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared"))
SEED_IMAGES = os.path.join(SHARED, "seed", "images")
# Set it to a folder to keep pictures the tests make for a person to look at (the gallery's
# screenshot); without it they stay in pytest's temporary folders.
ARTIFACTS_ENV = "GRADCAM_TEST_ARTIFACTS"


# The tiers (README, Tests): each test is marked unit, graph or e2e, by its module's
# `pytestmark` or on itself (the closest marker wins); `--tier=unit,graph,smoke` picks tiers,
# smoke being the few e2e tests `make test` runs too. A unit-tier run refuses TensorFlow imports.
TIERS = ("unit", "graph", "e2e")
PICKABLE = TIERS + ("smoke",)
NOT_IN_UNIT = ("tensorflow", "tf_slim", "keras", "tf_keras")


def pytest_addoption(parser):
    parser.addoption("--tier", default="", help="comma-separated tiers to run: %s (smoke: the e2e tests "
                                                "marked smoke); default: every tier" % ", ".join(PICKABLE))


def chosen_tiers(config) -> set:
    return {t.strip() for t in config.getoption("--tier").split(",") if t.strip()}


class NoTensorFlow(importlib.abc.MetaPathFinder):
    """In a unit-tier run: an import of TensorFlow (or tf_slim, Keras) is an error naming it."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in NOT_IN_UNIT:
            raise ImportError("the unit tier imports no TensorFlow, but %s was imported: mark the test "
                              "graph (or e2e) instead" % name)
        return None


def pytest_configure(config):
    unknown = chosen_tiers(config) - set(PICKABLE)
    if unknown:
        raise pytest.UsageError("--tier: unknown %s; choose among %s" % (", ".join(sorted(unknown)), ", ".join(PICKABLE)))
    if chosen_tiers(config) == {"unit"}:
        sys.meta_path.insert(0, NoTensorFlow())


def pytest_ignore_collect(collection_path, config):
    # A unit-tier run does not import the modules that hold no unit test (they may import TensorFlow).
    if chosen_tiers(config) == {"unit"} and collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
        if "pytest.mark.unit" not in collection_path.read_text(encoding="utf-8"):
            return True
    return None


def tier_of(item) -> Optional[str]:
    for mark in item.iter_markers():  # from the test itself outwards
        if mark.name in TIERS:
            return mark.name
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    untiered = [item.nodeid for item in items if tier_of(item) is None]
    if untiered:
        raise pytest.UsageError("tests without a tier (mark them unit, graph or e2e): " + ", ".join(untiered[:10]))
    tiers = chosen_tiers(config)
    if not tiers:
        return
    keep, drop = [], []
    for item in items:
        tier = tier_of(item)
        picked = tier in tiers or (tier == "e2e" and "smoke" in tiers and item.get_closest_marker("smoke") is not None)
        (keep if picked else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session", autouse=True)
def graph_cache_folder(tmp_path_factory) -> str:
    """The command lines keep built graphs (ggcam.engine.cache); under the tests, in a folder
    of the session's, not the user's cache. Subprocesses inherit it."""
    folder = str(tmp_path_factory.mktemp("graph_cache"))
    os.environ["GGCAM_GRAPH_CACHE"] = folder
    return folder


@pytest.fixture(scope="session")
def seed_images() -> str:
    """The seed's example images, from ../shared (skips when it is absent)."""
    if not os.path.isdir(SEED_IMAGES):
        pytest.skip("../shared/seed/images is absent (the seed's demo image lives there)")
    return SEED_IMAGES


def keep_artifact(path: str) -> Optional[str]:
    """Copy ``path`` into $GRADCAM_TEST_ARTIFACTS when that is set; returns the copy's path."""
    folder = os.environ.get(ARTIFACTS_ENV)
    if not folder:
        return None
    os.makedirs(folder, exist_ok=True)
    dest = os.path.join(folder, os.path.basename(path))
    shutil.copyfile(path, dest)
    return dest


@pytest.fixture(scope="session")
def shared_graphs():
    """One built graph per zoo model, checkpoint, layer, guided rule and outputs for the whole session.

    ``ggcam.engine.runner.open_graph`` (which ``Explainer``, ``inference.main`` and ``evaluate.main``
    go through) is replaced by a function that builds a real graph the first time a (zoo model,
    checkpoint, layer, rule, outputs) is asked for and hands the same one out afterwards; its
    ``close()`` does nothing until the session ends. Builds that fail (missing or mismatched
    checkpoint) raise as usual and are not kept; other models and special session configs get
    a graph of their own. Yields the graphs by key.
    """
    from ggcam import outputs as out
    from ggcam.engine import graph as graph_mod, runner
    from ggcam.models.slim import SlimModel
    real_open = runner.open_graph
    built = {}

    class SharedGraph(graph_mod.GuidedGradCamGraph):
        """A graph the session's tests share: closed when the session ends."""

        def close(self) -> None:
            pass

    def open_shared(model, layer=None, guided_relu6="exact", config=None, cache=False, outputs=out.STANDARD):
        # cache (the graph cache) is ignored: the session's graphs are shared in memory
        if not isinstance(model, SlimModel) or config is not None:
            return real_open(model, layer, guided_relu6, config, cache=cache, outputs=outputs)
        key = (model.name, os.path.abspath(model.checkpoint), layer, guided_relu6, out.graph_outputs(outputs))
        if key not in built:
            built[key] = SharedGraph(model, layer, guided_relu6, config, outputs=outputs)  # raises for a bad checkpoint
        return built[key]

    patch = pytest.MonkeyPatch()
    patch.setattr(runner, "open_graph", open_shared)
    try:
        yield built
    finally:
        patch.undo()
        for g in built.values():
            graph_mod.GuidedGradCamGraph.close(g)
        built.clear()


def mobilenet_graph(layer=None, guided_relu6: str = "exact"):
    """The session's shared MobileNet V1 graph (with the ``shared_graphs`` fixture active)."""
    from ggcam.engine import runner
    from ggcam.models.slim import SlimModel
    return runner.open_graph(SlimModel("mobilenet_v1"), layer, guided_relu6)


@pytest.fixture(scope="session")
def graph(shared_graphs):
    """The shared graph with the real checkpoint and the default (exact) guided rule."""
    return mobilenet_graph()


class Run:
    """What a command-line entry point did in-process: exit status, stdout, stderr."""

    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr

    def __repr__(self) -> str:
        return "Run(returncode=%r, stdout=%r, stderr=%r)" % (self.returncode, self.stdout, self.stderr)


def run_main(main: Callable[[Optional[List[str]]], int], *args: str) -> Run:
    """Call ``main(list(args))`` in this process, capturing sys.stdout and sys.stderr.

    Usable from fixtures of any scope (pytest's capsys is per test). argparse's ``--help``
    exits through SystemExit; its code becomes the status.
    """
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return Run(code, out.getvalue(), err.getvalue())
