"""Work on a stranger's model file in a child process, so that a crash or a hang of
TensorFlow's native code on a crafted file is a one-line error, never the end of the run.

``Child`` starts a fresh Python interpreter (no copy of this process's threads or TensorFlow
state, whose thread pools a forked child would wait on forever; nor the caller's script run
again, as multiprocessing's "spawn" does), with this process's import path, its output held
back in a log and an address-space limit, and exchanges messages with it: requests pickled
from here (this process's own data), answers as JSON with numpy arrays in ``.npy`` form,
read with ``allow_pickle=False`` (never pickle: a child that a file took over cannot hand
this process a program). Each exchange has a deadline; when the child passes it, dies by a
signal (a segfault, an abort, SIGFPE) or exits, the child is gone and ``error`` is raised
with one line that says so. ``run_isolated`` is one call in a child; ``ggcam.engine.worker``
keeps one for the life of a model.

No TensorFlow here; the limits come from the environment:

- ``GGCAM_CHECK_TIMEOUT``: seconds a model file may take to be read and built (default 300);
- ``GGCAM_CHECK_MEMORY``: gigabytes of address space the child may use beyond what this
  process has (default 8, plus 10 times the size of the files read);
- ``GGCAM_RUN_TIMEOUT``: seconds one run of an untrusted model may take (default 600; 0: no
  limit).
"""
import importlib
import io
import json
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any, Iterable, Optional, Sequence

TIMEOUT_ENV, MEMORY_ENV, RUN_TIMEOUT_ENV = "GGCAM_CHECK_TIMEOUT", "GGCAM_CHECK_MEMORY", "GGCAM_RUN_TIMEOUT"
DEFAULT_TIMEOUT, DEFAULT_MEMORY_GB, DEFAULT_RUN_TIMEOUT = 300.0, 8.0, 600.0
_GB = 1 << 30
_LENGTH = struct.Struct(">Q")


class IsolationError(Exception):
    """The isolated work failed, crashed or ran out of time; one line (the default ``error``)."""


def _setting(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def check_timeout() -> float:
    """Seconds a child may take to read and build a model."""
    return max(1.0, _setting(TIMEOUT_ENV, DEFAULT_TIMEOUT))


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
    except ImportError:  # not on this platform: the deadlines still hold
        return
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash leaves no core file behind
    if seconds:
        cpu = max(1, int(seconds))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    if memory:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))


# ----------------------------------------------------------------------------- messages

def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _read_exactly(fd: int, n: int, deadline: Optional[float]) -> Optional[bytes]:
    """``n`` bytes from ``fd``; None at end of file; TimeoutError past ``deadline``."""
    chunks, got = [], 0
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError()
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def encode(value: Any) -> bytes:
    """A JSON-ready value whose leaves may be numpy arrays -> bytes (``decode``'s input)."""
    blobs = []  # type: List[bytes]

    def walk(v):
        if isinstance(v, dict):
            return {str(k): walk(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [walk(x) for x in v]
        if type(v).__module__ == "numpy":
            import numpy as np
            buffer = io.BytesIO()
            np.save(buffer, np.asarray(v), allow_pickle=False)
            blobs.append(buffer.getvalue())
            return {"__array__": len(blobs) - 1}
        return v

    header = json.dumps(walk(value)).encode("utf-8")
    return b"".join([_LENGTH.pack(len(header)), header] + [_LENGTH.pack(len(b)) + b for b in blobs])


def decode(data: bytes) -> Any:
    """``encode``'s bytes -> the value; arrays are read with ``allow_pickle=False``."""
    import numpy as np
    (n,) = _LENGTH.unpack_from(data, 0)
    header = json.loads(data[8:8 + n].decode("utf-8"))
    blobs, at = [], 8 + n
    while at < len(data):
        (size,) = _LENGTH.unpack_from(data, at)
        blobs.append(np.load(io.BytesIO(data[at + 8:at + 8 + size]), allow_pickle=False))
        at += 8 + size

    def walk(v):
        if isinstance(v, dict):
            if set(v) == {"__array__"}:
                return blobs[v["__array__"]]
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    return walk(header)


class Channel:
    """The child's side: requests in (pickled by the parent), answers out (``encode``)."""

    def __init__(self, requests: int, answers: int):
        self.requests, self.answers = requests, answers

    def receive(self) -> Any:
        head = _read_exactly(self.requests, 8, None)
        if head is None:
            raise EOFError()
        return pickle.loads(_read_exactly(self.requests, _LENGTH.unpack(head)[0], None))

    def answer(self, value: Any) -> None:
        data = encode({"value": value})
        _write_all(self.answers, _LENGTH.pack(len(data)) + data)

    def fail(self, exc: BaseException) -> None:
        if isinstance(exc, ValueError):
            message = {"error": "ValueError", "message": str(exc)}
        elif isinstance(exc, MemoryError):
            message = {"error": "MemoryError", "message": ""}
        else:
            lines = str(exc).strip().splitlines() or [type(exc).__name__]
            message = {"error": type(exc).__name__, "message": lines[0]}
        data = encode(message)
        _write_all(self.answers, _LENGTH.pack(len(data)) + data)


def child_main() -> None:
    """The child's entry (``python -c "from ggcam.engine.isolation import child_main; child_main()"``):
    limits, then the target named in the first request: ``("call", target, args)`` answers
    ``target(*args)``; ``("serve", target, args)`` hands the channel to ``target(channel, *args)``."""
    channel = Channel(int(sys.argv[1]), int(sys.argv[2]))
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C stops the child as it stops the parent
    mode, memory, seconds, target, args = channel.receive()
    _limit(memory, seconds)
    module, _, name = target.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
        if mode == "serve":
            fn(channel, *args)
            return
        value = fn(*args)
    except BaseException as exc:  # anything the target raised goes back as one line
        channel.fail(exc)
        return
    channel.answer(value)


class Child:
    """A child process (see the module docstring): ``request`` sends one message and waits for
    the answer until a deadline. ``what`` names the file for messages; ``error`` is the class
    raised for every failure but a ValueError of the child's."""

    def __init__(self, mode: str, target: str, args: Sequence, what: str, sizes: Iterable[int] = (),
                 error: type = IsolationError, cpu_seconds: float = 0.0):
        self.what, self.error = what, error
        budget = int(max(0.5, _setting(MEMORY_ENV, DEFAULT_MEMORY_GB)) * _GB + 10 * sum(sizes))
        baseline = _address_space()
        memory = baseline + budget if baseline else 0
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        to_child, self._requests = os.pipe()
        self._answers, from_child = os.pipe()
        self._log = tempfile.TemporaryFile()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", "from ggcam.engine.isolation import child_main; child_main()",
                 str(to_child), str(from_child)], stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
                env=env, pass_fds=(to_child, from_child), close_fds=True)
        except BaseException:
            for fd in (to_child, self._requests, self._answers, from_child):
                os.close(fd)
            self._log.close()
            raise
        os.close(to_child)
        os.close(from_child)
        self._send((mode, memory, cpu_seconds, target, tuple(args)))

    def _send(self, message: Any) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            _write_all(self._requests, _LENGTH.pack(len(data)) + data)
        except BrokenPipeError:
            pass  # the child is gone: the answer says why

    def receive(self, seconds: float, doing: str, setting: str = TIMEOUT_ENV, limit: Optional[float] = None) -> Any:
        """The child's next answer, within ``seconds`` (0: no limit). ``doing``: what it is busy
        with ("being read", "running"), for the messages; ``setting``: the variable that allows
        more time; ``limit``: the time limit to name (default ``seconds``)."""
        deadline = time.monotonic() + seconds if seconds else None
        try:
            head = _read_exactly(self._answers, 8, deadline)
            data = _read_exactly(self._answers, _LENGTH.unpack(head)[0], deadline) if head is not None else None
        except TimeoutError:
            self.close()
            raise self.error("%s: it was still %s past its limit of %g s and was stopped (a model that hangs "
                             "TensorFlow? %s=SECONDS allows more)" % (self.what, doing, limit or seconds, setting))
        if data is None:
            raise self._ended(doing)
        try:
            message = decode(data)
        except (ValueError, KeyError, IndexError, struct.error, TypeError):
            self.close()
            raise self.error("%s: its process sent back something unreadable" % self.what)
        if "error" in message:
            if message["error"] == "ValueError":
                raise ValueError(message["message"])
            if message["error"] == "MemoryError":
                raise self.error("%s: it needs more memory than allowed while %s (%s=GB allows more)"
                                 % (self.what, doing, MEMORY_ENV))
            raise self.error(message["message"])
        return message.get("value")

    def request(self, message: Any, seconds: float, doing: str, setting: str = RUN_TIMEOUT_ENV,
                limit: Optional[float] = None) -> Any:
        self._send(message)
        return self.receive(seconds, doing, setting, limit)

    def _ended(self, doing: str) -> Exception:
        """The error for a child that ended without answering (it is reaped here)."""
        try:
            code = self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            code = self._process.wait()
        self._log.seek(0)
        lines = [l.strip() for l in self._log.read().decode("utf-8", "replace").splitlines() if l.strip()]
        line = (lines[-1] if len(lines[-1]) <= 160 else lines[-1][:157] + "...") if lines else ""
        self.close()
        if code is not None and code < 0:
            if -code == signal.SIGINT:
                return KeyboardInterrupt()
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            reason = "it used more than the CPU time allowed (%s)" % TIMEOUT_ENV if name == "SIGXCPU" \
                else "signal %s" % name
        else:
            reason = "exit status %s" % code
        return self.error("%s crashed TensorFlow while %s (%s%s)" % (self.what, doing, reason, ": " + line if line else ""))

    def close(self) -> None:
        """Stop the child (at once: it holds nothing to save) and release its pipes and log."""
        process = getattr(self, "_process", None)
        if process is None:
            return
        self._process = None
        if process.poll() is None:
            process.kill()
            process.wait()
        for fd in (self._requests, self._answers):
            try:
                os.close(fd)
            except OSError:
                pass
        self._log.close()

    def __del__(self) -> None:
        self.close()


def run_isolated(target: str, args: Sequence, what: str, sizes: Iterable[int] = (),
                 error: type = IsolationError) -> Any:
    """``target(*args)``'s JSON-ready result (numpy arrays allowed), computed in a child
    process under the limits of ``check_timeout`` (CPU and wall time) and the memory limit.

    target: "module:function"; args: picklable arguments; what: the file, for messages;
    sizes: the sizes in bytes of the files read (they raise the memory limit)."""
    seconds = check_timeout()
    child = Child("call", target, args, what, sizes, error, cpu_seconds=seconds)
    try:
        return child.receive(seconds, "being read")
    finally:
        child.close()
