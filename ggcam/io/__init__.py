"""Files in and out: photos decoded (``decoding``), pictures encoded (``encoding``), and
written so that no half-written file is ever seen (``safe_files``)."""
