"""Atomic output files: written beside the target, flushed, fsynced and renamed into place."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from halitool.errors import BadInputError, UsageError


def check_output_path(path: Path, force: bool) -> None:
    """Refuse an existing output without --force, and an output folder that does not exist."""
    path = Path(path)
    if path.exists() and not force:
        raise UsageError(f"{path}: already exists; pass --force to overwrite it")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{path}: output folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"{path}: output folder {parent} is not writable")


@contextlib.contextmanager
def atomic_path(path: Path, force: bool = False, check: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on failure it is removed."""
    path = Path(path)
    if check:
        check_output_path(path, force)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent if str(path.parent) else ".")
    except OSError as exc:  # a read-only or special filesystem, which os.access does not reveal to root
        raise UsageError(f"{path}: cannot create a file in output folder {path.parent}: {exc.strerror}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the user's usual mode
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes, force: bool = False, check: bool = True) -> None:
    with atomic_path(path, force=force, check=check) as tmp:
        tmp.write_bytes(data)


def file_digest(path: Path, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    """The hex digest of a file's bytes, read in chunks (a checkpoint or data file need not fit in memory)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    return file_digest(path, "sha256")


def md5_file(path: Path) -> str:
    """MD5, for the checksums MNIST's publishers give (not for security)."""
    return file_digest(path, "md5")


def require_file(path: Path, what: str = "file") -> Path:
    path = Path(path)
    if not path.exists():
        raise BadInputError(f"{path}: {what} not found")
    if not path.is_file():
        raise BadInputError(f"{path}: not a file")
    return path
