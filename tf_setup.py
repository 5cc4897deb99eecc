"""Import TensorFlow 1.15 without its start-up noise."""
import os
import warnings


def quiet_tensorflow():
    """Return the ``tensorflow`` module with C++ and Python deprecation logging silenced."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with warnings.catch_warnings():
        # TF 1.15 and its dependencies warn on import about numpy and deprecated modules.
        warnings.simplefilter("ignore")
        import tensorflow as tf
    tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
    return tf
