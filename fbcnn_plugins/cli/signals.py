"""Stopping a run cleanly: SIGINT, SIGTERM and SIGHUP become an exception that unwinds the work.

Unwinding (rather than dying on the spot) is what lets every ``atomic_target``
remove its temporary file and lets a batch report the files it finished.  The
exit status follows the shell's convention, 128 + the signal number (130 for
Ctrl-C, 143 for SIGTERM).  SIGKILL cannot be caught; the temporary file it
leaves is ignored by later runs (see ``fbcnn_plugins.files.formats.is_temporary_name``).
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

from fbcnn_plugins.core.interrupts import raise_unless_held

HANDLED = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Interrupted(KeyboardInterrupt):
    """The run was asked to stop by a signal; a KeyboardInterrupt so that libraries clean up as for Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Raise :class:`Interrupted` in the main thread on the first signal; later ones wait for the clean-up."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised = False

    def handler(signum: int, frame) -> None:
        nonlocal raised
        if raised:  # a second Ctrl-C must not cut the clean-up of the first short
            return
        raised = True
        raise_unless_held(Interrupted(signum))  # at once, or when a file's clean-up has finished

    previous = {sig: signal.signal(sig, handler) for sig in HANDLED}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
