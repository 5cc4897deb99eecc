"""Keras HDF5 model files (``--keras=FILE.h5``), rebuilt in the explainer's graph.

A model file is a program: a Keras ``Lambda`` layer stores Python code that runs when the
model is rebuilt, and a custom class runs whatever its author wrote. So the file's model
config is read with h5py and checked *before* anything is loaded; both are refused unless
``trust_model``.

The model is then rebuilt from its config (``model_from_json``) in the current graph, inside
the guided override, with the Keras learning phase at 0 (inference: batch norm uses its moving
statistics, dropout is off) for that graph only, and called once more, on our preprocessed
image, as a model whose outputs are every layer's: gradients reach the [0, 1] photo through
the preprocessing, and the layer a user picks is one the explained logits depend on. The
weights are read from the file's ``model_weights`` group with h5py and fed to the variables'
initializers in ``restore``. (TF 1.15's ``load_model`` cannot read these files with h5py >= 3,
which returns string attributes as str where it expects bytes; and it would load the weights
through a Keras session of its own.)

Names: ``--layer`` and ``--logits_tensor`` take a Keras layer name of the file (``conv2d_7``;
a nested model counts as one layer), or an op or tensor name inside the explained call, looked
up under that call's name scope first (``conv2d_7/BiasAdd``, ``dense/BiasAdd`` for the logits of a
``Dense`` with a softmax, ``mobilenet/conv_pw_13/Conv2D`` inside a nested model);
``--input_tensor`` can only name the model's input layer.
"""
import contextlib
import functools
import itertools
import json
import os
import warnings
from collections import OrderedDict
from typing import Dict, FrozenSet, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ggcam.models import detect
from ggcam.models.feeds import feed_plan, feed_tensor
from ggcam.models.base import FileModel, ModelError, close_matches, load_variables
from ggcam.tf.compat import TF2, tf

# Keras's own classes that are not layers but appear as a class_name in model configs (models,
# and the dtype policy of newer Keras, which this Keras then fails to rebuild with one line).
_MODEL_CLASSES = ("Model", "Sequential", "Network", "Functional", "Policy")
# Layers that pass the class count along unchanged (looked through to find it in the config).
_SAME_CLASSES = ("Activation", "Softmax", "Dropout", "Flatten", "Reshape", "GlobalAveragePooling1D",
                 "GlobalAveragePooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GaussianNoise",
                 "GaussianDropout", "AlphaDropout", "ActivityRegularization", "ReLU", "LeakyReLU")
# Weights a randomisation check replaces (batch-norm parameters are left out).
_RANDOMIZED = ("kernel", "bias", "depthwise_kernel", "pointwise_kernel")


def _text(value) -> str:
    """An HDF5 string attribute as str (h5py 3 gives str, h5py 2 and fixed-length strings bytes)."""
    return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def _attr_list(group, name: str) -> List[str]:
    """A list-of-names attribute, also when Keras split it into name0, name1, ... chunks."""
    if name in group.attrs:
        return [_text(n) for n in group.attrs[name]]
    names, chunk = [], 0
    while "%s%d" % (name, chunk) in group.attrs:
        names += [_text(n) for n in group.attrs["%s%d" % (name, chunk)]]
        chunk += 1
    return names


@functools.lru_cache(maxsize=1)
def _keras_root() -> str:
    """The package of the Keras that ``tf.keras`` is (Keras 2 on both runtimes):
    ``tensorflow.python.keras`` (TF 1.15), ``keras.src`` (TF 2.15's own) or ``tf_keras.src``
    (the tf-keras package, which TF 2 uses when TF_USE_LEGACY_KERAS is set, as
    ``ggcam.tf.compat`` does). ModelError for Keras 3, which has no graph mode."""
    module = tf.keras.layers.Layer.__module__  # e.g. "tf_keras.src.engine.base_layer"
    if ".engine." not in module:
        raise ModelError("Keras files need Keras 2, but tf.keras is Keras %s here (TensorFlow %s): install "
                         "tf-keras (requirements-tf2.txt pins it) and import ggcam before TensorFlow, or set "
                         "TF_USE_LEGACY_KERAS=1" % (getattr(tf.keras, "__version__", "3"), tf.VERSION))
    return module.split(".engine.")[0]


def _keras_module(*names: str):
    """The first of ``names`` (module paths under the Keras root) that imports."""
    import importlib
    root = _keras_root()
    for name in names:
        try:
            return importlib.import_module("%s.%s" % (root, name))
        except ImportError:
            continue
    raise ModelError("this Keras (%s) has none of the modules %s" % (root, ", ".join(names)))


@functools.lru_cache(maxsize=1)
def _keras_classes() -> FrozenSet[str]:
    """The class names Keras resolves on its own: those of the modules its deserialization looks
    names up in when given no custom objects (layers, initializers, regularizers, constraints)."""
    names = set(_MODEL_CLASSES)
    for name in ("layers.serialization", "initializers", "regularizers", "constraints"):
        module = _keras_module(name)
        names.update(k for k, v in vars(module).items() if isinstance(v, type) and not k.startswith("_"))
        # Keras >= 2.2 (TF 2) keeps its table in LOCAL.ALL_OBJECTS, filled on demand.
        populate = getattr(module, "populate_deserializable_objects", None)
        if populate is not None:
            populate()
            names.update(k for k, v in module.LOCAL.ALL_OBJECTS.items()
                         if isinstance(v, type) and not k.startswith("_"))
    return frozenset(names)


def _builtin(class_name: object) -> bool:
    """Whether ``class_name`` names one of Keras's own classes (anything else is a custom object)."""
    return isinstance(class_name, str) and class_name in _keras_classes()


def _layer_configs(model_config: Dict) -> List[Dict]:
    """The layer configs of a Model/Sequential config (Sequential of Keras <= 2.1 is a list)."""
    config = model_config.get("config")
    if isinstance(config, list):
        return config
    if isinstance(config, dict) and isinstance(config.get("layers"), list):
        return config["layers"]
    return []


def _layer_name(layer: Dict) -> str:
    config = layer.get("config")
    name = layer.get("name") or (config.get("name") if isinstance(config, dict) else None)
    return str(name or layer.get("class_name", "?"))


# Keras layer classes known to compute only from their inputs and weights (Keras 2 names,
# with the aliases configs use). Anything else is refused unless trusted.
_LAYERS = frozenset((
    "InputLayer", "Dense", "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "ThresholdedReLU", "Softmax",
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise", "GaussianDropout",
    "AlphaDropout", "ActivityRegularization", "Flatten", "Reshape", "Permute", "RepeatVector", "Conv1D", "Conv2D",
    "Conv3D", "Convolution1D", "Convolution2D", "Convolution3D", "Conv1DTranspose", "Conv2DTranspose",
    "Conv3DTranspose", "Convolution2DTranspose", "Deconvolution2D", "SeparableConv1D", "SeparableConv2D",
    "SeparableConvolution1D", "SeparableConvolution2D", "DepthwiseConv1D", "DepthwiseConv2D", "MaxPooling1D",
    "MaxPooling2D", "MaxPooling3D", "MaxPool1D", "MaxPool2D", "MaxPool3D", "AveragePooling1D", "AveragePooling2D",
    "AveragePooling3D", "AvgPool1D", "AvgPool2D", "AvgPool3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
    "GlobalMaxPooling3D", "GlobalMaxPool1D", "GlobalMaxPool2D", "GlobalMaxPool3D", "GlobalAveragePooling1D",
    "GlobalAveragePooling2D", "GlobalAveragePooling3D", "GlobalAvgPool1D", "GlobalAvgPool2D", "GlobalAvgPool3D",
    "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D", "UpSampling1D",
    "UpSampling2D", "UpSampling3D", "BatchNormalization", "BatchNormalizationV1", "BatchNormalizationV2",
    "LayerNormalization", "UnitNormalization", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum",
    "Concatenate", "Dot", "Rescaling", "Normalization", "Resizing", "CenterCrop", "TimeDistributed",
    "Bidirectional", "SimpleRNN", "GRU", "LSTM", "GRUV1", "GRUV2", "LSTMV1", "LSTMV2", "ConvLSTM2D", "RNN",
    "SimpleRNNCell", "GRUCell", "LSTMCell", "StackedRNNCells"))
# Layers that carry raw TensorFlow ops (Keras makes them when a functional model calls TF
# functions): allowed only when what they carry is (``_op_layer_problem``).
_OP_LAYERS = ("TensorFlowOpLayer", "TFOpLambda", "SlicingOpLambda")
# The TF functions a TFOpLambda may name: each only makes ops of the safety allowlist.
_TF_FUNCTIONS = frozenset((
    "__operators__.add", "__operators__.getitem", "math.add", "math.add_n", "math.subtract", "math.multiply",
    "math.truediv", "math.divide", "math.negative", "math.abs", "math.square", "math.sqrt", "math.rsqrt",
    "math.exp", "math.log", "math.pow", "math.maximum", "math.minimum", "math.sigmoid", "math.tanh", "math.erf",
    "math.reduce_mean", "math.reduce_sum", "math.reduce_max", "math.reduce_min", "math.l2_normalize",
    "nn.relu", "nn.relu6", "nn.elu", "nn.selu", "nn.leaky_relu", "nn.silu", "nn.swish", "nn.gelu", "nn.softmax",
    "nn.sigmoid", "nn.bias_add", "reshape", "transpose", "compat.v1.transpose", "concat", "stack", "expand_dims",
    "squeeze", "cast", "clip_by_value", "identity", "pad", "image.resize", "compat.v1.image.resize", "tile",
    "broadcast_to", "ones_like", "zeros_like"))
# Keras's activation names (the strings a layer's "activation" may hold).
_ACTIVATIONS = frozenset((
    "linear", "relu", "relu6", "elu", "selu", "softplus", "softsign", "sigmoid", "hard_sigmoid", "tanh", "softmax",
    "log_softmax", "exponential", "swish", "silu", "gelu", "leaky_relu", "mish", "hard_swish", "hard_silu"))
# Built-in initializers, regularizers and constraints of later Keras versions (2.4 to 3):
# data about training, replaced before the rebuild (``_for_this_keras``).
_LATER_OBJECTS = frozenset((
    "Zeros", "Ones", "Constant", "RandomNormal", "RandomUniform", "TruncatedNormal", "VarianceScaling",
    "Orthogonal", "Identity", "GlorotNormal", "GlorotUniform", "HeNormal", "HeUniform", "LecunNormal",
    "LecunUniform", "STFTInitializer", "L1", "L2", "L1L2", "OrthogonalRegularizer", "MaxNorm", "MinMaxNorm",
    "NonNeg", "UnitNorm", "RadialConstraint"))
# Options of later Keras layer configs that change nothing at inference at these values: dropped
# when this Keras lacks them (any other value of an option it lacks is refused).
_INERT = {"optional": False, "ragged": False, "sparse": False, "groups": 1, "synchronized": False,
          "lora_rank": None, "lora_alpha": None, "seed": None, "noise_shape": None, "autocast": True,
          "quantization_config": None, "keepdims": False}
# Keyword arguments every Keras layer takes besides its own.
_BASE_OPTIONS = frozenset(("name", "trainable", "dtype", "dynamic", "input_shape", "batch_input_shape", "batch_size",
                           "weights", "activity_regularizer", "input_dim", "input_length"))
# Kinds of built-in Keras objects that configs name besides layers: read, never run on data
# (initializers only make the initial values of variables the file has no weights for).
_OBJECT_MODULES = ("initializers", "regularizers", "constraints")


@functools.lru_cache(maxsize=1)
def _keras_objects() -> FrozenSet[str]:
    """The class names of Keras's built-in initializers, regularizers and constraints, and the
    dtype policy of newer Keras."""
    names = {"Policy", "DTypePolicy", "FloatDTypePolicy"} | _LATER_OBJECTS
    for name in _OBJECT_MODULES:
        module = _keras_module(name)
        names.update(k for k, v in vars(module).items() if isinstance(v, type) and not k.startswith("_"))
        populate = getattr(module, "populate_deserializable_objects", None)
        if populate is not None:
            populate()
            names.update(k for k, v in module.LOCAL.ALL_OBJECTS.items()
                         if isinstance(v, type) and not k.startswith("_"))
    return frozenset(names)


def _op_layer_problem(class_name: str, config: object) -> Optional[str]:
    """Why an op-carrying layer may not run (None when what it carries is allowlisted)."""
    from ggcam.models import safety
    config = config if isinstance(config, dict) else {}
    if class_name == "TensorFlowOpLayer":
        from google.protobuf import json_format
        from tensorflow.core.framework import function_pb2, node_def_pb2
        try:
            node = json_format.ParseDict(config.get("node_def"), node_def_pb2.NodeDef())
        except (json_format.ParseError, TypeError, AttributeError):
            return "carries a TensorFlow op this project cannot read"
        # No library: an op that calls a function is refused too.
        found = safety.problems([node], function_pb2.FunctionDefLibrary())
        if found:
            return "carries the TensorFlow op %s (%s), which %s" % (node.name, node.op, found[0][2])
        return None
    function = config.get("function")
    if function not in _TF_FUNCTIONS:
        return "calls the TensorFlow function %r, which is not on the list of functions known to be pure computation" \
               % function
    return None


def unsafe_object(model_config: Dict) -> Optional[str]:
    """Why loading ``model_config`` could run anything but pure computation: the first layer
    anywhere in it (nested models, wrappers...) whose class is not on the allowlist (``_LAYERS``;
    a Lambda layer, a custom class, an op-carrying layer whose op or function is not allowed, an
    activation that is not Keras's), else None."""

    def walk(node: object, layer: str) -> Optional[str]:
        if isinstance(node, list):
            for item in node:
                found = walk(item, layer)
                if found:
                    return found
            return None
        if not isinstance(node, dict):
            return None
        if "class_name" in node:
            class_name = node["class_name"]
            if "name" in node or (isinstance(node.get("config"), dict) and "name" in node["config"]):
                layer = _layer_name(node)
            if class_name == "Lambda":
                return "layer %s is a Keras Lambda layer: it runs Python code stored in the file" % layer
            if class_name in _OP_LAYERS:
                problem = _op_layer_problem(class_name, node.get("config"))
                if problem:
                    return "layer %s (%s) %s" % (layer, class_name, problem)
            elif class_name == "__keras_tensor__":  # Keras 3's reference to a layer's output: data,
                pass  # whose contents are walked like everything else's
            elif not isinstance(class_name, str) or not (class_name in _LAYERS or class_name in _MODEL_CLASSES
                                                         or class_name in _keras_objects()):
                if _builtin(class_name):
                    return ("layer %s is a Keras %s, which is not on the list of layers known to be pure "
                            "computation" % (layer, class_name))
                return ("layer %s uses the custom class %r: custom objects run their own code"
                        % (layer, str(class_name)))
        odd = [k for k in node if isinstance(k, str) and k.startswith("__")]
        if odd:  # Keras's deserialization hooks (__passive_serialization__, __tuple__, ...) act on their own
            return "layer %s's config has the key %r, which Keras's loader acts on" % (layer, odd[0])
        activation = node.get("activation")
        if isinstance(activation, str) and activation not in _ACTIVATIONS:
            return "layer %s has the activation %r, which is not one of Keras's" % (layer, activation)
        for value in node.values():
            found = walk(value, layer)
            if found:
                return found
        return None

    return walk(model_config, "?")


def outside_storage(f, limit: int = 100000) -> Optional[str]:
    """Why reading HDF5 file ``f`` could read another file, or None: a link to another file or
    a soft link, a dataset whose bytes are stored in other files (external storage) or mapped
    from them (virtual). HDF5 follows these by itself, so a Keras file's "weights" could be
    another file's bytes. (At most ``limit`` objects are looked at: more is refused too.)"""
    import h5py
    stack, seen = [(f, "")], 0
    while stack:
        group, where = stack.pop()
        for name in group:
            seen += 1
            if seen > limit:
                return "it holds more than %d objects" % limit
            path = "%s/%s" % (where, name)
            link = group.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                return "%s is a link into another file (%s)" % (path, link.filename)
            if isinstance(link, h5py.SoftLink):
                return "%s is a soft link (%s)" % (path, link.path)
            item = group[name]
            if isinstance(item, h5py.Group):
                stack.append((item, path))
            elif isinstance(item, h5py.Dataset):
                if item.external:
                    return "dataset %s keeps its bytes in another file (%s)" % (path, _text(item.external[0][0]))
                if getattr(item, "is_virtual", False):
                    return "dataset %s is virtual, mapped from other files" % path
    return None


def _keras3_nodes(inbound: List) -> List:
    """Keras 3's inbound nodes ({"args": [keras tensors...], "kwargs": ...}) as Keras 2's
    ([[layer, node, tensor, {}], ...] per node)."""
    nodes = []
    for node in inbound:
        if not isinstance(node, dict):
            nodes.append(node)
            continue
        found, stack = [], [node.get("args", [])]
        while stack:
            item = stack.pop(0)
            if isinstance(item, list):
                stack[:0] = item
            elif isinstance(item, dict) and item.get("class_name") == "__keras_tensor__":
                history = item["config"]["keras_history"]
                found.append([history[0], history[1], history[2], {}])
        nodes.append(found)
    return nodes


def _for_this_keras(config: Dict) -> Tuple[Dict, List[str]]:
    """A copy of a model config that this Keras can rebuild, and what was changed (for a note).

    Initializers, regularizers and constraints only shape training (the weights come from the
    file): initializers become zeros, the others none, so those of any Keras version load. A
    Keras 3 config (written to HDF5 by Keras 3) is put in Keras 2's form: its module and
    registry fields dropped, dtype policies as names, ``batch_shape``, input and output layers,
    inbound nodes. Layer options this Keras lacks are dropped when at a value that changes
    nothing (``_INERT``); any other is refused (ModelError)."""
    changed = set()  # type: set

    def fix(node: object, key: str = "") -> object:
        if isinstance(node, list):
            return [fix(item, key) for item in node]
        if not isinstance(node, dict):
            return node
        if key.endswith("_initializer") and "class_name" in node:
            if node.get("class_name") != "Zeros":
                changed.add("initializers")
            return {"class_name": "Zeros", "config": {}}
        if key.endswith(("_regularizer", "_constraint")) and "class_name" in node:
            changed.add("regularizers and constraints")
            return None
        if node.get("class_name") in ("DTypePolicy", "FloatDTypePolicy", "Policy") and key == "dtype":
            return (node.get("config") or {}).get("name", "float32")
        if node.get("class_name") == "Functional" and not TF2:  # Keras >= 2.4's name for a nested Model
            node = dict(node, class_name="Model")
            changed.add("Keras 2.4+ class names")
        out = {}
        for k, v in node.items():
            if k in ("module", "registered_name", "build_config", "compile_config", "shared_object_id"):
                changed.add("Keras 3 fields")
                continue
            out[k] = fix(v, k)
        if isinstance(out.get("inbound_nodes"), list) and any(isinstance(n, dict) for n in out["inbound_nodes"]):
            out["inbound_nodes"] = _keras3_nodes(out["inbound_nodes"])
            out["_keras3"] = True
        layers = out.get("layers")
        if isinstance(layers, list) and any(isinstance(l, dict) and l.pop("_keras3", False) for l in layers):
            # Keras 2 counts a nested model's own graph as its node 0: its calls start at 1.
            nested = {_layer_name(l) for l in layers if isinstance(l, dict) and l.get("class_name") in _MODEL_CLASSES}
            for l in layers:
                for node in l.get("inbound_nodes") or []:
                    for entry in node:
                        if entry[0] in nested:
                            entry[1] += 1
            for end in ("output_layers",):
                value = out.get(end)
                for entry in ([value] if value and isinstance(value[0], str) else value or []):
                    if entry[0] in nested:
                        entry[1] += 1
        return out

    config = fix(config)
    for model in _walk_configs(config):
        body = model["config"]
        for end in ("input_layers", "output_layers"):
            value = body.get(end) if isinstance(body, dict) else None
            if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str):
                body[end] = [value]  # Keras 3 writes a single one flat
    for layer in _walk_configs(config):
        name, options = layer.get("class_name"), layer.get("config")
        if not isinstance(options, dict) or name in _MODEL_CLASSES:
            continue
        if name == "InputLayer" and "batch_shape" in options:
            options["batch_input_shape"] = options.pop("batch_shape")
        cls = getattr(tf.keras.layers, str(name), None)
        if cls is None:
            continue  # Keras says so itself when it rebuilds
        if _reads_own_config(cls):
            continue  # it reads its config itself (Lambda, wrappers): its keys are not all options
        accepted = _options_of(cls)
        if accepted is None:
            continue  # a wrapper passing everything on (TF 2's v1 BatchNormalization): cannot tell
        for option in [k for k in options if k not in accepted]:
            if option in _INERT and options[option] == _INERT[option]:
                del options[option]
                changed.add("options this Keras lacks, at values that change nothing")
            else:
                raise ModelError("layer %s uses the option %s=%s, which TensorFlow %s's Keras does not have"
                                 % (options.get("name", name), option, json.dumps(options[option]), tf.VERSION))
    return config, sorted(changed)


def _reads_own_config(cls: type) -> bool:
    """Whether a layer class has a ``from_config`` of its own (below Keras's base Layer's)."""
    for klass in cls.__mro__:
        if klass.__name__ == "Layer":
            return False
        if "from_config" in vars(klass):
            return True
    return False


def _options_of(cls: type) -> Optional[set]:
    """The keyword arguments a Keras layer class takes: its ``__init__``'s and, through
    ``**kwargs``, those of the classes it passes them on to; None when it takes ``*args``."""
    import inspect
    accepted = set(_BASE_OPTIONS)
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = inspect.signature(klass.__init__).parameters
        if any(p.kind == p.VAR_POSITIONAL for p in parameters.values()):
            return None
        accepted.update(parameters)
        if not any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
            break
    return accepted


def _walk_configs(node: object) -> Iterator[Dict]:
    """Every dict with a "class_name" and a "config" in a model config, nested ones included."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            if "class_name" in item and "config" in item:
                yield item
            stack.extend(item.values())


def composite_activations(guided: bool) -> Dict[str, object]:
    """Keras activation names whose activation TensorFlow builds from several ops -> the same
    function (as Keras defines it) with a guided gate on its output (``guided_relu``); also
    gives TF 1.15's Keras the ones it lacks (swish, gelu, ...)."""
    import math
    from ggcam.tf import guided as guided_relu

    def swish(x):
        return x * tf.sigmoid(x)

    def gelu(x):  # Keras's default (approximate=False)
        return 0.5 * x * (1.0 + tf.math.erf(x / math.sqrt(2.0)))

    def hard_swish(x):
        return x * tf.nn.relu6(x + 3.0) / 6.0

    def mish(x):
        return x * tf.tanh(tf.nn.softplus(x))

    def wrap(fn):
        def activation(x):
            return guided_relu.composite_activation(fn, x, guided)
        activation.__name__ = fn.__name__
        return activation

    table = {"swish": swish, "silu": swish, "gelu": gelu, "hard_swish": hard_swish, "hard_silu": hard_swish,
             "mish": mish}
    return {name: wrap(fn) for name, fn in table.items()}


def _input_layer(model_config: Dict, fed: Sequence[str] = ()) -> Tuple[str, List[Optional[int]]]:
    """(name, batch_input_shape) of the model's image input, from its config: its one input,
    or the one input not among ``fed`` (input layer names given values with --feed)."""
    layers = _layer_configs(model_config)
    config = model_config.get("config")
    if isinstance(config, dict) and "input_layers" in config:
        names = [entry[0] for entry in config["input_layers"]]
        unknown = [f for f in fed if f not in names]
        if unknown:
            raise ModelError("--feed %s: the model's inputs are %s" % (unknown[0], ", ".join(names)))
        images = [n for n in names if n not in fed]
        if len(images) != 1:
            raise ModelError("the model has %d inputs (%s); give all but the image a value with --feed NAME=VALUE"
                             % (len(names), ", ".join(names)))
        found = [l for l in layers if _layer_name(l) == images[0]]
    else:
        found = layers[:1]
    shape = found[0].get("config", {}).get("batch_input_shape") if found else None
    if not shape:
        raise ModelError("the model config gives no input shape (batch_input_shape)")
    name = _layer_name(found[0])
    if found[0].get("class_name") != "InputLayer":  # a Sequential's first layer: Keras adds the input
        name += "_input"
    return name, list(shape)


def _output_names(model_config: Dict) -> List[str]:
    """The names of the layers whose outputs are the model's, from its config."""
    config = model_config.get("config")
    if isinstance(config, dict) and "output_layers" in config:
        return [str(entry[0]) for entry in config["output_layers"]]
    layers = _layer_configs(model_config)
    return [_layer_name(layers[-1])] if layers else []


def _class_count(model_config: Dict) -> Optional[int]:
    """The number of classes read off the config: the units (or filters) of the layer behind
    the output, looking through activations, dropout, pooling and reshapes; None if unsure."""
    try:
        layers = _layer_configs(model_config)
        by_name = {_layer_name(l): l for l in layers}
        config = model_config["config"]
        sequential = not (isinstance(config, dict) and "output_layers" in config)
        layer = layers[-1] if sequential else by_name[config["output_layers"][0][0]]
        for _ in range(len(layers)):
            c = layer["config"]
            if c.get("units") or c.get("filters"):
                return int(c.get("units") or c.get("filters"))
            if layer["class_name"] not in _SAME_CLASSES:
                return None
            if sequential:
                layer = layers[layers.index(layer) - 1]
            else:
                layer = by_name[layer["inbound_nodes"][0][0][0]]
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        pass
    return None


def _layer_outputs(model: tf.keras.Model, downstream: Optional[set] = None,
                   prefix: str = "") -> "OrderedDict[str, tf.Tensor]":
    """Each layer's output in the model's own graph, by layer name, in model order; the layers
    of a nested model (a ``keras.applications`` base inside a transfer-learning model) too, as
    ``base/layer``, after the nested model's own entry.

    A layer's output there is the one at the node that depends on the model's input (a nested
    model also has a node of its own, on its own input); layers called more than once in the
    model (shared) have no single output and are left out.
    """
    if downstream is None:
        downstream, stack = set(), [t.op for t in model.inputs]
        while stack:
            op = stack.pop()
            if op not in downstream:
                downstream.add(op)
                stack.extend(c for t in op.outputs for c in t.consumers())
    named = OrderedDict()  # type: OrderedDict[str, tf.Tensor]
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.InputLayer):
            continue
        outputs = []
        for node in itertools.count():
            try:
                out = layer.get_output_at(node)
            except (ValueError, RuntimeError):  # no more nodes
                break
            if isinstance(out, tf.Tensor) and out.op in downstream:
                outputs.append(out)
        if len(outputs) == 1:
            named[prefix + layer.name] = outputs[0]
        if isinstance(layer, tf.keras.Model):
            named.update(_layer_outputs(layer, downstream, prefix + layer.name + "/"))
    return named


def _walk_layers(layers: Sequence[tf.keras.layers.Layer]) -> Iterator[tf.keras.layers.Layer]:
    """Layers in model order, nested models' layers in place of the nested model."""
    for layer in layers:
        if isinstance(layer, tf.keras.Model):
            for inner in _walk_layers(layer.layers):
                yield inner
        else:
            yield layer


def _short_name(variable: tf.Variable) -> str:
    return variable.name.split("/")[-1].split(":")[0]


@contextlib.contextmanager
def _inference_mode() -> Iterator[None]:
    """Keras's learning phase 0 for the layers built in the block (this graph only, restored on
    exit): dropout and batch norm in inference mode. TF 2's Keras says the scope is deprecated
    (for eager code, where ``training=False`` replaces it) from inside contextlib; it is what
    graph mode has, so that warning alone is silenced."""
    scope = tf.keras.backend.learning_phase_scope(0)
    with _no_learning_phase_warning():
        scope.__enter__()
    try:
        yield
    finally:
        with _no_learning_phase_warning():
            scope.__exit__(None, None, None)


@contextlib.contextmanager
def _no_learning_phase_warning() -> Iterator[None]:
    # Only around the scope's own entry and exit: the layers built inside may warn of things
    # worth saying.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*learning_phase_scope. is deprecated", category=UserWarning)
        yield


class KerasModel(FileModel):
    """A Keras model saved as HDF5 (``model.save("file.h5")``), explained in inference mode."""

    def __init__(self, path: str, feeds: Optional[Dict[str, object]] = None, **kwargs):
        super().__init__(path, **kwargs)
        self.name = os.path.splitext(os.path.basename(path))[0]
        # Input layer name -> value, for the model's other inputs (":0" dropped).
        self.feeds = {k.split(":")[0]: v for k, v in (feeds or {}).items()}
        self.keras_model = None  # the rebuilt tf.keras model (after build)
        self._config = None  # type: Optional[Dict]
        self._input_name = ""
        self._outputs = OrderedDict()  # type: OrderedDict[str, tf.Tensor]  # every layer, by Keras name
        self._layers = OrderedDict()  # type: OrderedDict[str, tf.Tensor]  # the 4-D ones
        self._scope = ""
        self._source = None  # type: Optional[tf.Tensor]  # what the rebuilt model is called on
        self._values = []  # type: List[Tuple[tf.Variable, np.ndarray]]
        self._object = None  # a tf.keras.Model given in memory (``from_object``) instead of a file
        self._object_values = []  # type: List[np.ndarray]  # its weights' values, read in prepare
        self._custom = {}  # type: Dict[str, type]  # its own layer classes, for the rebuild

    @classmethod
    def from_object(cls, model: "tf.keras.Model", **kwargs) -> "KerasModel":
        """A ``tf.keras.Model`` object in memory (the user's own: trusted): rebuilt from its
        config in the explainer's graph, its weights' current values taken from its session;
        the user's model is left as it is."""
        self = cls("the Keras model %s" % model.name, trust_model=True, **kwargs)
        self.name, self._object = model.name, model
        return self

    # --------------------------------------------------------------- reading the file

    def _open(self):
        import h5py
        import zipfile
        if not os.path.isfile(self.path):
            raise ModelError("no Keras model file at %s" % self.path)
        if zipfile.is_zipfile(self.path):
            h5 = os.path.splitext(self.path)[0] + ".h5"
            raise ModelError("%s is a Keras 3 file (a .keras zip archive); Keras 3 has no graph mode to rebuild it "
                             "in: save it as HDF5 with Keras 3 and explain that file: python -c \"import keras; "
                             "keras.saving.load_model('%s').save('%s')\"" % (self.path, self.path, h5))
        try:
            return h5py.File(self.path, "r")
        except (OSError, ValueError) as exc:
            raise ModelError("%s is not a Keras HDF5 model file (%s)" % (self.path, str(exc).splitlines()[0]))

    def prepare(self) -> None:
        self.notes = []
        if self._object is not None:
            self._prepare_config(json.loads(self._object.to_json()))
            graph = self._object.weights[0].graph if self._object.weights else tf.get_default_graph()
            with graph.as_default():  # as model.get_weights() reads them, in the model's Keras session
                self._object_values = self._object.get_weights()
            self._custom = {type(l).__name__: type(l) for l in _walk_layers(self._object.layers)
                            if not type(l).__module__.startswith(_keras_root())}
            return
        with self._open() as f:
            if not self.trust_model:
                outside = outside_storage(f)
                if outside:
                    raise ModelError("refusing %s: %s (reading it would read another file); pass --trust_model to "
                                     "load it anyway" % (self.path, outside))
            if "model_config" not in f.attrs:
                raise ModelError("%s holds no Keras model config (a weights-only file? save the whole "
                                 "model with model.save)" % self.path)
            try:
                config = json.loads(_text(f.attrs["model_config"]))
            except (ValueError, UnicodeDecodeError) as exc:
                raise ModelError("%s: cannot parse its model config: %s" % (self.path, exc))
            if "model_weights" not in f:
                raise ModelError("%s holds no weights (model_weights group)" % self.path)
        if not isinstance(config, dict) or "class_name" not in config:
            raise ModelError("%s: its model config is not a Keras model" % self.path)
        if not self.trust_model:
            unsafe = unsafe_object(config)
            if unsafe:
                raise ModelError("refusing %s: %s; pass --trust_model to load it anyway"
                                 % (self.path, unsafe))
        self._prepare_config(config)

    def _prepare_config(self, config: Dict) -> None:
        """Everything ``prepare`` reads off a model config (checked already)."""
        config, changed = _for_this_keras(config)
        if changed:
            self.notes.append("Keras file: %s made for TensorFlow %s's Keras (the weights are the file's)"
                              % (", ".join(changed), tf.VERSION))
        self._config = config
        try:
            self._input_name, shape = _input_layer(config, list(self.feeds))
        except ModelError as exc:
            raise ModelError("%s: %s" % (self.path, exc))
        except (KeyError, IndexError, TypeError, AttributeError):
            raise ModelError("%s: its model config is not one this Keras can read" % self.path)
        if self.input_tensor and self.input_tensor.split(":")[0] != self._input_name:
            raise ModelError("no input named %r in %s; its input layer is %s"
                             % (self.input_tensor, self.path, self._input_name))
        if len(shape) != 4:
            raise ModelError("%s: input shape %s is not an image [batch, height, width, channels]"
                             % (self.path, shape[1:]))
        self.input_layout = "NHWC"
        if shape[3] not in (1, 3) and shape[1] in (1, 3):  # channels first: fed through a transpose
            self.input_layout = "NCHW"
            shape = [shape[0], shape[2], shape[3], shape[1]]
        if shape[1] is None or shape[2] is None:
            raise ModelError("%s: its input size is not fixed (%s); cannot tell what size to feed"
                             % (self.path, shape[1:]))
        if shape[3] not in (1, 3):
            raise ModelError("%s: input %s has %s channels; only greyscale (1) or RGB (3) images can be explained"
                             % (self.path, shape[1:], shape[3]))
        self.input_size, self.channels, self.max_batch = (int(shape[1]), int(shape[2])), int(shape[3]), shape[0]
        self.num_classes = _class_count(config) or 0
        self._check_names()
        self.notes.append(self.preprocessing_note())

    def prepared_state(self) -> Dict:
        return {"notes": list(self.notes), "config": self._config, "input": self._input_name,
                "input_size": list(self.input_size), "channels": self.channels, "max_batch": self.max_batch,
                "num_classes": self.num_classes, "input_layout": self.input_layout}

    def adopt(self, state: Dict) -> None:
        self.notes, self._config, self._input_name = list(state["notes"]), state["config"], state["input"]
        self.input_size, self.channels = tuple(state["input_size"]), state["channels"]
        self.max_batch, self.num_classes = state["max_batch"], state["num_classes"]
        self.input_layout = state["input_layout"]

    def _check_names(self) -> None:
        if self.class_names is not None and self.num_classes and len(self.class_names) != self.num_classes:
            raise ModelError("%d class names given for the %d classes of %s"
                             % (len(self.class_names), self.num_classes, self.path))

    def _weight_values(self, model: tf.keras.Model) -> List[Tuple[tf.Variable, np.ndarray]]:
        """(variable, value) for every weight of ``model``, read from the file in Keras's order
        (layers with weights, each one's trainable then non-trainable weights)."""
        if self._object is not None:
            pairs = list(zip(model.weights, self._object_values))
            for v, value in pairs:
                if tuple(v.shape.as_list()) != value.shape:
                    raise ModelError("%s: weight %s has shape %s, the rebuilt model's %s"
                                     % (self.path, v.op.name, value.shape, tuple(v.shape.as_list())))
            return pairs
        hdf5_format = _keras_module("saving.hdf5_format", "saving.legacy.hdf5_format")
        with self._open() as f:
            group = f["model_weights"]
            version = _text(group.attrs.get("keras_version", f.attrs.get("keras_version", b"1")))
            backend = _text(group.attrs["backend"]) if "backend" in group.attrs else None
            saved = [(name, _attr_list(group[name], "weight_names")) for name in _attr_list(group, "layer_names")]
            saved = [(name, weights) for name, weights in saved if weights]
            layers = [l for l in model.layers if l.trainable_weights + l.non_trainable_weights]
            if len(saved) != len(layers):
                raise ModelError("%s stores weights for %d layers, its model has %d layers with weights"
                                 % (self.path, len(saved), len(layers)))
            pairs = []
            for (name, weight_names), layer in zip(saved, layers):
                variables = layer.trainable_weights + layer.non_trainable_weights
                values = [np.asarray(group[name][w]) for w in weight_names]
                values = hdf5_format.preprocess_weights_for_loading(layer, values, version, backend)
                if len(values) != len(variables):
                    raise ModelError("%s: layer %s has %d weights in the file, the model's %s needs %d"
                                     % (self.path, name, len(values), layer.name, len(variables)))
                for v, value in zip(variables, values):
                    if tuple(v.shape.as_list()) != value.shape:
                        raise ModelError("%s: weight %s has shape %s in the file, the model needs %s"
                                         % (self.path, v.op.name, value.shape, tuple(v.shape.as_list())))
                    pairs.append((v, value.astype(v.dtype.base_dtype.as_numpy_dtype, copy=False)))
        return pairs

    # --------------------------------------------------------------- building

    def _rebuild(self) -> tf.keras.Model:
        try:
            # From the parsed dict, not from JSON text: Keras's JSON loader decodes objects with
            # hooks of its own while it parses, before any layer is looked at.
            model = tf.keras.models.model_from_config(json.loads(json.dumps(self._config)),
                                                      custom_objects=dict(composite_activations(self.guided),
                                                                          **self._custom))
        except Exception as exc:  # Keras raises many kinds for configs it cannot rebuild
            lines = str(exc).strip().splitlines() or [type(exc).__name__]
            raise ModelError("cannot rebuild the model of %s with TensorFlow %s's Keras: %s"
                             % (self.path, tf.VERSION, lines[0])) from exc
        if len(model.outputs) != 1 and not self.logits_tensor:
            raise ModelError("%s has %d outputs (%s); name the logits with --logits_tensor"
                             % (self.path, len(model.outputs), ", ".join(_output_names(self._config))))
        return model

    def _create(self, model_input: tf.Tensor) -> tf.Tensor:
        with _inference_mode():
            model = self._rebuild()
            self._values = self._weight_values(model)
            # One call on our input gives the output and every layer's output, so the layers
            # a user picks are those the explained logits depend on.
            named = _layer_outputs(model)
            # A nested model's inner layers are not asked for: Keras would compute them again
            # beside the nested call; they are found inside that call below.
            wanted = list(OrderedDict.fromkeys([t for k, t in named.items() if "/" not in k] + [model.outputs[0]]))
            source = model_input
            if self.input_layout == "NCHW":
                source = tf.transpose(model_input, [0, 3, 1, 2], name="ggcam_channels_first")
            fed = []
            for name, t in zip(model.input_names, model.inputs):
                if name in self.feeds:
                    fed.append(feed_tensor(feed_plan(name, self.feeds[name], t), source))
                else:
                    fed.append(source)
            results = tf.keras.Model(model.inputs, wanted, name="explained")(fed if len(fed) > 1 else source)
            self._source = source
        if self.feeds:
            self.notes.append("fed: %s" % ", ".join("%s=%s" % (k, json.dumps(v)) for k, v in self.feeds.items()))
        results = results if isinstance(results, list) else [results]
        result_of = {id(t): r for t, r in zip(wanted, results)}
        self.keras_model = model
        self._scope = results[-1].op.name.split("/")[0]  # "explained", or "explained_1" if taken
        graph = results[-1].graph
        self._outputs = OrderedDict()
        for name, t in named.items():
            if "/" not in name:
                self._outputs[name] = result_of[id(t)]
                continue
            try:  # the nested model's call in ours made its layers' ops under our call's scope
                self._outputs[name] = graph.get_tensor_by_name("%s/%s" % (self._scope, t.name))
            except KeyError:
                pass
        self._layers = OrderedDict((k, v) for k, v in self._outputs.items() if v.shape.ndims == 4)
        output = result_of[id(model.outputs[0])]

        if not self.input_tensor:
            self.notes.append("input: %s %s%s" % (self._input_name, [self.input_size[0], self.input_size[1],
                                                                     self.channels],
                                                 ", fed the photo's luminance" if self.channels == 1 else ""))
        if self.logits_tensor:
            output = self._graph_tensor(self.logits_tensor)
            if output is None:
                raise ModelError("no layer or tensor named %r in %s (for --logits_tensor)%s"
                                 % (self.logits_tensor, self.path,
                                    close_matches(self.logits_tensor, list(self._outputs))))
            logits = detect.logits_behind(output)
            if logits is not output:  # probabilities saturate the gradient: their logits, as when found
                self.notes.append("logits: %s, the input of the %s that --logits_tensor=%s names (probabilities "
                                  "would saturate the gradient)" % (self._unscoped(logits.op.name),
                                                                     detect.activation_of(output).type,
                                                                     self.logits_tensor))
        else:
            logits = detect.logits_behind(output)
            out_layer = (_output_names(self._config) or ["?"])[0]
            if logits is output:
                self.notes.append("logits: the output of layer %s" % out_layer)
            else:
                self.notes.append("logits: the input of the %s of layer %s, the model's output"
                                  % (detect.activation_of(output).type, out_layer))
        self.output_function = detect.output_function(logits, output)
        if logits.shape.ndims != 2 or logits.shape.as_list()[-1] is None:
            raise ModelError("the logits of %s (%s) must be [batch, classes], got shape %s"
                             % (self.path, self.logits_tensor or logits.name, logits.shape))
        self.num_classes = logits.shape.as_list()[-1]
        self._check_names()

        if self.input_layout == "NCHW":
            self.notes.append("input %s takes channels first: the image is transposed to it in the graph"
                              % self._input_name)
        self.logits = logits  # (``layout`` walks back from it)
        feature_map = detect.last_feature_map(logits, self._source, self.layout)
        if feature_map is not None:
            names = [k for k, v in self._layers.items() if v is feature_map]
            self.default_layer = names[-1] if names else feature_map.name
            self.notes.append("layer: %s %s, the last feature map before global pooling or flattening%s"
                              % (self.default_layer, self.layer_shape(feature_map), self._layout_note(feature_map)))
        return logits

    def _layout_source(self) -> Optional[tf.Tensor]:
        return self._source

    def restore(self, session: tf.Session) -> None:
        """Feed each weight's value to its variable's initializer (no constants); variables the
        file has no value for run their own initializers."""
        load_variables(session, [(v.initializer, value) for v, value in self._values])
        loaded = {v.op for v, _ in self._values}
        rest = [v.initializer for v in self.keras_model.weights if v.op not in loaded]
        if rest:
            session.run(rest)

    # --------------------------------------------------------------- layers

    def layers(self) -> "OrderedDict[str, tf.Tensor]":
        return self._layers

    def layer(self, name: str) -> tf.Tensor:
        if not name:
            raise ModelError("found no 4-D feature map before the logits of %s; name one with --layer "
                             "(see --list_layers)" % self.path)
        return super().layer(name)

    def _graph_tensor(self, name: str) -> Optional[tf.Tensor]:
        """A Keras layer's output (any rank) in the explained call, or an op or tensor of the
        graph, looked up inside that call's name scope first."""
        if name in self._outputs:
            return self._outputs[name]
        inner = [k for k in self._outputs if k.endswith("/" + name)]  # a nested model's layer, by its own name
        if len(inner) == 1:
            return self._outputs[inner[0]]
        return super()._graph_tensor(name)

    def _candidates(self, name: str) -> Tuple[str, ...]:
        return self._scoped(name), name

    def _scoped(self, name: str) -> str:
        return "%s/%s" % (self._scope, name) if self._scope else name

    def _unscoped(self, name: str) -> str:
        prefix = self._scope + "/"
        return name[len(prefix):] if self._scope and name.startswith(prefix) else name

    def randomization_layers(self) -> Optional["OrderedDict[str, List[tf.Variable]]"]:
        """Layers with kernels or biases, from the output back to the input, by Keras name."""
        found = []
        for layer in _walk_layers(self.keras_model.layers):
            weights = [w for w in layer.weights if _short_name(w) in _RANDOMIZED]
            if weights:
                found.append((layer.name, weights))
        return OrderedDict(reversed(found)) if found else None

    def describe(self) -> Dict[str, object]:
        facts = super().describe()
        facts["file"] = self.path
        if self.feeds:
            facts["feeds"] = dict(self.feeds)
        return facts
