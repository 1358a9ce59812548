"""Small file-system helpers shared by writers: every output file appears atomically, and no command writes
over another one's outputs unless told to."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from cpcl.errors import OutputExistsError


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
    """Remove the folders :func:`claim_outputs` created that are still empty (the command failed or was
    interrupted before writing anything) -> those removed. A failed command leaves no empty ``--out`` behind."""
    removed = []
    while _created:
        directory = _created.pop()
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()
            removed.append(directory)
    return removed


def claim_output_file(path: str | Path, *, overwrite: bool, holds: str) -> Path:
    """Refuse to write over an existing file unless ``overwrite`` (it is then replaced atomically)."""
    path = Path(path)
    if path.is_dir():
        raise OutputExistsError(f"{path} is a folder, not a file: choose another path")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists ({holds}); choose another path, or pass --overwrite to "
                                "replace it")
    return path
