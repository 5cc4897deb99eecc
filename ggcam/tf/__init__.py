"""TensorFlow from one place (``compat``: the v1 graph API on TF 1.15 and TF 2) and the guided gradients (``guided``)."""
