"""TensorFlow, from one place: the v1 graph API, quiet.

Every module of the project that needs TensorFlow takes ``tf`` from here: it is
``tensorflow.compat.v1`` (present in TF 1.15 too), with TensorFlow's start-up logging and
deprecation warnings silenced.
"""
import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
with warnings.catch_warnings():
    # TF 1.15 and its dependencies warn on import about numpy and deprecated modules.
    warnings.simplefilter("ignore")
    import tensorflow as _tensorflow

tf = _tensorflow.compat.v1
tf2 = _tensorflow.compat.v2
tf.logging.set_verbosity(tf.logging.ERROR)
VERSION = _tensorflow.__version__
