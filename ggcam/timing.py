"""Phase stamps for profiling a cold start (benchmarks/profile_job.py).

With ``GGCAM_PROFILE_COLD=1`` in the environment, ``stamp(name)`` prints
``ggcam-profile <name> <seconds since the epoch>`` on stderr; otherwise it does nothing.
"""
import os
import sys
import time

_ON = os.environ.get("GGCAM_PROFILE_COLD") == "1"


def stamp(name: str) -> None:
    """Mark the end of a phase (a no-op unless GGCAM_PROFILE_COLD=1)."""
    if _ON:
        print("ggcam-profile %s %.4f" % (name, time.time()), file=sys.stderr, flush=True)
