"""Networks built from code (TF-slim): our MobileNet V1 and the nets that ship in tf_slim."""
import functools
import glob
import importlib
import inspect
import os
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

from ggcam.models.base import Model, ModelError, load_variables
from ggcam.models.zoo import ZooEntry, default_checkpoint, entry
from ggcam.tf.compat import SLIM_BATCH_NORM, error_line, slim_inference_scope, tf

# End points that are not feature maps: the classifier's outputs (4-D in the ResNets).
_NOT_LAYERS = ("logits", "auxlogits", "predictions")


def fetch_command(model: str, prefix: str) -> str:
    """The command that writes a checkpoint of ``model`` at ``prefix``."""
    cmd = "python weights.py"
    if model != "mobilenet_v1":
        cmd += " --model=%s --source=official" % model
    if os.path.abspath(prefix) != os.path.abspath(default_checkpoint(model)):
        cmd += " --checkpoint=%s" % prefix
    return cmd


def checkpoint_exists(prefix: str) -> bool:
    """Whether something is at ``prefix``: ``prefix.index`` (the current checkpoint format) or
    a file named ``prefix`` (the first format, as in the 2016/2017 slim archives)."""
    return os.path.exists(prefix + ".index") or os.path.isfile(prefix)


def checkpoint_problems(prefix: str, expected: Dict[str, Tuple[int, ...]]) -> List[str]:
    """Why ``prefix`` is not a checkpoint holding ``expected`` (name -> shape); empty when it is.

    Either checkpoint format is read (``prefix.index`` + data, or one file named ``prefix``);
    variables the model does not have are ignored.
    """
    if not checkpoint_exists(prefix):
        return ["no checkpoint at %s" % prefix]
    try:
        found = dict(tf.train.list_variables(prefix))
    except Exception as exc:  # corrupt or truncated files
        return ["cannot read checkpoint %s: %s" % (prefix, str(exc).splitlines()[0])]
    problems = []
    missing = sorted(set(expected) - set(found))
    if missing:
        problems.append("checkpoint %s lacks %d model variable(s), e.g. %s"
                        % (prefix, len(missing), ", ".join(missing[:3])))
    for name in sorted(set(expected) & set(found)):
        if tuple(found[name]) != tuple(expected[name]):
            problems.append("variable %s has shape %s in the checkpoint, the model needs %s"
                            % (name, tuple(found[name]), tuple(expected[name])))
    return problems


def _mostly_other(prefix: str, expected: Dict[str, Tuple[int, ...]]) -> bool:
    """Whether a readable checkpoint at ``prefix`` holds fewer than half of ``expected``'s
    variables with their shapes: another network's weights, not a damaged copy of these."""
    try:
        found = dict(tf.train.list_variables(prefix))
    except Exception:  # unreadable: a damaged copy, replaced with --force
        return False
    same = sum(1 for name, shape in expected.items() if name in found and tuple(found[name]) == shape)
    return same < len(expected) / 2.0


def build_network(e: ZooEntry, images: tf.Tensor) -> Tuple[tf.Tensor, "OrderedDict[str, tf.Tensor]"]:
    """Call the zoo network ``e`` on ``images`` (its preprocessed input) in inference mode.

    Returns logits [N, num_classes] and the end points (with the zoo's ``extra_end_points``
    inserted after the last end point of the feature extractor).
    """
    import tf_slim as slim
    module = importlib.import_module(e.module)
    network, arg_scope = getattr(module, e.function), getattr(module, e.arg_scope)
    kwargs = dict(e.network_args)
    if "is_training" in inspect.signature(network).parameters:  # our MobileNet is inference-only
        kwargs["is_training"] = False
    graph = tf.get_default_graph()
    first_new_op = len(graph.get_operations())
    # updates_collections=None for every batch norm: needed on TF 2 (ggcam.tf.compat)
    with slim.arg_scope(slim_inference_scope(arg_scope())), slim.arg_scope([slim.batch_norm], **SLIM_BATCH_NORM):
        logits, end_points = network(images, num_classes=e.num_classes, **kwargs)
    if logits.shape.ndims == 4:  # the ResNets have no spatial squeeze: [N, 1, 1, K]
        logits = tf.squeeze(logits, [1, 2], name="logits_squeezed")
    end_points = OrderedDict(end_points)
    if e.extra_end_points:
        new_ops = graph.get_operations()[first_new_op:]
        extra = OrderedDict()
        for name, op_name in e.extra_end_points:
            found = [op for op in new_ops if op.name == op_name or op.name.endswith("/" + op_name)]
            if len(found) != 1:
                raise ModelError("%s: %d ops named %s, expected one" % (e.name, len(found), op_name))
            extra[name] = found[0].outputs[0]
        # Before the classifier's end points, so end points stay in network order.
        items = list(end_points.items())
        cut = next((i for i, (k, _) in enumerate(items) if k.rsplit("/", 1)[-1].lower() in _NOT_LAYERS), len(items))
        end_points = OrderedDict(items[:cut] + list(extra.items()) + items[cut:])
    return logits, end_points


def network_variables(name: str) -> Dict[str, Tuple[int, ...]]:
    """Variable name -> shape of the zoo network ``name`` (built in a graph of its own)."""
    e = entry(name)
    with tf.Graph().as_default():
        build_network(e, tf.placeholder(tf.float32, [None, e.input_size[0], e.input_size[1], 3]))
        return {v.op.name: tuple(v.shape.as_list()) for v in tf.global_variables()}


class SlimModel(Model):
    """A network of the slim zoo (``ggcam.models.zoo``) restored from a checkpoint."""

    def __init__(self, name: str = "mobilenet_v1", checkpoint: Optional[str] = None,
                 class_names: Optional[List[str]] = None):
        super().__init__()
        self.entry = entry(name)
        self.name = name
        self.checkpoint = checkpoint or default_checkpoint(name)
        self.input_size = self.entry.input_size
        self.input_range, self.mean_rgb = self.entry.input_range, self.entry.mean_rgb
        self.num_classes = self.entry.num_classes
        self.default_layer = self.entry.default_layer
        self.class_names = class_names
        self._end_points = OrderedDict()  # type: OrderedDict[str, tf.Tensor]
        self._variables = []  # type: List[str]  # their names, as in the checkpoint
        self._assigns = []  # type: List[tf.Operation]  # each one's initializing assignment

    def prepare(self) -> None:
        if not checkpoint_exists(self.checkpoint):
            raise ModelError("no checkpoint at %s; fetch it with: %s"
                             % (self.checkpoint, fetch_command(self.name, self.checkpoint)))
        if self.class_names is None:
            from ggcam.models.imagenet import imagenet_names
            try:
                self.class_names = imagenet_names(self.num_classes)
            except (OSError, ValueError) as exc:
                raise ModelError(str(exc))
        elif len(self.class_names) != self.num_classes:
            raise ModelError("%d class names given, %s has %d classes"
                             % (len(self.class_names), self.name, self.num_classes))

    def _create(self, model_input: tf.Tensor) -> tf.Tensor:
        logits, self._end_points = build_network(self.entry, model_input)
        variables = tf.global_variables()
        expected = {v.op.name: tuple(v.shape.as_list()) for v in variables}
        problems = checkpoint_problems(self.checkpoint, expected)
        if problems:
            own = default_checkpoint(self.name)
            if os.path.abspath(self.checkpoint) != os.path.abspath(own) and _mostly_other(self.checkpoint, expected):
                # another network's weights: replacing them (--force) would lose that checkpoint
                raise ModelError("%s: not %s's weights; fetch them into their own place with: %s, and leave out "
                                 "--checkpoint" % (problems[0], self.name, fetch_command(self.name, own)))
            raise ModelError("%s; fetch it with: %s%s" % (problems[0], fetch_command(self.name, self.checkpoint),
                                                           "" if "no checkpoint" in problems[0] else " --force"))
        self._variables = [v.op.name for v in variables]
        self._assigns = [v.initializer for v in variables]
        return logits

    def restore(self, session: tf.Session) -> None:
        """Each variable's own initializing assignment, fed the checkpoint's value (no Saver:
        the graph holds no op that touches a file)."""
        try:
            reader = tf.train.load_checkpoint(self.checkpoint)
            load_variables(session, [(a, functools.partial(reader.get_tensor, v))
                                     for v, a in zip(self._variables, self._assigns)])
        except (tf.errors.OpError, ValueError, IndexError, RuntimeError) as exc:  # TF 2's reader: IndexError
            raise ModelError("cannot restore %s: %s" % (self.checkpoint, error_line(exc)))

    # --------------------------------------------------------------- graph cache

    def cache_identity(self) -> Optional[Dict]:
        files = [self.checkpoint] + glob.glob(glob.escape(self.checkpoint) + ".*")
        stats = sorted((os.path.basename(f), os.stat(f).st_size, os.stat(f).st_mtime_ns)
                       for f in files if os.path.isfile(f))
        return {"model": self.name, "checkpoint": os.path.abspath(self.checkpoint), "files": stats}

    def imported_state(self) -> Dict:
        return {"logits": self.logits.name, "model_input": self.model_input.name,
                "end_points": [[k, v.name] for k, v in self._end_points.items()],
                "variables": list(self._variables)}

    def attach_imported(self, graph: tf.Graph, state: Dict) -> None:
        self.logits = graph.get_tensor_by_name(state["logits"])
        self.model_input = graph.get_tensor_by_name(state["model_input"])
        self._end_points = OrderedDict((k, graph.get_tensor_by_name(v)) for k, v in state["end_points"])
        self._variables = list(state["variables"])
        self._assigns = [graph.get_operation_by_name(v + "/Assign") for v in self._variables]

    def layers(self) -> "OrderedDict[str, tf.Tensor]":
        """The network's 4-D end points, in network order (the classifier's outputs left out)."""
        return OrderedDict((k, v) for k, v in self._end_points.items()
                           if v.shape.ndims == 4 and k.rsplit("/", 1)[-1].lower() not in _NOT_LAYERS)
