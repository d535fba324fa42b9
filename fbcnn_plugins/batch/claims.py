"""Claiming an output before working on it, so that runs sharing a folder restore each file once.

Runs that share a folder (cron jobs that overlap, several machines on one network share, a
Ray job beside a local one) each walk the same plan.  Before a run restores a file it takes
the claim on that file's output: a small file beside the output (``.NAME.claim``) locked with
``flock``.  A run that finds the lock taken leaves the file to its holder and comes back to it
at the end; by then the output exists, and the file counts as done.

The lock belongs to the open file, so the kernel (or the network filesystem's lock manager)
drops it when its process ends, however it ends: a run killed with SIGKILL leaves at most an
unlocked claim file, which the next run that claims that output takes over and removes.  No
timeout guesses whether a holder is still alive.

Where ``flock`` does not exist (Windows) or the filesystem keeps no locks, a claim is always
granted: runs are then not kept from restoring a file twice, and the no-clobber write
(``core.atomic``) still keeps one from replacing another's output.
"""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import time
from pathlib import Path

from fbcnn_plugins.core.interrupts import held

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

CLAIM_SUFFIX = ".claim"
#: What flock raises on a filesystem that keeps no locks (some network mounts).
NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
#: How often a run waiting for another run's claim looks again.
POLL_S = 0.2


def claim_path(target: Path) -> Path:
    """The claim file of ``target``: hidden, beside it, with an extension no run reads as an image.

    An output name at the file system's limit leaves no room for the dot and ``.claim``; the
    claim then takes a shortened name with a digest of the full one, so that every output that
    can be written can be claimed, and two long names that share a beginning keep two claims.
    """
    from fbcnn_plugins.core.atomic import name_limit

    name = f".{target.name}{CLAIM_SUFFIX}"
    room = name_limit(target.parent)
    if len(os.fsencode(name)) <= room:
        return target.with_name(name)
    digest = "~" + hashlib.sha256(os.fsencode(target.name)).hexdigest()[:16]
    stem = target.name
    while stem and len(os.fsencode(f".{stem}{digest}{CLAIM_SUFFIX}")) > room:
        stem = stem[:-1]
    return target.with_name(f".{stem}{digest}{CLAIM_SUFFIX}")


class Claim:
    """The held claim on one output; :meth:`release` gives it up and removes the claim file."""

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path = path
        self._fd = fd

    def release(self) -> None:
        # The name goes before the lock: a run that opens the name afterwards makes a new file,
        # and one that opened the old file finds it unlinked once it gets the lock (see try_claim).
        with held():
            if self._fd is not None:
                self.path.unlink(missing_ok=True)
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def try_claim(target: Path) -> Claim | None:
    """Claim ``target`` for this process, or None when another live process holds it.

    Raises OSError when the claim file cannot be made (the output folder is not writable).
    """
    path = claim_path(target)
    if fcntl is None:
        return Claim(path, None)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        with held():  # a stop signal must not leave an open, locked claim file behind
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            except OSError as error:
                if error.errno not in NO_LOCKS:
                    os.close(fd)
                    raise
                os.close(fd)  # a filesystem without locks: granted, as where flock does not exist
                path.unlink(missing_ok=True)
                return Claim(path, None)
            except BaseException:
                os.close(fd)
                raise
            # The holder this run waited for may have removed the file, and a third run made a new one
            # under the same name: only a lock on the file the name still names is the claim.
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            if current is not None and os.path.samestat(os.fstat(fd), current):
                os.ftruncate(fd, 0)
                os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())  # for a person who finds it
                return Claim(path, fd)
            os.close(fd)


def wait_for_claim(target: Path, *, timeout_s: float | None = None) -> Claim | None:
    """Claim ``target``, waiting while another run holds it (None when ``timeout_s`` passes first)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        claim = try_claim(target)
        if claim is not None or (deadline is not None and time.monotonic() >= deadline):
            return claim
        time.sleep(POLL_S)


def remove_orphan_claim(target: Path) -> None:
    """Remove the claim file a killed run left for ``target``; one a live run holds stays."""
    if claim_path(target).exists():
        try:
            claim = try_claim(target)
        except OSError:
            return
        if claim is not None:
            claim.release()
