"""A real GIMP 3 window under Xvfb, driven with xdotool the way a user drives it.

The integration tests' batch runs call the plug-in from a script; this drives the
full GIMP (``gimp-3.0`` / ``gimp-3.2``, not the console binary) in its chroot: the
image is opened from the command line, the filter is picked from the Filters menu
with its mnemonics, the dialog is answered with the keyboard, Re-Show is its
shortcut, and the status bar's Cancel button is clicked.  GIMP runs with
``--console-messages``, so what it would show a user ("Plug-in crashed", undo
warnings) lands in its output, which the tests read.

Each session gets its own HOME (a copy of the chroot's warmed profile with the
plug-in installed), so runs from other checkouts never swap the plug-in under it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import gimp3_chroot

#: Lines in GIMP's output that tell of a fault of the plug-in: GIMP's own messages about it, libgimp's
#: assertions, any GLib assertion the plug-in process printed (its lines name it), a Python traceback.
#: GIMP's own lines about the virtual X devices ("(gimp:PID): Gdk-CRITICAL") are not the plug-in's.
FAULTS = re.compile(r"Plug-in crashed|inconsistent state|LibGimp\w*-(CRITICAL|WARNING)"
                    r"|fbcnn.*(CRITICAL|WARNING|fatal error)|free\(\)|Traceback")
DIALOG = "JPEG Artifacts Removal (FBCNN)"
PLUGIN_SCRIPT = "fbcnn-jpeg-artifacts.py"
WORKER_MODULE = "fbcnn_plugins.gimp.worker"
#: Settings for a test profile: no welcome window in front of the image; docks hidden (a session
#: setting) so the status bar, and its Cancel button, reach the image window's right edge.
GIMPRC = "(show-welcome-dialog no)\n(check-updates no)\n(show-tips no)\n"
SESSIONRC = "(hide-docks yes)\n"


class GuiTimeout(AssertionError):
    """GIMP did not get where the test waited for it to be."""


class GimpGui:
    """One GIMP GUI session on one image; ``with GimpGui(...) as gimp:``."""

    def __init__(self, release: gimp3_chroot.Release, image: Path, *, env: dict[str, str] | None = None) -> None:
        self.release = release
        self.root = release.root
        self.image = image  # a path on this machine, inside the chroot
        self.folder = self.root / "root" / "fbcnn-gui" / uuid.uuid4().hex[:8]
        self.home = self.folder / "home"
        self.report = self.folder / "report.jsonl"
        self.log_path = self.folder / "gimp.log"
        self.env = dict(env or {})
        self.display = ""
        self._xvfb: subprocess.Popen | None = None
        self._gimp: subprocess.Popen | None = None
        self._log_seen = 0

    # -- paths ---------------------------------------------------------------------
    def inside(self, path: Path) -> str:
        return "/" + str(Path(path).relative_to(self.root))

    # -- session -------------------------------------------------------------------
    def __enter__(self) -> "GimpGui":
        profile = self.home / ".config" / "GIMP" / self.release.version
        profile.parent.mkdir(parents=True)
        shutil.copytree(self.root / self.release.profile, profile,
                        ignore=shutil.ignore_patterns("plug-ins", "sessionrc", "CrashLog"))
        with open(profile / "gimprc", "a", encoding="utf-8") as rc:
            rc.write(GIMPRC)
        (profile / "sessionrc").write_text(SESSIONRC)
        (profile / "plug-ins").mkdir()
        install = subprocess.run([sys.executable, "-P", "-m", "fbcnn_plugins.cli.main", "install-gimp", "--gimp-dir",
                                  str(profile)], capture_output=True, text=True)
        if install.returncode != 0:
            raise RuntimeError(f"install-gimp failed: {install.stderr}")
        self._start_xvfb()
        self._start_gimp()
        self.wait(lambda: self.image_window() is not None, 240, "the image window")
        return self

    def _start_xvfb(self) -> None:
        read, write = os.pipe()
        self._xvfb = subprocess.Popen(["chroot", str(self.root), "Xvfb", "-displayfd", str(write), "-screen", "0",
                                       "1280x1024x24", "-nolisten", "tcp"], pass_fds=(write,),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(write)
        number = b""
        while not number.endswith(b"\n"):
            chunk = os.read(read, 16)
            if not chunk:
                raise RuntimeError("Xvfb did not start")
            number += chunk
        os.close(read)
        self.display = ":" + number.decode().strip()

    def _start_gimp(self) -> None:
        variables = {"HOME": self.inside(self.home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
                     "DISPLAY": self.display, "NO_AT_BRIDGE": "1", "FBCNN_GIMP_REPORT": self.inside(self.report),
                     **self.env}
        gimp = [f"/usr/bin/gimp-{self.release.version}", "--no-splash", "--console-messages", "--new-instance",
                self.inside(self.image)]
        inside = ["chroot", str(self.root), "/usr/bin/env", "-i", *(f"{k}={v}" for k, v in variables.items()), *gimp]
        self._log = open(self.log_path, "w", encoding="utf-8")
        self._gimp = subprocess.Popen(gimp3_chroot.isolated(self.root, inside, gimp3_chroot.environment_paths()),
                                      stdout=self._log, stderr=subprocess.STDOUT)

    def __exit__(self, *exc: object) -> None:
        for process in (self._gimp, self._xvfb):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        for pid in self.plugin_pids() + self.worker_pids():
            _kill(pid)
        self._log.close()
        if not os.environ.get("FBCNN_KEEP_GUI_RUNS"):
            shutil.rmtree(self.folder, ignore_errors=True)

    # -- looking ---------------------------------------------------------------------
    def xdotool(self, *args: str) -> str:
        done = subprocess.run(["chroot", str(self.root), "env", f"DISPLAY={self.display}", "xdotool", *args],
                              capture_output=True, text=True, timeout=60)
        return done.stdout.strip()

    def windows(self) -> dict[str, str]:
        """Visible top-level windows: name -> id."""
        found = {}
        for window in self.xdotool("search", "--onlyvisible", "--name", ".").split():
            found.setdefault(self.xdotool("getwindowname", window), window)
        return found

    def image_window(self, patience: float = 10.0) -> tuple[str, str] | None:
        """(id, title) of the image window; the title starts with "*" when the image is dirty.

        One search can miss it: xdotool exits on X's BadWindow error when a window it is looking
        at is destroyed mid-search, which is just when a dialog closes after Cancel.  So the
        window counts as gone only when searches keep missing it for ``patience`` seconds.
        """
        deadline = time.monotonic() + patience
        while True:
            for name, window in self.windows().items():
                if name.endswith("GIMP") and "[" in name:
                    return window, name
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.25)

    def dialog(self) -> str | None:
        return self.windows().get(DIALOG)

    def dirty(self) -> bool:
        found = self.image_window()
        assert found is not None, "the image window is gone"
        return found[1].startswith("*")

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def new_faults(self) -> list[str]:
        """Fault lines GIMP printed since the last call."""
        text = self.log()
        fresh, self._log_seen = text[self._log_seen :], len(text)
        return [line for line in fresh.splitlines() if FAULTS.search(line)]

    def reports(self) -> list[dict]:
        if not self.report.exists():
            return []
        return [json.loads(line) for line in self.report.read_text().splitlines() if line.strip()]

    def plugin_pids(self) -> list[int]:
        return _pids_with(PLUGIN_SCRIPT, self.inside(self.home))

    def worker_pids(self) -> list[int]:
        return _pids_with(WORKER_MODULE, self.inside(self.home))

    def screenshot(self, path: Path) -> None:
        from PIL import ImageGrab

        ImageGrab.grab(xdisplay=self.display).save(path)

    # -- acting ------------------------------------------------------------------------
    def wait(self, condition, timeout: float, what: str, step: float = 0.25):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            if self._gimp is not None and self._gimp.poll() is not None:
                raise GuiTimeout(f"GIMP exited (code {self._gimp.returncode}) while waiting for {what}:\n"
                                 f"{self.log()[-3000:]}")
            time.sleep(step)
        raise GuiTimeout(f"no {what} after {timeout} s; windows: {list(self.windows())}\n{self.log()[-3000:]}")

    def key(self, window: str, *keys: str) -> None:
        self.xdotool("windowraise", window)
        self.xdotool("windowfocus", "--sync", window)
        for key in keys:
            self.xdotool("key", "--clearmodifiers", key)
            time.sleep(0.3)

    def open_filter(self) -> str:
        """Filters > Enhance > JPEG Artifacts Removal (FBCNN)... by its mnemonics; returns the dialog."""
        window, _ = self.image_window()
        self.key(window, "alt+r", "h", "j")
        return self.wait(self.dialog, 120, "filter dialog")

    def reshow(self) -> str:
        """Filters > Re-Show Last (Shift+Ctrl+F)."""
        window, _ = self.image_window()
        self.key(window, "shift+ctrl+f")
        return self.wait(self.dialog, 120, "re-shown dialog")

    def click_status_cancel(self) -> None:
        """The Cancel button at the right end of the image window's status bar (docks hidden)."""
        window, _ = self.image_window()
        geometry = dict(line.split("=", 1) for line in self.xdotool("getwindowgeometry", "--shell", window).split())
        x = int(geometry["X"]) + int(geometry["WIDTH"]) - 40
        y = int(geometry["Y"]) + int(geometry["HEIGHT"]) - 14
        self.xdotool("windowraise", window)
        self.xdotool("mousemove", "--sync", str(x), str(y))
        self.xdotool("click", "1")

    def wait_until_idle(self, timeout: float = 120) -> None:
        """Until the plug-in and its worker have exited."""
        self.wait(lambda: not self.plugin_pids() and not self.worker_pids(), timeout, "plug-in and worker exit")


def _pids_with(needle: str, home: str) -> list[int]:
    """Processes whose command line has ``needle`` and whose HOME is this session's."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            if needle.encode() not in cmdline:
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"HOME={home}".encode() in environ:
            found.append(int(entry.name))
    return found


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
