"""Writing files so that readers only ever see the old file or the complete new one."""

from __future__ import annotations

import errno
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
    give, not mkstemp's private 0600.  On failure it is removed and ``path``
    is left as it was.  With ``replace=False`` an existing ``path`` raises
    FileExistsError instead: a hard link claims the name atomically, so a file
    that appeared meanwhile is never clobbered.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        # A stop signal (see core.interrupts) waits until the temporary file's name is known here,
        # and again while the output takes its place: Ctrl-C at the wrong instant would otherwise
        # leave a .part file that nothing removes.
        with held():
            fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".part{path.suffix}")
            os.close(fd)
            tmp = Path(name)
        yield tmp
        with held():
            os.chmod(tmp, _default_mode())
            if replace:
                os.replace(tmp, path)
            else:
                _claim(tmp, path)
    finally:
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
