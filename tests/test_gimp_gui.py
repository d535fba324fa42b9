"""The filter in a real GIMP 3.0 and 3.2 window, run after run, as a user runs it.

Each session opens a JPEG in the full GIMP under Xvfb (tests/gimp_gui.py) and goes through
cycles of five runs: Cancel in the dialog at once, OK once the preview is shown (then one
Ctrl+Z, which must leave the image clean: one undo step), Re-Show + Escape, Re-Show + OK then
Cancel in the status bar while the image is restored, and Cancel in the dialog once it shows
the header's QF (the worker then loads PyTorch for the preview).  After
every run the plug-in and its worker must have exited, GIMP must have printed no fault line
(no "Plug-in crashed", no LibGimp-CRITICAL/WARNING, no undo warning), and a cancelled run
must leave the image unmodified (no "*" in the window title).

FBCNN_GIMP_GUI_CYCLES sets the number of cycles per version (default 2: 10 runs each).
"""

from __future__ import annotations

import os
import time

import pytest
from PIL import Image

import gimp3_chroot
import gimp_gui
from conftest import natural_image

CYCLES = int(os.environ.get("FBCNN_GIMP_GUI_CYCLES", "2"))
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


class Runs:
    """The five kinds of run, each checked as it ends; ``log`` keeps what was done for the failure message."""

    def __init__(self, gimp: gimp_gui.GimpGui) -> None:
        self.gimp = gimp
        self.log: list[str] = []

    def reports_since(self, start: int) -> list[dict]:
        return self.gimp.reports()[start:]

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
        self.gimp.wait(lambda: any("preview" in r for r in self.reports_since(start)), WORKER_WAIT, "the preview")
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
        start = len(self.gimp.reports())
        dialog = self.gimp.reshow()
        self.gimp.key(dialog, "Return")
        self.gimp.wait(lambda: any("restoring" in r for r in self.reports_since(start)), WORKER_WAIT,
                       "the restoration")
        self.gimp.click_status_cancel()
        self.finish("Cancel in the status bar", modified=False)
        assert not any("drawable" in r for r in self.reports_since(start)), "the restoration was not cancelled"

    def cancel_after_header(self) -> None:
        start = len(self.gimp.reports())
        dialog = self.gimp.reshow()
        self.gimp.wait(lambda: any(r.get("stage") == "header" for r in self.reports_since(start)), 300,
                       "the header's QF")
        self.gimp.key(dialog, "alt+c")
        self.finish("Cancel in the dialog once the header's QF is shown", modified=False)


def test_runs_end_cleanly(release, tmp_path):
    image = release.root / "root" / "fbcnn-gui" / f"photo-{os.getpid()}.jpg"
    image.parent.mkdir(parents=True, exist_ok=True)
    # A photo large enough that the restoration lasts until the status bar's Cancel is clicked.
    Image.fromarray(natural_image(384, 512, seed=0)).save(image, quality=30)
    try:
        with gimp_gui.GimpGui(release, image) as gimp:
            runs = Runs(gimp)
            for _ in range(CYCLES):
                runs.cancel_at_once()
                runs.ok_then_undo()
                runs.reshow_escape()
                runs.cancel_in_status_bar()
                runs.cancel_after_header()
            assert len(runs.log) == 5 * CYCLES
            print(f"GIMP {release.version}: {len(runs.log)} runs, no fault line, cancelled runs left the image clean")
    finally:
        image.unlink(missing_ok=True)
