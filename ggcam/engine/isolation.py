"""Reading a stranger's model file in a child process, so that a crash or a hang of
TensorFlow's native code on a crafted file is a one-line error, never the end of the run.

``run_isolated(target, args, what)`` starts a fresh Python interpreter (no copy of this
process's threads or TensorFlow state, whose thread pools a forked child would wait on
forever; nor the caller's script run again, as multiprocessing's "spawn" does), calls
``target(*args)`` there under an address-space and a CPU limit with the child's own output
held back, and returns what it returned: a JSON-ready value sent back as JSON (never pickle:
a child that a file took over cannot hand the parent a program).
An exception the target raised is raised again here, as ``error`` with its first line or as
the ``ValueError`` it was. A child killed by a signal (a segfault, an abort, the CPU limit) or
still running after the time limit is an ``error`` that says so.

No TensorFlow here; the limits come from the environment:

- ``GGCAM_CHECK_TIMEOUT``: seconds the child may take (default 300);
- ``GGCAM_CHECK_MEMORY``: gigabytes of address space the child may use beyond what this
  process has (default 4, plus 10 times the size of the files read);
- ``GGCAM_RUN_TIMEOUT``: seconds one session run of an untrusted model may take (default 600;
  0: no limit), read by ``ggcam.engine.graph``.
"""
import importlib
import json
import os
import pickle
import select
import signal
import subprocess
import sys
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


def child_main() -> None:
    """The child's entry (``python -c "from ggcam.engine.isolation import child_main; child_main()"``):
    the job pickled on stdin by ``run_isolated`` (the parent's own data), one JSON message on the
    file descriptor named in argv."""
    import pickle
    import sys
    out = int(sys.argv[1])
    memory, seconds, target, args = pickle.loads(sys.stdin.buffer.read())
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
    data = json.dumps(message).encode("utf-8")
    while data:
        data = data[os.write(out, data):]
    os.close(out)


def _last_line(log) -> str:
    """The last informative line the child wrote (TensorFlow's "Check failed: ..."), shortened."""
    log.seek(0)
    lines = [l.strip() for l in log.read().decode("utf-8", "replace").splitlines() if l.strip()]
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
    # A fresh interpreter (not fork: a copy of this process would wait on TensorFlow's thread
    # pools; not multiprocessing's spawn: it runs the caller's script again), this process's
    # import path, its output into a log, the answer on a pipe of its own.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    read_end, write_end = os.pipe()
    log = tempfile.TemporaryFile()
    try:
        child = subprocess.Popen([sys.executable, "-c", "from ggcam.engine.isolation import child_main; child_main()",
                                  str(write_end)], stdin=subprocess.PIPE, stdout=log, stderr=log, env=env,
                                 pass_fds=(write_end,), close_fds=True)
    except BaseException:
        os.close(read_end)
        os.close(write_end)
        log.close()
        raise
    os.close(write_end)
    chunks, deadline = [], time.monotonic() + seconds
    try:
        child.stdin.write(pickle.dumps((memory, seconds, target, tuple(args))))
        child.stdin.close()
        while time.monotonic() < deadline:
            ready, _, _ = select.select([read_end], [], [], min(1.0, max(0.0, deadline - time.monotonic())))
            if ready:
                chunk = os.read(read_end, 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
        try:
            code = child.wait(timeout=max(0.1, min(5.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            raise error("%s: reading it did not finish within %g s (a model that hangs TensorFlow? %s=SECONDS "
                        "allows more)" % (what, seconds, TIMEOUT_ENV))
        data = b"".join(chunks)
        if not data:
            if code < 0:
                number = -code
                if number == signal.SIGINT:
                    raise KeyboardInterrupt
                name = signal.Signals(number).name if number in signal.Signals._value2member_map_ else str(number)
                reason = ("it used more than the CPU time allowed (%s)" % TIMEOUT_ENV
                          if name == "SIGXCPU" else "signal %s" % name)
            else:
                reason = "exit status %s" % code
            line = _last_line(log)
            raise error("%s crashed TensorFlow while being read (%s%s); it is not a model this TensorFlow can read"
                        % (what, reason, ": " + line if line else ""))
    finally:
        os.close(read_end)
        if child.poll() is None:  # interrupted, failed or out of time: the child must not outlive the call
            child.kill()
            child.wait()
        log.close()
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
