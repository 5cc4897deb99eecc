"""Reading a stranger's model file in a child process, so that a crash or a hang of
TensorFlow's native code on a crafted file is a one-line error, never the end of the run.

``run_isolated(fn, what)`` forks, runs ``fn()`` in the child under an address-space and a CPU
limit, with the child's own output held back, and returns what ``fn`` returned: a JSON-ready
value, sent back as JSON (never pickle: a child that a file took over cannot hand the parent a
program). An exception ``fn`` raised is raised again here as ``IsolationError`` with its first
line, or as the ``ValueError`` it was. A child killed by a signal (a segfault, an abort, the
CPU limit) or still running after the time limit becomes an ``IsolationError`` that says so.

Where ``os.fork`` does not exist, ``fn`` runs in this process and ``isolated()`` is False.
No TensorFlow here; the limits come from the environment:

- ``GGCAM_CHECK_TIMEOUT``: seconds the child may take (default 300);
- ``GGCAM_CHECK_MEMORY``: gigabytes of address space the child may add to the parent's
  (default 4, plus 10 times the size of the files read);
- ``GGCAM_RUN_TIMEOUT``: seconds one session run of an untrusted model may take (default 600;
  0: no limit), read by ``ggcam.graph``.
"""
import json
import os
import resource
import select
import signal
import tempfile
import time
import warnings
from typing import Any, Callable, Iterable

TIMEOUT_ENV, MEMORY_ENV, RUN_TIMEOUT_ENV = "GGCAM_CHECK_TIMEOUT", "GGCAM_CHECK_MEMORY", "GGCAM_RUN_TIMEOUT"
DEFAULT_TIMEOUT, DEFAULT_MEMORY_GB, DEFAULT_RUN_TIMEOUT = 300.0, 4.0, 600.0
_GB = 1 << 30


class IsolationError(Exception):
    """The isolated work failed, crashed or ran out of time; one line (the default ``error``)."""


def isolated() -> bool:
    """Whether ``run_isolated`` runs its work in a child process here."""
    return hasattr(os, "fork")


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
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


def _limit_child(memory: int, seconds: float) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash leaves no core file behind
    cpu = max(1, int(seconds))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    used = _address_space()
    if used:
        resource.setrlimit(resource.RLIMIT_AS, (used + memory, used + memory))


def _last_line(log) -> str:
    """The last informative line the child wrote (TensorFlow's "Check failed: ..."), shortened."""
    log.seek(0)
    lines = [l.strip() for l in log.read().decode("utf-8", "replace").splitlines() if l.strip()]
    if not lines:
        return ""
    line = lines[-1]
    return line if len(line) <= 160 else line[:157] + "..."


def _child(fn: Callable[[], Any], out: int, log, memory: int, seconds: float) -> None:
    """In the child: limits, run, one JSON message on ``out``; never returns."""
    try:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C stops the child as it stops the parent
        _limit_child(memory, seconds)
        try:
            message = {"value": fn()}
        except ValueError as exc:
            message = {"error": "ValueError", "message": str(exc)}
        except BaseException as exc:  # anything fn raised goes back as one line
            lines = str(exc).strip().splitlines() or [type(exc).__name__]
            message = {"error": type(exc).__name__, "message": lines[0]}
        data = json.dumps(message).encode("utf-8")
        while data:
            data = data[os.write(out, data):]
    finally:
        os._exit(0)


def run_isolated(fn: Callable[[], Any], what: str, sizes: Iterable[int] = (), error: type = IsolationError) -> Any:
    """``fn()``'s JSON-ready result, computed in a child process (see the module docstring).

    what: the file, for messages; sizes: the sizes in bytes of the files ``fn`` reads (they
    raise the memory limit); error: the exception class raised for every failure but a
    ValueError of ``fn``'s (IsolationError by default)."""
    if not isolated():
        return fn()
    seconds = max(1.0, _setting(TIMEOUT_ENV, DEFAULT_TIMEOUT))
    memory = int(max(0.5, _setting(MEMORY_ENV, DEFAULT_MEMORY_GB)) * _GB + 10 * sum(sizes))
    log = tempfile.TemporaryFile()
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Python 3.12: fork of a process with threads
        pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _child(fn, write_end, log, memory, seconds)
    os.close(write_end)
    chunks, status, deadline = [], None, time.monotonic() + seconds
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([read_end], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(read_end, 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
        done, status = os.waitpid(pid, os.WNOHANG)
        if not done:
            if time.monotonic() < deadline:
                _, status = os.waitpid(pid, 0)  # the pipe closed: the child is exiting
            else:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise error("%s: reading it did not finish within %g s (a model that hangs TensorFlow? "
                                     "%s=SECONDS allows more)" % (what, seconds, TIMEOUT_ENV))
        pid = 0
    finally:
        os.close(read_end)
        if pid:  # interrupted, or failed: the child must not outlive the call
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
    try:
        if os.WIFSIGNALED(status):
            number = os.WTERMSIG(status)
            name = signal.Signals(number).name if number in signal.Signals._value2member_map_ else str(number)
            if number == signal.SIGINT:
                raise KeyboardInterrupt
            reason = ("it used more than the CPU time allowed (%s)" % TIMEOUT_ENV if number == signal.SIGXCPU
                      else "signal %s" % name)
            line = _last_line(log)
            raise error("%s crashed TensorFlow while being read (%s%s); it is not a model this TensorFlow "
                                 "can read" % (what, reason, ": " + line if line else ""))
        try:
            message = json.loads(b"".join(chunks).decode("utf-8"))
        except ValueError:
            line = _last_line(log)
            raise error("%s stopped TensorFlow while being read (%s)" % (
                what, line or "exit status %d" % os.WEXITSTATUS(status)))
    finally:
        log.close()
    if "error" in message:
        if message["error"] == "ValueError":
            raise ValueError(message["message"])
        if message["error"] == "MemoryError":
            raise error("%s: reading it needs more memory than allowed (%s=GB allows more)"
                                 % (what, MEMORY_ENV))
        raise error(message["message"])
    return message["value"]
