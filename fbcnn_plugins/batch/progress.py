"""Progress of a batch on stderr: a line per file from its start, and what a large image is busy with.

On a terminal a tqdm bar runs over the batch (with a bar over the tiles of a
large image); in a log or a pipe the same progress comes as plain lines, so a
long batch never sits silent until its first file is done.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, TextIO

#: Images of at least this many pixels get stage lines (QF estimation, tiles) in plain mode.
LARGE_IMAGE_PIXELS = 4_000_000
#: Plain mode reports tile progress at these fractions.
PLAIN_TILE_STEPS = (0.25, 0.5, 0.75)


class BatchProgress:
    """Reports the progress of ``total`` files on ``stream`` (stderr by default)."""

    def __init__(self, total: int, *, stream: TextIO | None = None, quiet: bool = False,
                 show_results: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.total = total
        self.quiet = quiet
        #: Whether a restored file gets its "input -> output (QF ...)" line (not when a JSON report follows).
        self.show_results = show_results
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.index = 0
        self.current: Path | None = None
        self.started = time.perf_counter()
        self.bar = None
        if self.tty and not quiet:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="file", file=self.stream, leave=False, dynamic_ncols=True)

    def line(self, text: str) -> None:
        """A line that stays (a result, an error, a warning); shown even when quiet."""
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def start(self, path: Path) -> None:
        self.index += 1
        self.current = path
        self.started = time.perf_counter()
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.set_description_str(path.name)
            self.bar.set_postfix_str("reading")
        else:
            self.line(f"[{self.index}/{self.total}] {path}")

    def stage(self, text: str, shape: tuple[int, ...]) -> None:
        """What the current file is busy with; in plain mode said only for large images (or frames)."""
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(text)
        elif _pixels(shape) >= LARGE_IMAGE_PIXELS or text.startswith("frame "):
            elapsed = time.perf_counter() - self.started
            self.line(f"[{self.index}/{self.total}] {self.current}: {text} ({elapsed:.0f} s)")

    def tiles(self, shape: tuple[int, ...]) -> Callable[[int, int], None] | None:
        """A per-tile callback for the restorer: a bar on a terminal, quarter lines in a log; large images only."""
        if self.quiet or _pixels(shape) < LARGE_IMAGE_PIXELS:
            return None
        if self.bar is not None:
            from tqdm import tqdm

            bar = tqdm(unit="tile", file=self.stream, leave=False, position=1, dynamic_ncols=True)

            def update(done: int, total: int) -> None:
                bar.total = total
                bar.n = done
                bar.refresh()
                if done == total:
                    bar.close()

            return update
        steps = list(PLAIN_TILE_STEPS)

        def report(done: int, total: int) -> None:
            while steps and done >= steps[0] * total:
                steps.pop(0)
                self.stage(f"{done} of {total} tiles", shape)

        return report

    def finished(self, record: Mapping[str, Any], counter: str = "") -> None:
        """The lines that stay for a settled file (its warnings, then its error, skip or result); one step on.

        ``counter`` ("[3/10] ") leads the lines in a log, where no bar shows how far the batch is.
        """
        prefix = "" if self.tty else counter
        for note in record.get("warnings", []):
            self.line(f"warning: {note}")
        if "error" in record:
            self.line(f"{prefix}error: {record['error']}")
        elif "skipped" in record:
            if not self.quiet:
                self.line(f"{prefix}skipped {record['input']}: {record['skipped']}")
        elif self.show_results and "qf" in record:
            frames = f", {record['frames']} frames" if record.get("frames", 1) > 1 else ""
            used = f"QF {record['qf']}, {record['qf_source']}{frames}"
            self.line(f"{prefix}{record['input']} -> {record['output']}  ({used})")
        self.advance()

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _pixels(shape: tuple[int, ...]) -> int:
    return int(shape[0]) * int(shape[1])
