"""Real GIMP 3.0 and 3.2 for the integration tests: Debian chroots, built once and reused.

Debian 12 only ships GIMP 2.10 (no Python plug-ins), so the tests run GIMP
3.0 from trixie and GIMP 3.2 from sid, each in a chroot (see
../shared/notes/gimp3-headless.md).  The project's venv, the Python it was
made from and the checkout are bind-mounted read-only at the same paths (in a
private mount namespace for each GIMP run), so the plug-in's worker runs the
code under test with the real torch.

    python tests/gimp3_chroot.py build [3.0|3.2 ...]   # build or reuse, print the roots
    python tests/gimp3_chroot.py remove [3.0|3.2 ...]  # unmount everything and delete

Needs root, debootstrap (installed with apt-get when missing) and the Debian
mirror the host uses.  A root is built under a temporary name and renamed
when complete, so an interrupted build never looks ready; network steps are
retried, because CI must get both releases.
"""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PREFIX = os.environ.get("FBCNN_GIMP_CHROOT_PREFIX", "/var/tmp/fbcnn-gimp3")
PACKAGES = ["gimp", "python3-gi", "gir1.2-gimp-3.0", "python3-numpy", "xvfb", "xauth", "xdotool"]
#: Packages added to PACKAGES after roots were first built, with a file each installs: a root
#: built before gets them on its next use.
LATER_PACKAGES = {"xdotool": "usr/bin/xdotool"}
READY_MARK = ".fbcnn-gimp3-ready"
WARM_MARK = ".fbcnn-gimp3-warm"
ATTEMPTS = 3
#: sid's Release file on a mirror snapshot can be past its Valid-Until date; apt refuses it unless told.
APT_OPTIONS = 'Acquire::Check-Valid-Until "false";\nAcquire::Retries "5";\n'


@dataclass(frozen=True)
class Release:
    """One GIMP release the tests run against, and the Debian suite that ships it."""

    version: str
    suite: str

    @property
    def root(self) -> Path:
        return Path(f"{PREFIX}-{self.suite}")

    @property
    def gimp(self) -> str:
        return f"/usr/bin/gimp-console-{self.version}"

    @property
    def profile(self) -> str:
        """The profile folder inside the chroot (GIMP 3.2 also migrates a 3.0 one, but installs go here)."""
        return f"root/.config/GIMP/{self.version}"


RELEASES = {"3.0": Release("3.0", "trixie"), "3.2": Release("3.2", "sid")}


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


def _retried(args: list[str], what: str) -> None:
    """Runs a network-bound step up to ATTEMPTS times; the last failure carries its output."""
    for attempt in range(1, ATTEMPTS + 1):
        done = subprocess.run(args, capture_output=True, text=True)
        if done.returncode == 0:
            return
        if attempt == ATTEMPTS:
            raise ChrootUnavailable(f"{what} failed {ATTEMPTS} times (exit {done.returncode}):\n"
                                    f"{(done.stdout + done.stderr)[-3000:]}")
        time.sleep(10 * attempt)


def is_ready(release: Release) -> bool:
    return (release.root / READY_MARK).exists() and (release.root / release.gimp.lstrip("/")).exists()


def build(release: Release | str = "3.0") -> Path:
    """Build the chroot for ``release`` unless a complete one is already there; returns its root."""
    release = RELEASES[release] if isinstance(release, str) else release
    if is_ready(release):
        _add_later_packages(release)
        return release.root
    if os.geteuid() != 0:
        raise ChrootUnavailable("building the GIMP 3 chroot needs root (debootstrap, chroot, mount)")
    if shutil.which("debootstrap") is None:
        apt = subprocess.run(["apt-get", "install", "-y", "-q", "debootstrap"], capture_output=True, text=True,
                             env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        if apt.returncode != 0 or shutil.which("debootstrap") is None:
            raise ChrootUnavailable(f"debootstrap is missing and apt-get could not install it: {apt.stderr[-500:]}")
    release.root.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{release.root}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second test run waits for the first one's build
        if is_ready(release):
            return release.root
        staging = Path(f"{release.root}.building")
        _remove(staging)
        _remove(release.root)
        _retried(["debootstrap", "--variant=minbase", release.suite, str(staging), host_mirror()],
                 f"debootstrap {release.suite}")
        (staging / "etc/apt/apt.conf.d/99fbcnn-tests").write_text(APT_OPTIONS)
        with mounted_system(staging):
            _retried(["chroot", str(staging), "env", "DEBIAN_FRONTEND=noninteractive", "sh", "-c",
                      "apt-get update -qq && apt-get install -y -q --no-install-recommends "
                      + " ".join(PACKAGES) + " && apt-get clean"],
                     f"installing GIMP {release.version} from Debian {release.suite}")
        if not (staging / release.gimp.lstrip("/")).exists():
            raise ChrootUnavailable(f"Debian {release.suite} installed no {release.gimp}")
        (staging / READY_MARK).write_text("ok\n")
        staging.rename(release.root)
    return release.root


def _add_later_packages(release: Release) -> None:
    missing = [name for name, path in LATER_PACKAGES.items() if not (release.root / path).exists()]
    if not missing:
        return
    if os.geteuid() != 0:
        raise ChrootUnavailable(f"the GIMP {release.version} chroot lacks {', '.join(missing)}; adding them needs root")
    with open(f"{release.root}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with mounted_system(release.root):
            _retried(["chroot", str(release.root), "env", "DEBIAN_FRONTEND=noninteractive", "sh", "-c",
                      "apt-get update -qq && apt-get install -y -q --no-install-recommends " + " ".join(missing)
                      + " && apt-get clean"], f"adding {', '.join(missing)} to GIMP {release.version}'s chroot")


def warm_up(release: Release) -> None:
    """Starts GIMP once and quits, so a test never pays for its first start.

    A first start builds the font cache and queries every plug-in, which on a busy machine
    can take minutes; the tests' own runs have timeouts sized for a warm GIMP.
    """
    mark = release.root / WARM_MARK
    if mark.exists():
        return
    done = subprocess.run(gimp_command(release, None, binds=[]), capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise ChrootUnavailable(f"GIMP {release.version} did not start (exit {done.returncode}):\n{done.stderr[-2000:]}")
    mark.write_text("ok\n")


def _remove(root: Path) -> None:
    unmount_all(root)
    shutil.rmtree(root, ignore_errors=True)


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


def gimp_command(release: Release, batch_file: str | None, *, display: bool = False,
                 env: dict[str, str] | None = None, binds: list[Path] | None = None) -> list[str]:
    """The command that runs ``batch_file`` (a path inside the chroot) in that release's GIMP; None: just start.

    ``binds`` (default: :func:`environment_paths`) appear read-only at the same paths inside.
    """
    variables = {"HOME": "/root", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **(env or {})}
    batch = ["--batch-interpreter=python-fu-eval", "-b", f"exec(open({batch_file!r}).read())"] if batch_file else []
    gimp = [release.gimp, "-i", *batch, "--quit"]
    if display:
        gimp = ["xvfb-run", "-a", "-s", "-screen 0 1280x1024x24", *gimp]
    inside = ["chroot", str(release.root), "/usr/bin/env", "-i", *(f"{k}={v}" for k, v in variables.items()), *gimp]
    return isolated(release.root, inside, environment_paths() if binds is None else binds)


def isolated(root: Path, command: list[str], binds: list[Path]) -> list[str]:
    """``command`` in a private mount namespace with /proc, /sys and ``binds`` (read-only) mounted in ``root``.

    The mounts exist only for that process tree and vanish with it: test runs side by side
    never see or undo each other's mounts, and nothing is left mounted to delete through.
    """
    steps = [f"mount -t proc proc {shlex.quote(str(root / 'proc'))}",
             f"mount -t sysfs sysfs {shlex.quote(str(root / 'sys'))}"]
    for path in binds:
        point = shlex.quote(str(root / str(path).lstrip("/")))
        steps += [f"mkdir -p {point}", f"mount --bind {shlex.quote(str(path))} {point}",
                  f"mount -o remount,bind,ro {point}"]
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", " && ".join(steps) + ' && exec "$@"',
            "sh", *command]


def main() -> int:
    action = sys.argv[1] if len(sys.argv) > 1 else "build"
    releases = [RELEASES[name] for name in sys.argv[2:]] or list(RELEASES.values())
    if action == "build":
        for release in releases:
            print(build(release))
            warm_up(release)
    elif action == "remove":
        for release in releases:
            _remove(release.root)
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
