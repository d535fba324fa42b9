"""A real GIMP 3 for the integration tests: a Debian trixie chroot, built once and reused.

Debian 12 only ships GIMP 2.10 (no Python plug-ins), so the tests run GIMP
3 from trixie in a chroot (see ../shared/notes/gimp3-headless.md).  The
project's venv, the Python it was made from and the checkout are
bind-mounted read-only at the same paths, so the plug-in's worker runs the
code under test with the real torch.

    python tests/gimp3_chroot.py build     # build or reuse, print the root
    python tests/gimp3_chroot.py remove    # unmount everything and delete it

Needs root, debootstrap (installed with apt-get when missing) and the Debian
mirror the host uses.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

DEFAULT_ROOT = Path(os.environ.get("FBCNN_GIMP_CHROOT", "/var/tmp/fbcnn-gimp3-trixie"))
PACKAGES = ["gimp", "python3-gi", "gir1.2-gimp-3.0", "python3-numpy", "xvfb", "xauth"]
READY_MARK = ".fbcnn-gimp3-ready"
GIMP = "/usr/bin/gimp-console-3.0"


class ChrootUnavailable(RuntimeError):
    """This machine cannot build the chroot (not root, no debootstrap, no mirror)."""


def host_mirror() -> str:
    """The Debian mirror URI from the host's own apt sources."""
    candidates = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for source in candidates:
        try:
            text = source.read_text()
        except OSError:
            continue
        for match in re.finditer(r"(?:URIs:|deb)\s+(?:\[[^\]]*\]\s+)?(\S+/debian)/?\s", text + "\n"):
            return match.group(1)
    return "http://deb.debian.org/debian"


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=True, **kwargs)


def build(root: Path = DEFAULT_ROOT) -> Path:
    """Build the chroot unless a complete one is already there; returns its root."""
    if (root / READY_MARK).exists() and (root / GIMP.lstrip("/")).exists():
        return root
    if os.geteuid() != 0:
        raise ChrootUnavailable("building the GIMP 3 chroot needs root (debootstrap, chroot, mount)")
    if shutil.which("debootstrap") is None:
        apt = subprocess.run(["apt-get", "install", "-y", "-q", "debootstrap"], capture_output=True, text=True,
                             env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        if apt.returncode != 0 or shutil.which("debootstrap") is None:
            raise ChrootUnavailable(f"debootstrap is missing and apt-get could not install it: {apt.stderr[-500:]}")
    unmount_all(root)
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    _run(["debootstrap", "--variant=minbase", "trixie", str(root), host_mirror()], capture_output=True)
    with mounted_system(root):
        _run(["chroot", str(root), "env", "DEBIAN_FRONTEND=noninteractive", "sh", "-c",
              "apt-get update -qq && apt-get install -y -q --no-install-recommends " + " ".join(PACKAGES)
              + " && apt-get clean"], capture_output=True)
    (root / READY_MARK).write_text("ok\n")
    return root


class mounted_system:
    """/proc and /sys inside the chroot for the duration of a block."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __enter__(self) -> "mounted_system":
        for kind, target in (("proc", "proc"), ("sysfs", "sys")):
            path = self.root / target
            if not os.path.ismount(path):
                path.mkdir(exist_ok=True)
                _run(["mount", "-t", kind, kind, str(path)])
        return self

    def __exit__(self, *exc: object) -> None:
        for target in ("sys", "proc"):
            path = self.root / target
            if os.path.ismount(path):
                subprocess.run(["umount", "-l", str(path)], check=False)


def bind_readonly(root: Path, paths: list[Path]) -> list[Path]:
    """Bind-mount host folders read-only at the same paths inside the chroot; returns the mount points."""
    points = []
    for path in paths:
        point = root / str(path).lstrip("/")
        if os.path.ismount(point):
            points.append(point)
            continue
        point.mkdir(parents=True, exist_ok=True)
        _run(["mount", "--bind", str(path), str(point)])
        _run(["mount", "-o", "remount,bind,ro", str(point)])
        points.append(point)
    return points


def unmount_all(root: Path) -> None:
    """Every mount under ``root``, deepest first: deleting through a live bind mount deletes the source."""
    if not root.exists():
        return
    prefix = str(root.resolve()) + "/"
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False)


def environment_paths(python: str = sys.executable) -> list[Path]:
    """The venv, the base Python it was made from, and the checkout (editable installs point there)."""
    venv = Path(sys.prefix)
    base = Path(sys.base_prefix)
    checkout = Path(__file__).resolve().parents[1]
    return [base, venv, checkout] if not str(venv).startswith(str(checkout)) else [base, checkout]


def gimp_command(root: Path, batch_file: str, *, display: bool = False, env: dict[str, str] | None = None) -> list[str]:
    """The command that runs ``batch_file`` (a path inside the chroot) in a headless GIMP 3."""
    variables = {"HOME": "/root", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **(env or {})}
    gimp = [GIMP, "-i", "--batch-interpreter=python-fu-eval",
            "-b", f"exec(open({batch_file!r}).read())", "--quit"]
    if display:
        gimp = ["xvfb-run", "-a", *gimp]
    return ["chroot", str(root), "/usr/bin/env", "-i", *(f"{k}={v}" for k, v in variables.items()), *gimp]


def main() -> int:
    action = sys.argv[1] if len(sys.argv) > 1 else "build"
    if action == "build":
        print(build())
    elif action == "remove":
        unmount_all(DEFAULT_ROOT)
        shutil.rmtree(DEFAULT_ROOT, ignore_errors=True)
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
