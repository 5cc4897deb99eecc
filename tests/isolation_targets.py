"""Targets for the isolation tests (tests/test_safety.py): run in a child process by
``ggcam.engine.isolation.run_isolated``, so they live in a module the child can import."""
import os
import signal
import time


def value(x):
    return {"a": [x, 2]}


def fails():
    from ggcam.models.base import ModelError
    raise ModelError("bad model\nsecond line")


def wrong_value():
    raise ValueError("wrong value")


def segfault():
    os.kill(os.getpid(), signal.SIGSEGV)


def sleeps():
    time.sleep(30)


def hogs_memory():
    return len(bytearray(8 << 30))
