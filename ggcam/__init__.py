"""Guided Grad-CAM for TensorFlow 1 graph models: the library behind inference.py and evaluate.py.

Importing the package loads no TensorFlow; ``ggcam.Explainer`` (the notebook API) does.
"""


def __getattr__(name):  # PEP 562: TensorFlow loads only when the notebook API is asked for
    if name in ("Explainer", "Explanation"):
        from ggcam import explainer
        return getattr(explainer, name)
    raise AttributeError("module 'ggcam' has no attribute %r" % name)
