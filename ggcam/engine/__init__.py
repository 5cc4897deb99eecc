"""The graph engine: one graph and session per model (``graph``), built graphs kept on disk (``cache``), a stranger's model file read in a child process first (``isolation``)."""
