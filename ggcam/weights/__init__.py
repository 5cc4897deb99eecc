"""Weights and model files from elsewhere: the zoo's checkpoints (``checkpoints``), files inside registry packages and archives (``registry``)."""
