"""Runs over many images: a folder of them (``folder``), its results files and gallery (``results``, ``gallery``), datasets on Apache Beam (``beam``)."""
