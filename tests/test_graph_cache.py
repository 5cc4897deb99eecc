"""The graph cache (ggcam.engine.cache): an imported entry computes what the built graph does,
and an entry that does not fit, or holds a file op, is never used."""
import glob
import os

import numpy as np
import pytest

from ggcam.engine import cache as graph_cache
from ggcam.engine.graph import GuidedGradCamGraph
from ggcam.models.slim import SlimModel
from ggcam.tf.compat import tf

pytestmark = pytest.mark.graph


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("graphs"))
    saved = os.environ.get(graph_cache.ENV)
    os.environ[graph_cache.ENV] = path
    yield path
    os.environ[graph_cache.ENV] = saved


@pytest.fixture(scope="module")
def built_and_imported(folder):
    """The same model built (writing the entry) and then imported from it, and a test batch."""
    built = GuidedGradCamGraph(SlimModel("mobilenet_v1"), cache=True)
    assert len(glob.glob(os.path.join(folder, "*.pb"))) == 1
    imported = GuidedGradCamGraph(SlimModel("mobilenet_v1"), cache=True)
    photos = [np.random.RandomState(0).uniform(0, 1, (224, 224, 3)).astype(np.float32),
              np.random.RandomState(1).uniform(0, 1, (300, 451, 3)).astype(np.float32)]
    yield built, imported, photos
    built.close()
    imported.close()


def test_an_imported_graph_computes_the_same_arrays(built_and_imported):
    built, imported, photos = built_and_imported
    # The import path made it: an imported GraphDef brings no variable collection, a built graph has one.
    assert built.graph.get_collection(tf.GraphKeys.GLOBAL_VARIABLES)
    assert not imported.graph.get_collection(tf.GraphKeys.GLOBAL_VARIABLES)
    # Neither holds an op that touches a file (weights are read from the checkpoint and fed).
    for g in (built, imported):
        assert not {op.type for op in g.graph.get_operations()} & {"SaveV2", "RestoreV2", "MergeV2Checkpoints"}
    a, b = built.run(photos), imported.run(photos)
    assert sorted(a) == sorted(b)
    for name in a:  # guided_backprop_image is a list (one array per photo size)
        for x, y in zip(a[name], b[name]):
            np.testing.assert_array_equal(x, y, err_msg=name)


def test_an_imported_model_knows_its_layers(built_and_imported):
    built, imported, _ = built_and_imported
    assert list(imported.model.layers()) == list(built.model.layers())
    assert imported.layer_name == built.layer_name and imported.plain_layer_pass == built.plain_layer_pass


def test_the_key_follows_layer_rule_and_checkpoint(built_and_imported, tmp_path):
    model = SlimModel("mobilenet_v1")
    identity = model.cache_identity()
    keys = {graph_cache.key(dict(identity, layer=layer, guided_relu6=rule))
            for layer in ("Conv2d_13_pointwise", "Conv2d_11_pointwise") for rule in ("exact", "seed")}
    assert len(keys) == 4
    # a checkpoint rewritten in place (same path, new size or time) is another model
    copy = tmp_path / "ckpt"
    for f in glob.glob(model.checkpoint + ".*"):
        (tmp_path / ("ckpt" + f[len(model.checkpoint):])).write_bytes(open(f, "rb").read())
    other = SlimModel("mobilenet_v1", checkpoint=str(copy)).cache_identity()
    assert other != identity
    os.utime(str(copy) + ".index", ns=(1, 1))
    assert SlimModel("mobilenet_v1", checkpoint=str(copy)).cache_identity() != other


def test_unreadable_or_refused_entries_are_not_loaded(built_and_imported, folder):
    name = os.path.basename(glob.glob(os.path.join(folder, "*.pb"))[0])[:-3]
    graph_def, names = graph_cache.load(name)
    with_file_op = tf.GraphDef()
    with_file_op.CopyFrom(graph_def)
    with tf.Graph().as_default() as g:
        tf.io.read_file("/etc/passwd", name="sneaky")
    with_file_op.node.extend(g.as_graph_def().node)
    graph_cache.save("planted", with_file_op, names)
    assert graph_cache.load("planted") is None
    with open(os.path.join(folder, "planted.pb"), "wb") as f:
        f.write(graph_def.SerializeToString()[:1000])  # truncated
    assert graph_cache.load("planted") is None
    assert graph_cache.load("absent") is None


def test_a_broken_entry_is_rebuilt_and_replaced(built_and_imported, folder):
    built, _, photos = built_and_imported
    pb = glob.glob(os.path.join(folder, "*.pb"))
    entry = [p for p in pb if "planted" not in p][0]
    with open(entry, "wb") as f:
        f.write(b"not a graph")
    with GuidedGradCamGraph(SlimModel("mobilenet_v1"), cache=True) as rebuilt:
        np.testing.assert_array_equal(rebuilt.run(photos[:1])["logits"], built.run(photos[:1])["logits"])
    assert graph_cache.load(os.path.basename(entry)[:-3]) is not None


def test_off_and_unwritable_folders_keep_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv(graph_cache.ENV, "off")
    assert graph_cache.folder() is None and graph_cache.load("x") is None
    graph_cache.save("x", tf.GraphDef(), {})  # nothing, no error
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv(graph_cache.ENV, str(blocker / "graphs"))
    graph_cache.save("x", tf.GraphDef(), {})  # cannot make the folder: no error
    assert not (blocker / "graphs").exists()


def test_the_newest_entries_are_kept(monkeypatch, tmp_path):
    monkeypatch.setenv(graph_cache.ENV, str(tmp_path))
    for i in range(graph_cache.KEEP + 3):
        graph_cache.save("e%02d" % i, tf.GraphDef(), {})
        os.utime(str(tmp_path / ("e%02d.json" % i)), (i, i))
    graph_cache.save("last", tf.GraphDef(), {})
    kept = sorted(os.path.basename(p) for p in glob.glob(str(tmp_path / "*.json")))
    assert len(kept) == graph_cache.KEEP and "last.json" in kept and "e00.json" not in kept
    assert len(glob.glob(str(tmp_path / "*.pb"))) == graph_cache.KEEP


def test_the_folder_is_made_private(monkeypatch, tmp_path):
    where = tmp_path / "new" / "graphs"
    monkeypatch.setenv(graph_cache.ENV, str(where))
    graph_cache.save("x", tf.GraphDef(), {})
    assert (os.stat(str(where)).st_mode & 0o777) == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    os.chmod(str(loose), 0o755)
    monkeypatch.setenv(graph_cache.ENV, str(loose))
    graph_cache.save("x", tf.GraphDef(), {})  # an earlier version's folder: made private
    assert (os.stat(str(loose)).st_mode & 0o777) == 0o700


def test_a_folder_others_can_write_is_refused(built_and_imported, folder, monkeypatch, tmp_path):
    """Whoever can write the folder decides what runs: not used, not written, said once."""
    shared = tmp_path / "shared"
    shared.mkdir()
    for f in glob.glob(os.path.join(folder, "*")):  # the good entries, in a folder anyone may write
        (shared / os.path.basename(f)).write_bytes(open(f, "rb").read())
    os.chmod(str(shared), 0o777)
    monkeypatch.setenv(graph_cache.ENV, str(shared))
    before = sorted(os.listdir(str(shared)))
    model = SlimModel("mobilenet_v1")
    with GuidedGradCamGraph(model, cache=True) as graph:
        assert graph.graph.get_collection(tf.GraphKeys.GLOBAL_VARIABLES)  # built, not imported
    assert any("graph cache refused: %s can be written by others; the graph is built anew and not kept" % shared
               in n for n in model.notes), model.notes
    assert sorted(os.listdir(str(shared))) == before
    assert graph_cache.load(before[0].split(".")[0]) is None


def test_entries_that_are_symlinks_or_not_ours_are_refused(built_and_imported, folder):
    name = os.path.basename([p for p in glob.glob(os.path.join(folder, "*.pb")) if "planted" not in p][0])[:-3]
    pb = os.path.join(folder, name + ".pb")
    real = os.path.join(folder, "elsewhere.bin")
    os.replace(pb, real)
    os.symlink(real, pb)
    notes = []
    assert graph_cache.load(name, notes) is None
    assert notes == ["graph cache refused: %s is a symlink; the graph is built anew" % pb]
    os.remove(pb)
    os.replace(real, pb)
    if os.getuid() == 0:  # only root can give a file away
        os.chown(pb, 65534, 65534)
        notes = []
        assert graph_cache.load(name, notes) is None and "belongs to another user (uid 65534)" in notes[0]
        os.chown(pb, 0, 0)
    os.chmod(pb, 0o666)
    notes = []
    assert graph_cache.load(name, notes) is None and "can be written by others" in notes[0]
    os.chmod(pb, 0o644)
    assert graph_cache.load(name) is not None


def test_an_entry_with_a_disallowed_op_is_refused_with_a_note(built_and_imported, folder):
    name = os.path.basename([p for p in glob.glob(os.path.join(folder, "*.pb")) if "planted" not in p][0])[:-3]
    graph_def, names = graph_cache.load(name)
    with tf.Graph().as_default() as g:
        tf.data.experimental.TFRecordWriter("/tmp/x").write(tf.data.Dataset.from_tensors(tf.constant("x")))
    planted = tf.GraphDef()
    planted.CopyFrom(graph_def)
    planted.node.extend(g.as_graph_def().node)
    graph_cache.save("planted2", planted, names)
    notes = []
    assert graph_cache.load("planted2", notes) is None
    assert "(DatasetToTFRecord) reads or writes files" in notes[0]
