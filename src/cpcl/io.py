"""Small file-system helpers shared by writers: every output file appears atomically, and no command writes
over another one's outputs unless told to."""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from cpcl.errors import BusyError, DamagedFileError, OutputExistsError

log = logging.getLogger("cpcl.io")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save(path: str | Path, save: Callable[[BinaryIO], object]) -> None:
    """Write what ``save(file)`` writes (``fig.savefig``, ``image.save`` ...) to ``path``, atomically."""
    buf = io.BytesIO()
    save(buf)
    atomic_write_bytes(path, buf.getvalue())


def claim_outputs(directory: str | Path, outputs: tuple[str, ...], *, overwrite: bool, holds: str,
                  instead: str, error: type[Exception] = OutputExistsError) -> Path:
    """Make ``directory`` ready for a command that writes ``outputs`` (names or glob patterns) into it.

    A directory that already holds any of them is refused with ``error`` (an :class:`OutputExistsError`
    by default) that says what it holds and what to do ``instead`` — unless ``overwrite``, which removes
    exactly those outputs (nothing else in the directory) before the command writes anew.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise error(f"{directory} is a file, not a folder: choose another --out")
    present = sorted({p for pattern in outputs for p in directory.glob(pattern)}) if directory.is_dir() else []
    if present and not overwrite:
        names = ", ".join(p.name for p in present[:4]) + (", ..." if len(present) > 4 else "")
        raise error(f"{directory} already holds {holds} ({names}); {instead}, or pass --overwrite to replace it")
    for path in present:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    if not directory.exists():
        directory.mkdir(parents=True)
        _created.append(directory)
    return directory


_created: list[Path] = []  # folders this process's commands created to write into


def release_unused_claims() -> list[Path]:
    """Remove the folders :func:`claim_outputs` or :func:`exclusive` created that are still empty (the command
    failed or was interrupted before writing anything; an unheld lock file is nothing) -> those removed. A failed
    command leaves no empty ``--out`` behind."""
    removed = []
    while _created:
        directory = _created.pop()
        if not directory.is_dir() or directory in _held:
            continue
        entries = list(directory.iterdir())
        if all(entry.name == LOCK_FILE for entry in entries):
            for entry in entries:
                entry.unlink()
            directory.rmdir()
            removed.append(directory)
    return removed


LOCK_FILE = ".cpcl.lock"
_held: dict[Path, list] = {}  # folder -> [open lock file, depth]: this process's locks, re-entrant


@contextmanager
def exclusive(directory: str | Path, what: str, shown: str | None = None) -> Iterator[Path]:
    """Hold ``directory`` (created if needed) for this process while the block runs: another process that asks
    for it — a second ``cpcl train`` into the same ``--out``, an ``index add`` beside a ``build`` — is refused
    with a :class:`BusyError` naming the process that holds it. The lock is the operating system's (``flock`` on
    ``directory/.cpcl.lock``): a process that dies releases it, and the next one says that it took over the lock
    of a process no longer running. Re-entrant within a process. ``shown``: what the messages call the folder
    (a Milvus collection's lock lives in the cache folder)."""
    directory = Path(directory).absolute()
    if directory in _held:
        _held[directory][1] += 1
        try:
            yield directory
        finally:
            _held[directory][1] -= 1
        return
    if directory.exists() and not directory.is_dir():
        raise OutputExistsError(f"{directory} is a file, not a folder: choose another --out")
    if not directory.exists():
        directory.mkdir(parents=True)
        _created.append(directory)
    handle = (directory / LOCK_FILE).open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        refusal = _busy(shown or directory, handle, what)
        handle.close()
        raise refusal from None
    previous = _lock_holder(handle)
    if previous:
        log.warning("%s: took over the lock of %s, which ended without releasing it (killed or crashed): what it "
                    "was writing there may be incomplete", shown or directory, previous)
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "command": " ".join(sys.argv[:6]) or "python",
                             "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
    handle.flush()
    _held[directory] = [handle, 1]
    try:
        yield directory
    finally:
        del _held[directory]
        handle.seek(0)
        handle.truncate()  # released cleanly: nothing for the next holder to report
        if [entry.name for entry in directory.iterdir()] == [LOCK_FILE]:
            (directory / LOCK_FILE).unlink()  # the command wrote nothing here: it leaves nothing either
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def _busy(shown: str | Path, handle, what: str) -> BusyError:
    """The refusal of a folder whose lock another process holds, naming that process."""
    return BusyError(f"{shown} is in use by {_lock_holder(handle) or 'another process'}: {what} cannot share it; "
                     "wait until that process ends, or choose another")


def _lock_holder(handle) -> str:
    """Who wrote the lock file: "process N (command, since T)", or "" for an empty one."""
    handle.seek(0)
    try:
        record = json.loads(handle.read() or "null")
    except ValueError:
        return ""
    if not isinstance(record, dict):
        return ""
    return f"process {record.get('pid')} ({record.get('command')}, since {record.get('since')})"


def ensure_free(directory: str | Path, what: str) -> None:
    """Refuse now, with :func:`exclusive`'s sentence, a folder another process holds (a check before work that
    the command will lock later, from another process: ``cpcl train --nproc``)."""
    directory = Path(directory).absolute()
    if directory in _held or not (directory / LOCK_FILE).is_file():
        return
    with (directory / LOCK_FILE).open("r") as handle:  # tried, not taken: the lock file is left as it is
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _busy(directory, handle, what) from None
        fcntl.flock(handle, fcntl.LOCK_UN)


ZIP_MAGIC = b"PK\x03\x04"


def check_archive(path: str | Path, what: str) -> bool:
    """Whether ``path`` is a zip archive (what ``torch.save`` and ``numpy.savez`` write) — and, when it is, that it
    is whole: every member read back against the CRC-32 the writer recorded. A truncated or damaged archive is a
    :class:`DamagedFileError` naming the file and the part at fault (PyTorch's reader checks neither: flipped
    bytes in a weight tensor load silently). ``what``: what the file should be, for the message."""
    path = Path(path)
    with path.open("rb") as fh:
        if fh.read(4) != ZIP_MAGIC:
            return False
    if not zipfile.is_zipfile(path):
        raise DamagedFileError(f"{path} is truncated or damaged ({what} whose end is missing: a copy or download "
                               "that did not finish?); copy it again, or use another")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise DamagedFileError(f"{path} is damaged ({what} that cannot be read back: {exc})") from None
    if bad is not None:
        raise DamagedFileError(f"{path} is damaged: its part {bad} does not match the checksum written with it "
                               f"({what} whose bytes changed after it was written); copy it again, or use another")
    return True


def claim_output_file(path: str | Path, *, overwrite: bool, holds: str) -> Path:
    """Refuse to write over an existing file unless ``overwrite`` (it is then replaced atomically)."""
    path = Path(path)
    if path.is_dir():
        raise OutputExistsError(f"{path} is a folder, not a file: choose another path")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists ({holds}); choose another path, or pass --overwrite to "
                                "replace it")
    return path
