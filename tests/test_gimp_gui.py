"""The filter in a real GIMP 3.0 and 3.2 window, run after run, as a user runs it.

Each session opens a JPEG in the full GIMP under Xvfb (tests/gimp_gui.py) and runs the filter
as a user would: OK once the preview is shown (then one Ctrl+Z, which must leave the image
clean: one undo step), Re-Show + OK then Cancel in the status bar while the image is restored,
and rounds of three cheaper runs: Cancel in the dialog at once, Re-Show + Escape, and Cancel
once the dialog shows the header's QF (the worker is then loading the engine for the preview).
Every run starts a new plug-in and worker, and the two that restore load PyTorch, which takes
minutes on a busy 2-core machine; the rounds are what makes the count.  After
every run the plug-in and its worker must have exited, GIMP must have printed no fault line
(no "Plug-in crashed", no LibGimp-CRITICAL/WARNING, no undo warning), and a cancelled run
must leave the image unmodified (no "*" in the window title).

FBCNN_GIMP_GUI_ROUNDS sets the number of cheap rounds per version (default 3: 11 runs each).
"""

from __future__ import annotations

import os
import time

import pytest
from PIL import Image

import gimp3_chroot
import gimp_gui
from conftest import natural_image

ROUNDS = int(os.environ.get("FBCNN_GIMP_GUI_ROUNDS", "3"))
#: Seconds to wait for the worker (PyTorch loads in every run; minutes on a busy 2-core machine).
WORKER_WAIT = 1200


@pytest.fixture(scope="module", params=sorted(gimp3_chroot.RELEASES), ids=lambda v: f"gimp{v}")
def release(request):
    release = gimp3_chroot.RELEASES[request.param]
    try:
        gimp3_chroot.build(release)
        gimp3_chroot.warm_up(release)
    except gimp3_chroot.ChrootUnavailable as error:
        if os.environ.get("FBCNN_REQUIRE_GIMP") == "1":
            pytest.fail(f"the GIMP {release.version} chroot could not be built: {error}")
        pytest.skip(f"no GIMP {release.version} here: {error}")
    return release


def restored_fraction(reports: list[dict]) -> float:
    """The largest fraction of a restoration the plug-in reported (it reports each the worker sends)."""
    return max(r["progress"] for r in reports if "progress" in r)


class Runs:
    """The five kinds of run, each checked as it ends; ``log`` keeps what was done for the failure message."""

    def __init__(self, gimp: gimp_gui.GimpGui) -> None:
        self.gimp = gimp
        self.log: list[str] = []

    def reports_since(self, start: int) -> list[dict]:
        return self.gimp.reports()[start:]

    def wait_for_report(self, start: int, key: str, what: str, timeout: float = WORKER_WAIT) -> None:
        """Until the plug-in has reported ``key`` (a key of its report line, or a dialog stage) since ``start``.

        An error the plug-in reported ends the wait at once, with its words: the report it
        waits for will never come, and the worker's long allowance would only hide why.
        """

        def arrived() -> bool:
            reports = self.reports_since(start)
            errors = [r["error"] for r in reports if "error" in r]
            assert not errors, f"the plug-in failed while the test waited for {what}: {errors[0]}"
            return any(key in r or r.get("stage") == key for r in reports)

        self.gimp.wait(arrived, timeout, what)

    def finish(self, what: str, *, modified: bool) -> None:
        self.gimp.wait_until_idle(WORKER_WAIT)
        time.sleep(0.5)  # what GIMP prints as the plug-in's pipe closes
        faults = self.gimp.new_faults()
        self.log.append(what)
        assert not faults, f"run {len(self.log)} ({what}) made GIMP print:\n" + "\n".join(faults) + \
            "\nruns: " + ", ".join(self.log)
        assert self.gimp.dirty() == modified, f"run {len(self.log)} ({what}): image modified is {not modified}"

    def cancel_at_once(self) -> None:
        dialog = self.gimp.open_filter()
        self.gimp.key(dialog, "alt+c")
        self.finish("Cancel in the dialog at once", modified=False)

    def ok_then_undo(self) -> None:
        start = len(self.gimp.reports())
        dialog = self.gimp.open_filter()
        self.wait_for_report(start, "preview", "the preview")
        self.gimp.key(dialog, "Return")
        self.finish("OK", modified=True)
        assert any("drawable" in r for r in self.reports_since(start)), "OK restored nothing"
        window, _ = self.gimp.image_window()
        self.gimp.key(window, "ctrl+z")
        self.gimp.wait(lambda: not self.gimp.dirty(), 30, "a clean image after one undo")

    def reshow_escape(self) -> None:
        dialog = self.gimp.reshow()
        self.gimp.key(dialog, "Escape")
        self.finish("Re-Show + Escape", modified=False)

    def cancel_in_status_bar(self) -> None:
        """Cancel once the first tiles are restored: the engine is loaded and most tiles are still to come.

        A click sent when the restoration is announced can land after it has ended on a fast
        machine (a small photo is one tile).  The photo has many tiles and the click waits for
        the worker's first fraction, so the restoration is in progress when the click lands.
        """
        start = len(self.gimp.reports())
        dialog = self.gimp.reshow()
        self.gimp.key(dialog, "Return")
        self.wait_for_report(start, "progress", "the first restored tiles")
        done = restored_fraction(self.reports_since(start))
        assert done <= 0.5, f"{done:.0%} of the photo was restored before the test could click Cancel; use a larger photo"
        self.gimp.click_status_cancel()
        self.finish("Cancel in the status bar", modified=False)
        reports = self.reports_since(start)
        assert not any("drawable" in r for r in reports), "the restoration was not cancelled"
        assert restored_fraction(reports) < 1.0, "every tile was restored before the Cancel"

    def cancel_after_header(self) -> None:
        start = len(self.gimp.reports())
        dialog = self.gimp.reshow()
        self.wait_for_report(start, "header", "the header's QF", 300)
        self.gimp.key(dialog, "alt+c")
        self.finish("Cancel in the dialog once the header's QF is shown", modified=False)


def test_runs_end_cleanly(release, tmp_path):
    image = release.root / "root" / "fbcnn-gui" / f"photo-{os.getpid()}.jpg"
    image.parent.mkdir(parents=True, exist_ok=True)
    # A photo of 35 CPU tiles (512 px), so the restoration lasts until the status bar's Cancel is clicked.
    Image.fromarray(natural_image(2048, 3072, seed=0)).save(image, quality=30)
    try:
        with gimp_gui.GimpGui(release, image) as gimp:
            runs = Runs(gimp)
            runs.cancel_at_once()  # the first run comes from the menu, so Re-Show has one to show
            runs.ok_then_undo()
            runs.cancel_in_status_bar()
            for _ in range(ROUNDS):
                runs.cancel_at_once()
                runs.reshow_escape()
                runs.cancel_after_header()
            assert len(runs.log) == 3 + 3 * ROUNDS
            print(f"GIMP {release.version}: {len(runs.log)} runs, no fault line, cancelled runs left the image clean")
    finally:
        image.unlink(missing_ok=True)
