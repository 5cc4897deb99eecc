"""Reading a stranger's model file in a child process, so that a crash or a hang of
TensorFlow's native code on a crafted file is a one-line error, never the end of the run.

``run_isolated(target, args, what)`` starts a fresh Python process (multiprocessing's "spawn":
no copy of this process's threads or TensorFlow state, whose thread pools a forked child
would wait on forever), calls ``target(*args)`` there under an address-space and a CPU limit
with the child's own output held back, and returns what it returned: a JSON-ready value sent
back as JSON (never pickle: a child that a file took over cannot hand the parent a program).
An exception the target raised is raised again here, as ``error`` with its first line or as
the ``ValueError`` it was. A child killed by a signal (a segfault, an abort, the CPU limit) or
still running after the time limit is an ``error`` that says so.

No TensorFlow here; the limits come from the environment:

- ``GGCAM_CHECK_TIMEOUT``: seconds the child may take (default 300);
- ``GGCAM_CHECK_MEMORY``: gigabytes of address space the child may use beyond what this
  process has (default 4, plus 10 times the size of the files read);
- ``GGCAM_RUN_TIMEOUT``: seconds one session run of an untrusted model may take (default 600;
  0: no limit), read by ``ggcam.graph``.
"""
import importlib
import json
import multiprocessing
import os
import signal
import tempfile
import time
from typing import Any, Iterable, Sequence

TIMEOUT_ENV, MEMORY_ENV, RUN_TIMEOUT_ENV = "GGCAM_CHECK_TIMEOUT", "GGCAM_CHECK_MEMORY", "GGCAM_RUN_TIMEOUT"
DEFAULT_TIMEOUT, DEFAULT_MEMORY_GB, DEFAULT_RUN_TIMEOUT = 300.0, 4.0, 600.0
_GB = 1 << 30


class IsolationError(Exception):
    """The isolated work failed, crashed or ran out of time; one line (the default ``error``)."""


def _setting(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def run_timeout() -> float:
    """Seconds one run of an untrusted model may take (0: no limit)."""
    return max(0.0, _setting(RUN_TIMEOUT_ENV, DEFAULT_RUN_TIMEOUT))


def _address_space() -> int:
    """This process's virtual memory size in bytes (0 if unknown)."""
    try:
        import resource
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError, ImportError):
        return 0


def _limit(memory: int, seconds: float) -> None:
    try:
        import resource
    except ImportError:  # not on this platform: the time limit still holds
        return
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash leaves no core file behind
    cpu = max(1, int(seconds))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    if memory:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))


def _child(connection, log_path: str, memory: int, seconds: float, target: str, args: Sequence) -> None:
    """In the child: output to the log, limits, ``target(*args)``, one JSON message."""
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND)
    os.dup2(log, 1)
    os.dup2(log, 2)
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C stops the child as it stops the parent
    _limit(memory, seconds)
    try:
        module, _, name = target.partition(":")
        message = {"value": getattr(importlib.import_module(module), name)(*args)}
    except ValueError as exc:
        message = {"error": "ValueError", "message": str(exc)}
    except MemoryError:
        message = {"error": "MemoryError", "message": ""}
    except BaseException as exc:  # anything the target raised goes back as one line
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        message = {"error": type(exc).__name__, "message": lines[0]}
    connection.send_bytes(json.dumps(message).encode("utf-8"))
    connection.close()


def _last_line(path: str) -> str:
    """The last informative line the child wrote (TensorFlow's "Check failed: ..."), shortened."""
    with open(path, "rb") as f:
        lines = [l.strip() for l in f.read().decode("utf-8", "replace").splitlines() if l.strip()]
    if not lines:
        return ""
    return lines[-1] if len(lines[-1]) <= 160 else lines[-1][:157] + "..."


def run_isolated(target: str, args: Sequence, what: str, sizes: Iterable[int] = (),
                 error: type = IsolationError) -> Any:
    """``target(*args)``'s JSON-ready result, computed in a child process (module docstring).

    target: "module:function"; args: picklable arguments; what: the file, for messages;
    sizes: the sizes in bytes of the files read (they raise the memory limit); error: the
    exception class raised for every failure but a ValueError of the target's."""
    seconds = max(1.0, _setting(TIMEOUT_ENV, DEFAULT_TIMEOUT))
    budget = int(max(0.5, _setting(MEMORY_ENV, DEFAULT_MEMORY_GB)) * _GB + 10 * sum(sizes))
    baseline = _address_space()
    memory = baseline + budget if baseline else 0
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    handle, log_path = tempfile.mkstemp(prefix="ggcam-check-", suffix=".log")
    os.close(handle)
    child = context.Process(target=_child, args=(send, log_path, memory, seconds, target, tuple(args)), daemon=True)
    try:
        child.start()
        send.close()
        data, deadline = b"", time.monotonic() + seconds
        while time.monotonic() < deadline:
            if receive.poll(min(1.0, max(0.0, deadline - time.monotonic()))):
                try:
                    data = receive.recv_bytes()
                except EOFError:  # the child ended without a word: a crash
                    pass
                break
            if not child.is_alive():
                break
        child.join(max(0.0, min(5.0, deadline - time.monotonic())) if data else 0.5)
        if child.is_alive() and not data:
            raise error("%s: reading it did not finish within %g s (a model that hangs TensorFlow? %s=SECONDS "
                        "allows more)" % (what, seconds, TIMEOUT_ENV))
        code = child.exitcode
        if not data:
            if code is not None and code < 0:
                number = -code
                if number == signal.SIGINT:
                    raise KeyboardInterrupt
                name = signal.Signals(number).name if number in signal.Signals._value2member_map_ else str(number)
                reason = ("it used more than the CPU time allowed (%s)" % TIMEOUT_ENV
                          if name == "SIGXCPU" else "signal %s" % name)
            else:
                reason = "exit status %s" % code
            line = _last_line(log_path)
            raise error("%s crashed TensorFlow while being read (%s%s); it is not a model this TensorFlow can read"
                        % (what, reason, ": " + line if line else ""))
    finally:
        receive.close()
        if child.is_alive():  # interrupted, failed or out of time: the child must not outlive the call
            child.kill()
            child.join()
        os.remove(log_path)
    try:
        message = json.loads(data.decode("utf-8"))
    except ValueError:
        raise error("%s: its check sent back something unreadable" % what)
    if "error" in message:
        if message["error"] == "ValueError":
            raise ValueError(message["message"])
        if message["error"] == "MemoryError":
            raise error("%s: reading it needs more memory than allowed (%s=GB allows more)" % (what, MEMORY_ENV))
        raise error(message["message"])
    return message.get("value")
