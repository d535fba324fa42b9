"""Writing files so that readers only ever see the old file or the complete new one."""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .interrupts import held


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_target(path: str | os.PathLike[str], *, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same extension); on success it becomes ``path``.

    The temporary file gets the permissions a plain ``open(path, "w")`` would
    give, not mkstemp's private 0600, and is flushed to the disk before it is
    renamed.  On failure it is removed and ``path`` is left as it was.  With ``replace=False`` an existing ``path`` raises
    FileExistsError instead: a hard link claims the name atomically, so a file
    that appeared meanwhile is never clobbered.
    """
    path = Path(path)
    tmp: Path | None = None
    fd: int | None = None
    try:
        # A stop signal (see core.interrupts) waits until the temporary file's name is known here,
        # and again while the output takes its place: Ctrl-C at the wrong instant would otherwise
        # leave a .part file that nothing removes.
        with held():
            fd, name = tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix(path), suffix=f".part{path.suffix}")
            tmp = Path(name)
        _lock(fd)  # held until the end: see abandoned()
        yield tmp
        _sync(tmp)  # a disk that filled up while it was written fails here, before the rename
        with held():
            os.chmod(tmp, _default_mode())
            if replace:
                os.replace(tmp, path)
            else:
                _claim(tmp, path)
    finally:
        if fd is not None:
            os.close(fd)
        if tmp is not None:
            try:
                with held():
                    tmp.unlink(missing_ok=True)
            finally:
                tmp.unlink(missing_ok=True)  # again, should a signal have cut in before the hold


def _claim(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the name ``path`` only if nothing has it."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:  # no hard links here (FAT, some network shares): check, then rename
        if path.exists():
            raise FileExistsError(errno.EEXIST, "file exists", str(path)) from None
        os.replace(tmp, path)


#: Bytes of a file name where the file system does not say (ext4, XFS, Btrfs, tmpfs: 255).
DEFAULT_NAME_MAX = 255
#: What mkstemp adds between the prefix and the suffix.
RANDOM_PART = 8


def name_limit(folder: Path) -> int:
    """The longest file name (in bytes) the file system under ``folder`` (or its nearest existing parent) holds."""
    existing = Path(folder)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        return int(os.pathconf(existing, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return DEFAULT_NAME_MAX


def temporary_prefix(path: Path) -> str:
    """".STEM." for the temporary file beside ``path``, STEM cut so that the whole temporary name fits the
    file system whenever ``path``'s own name does (the temporary name is longer by its random part)."""
    room = name_limit(path.parent) - len(os.fsencode(f"...part{path.suffix}")) - RANDOM_PART
    stem = path.stem
    while stem and len(os.fsencode(stem)) > room:
        stem = stem[:-1]
    return f".{stem}."


def _sync(path: Path) -> None:
    """Push ``path``'s data to the disk: space the file system only promised is claimed (or refused) now."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lock(fd: int) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # no locks on this file system: abandoned() then never says yes
        pass


def abandoned(temporary: Path) -> bool:
    """True when no process holds the write lock of ``temporary`` (a file :func:`atomic_target` made).

    Every writer locks its temporary file until it is renamed or removed, and the kernel
    drops the lock when the writer dies, even by SIGKILL; so an unlocked temporary file was
    left by a killed writer and may go at once.  False whenever that cannot be told.
    """
    try:
        fd = os.open(temporary, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True
