"""The seams: the graph's output contract (``ggcam.outputs``), methods (``ggcam.methods``) and
target kinds (``ggcam.targets``), each extended here the way a new module would extend it, and
checked against plain TensorFlow gradients or values worked out by hand."""
import ast
import os

import numpy as np
import pytest

from conftest import ROOT, run_main
from ggcam import methods as methods_mod
from ggcam import outputs as out
from ggcam import targets as targets_mod
from ggcam.engine import runner
from ggcam.engine.graph import GuidedGradCamGraph
from ggcam.explainer import Explainer
from ggcam.methods.base import Method
from ggcam.models.frozen_graph import FrozenGraphModel
from ggcam.models.slim import SlimModel
from ggcam.targets import KindOps, Target, TargetKind
from ggcam.tf.compat import tf

pytestmark = pytest.mark.graph

CHELSEA = os.path.join(ROOT, "images", "chelsea.png")


# ----------------------------------------------------------------------------- the output contract

def test_the_plain_input_gradient_of_the_guided_graph_is_the_plain_graphs(shared_graphs):
    """One graph gives both input gradients: its plain one equals the guided gradient of a
    graph built with no guided rectifiers at all (the independent computation)."""
    photo = np.random.RandomState(3).rand(200, 260, 3).astype(np.float32)
    target = [Target.of(281)]
    both = runner.open_graph(SlimModel("mobilenet_v1"), outputs=out.ALL).run([photo], target)
    plain = runner.open_graph(SlimModel("mobilenet_v1"), guided_relu6="plain").run([photo], target)
    np.testing.assert_allclose(both[out.PLAIN_GRADIENT], plain[out.GUIDED_GRADIENT], rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(both["plain_gradient_image"][0], plain["guided_backprop_image"][0],
                               rtol=1e-5, atol=1e-9)
    assert not np.allclose(both[out.PLAIN_GRADIENT], both[out.GUIDED_GRADIENT])


def test_a_graph_refuses_outputs_it_was_not_built_with(graph):
    with pytest.raises(ValueError, match="built without plain_gradient"):
        graph.run([np.zeros((8, 8, 3), np.float32)], outputs=[out.PLAIN_GRADIENT])
    with pytest.raises(ValueError, match="no graph output named"):
        out.graph_outputs(["logits", "no_such_output"])


# ----------------------------------------------------------------------------- methods

class ChannelSum(Method):
    """A test method: the plain input gradient summed over the colour channels, as a CAM
    (its absolute value, scaled to [0, 1])."""
    name, title, needs, cam = "test_channel_sum", "Channel sum", (out.PLAIN_GRADIENT,), True

    def compute(self, arrays, size):
        g = np.abs(arrays[out.PLAIN_GRADIENT].sum(axis=-1))
        return g / (g.max() or 1.0)


class FlipAverage(Method):
    """A test method with graph work: the guided gradient of the photo and of its mirror image
    (mirrored back), averaged: two more runs of the same graph per example."""
    name, title, needs = "test_flip_average", "Flip average", ()

    def graph_work(self, context):
        images = np.stack([context.image, context.image[:, ::-1]])
        g = context.run(images, [out.GUIDED_GRADIENT])[out.GUIDED_GRADIENT]
        return {"test_flip_average": (g[0] + g[1][:, ::-1]) / 2.0}

    def compute(self, arrays, size):
        import cv2
        g = arrays["test_flip_average"]
        return cv2.resize(g, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


@pytest.fixture
def test_methods():
    saved = dict(methods_mod.registry._METHODS)
    made = [methods_mod.register(ChannelSum()), methods_mod.register(FlipAverage())]
    yield made
    methods_mod.registry._METHODS.clear()
    methods_mod.registry._METHODS.update(saved)


def test_registered_methods_run_through_the_explainer(shared_graphs, test_methods):
    """A method is one class: registered, it is made by name (and its guided version), reads
    the outputs it declares and may run the graph again; values equal direct graph runs."""
    assert "test_channel_sum" in methods_mod.names() and "guided_test_channel_sum" in methods_mod.names()
    chosen = ["test_channel_sum", "guided_test_channel_sum", "test_flip_average"]
    with Explainer(methods=chosen) as ex:
        e = ex.explain(CHELSEA, labels=[282])[0]
        graph = ex.graph
    photo = e.photo.astype(np.float32) / 255.0
    direct = graph.run([photo], [Target.of(282)], outputs=out.ALL)
    maps = e.maps()
    g = np.abs(direct["plain_gradient_image"][0].sum(axis=-1))
    np.testing.assert_allclose(maps["test_channel_sum"], g / g.max(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(maps["guided_test_channel_sum"],
                               direct["guided_backprop_image"][0] * (g / g.max())[..., None], rtol=1e-4, atol=1e-9)
    image = graph.resize(photo)
    flipped = graph.run([image[:, ::-1]], [Target.of(282)])[out.GUIDED_GRADIENT][0][:, ::-1]
    np.testing.assert_allclose(e.raw()["test_flip_average"], (direct[out.GUIDED_GRADIENT][0] + flipped) / 2,
                               rtol=1e-4, atol=1e-9)
    assert set(e.raw()) >= {"test_flip_average", out.PLAIN_GRADIENT, out.GUIDED_GRADIENT}
    assert list(e.picture_names) == chosen + ["overlay", "panel"]
    for name in chosen + ["overlay", "panel"]:
        picture = e.picture(name)
        assert picture.dtype == np.uint8 and picture.shape[2] == 3


class GuidedMagnitude(Method):
    """A test method that is never registered: the guided gradient's magnitude per pixel."""
    name, title, needs = "test_guided_magnitude", "Guided magnitude", (out.GUIDED_GRADIENT,)

    def compute(self, arrays, size):
        return np.repeat(np.abs(arrays[out.GUIDED_GRADIENT]).sum(-1, keepdims=True), 3, -1)


def test_a_method_object_need_not_be_registered(graph):
    e = Explainer.from_graph(graph, methods=[GuidedMagnitude()]).explain(CHELSEA)[0]
    assert set(e.maps()) == {"test_guided_magnitude"}
    assert list(e.picture_names) == ["test_guided_magnitude", "panel"]
    assert e.picture("test_guided_magnitude").shape == e.photo.shape


def test_a_run_fetches_only_what_its_methods_read(graph):
    """Grad-CAM alone: no input gradient is fetched, so TensorFlow runs no op of it."""
    e = Explainer.from_graph(graph, methods=["gradcam"]).explain(CHELSEA)[0]
    assert set(e.arrays) == {out.LOGITS, out.LABEL, out.ACTIVATIONS, out.LAYER_GRADIENT}
    assert "guided_backprop" not in e.raw()


def test_from_graph_refuses_a_graph_without_the_outputs_methods_read(graph):
    with pytest.raises(ValueError, match="plain_gradient"):
        Explainer.from_graph(graph, methods=[ChannelSum()])


def test_unknown_and_misnamed_methods_are_refused():
    with pytest.raises(ValueError, match="no method named 'gradcam\\+\\+\\+' \\(one of gradcam, "):
        methods_mod.get("gradcam+++")
    with pytest.raises(ValueError, match="only a CAM can be guided|no method named"):
        methods_mod.get("guided_guided_backprop")
    with pytest.raises(ValueError, match="must not be empty or start with 'guided_'"):
        methods_mod.register(type("Bad", (Method,), {"name": "guided_x"})())


def test_only_the_chosen_methods_are_written(shared_graphs, tmp_path):
    """--methods=gradcam: Grad-CAM's pictures and arrays only, no guided gradient computed."""
    import inference
    folder = tmp_path / "only"
    result = run_main(inference.main, "--image=%s" % CHELSEA, "--label=282", "--output_dir=%s" % folder,
                      "--save_raw", "--methods=gradcam")
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(str(folder))) == ["gradcam.png", "input.jpg", "overlay.png", "panel.png", "raw.npz"]
    with np.load(str(folder / "raw.npz")) as raw:
        assert set(raw.files) >= {"logits", "label", "cam", "conv_activations", "conv_gradient"}
        assert "guided_backprop" not in raw.files
    bad = run_main(inference.main, "--image=%s" % CHELSEA, "--output_dir=%s" % (tmp_path / "bad"),
                   "--methods=gradcam,nope")
    assert bad.returncode == 2 and "--methods: unknown nope" in bad.stderr, bad.stderr
    assert not (tmp_path / "bad").exists()


def test_a_folder_run_with_chosen_methods_lists_only_their_pictures(shared_graphs, tmp_path):
    """The gallery shows the pictures each explanation wrote: none is missing, none left out."""
    import re
    from urllib.parse import unquote
    import inference
    folder = tmp_path / "run"
    result = run_main(inference.main, "--image=%s" % CHELSEA, "--image=%s" % os.path.join(ROOT, "images", "coffee.png"),
                      "--output_dir=%s" % folder, "--quiet", "--methods=guided_backprop,gradcam")
    assert result.returncode == 0, result.stderr
    with open(str(folder / "index.html")) as f:
        page = f.read()
    shown = [unquote(s) for s in re.findall(r'<img src="([^"]+)"', page)]
    assert len(shown) == 2 * 4
    assert {os.path.basename(s) for s in shown} == {"input.jpg", "guided_backprop.png", "gradcam.png", "overlay.png"}
    assert all((folder / s).is_file() for s in shown)
    assert "<td>Guided Backprop</td>" in page and "<td>Guided Grad-CAM</td>" not in page


# ----------------------------------------------------------------------------- target kinds

READOUT = np.array([[1.0, -2.0, 0.5], [0.5, 1.5, -1.0], [-1.0, 0.5, 2.0]], np.float32)  # [channels, classes]


class Contrast:
    """A test target: the logit of ``a`` minus the logit of ``b``."""
    kind = "test_contrast"

    def __init__(self, a: int, b: int):
        self.a, self.b = a, b


class ContrastKind(TargetKind):
    name, prefixes = "test_contrast", ("contrast",)

    def build(self, logits, num_classes):
        a = tf.placeholder(tf.int32, [None], name="contrast_a")
        b = tf.placeholder(tf.int32, [None], name="contrast_b")
        rows = tf.range(tf.shape(logits)[0])
        score = (tf.gather_nd(logits, tf.stack([rows, a], 1)) - tf.gather_nd(logits, tf.stack([rows, b], 1)))
        return KindOps({"a": a, "b": b}, score, a)

    def feed(self, targets, num_classes):
        return {"a": np.array([t.a if t else 0 for t in targets], np.int32),
                "b": np.array([t.b if t else 0 for t in targets], np.int32)}

    def parse(self, key):
        a, b = key.partition(":")[2].split("-")
        return Contrast(int(a), int(b))


@pytest.fixture
def contrast_kind():
    targets_mod.register(ContrastKind())
    yield
    targets_mod.base._KINDS.pop("test_contrast")


def test_a_new_target_kind_beside_classes_in_one_batch(tmp_path, contrast_kind):
    """image -> relu -> spatial mean -> READOUT: the gradient of logit[a] - logit[b] at the input
    is worked out by hand; classes and contrasts share one batch of one graph."""
    def build():
        image = tf.placeholder(tf.float32, [None, 4, 4, 3], name="image")
        tf.matmul(tf.reduce_mean(tf.nn.relu(image - 0.5), [1, 2]), tf.constant(READOUT), name="logits")

    path = str(tmp_path / "tiny.pb")
    with tf.Graph().as_default() as g:
        build()
        tf.io.write_graph(g.as_graph_def(), str(tmp_path), "tiny.pb", as_text=False)
    model = FrozenGraphModel(path, input_range=(0.0, 1.0))
    model.target_kinds = ("class", "test_contrast")
    photos = [np.random.RandomState(k).rand(4, 4, 3).astype(np.float32) for k in range(3)]
    chosen = [Target.of(1), Contrast(2, 0), Contrast(0, 1)]
    with GuidedGradCamGraph(model, outputs=out.ALL) as graph:
        got = graph.run(photos, chosen)
        assert targets_mod.from_key("contrast:2-0").a == 2
        with pytest.raises(ValueError, match="test_contrast targets: tiny's output supports class targets"):
            GuidedGradCamGraph(FrozenGraphModel(path), outputs=out.ALL).run(photos[:1], [Contrast(0, 1)])
    for photo, target, plain, guided in zip(photos, chosen, got[out.PLAIN_GRADIENT], got[out.GUIDED_GRADIENT]):
        upstream = READOUT[:, target.index] if isinstance(target, Target) else READOUT[:, target.a] - READOUT[:, target.b]
        active = (photo > 0.5).astype(np.float32)
        np.testing.assert_allclose(plain, active * upstream / 16.0, rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(guided, active * np.maximum(upstream, 0) / 16.0, rtol=1e-5, atol=1e-8)
    assert list(got[out.LABEL]) == [1, 2, 0]


# ----------------------------------------------------------------------------- layering

def package_imports():
    """ggcam's modules by dotted name -> the ggcam modules each imports (imports inside
    functions too: a late import is still a dependency)."""
    modules = {}
    for folder, _, files in os.walk(os.path.join(ROOT, "ggcam")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                modules[dotted[:-len(".__init__")] if dotted.endswith(".__init__") else dotted] = path
    edges = {}
    for module, path in modules.items():
        with open(path) as f:
            tree = ast.parse(f.read())
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.update([node.module] + [node.module + "." + a.name for a in node.names])
        # a module's own package (its __init__) does not count
        edges[module] = {n for n in found if n in modules and n != module and not module.startswith(n + ".")}
    return edges


def test_the_package_has_no_import_cycles():
    edges = package_imports()

    def reaches(start, goal, seen):
        return any(n == goal or (n not in seen and not seen.add(n) and reaches(n, goal, seen)) for n in edges[start])

    cycles = sorted(m for m in edges if reaches(m, m, set()))
    assert not cycles, cycles


def test_the_library_never_imports_the_command_line():
    """Data flows one way: nothing in ggcam outside ggcam/cli (and the ``python -m`` entry)
    imports ggcam.cli."""
    package = os.path.join(ROOT, "ggcam")
    offenders = []
    for folder, _, files in os.walk(package):
        if os.path.relpath(folder, package).split(os.sep)[0] == "cli":
            continue
        for name in files:
            path = os.path.join(folder, name)
            if not name.endswith(".py") or os.path.relpath(path, package) == "__main__.py":
                continue
            with open(path) as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                if isinstance(node, ast.ImportFrom) and node.module == "ggcam":
                    names = ["ggcam." + a.name for a in node.names]
                if any(n == "ggcam.cli" or n.startswith("ggcam.cli.") for n in names):
                    offenders.append(os.path.relpath(path, ROOT))
    assert not offenders, offenders
