"""Writing files so that a reader never sees a half-written one, and output-folder locks."""
import errno
import os
import secrets
import tempfile
from typing import Callable, Dict, List

import numpy as np

from ggcam.io.encoding import encode_picture

_UMASK = os.umask(0)  # read (the call sets it), then put back
os.umask(_UMASK)


# A full disk or quota: said with the folder, since "No space left on device" alone names neither.
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


def _atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Write through a temporary file in the same folder, then rename into place.

    ``write`` must create the file it is given (mode "x"). The temporary name is chosen before
    the file exists, so an exception at any point, Ctrl-C and SIGTERM included, leaves neither
    a temporary file nor a partial ``path``. (Holding the signals back with a thread mask does
    not do that: the kernel hands them to TensorFlow's threads, and Python then raises in the
    main thread mid-write anyway.)
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, ".tmp-%s%s" % (secrets.token_hex(8), os.path.splitext(path)[1]))
    try:
        write(tmp)
        os.replace(tmp, path)
    except FileExistsError:
        raise  # another writer's file by that name (not ours to remove)
    except BaseException as exc:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        # Ctrl-C inside zipfile (np.savez) surfaces as the ValueError its cleanup raises;
        # callers that record a failed file and go on must see the interruption instead.
        cause = exc.__context__
        while cause is not None and not isinstance(exc, KeyboardInterrupt):
            if isinstance(cause, KeyboardInterrupt):
                raise cause
            cause = cause.__context__
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            raise OSError(exc.errno, "%s in %s: %s was not written, and nothing was half-written (its "
                          "temporary file is removed)" % (os.strerror(exc.errno), folder, os.path.basename(path))) from exc
        raise


def save_picture(path: str, picture: np.ndarray) -> None:
    """Write an RGB (or grey) uint8 array atomically; the format follows the extension."""
    atomic_write_bytes(path, encode_picture(picture, os.path.splitext(path)[1]))


def atomic_write_text(path: str, text: str) -> None:
    """Write a UTF-8 text file atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(text)
    _atomic_write(path, write)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write a binary file atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "xb") as f:
            f.write(data)
    _atomic_write(path, write)


def save_arrays(path: str, arrays: Dict[str, np.ndarray]) -> None:
    """Write a .npz atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "xb") as f:
            np.savez(f, **arrays)
    _atomic_write(path, write)


def check_writable(folder: str) -> None:
    """Fail early if ``folder`` could not be created or written, without creating it."""
    path = os.path.abspath(folder)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path) or not os.access(path, os.W_OK | os.X_OK):
        raise OSError("output folder not writable: %s (%s is not a writable folder)" % (folder, path))


def missing_folders(folder: str) -> List[str]:
    """The folders ``os.makedirs(folder)`` would create, innermost first."""
    found, path = [], os.path.abspath(folder)
    while not os.path.lexists(path):
        found.append(path)
        path = os.path.dirname(path)
    return found


def remove_empty_folders(folders: List[str]) -> None:
    """Remove each of ``folders`` (innermost first) that exists and is empty."""
    for path in folders:
        try:
            os.rmdir(path)
        except OSError:
            pass  # not empty, or gone already


def ensure_writable_dir(folder: str) -> None:
    """Create ``folder`` if needed and check that files can be created in it; on failure the
    folders it made are removed again."""
    made = missing_folders(folder)
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):  # unnamed where the OS allows: nothing left behind
            pass
    except OSError as exc:
        remove_empty_folders(made)
        raise OSError("output folder not writable: %s (%s)" % (folder, exc.strerror or exc))


LOCK_FILE = ".gradcam.lock"


class FolderLocked(OSError):
    """Another process holds the output folder; one line for the user."""


class FolderLock:
    """An exclusive lock on an output folder, held for the lifetime of one run.

    ``fcntl.flock`` on ``<folder>/.gradcam.lock``, which holds the holder's pid: the kernel
    releases the lock when the holder dies, so a crashed run never blocks the next one. The
    file is removed on release.
    """

    def __init__(self, folder: str):
        self.path = os.path.join(folder, LOCK_FILE)
        self._fd = None  # type: Optional[int]

    def acquire(self) -> "FolderLock":
        import fcntl
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise FolderLocked("output folder %s is in use by another run (pid %s; lock file %s)"
                                   % (os.path.dirname(self.path) or ".", holder, self.path))
            # The holder may have removed the file between our open and our lock: lock anew.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode("ascii"))
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.remove(self.path)
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
