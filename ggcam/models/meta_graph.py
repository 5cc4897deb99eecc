"""A MetaGraph (``.meta``, written by ``tf.train.Saver``) with the checkpoint of its weights: the
variables the logits read become variables again, set by reading the checkpoint's tensors (no
Saver, and none of the file's own save or restore ops)."""
import glob
import os
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from ggcam.models.base import ModelError, group_layers, load_variables, variable_over
from ggcam.models.graph_def import VARIABLE_OPS, slice_infos
from ggcam.models.imported import ImportedModel
from ggcam.models.model_files import flag_hint, parse_proto, read_file, valid_graph
from ggcam.models.slim import checkpoint_exists, checkpoint_problems
from ggcam.tf.compat import error_line, tf


class MetaGraphModel(ImportedModel):
    """A MetaGraph (``.meta``, written by ``tf.train.Saver``) with the checkpoint of its weights."""

    def __init__(self, path: str, checkpoint: Optional[str] = None, **kwargs):
        super().__init__(path, **kwargs)
        self.checkpoint = checkpoint
        self._meta_graph = None
        # After _create: (variable, its checkpoint key, the part of it (offset, size) per axis or None)
        self._variables = []  # type: List[Tuple[tf.Variable, str, Optional[Tuple[Tuple[int, int], ...]]]]

    def _read_meta_graph(self):
        data = read_file(self.path, "MetaGraph file")
        return parse_proto(data, tf.MetaGraphDef, lambda m: valid_graph(m.graph_def), self.path, "MetaGraph",
                      flag_hint(self.path, "meta_graph"))

    def _weights(self) -> Optional[str]:
        """The checkpoint prefix the weights are restored from."""
        if not self.checkpoint:
            return None
        if os.path.isdir(self.checkpoint):  # a training folder: its latest checkpoint
            return tf.train.latest_checkpoint(self.checkpoint) or self.checkpoint
        return self.checkpoint

    def _load(self):
        self._meta_graph = self._read_meta_graph()
        return self._meta_graph.graph_def

    def _check_variables(self, variables: List) -> None:
        if not variables:
            return
        prefix = self._weights()
        if not prefix:
            raise ModelError("%s reads variables (e.g. %s): give the checkpoint of its weights with --checkpoint"
                             % (self.path, variables[0].name))
        if not checkpoint_exists(prefix):
            raise ModelError("no checkpoint at %s (the weights of %s)" % (prefix, self.path))
        if not self.trust_model:
            self._check_weight_files(prefix)

    def _check_weight_files(self, prefix: str) -> None:
        """A stranger's checkpoint files must be files, not links: a data shard that is a symlink
        to another file would be read as weights (and its bytes show in logits and checksum
        errors). A training folder's latest checkpoint must lie in that folder."""
        if os.path.isdir(self.checkpoint) and os.path.commonpath(
                [os.path.realpath(self.checkpoint), os.path.realpath(prefix)]) != os.path.realpath(self.checkpoint):
            raise ModelError("the latest checkpoint of %s is %s, outside that folder; give the prefix with "
                             "--checkpoint (or --trust_model)" % (self.checkpoint, prefix))
        for f in sorted(glob.glob(glob.escape(prefix) + ".*")) + [prefix]:
            if os.path.islink(f):
                raise ModelError("refusing %s: its weight file %s is a symlink (to %s), not a file of its own; pass "
                                 "--trust_model to read it anyway" % (self.path, f, os.readlink(f)))

    def _import(self, source: tf.Tensor, scope: str) -> None:
        super()._import(source, scope)
        graph = tf.get_default_graph()
        prefix = scope + "/" if scope else ""
        slices = slice_infos(self._meta_graph)
        # The variables the logits read, each with its key in the checkpoint (a partitioned
        # variable's parts are saved as slices of the whole one).
        self._variables, shapes = [], {}
        for node in self._graph_def.node:
            if node.name not in self._path_nodes or node.op not in VARIABLE_OPS:
                continue
            info = slices.get(node.name)
            v = variable_over(graph.get_operation_by_name(prefix + node.name), info)
            if info is not None:
                key, part = info.full_name, tuple(zip(info.var_offset, info.var_shape))
                shapes[key] = tuple(info.full_shape)
            else:
                key, part = node.name, None
                shapes[key] = tuple(v.shape.as_list())
            self._variables.append((v, key, part))
        if self._variables:
            problems = checkpoint_problems(self._weights(), shapes)
            if problems:
                raise ModelError("%s (the weights of %s)" % (problems[0], self.path))

    def _checkpoint_values(self) -> List[Tuple[tf.Variable, Callable[[], np.ndarray]]]:
        """(variable, a function reading its value from the checkpoint) for each variable."""
        reader = tf.train.load_checkpoint(self._weights())

        def value(key: str, part) -> Callable[[], np.ndarray]:
            if part is None:
                return lambda: reader.get_tensor(key)
            return lambda: reader.get_tensor(key)[tuple(slice(o, o + n) for o, n in part)]

        return [(v, value(key, part)) for v, key, part in self._variables]

    def restore(self, session: tf.Session) -> None:
        if not self._variables:
            return
        try:
            load_variables(session, [(v.initializer, read) for v, read in self._checkpoint_values()])
        except (tf.errors.OpError, ValueError, IndexError, RuntimeError) as exc:  # TF 2's reader: IndexError
            raise ModelError("cannot restore %s: %s" % (self._weights(), error_line(exc)))

    def file_sizes(self) -> List[int]:
        prefix = self._weights()
        weights = glob.glob(glob.escape(prefix) + ".*") if prefix else []
        return super().file_sizes() + [os.path.getsize(f) for f in weights if os.path.isfile(f)]

    def randomization_layers(self) -> Optional["OrderedDict[str, List[tf.Variable]]"]:
        """The weights the logits read, by layer (scope as in the file), last layer first."""
        return group_layers([v for v, _, _ in self._variables], self._prefix)

    def describe(self) -> Dict[str, object]:
        facts = super().describe()
        facts["checkpoint"] = self._weights()
        return facts
