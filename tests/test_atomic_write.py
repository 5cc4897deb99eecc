"""Atomic writes (ggcam.io.safe_files): an exception at any moment, as Ctrl-C or SIGTERM raise one,
leaves either the old file or the new one, and no temporary file."""
import gc
import os
import stat
import sys

import numpy as np
import pytest

from ggcam.io import safe_files

pytestmark = pytest.mark.unit

NEW_ARRAY = np.arange(5000, dtype=np.float32)


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def holds_new_array(path: str) -> bool:
    with np.load(path) as npz:
        return np.array_equal(npz["a"], NEW_ARRAY)


WRITERS = {
    "text": (lambda path: safe_files.atomic_write_text(path, "new\n" * 5000),
             lambda path: read(path) == b"new\n" * 5000),
    "bytes": (lambda path: safe_files.atomic_write_bytes(path, b"\x89new" * 5000),
              lambda path: read(path) == b"\x89new" * 5000),
    "arrays": (lambda path: safe_files.save_arrays(path, {"a": NEW_ARRAY}), holds_new_array),
}


def interrupted_at(n: int, call) -> bool:
    """Run ``call()``, raising KeyboardInterrupt at the n-th line it executes in any Python frame
    (where Python would run a signal handler). False when ``call`` finished first."""
    count = [0]

    def on_line(frame, event, arg):
        if event == "line":
            count[0] += 1
            if count[0] == n:
                raise KeyboardInterrupt
        return on_line

    previous = sys.gettrace()
    sys.settrace(on_line)
    try:
        call()
    except KeyboardInterrupt:
        return True
    finally:
        sys.settrace(previous)
    return False


# An interruption between open() and its `with`, or inside np.savez, leaves objects to the
# garbage collector, which reports them as unraisable.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_an_interrupt_at_any_line_leaves_the_old_or_the_new_file_and_nothing_else(tmp_path, kind):
    write, is_new = WRITERS[kind]
    path = str(tmp_path / ("result.npz" if kind == "arrays" else "result.txt"))
    old = b"old contents"
    outcomes = set()
    n = 1
    while True:
        with open(path, "wb") as f:
            f.write(old)
        interrupted = interrupted_at(n, lambda: write(path))
        assert os.listdir(str(tmp_path)) == [os.path.basename(path)], "interrupted at line %d" % n
        if read(path) == old:
            assert interrupted
            outcomes.add("old")
        else:
            assert is_new(path), "interrupted at line %d" % n
            outcomes.add("new")
        if not interrupted:
            break
        n += 1
    gc.collect()  # finalize zip writers abandoned mid-write while this test's warning filter holds
    # Interruptions inside numpy, zipfile and io code are covered, not only the first lines.
    assert n > 20 and outcomes == {"old", "new"}


def test_new_files_get_the_usual_permissions(tmp_path):
    path = str(tmp_path / "a.txt")
    safe_files.atomic_write_text(path, "x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask


def test_a_temporary_name_taken_by_another_writer_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(safe_files.secrets, "token_hex", lambda n: "same")
    theirs = tmp_path / ".tmp-same.txt"
    theirs.write_text("another writer's")
    with pytest.raises(FileExistsError):
        safe_files.atomic_write_text(str(tmp_path / "a.txt"), "mine")
    assert theirs.read_text() == "another writer's" and not (tmp_path / "a.txt").exists()


@pytest.mark.parametrize("code", ["ENOSPC", "EDQUOT"])
def test_a_full_disk_names_the_folder_and_says_nothing_was_half_written(tmp_path, monkeypatch, code):
    """"No space left on device" alone says neither where nor what became of the file."""
    import errno
    folder = tmp_path / "out" / "chelsea_282"
    folder.mkdir(parents=True)
    (folder / "gradcam.png").write_bytes(b"old")
    real_open = open

    def full(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        if "x" in mode:
            f.close()
            raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)))
        return f
    monkeypatch.setattr("builtins.open", full)
    with pytest.raises(OSError) as caught:
        safe_files.atomic_write_bytes(str(folder / "gradcam.png"), b"new")
    monkeypatch.undo()
    message = str(caught.value)
    assert caught.value.errno == getattr(errno, code)
    assert str(folder) in message and "gradcam.png" in message and "nothing was half-written" in message, message
    assert sorted(os.listdir(str(folder))) == ["gradcam.png"] and read(str(folder / "gradcam.png")) == b"old"
