"""How many CPU threads one network call may use, for every engine alike.

Front ends that run several restorations side by side (VapourSynth's frame threads, one Ray
worker per core, ``--threads``) set the budget here before a model is loaded; the engines read
it when they are built.  Unset, each engine keeps its own default (one thread per physical core
for both PyTorch and OpenVINO).
"""

from __future__ import annotations

import sys

_threads: int | None = None


def set_num_threads(count: int) -> None:
    """Limit every engine built from now on (and PyTorch, where it is loaded) to ``count`` threads."""
    global _threads
    _threads = max(1, int(count))
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(_threads)


def num_threads() -> int | None:
    """The budget set by :func:`set_num_threads`, or None for the engine's own default."""
    return _threads
