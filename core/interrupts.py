"""Holding a stop signal back for a few statements, so that a clean-up is never cut in half.

A command turns SIGINT/SIGTERM into an exception (``fbcnn_plugins.cli.signals``).  An
exception can land between any two statements, also between creating a temporary file and
arming its removal, or between an output appearing and the run noting it as finished.  Code
that must not be split marks itself with :func:`held`; a signal handler hands its exception to
:func:`raise_unless_held`, which raises it at once, or when the outermost held section ends.
Only the main thread runs Python signal handlers, so only it holds.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

_depth = 0
_pending: BaseException | None = None


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def raise_unless_held(error: BaseException) -> None:
    """Raise ``error`` now, or keep it for the end of the held section that is running."""
    global _pending
    if _depth and _on_main_thread():
        if _pending is None:
            _pending = error
        return
    raise error


@contextmanager
def held() -> Iterator[None]:
    """Run a block whole; a stop signal that arrives meanwhile is raised when it ends."""
    global _depth, _pending
    if not _on_main_thread():
        yield
        return
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if not _depth and _pending is not None:
            error, _pending = _pending, None
            raise error
