"""Values for a model's other inputs (``--feed NAME=VALUE``): is_training, keep_prob, side inputs.

A fed value becomes a constant of the explainer's graph in place of the tensor (the input map
of the import, or an input of the rebuilt Keras model), repeated for every image of a batch
when the tensor has a batch axis: nothing is fed at run time, and the value is part of what
the model is (its notes, ``describe()``, raw.npz).
"""
from typing import Dict

import numpy as np

from ggcam.models.base import ModelError
from ggcam.tf.compat import tf


def shape_text(t: tf.Tensor) -> str:
    return str([d if d is not None else "?" for d in t.shape.as_list()]) if t.shape.ndims is not None else "[unknown]"


def feed_plan(name: str, value, t: tf.Tensor) -> Dict:
    """How ``value`` (a bool, number or nested list) is fed to tensor ``t``: JSON-ready
    {"value", "dtype", "batched"}. ModelError when it cannot be."""
    dtype = t.dtype.base_dtype
    array = np.asarray(value)
    if dtype == tf.bool and array.dtype != np.bool_ or dtype != tf.bool and array.dtype.kind not in "biuf":
        raise ModelError("--feed %s: %s is %s, got %r" % (name, t.name, dtype.name, value))
    if dtype.is_integer and array.dtype.kind == "f" and not np.all(array == np.round(array)):
        raise ModelError("--feed %s: %s is %s, got %r" % (name, t.name, dtype.name, value))
    dims = t.shape.as_list() if t.shape.ndims is not None else None
    batched = dims is not None and len(dims) == array.ndim + 1
    fixed = dims[1:] if batched else dims
    if dims is not None and (len(fixed) != array.ndim or any(d is not None and d != n for d, n in zip(fixed, array.shape))):
        raise ModelError("--feed %s: %s has shape %s, got a value of shape %s"
                         % (name, t.name, shape_text(t), list(array.shape)))
    return {"value": array.astype(dtype.as_numpy_dtype).tolist(), "dtype": dtype.name, "batched": batched}


def feed_tensor(plan: Dict, image: tf.Tensor) -> tf.Tensor:
    """A fed value as a constant of the explainer's graph, repeated for every image of the
    batch when the tensor has a batch axis."""
    value = tf.constant(np.asarray(plan["value"], dtype=tf.as_dtype(plan["dtype"]).as_numpy_dtype),
                        name="ggcam_feed")
    if not plan["batched"]:
        return value
    ones = [1] * value.shape.ndims
    return tf.tile(value[None], tf.concat([tf.shape(image)[:1], tf.constant(ones, tf.int32)], 0))


