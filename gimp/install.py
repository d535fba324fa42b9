"""Putting the plug-in where GIMP 3 looks for it, and taking it away again.

GIMP 3 loads ``<profile>/plug-ins/NAME/NAME.py`` (folder named like the
file, executable).  Beside it we place the pipe protocol module and a JSON
file naming this environment's interpreter, which the plug-in uses to start
its worker: GIMP runs plug-ins with its own Python (bundled on Windows and macOS, the
sandbox's in the Flatpak), which has neither numpy nor OpenVINO nor pip.

Where the profile lives tells how GIMP runs there (:func:`describe_profile`): a native GIMP
starts the worker directly; the Flatpak GIMP runs plug-ins inside its sandbox, from which the
worker (a program of the host) is started through ``flatpak-spawn --host``, which needs the
sandbox's permission to talk to Flatpak (``flatpak override --user
--talk-name=org.freedesktop.Flatpak org.gimp.GIMP``, once); a Snap GIMP cannot start it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

PLUGIN_NAME = "fbcnn-jpeg-artifacts"
PACKAGE_DIR = Path(__file__).resolve().parent
PROFILE_PATTERN = re.compile(r"^3\.\d+$")


class InstallError(RuntimeError):
    pass


def config_bases(platform: str = sys.platform, env: dict[str, str] | None = None, home: Path | None = None) -> list[Path]:
    """Folders that hold GIMP's per-version profile folders (``GIMP/3.0``...) on this platform.

    Native installs first, then the Flatpak and Snap sandboxes on Linux.
    """
    env = dict(os.environ if env is None else env)
    home = Path(env.get("HOME") or Path.home()) if home is None else home
    if platform.startswith("win"):
        appdata = env.get("APPDATA")
        return [Path(appdata) / "GIMP"] if appdata else [home / "AppData" / "Roaming" / "GIMP"]
    if platform == "darwin":
        return [home / "Library" / "Application Support" / "GIMP"]
    xdg = env.get("XDG_CONFIG_HOME") or str(home / ".config")
    return [
        Path(xdg) / "GIMP",
        home / ".var" / "app" / "org.gimp.GIMP" / "config" / "GIMP",
        home / "snap" / "gimp" / "current" / ".config" / "GIMP",
    ]


def find_profiles(bases: list[Path]) -> list[Path]:
    """Existing GIMP 3.x profile folders under ``bases``, newest version first."""
    found = []
    for base in bases:
        if base.is_dir():
            found += [p for p in base.iterdir() if p.is_dir() and PROFILE_PATTERN.match(p.name)]
    return sorted(found, key=lambda p: (int(p.name.split(".")[1]), str(p)), reverse=True)


#: The Flatpak GIMP's application id (Flathub's GIMP 3 builds).
FLATPAK_APP = "org.gimp.GIMP"
#: Run once on the host so the Flatpak GIMP may start programs outside its sandbox.
FLATPAK_PERMISSION = f"flatpak override --user --talk-name=org.freedesktop.Flatpak {FLATPAK_APP}"


@dataclass(frozen=True)
class GimpPlatform:
    """How a GIMP whose profile is at a given place runs the plug-in and can start the worker."""

    kind: str  #: linux, flatpak, snap, windows or macos
    plugin_python: str  #: the interpreter that runs the plug-in script (GIMP's, never ours)
    launcher: tuple[str, ...]  #: what goes before the worker's command line ("" where it starts directly)
    supported: bool
    note: str


def describe_profile(profile: Path, platform: str = sys.platform) -> GimpPlatform:
    """What kind of GIMP a profile folder belongs to, by where it is (see the module's docstring)."""
    parts = Path(profile).expanduser().parts
    if platform.startswith("win"):
        return GimpPlatform("windows", "the Python bundled with GIMP (lib/gimp/3.0/interpreters/pygimp.interp)",
                            (), True, "GIMP starts the worker with this environment's python.exe")
    if platform == "darwin":
        return GimpPlatform("macos", "the Python inside GIMP.app", (), True,
                            "GIMP starts the worker with this environment's python")
    if any(parts[i : i + 3] == (".var", "app", FLATPAK_APP) for i in range(len(parts))):
        return GimpPlatform("flatpak", "the Python of the Flatpak sandbox (GNOME runtime, no pip)",
                            ("flatpak-spawn", "--host"), True,
                            f"the worker runs on the host through flatpak-spawn; allow it once with: {FLATPAK_PERMISSION}")
    if any(parts[i : i + 2] == ("snap", "gimp") for i in range(len(parts))):
        return GimpPlatform("snap", "the Python of the Snap", (), False,
                            "a strictly confined Snap cannot start programs outside it; use the Flatpak or a native GIMP")
    return GimpPlatform("linux", "the system's python3 with PyGObject (#!/usr/bin/env python3)", (), True,
                        "GIMP starts the worker with this environment's python")


@dataclass
class Installed:
    profile: Path
    folder: Path
    platform: GimpPlatform | None = None


def worker_settings(python: str, launcher: tuple[str, ...] = ()) -> dict:
    """What the plug-in needs to know before its worker is up: the interpreter, and what to offer.

    GIMP registers a procedure's choices once, so the models and the devices are listed here,
    as this environment has them: the dialog never offers a GPU the machine lacks.
    """
    from fbcnn_plugins import __version__
    from fbcnn_plugins.core.catalog import registered_models

    models = [entry for entry in registered_models() if entry.available]
    return {
        "python": python,
        "launcher": list(launcher),
        "version": __version__,
        "models": [entry.name for entry in models],
        "gray_models": [entry.name for entry in models if entry.in_channels == 1],
        "devices": present_devices(),
    }


def present_devices() -> list[str]:
    """The devices the plug-in can run on in this environment, CPU first (GPUs through the torch extra)."""
    from fbcnn_plugins.core.torch_extra import torch_installed

    devices = ["cpu"]
    if not torch_installed():
        return devices
    import torch

    if torch.cuda.is_available():
        devices.append("cuda")
    backend = getattr(torch.backends, "mps", None)
    if backend is not None and backend.is_available():
        devices.append("mps")
    return devices


def install_into(profile: Path, python: str = sys.executable, platform: str = sys.platform) -> Installed:
    """Install (or update) the plug-in into one GIMP profile folder; the files appear atomically."""
    where = describe_profile(profile, platform)
    if not where.supported:
        raise InstallError(f"{profile}: a {where.kind} GIMP: {where.note}")
    plug_ins = profile / "plug-ins"
    folder = plug_ins / PLUGIN_NAME
    staging = plug_ins / f".{PLUGIN_NAME}.tmp-{os.getpid()}"
    try:
        plug_ins.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        script = staging / f"{PLUGIN_NAME}.py"
        shutil.copyfile(PACKAGE_DIR / "gimp_plugin.py", script)
        script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        shutil.copyfile(PACKAGE_DIR / "protocol.py", staging / "fbcnn_protocol.py")
        settings = json.dumps(worker_settings(python, where.launcher), indent=2)
        (staging / "fbcnn-worker.json").write_text(settings + "\n", encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise InstallError(f"cannot install the plug-in into {plug_ins}: {error}") from error
    return Installed(profile, folder, where)


def uninstall_from(profile: Path) -> Path | None:
    folder = profile / "plug-ins" / PLUGIN_NAME
    if not folder.exists():
        return None
    try:
        shutil.rmtree(folder)
    except OSError as error:
        raise InstallError(f"cannot remove {folder}: {error}") from error
    return folder


def target_profiles(gimp_dir: str | os.PathLike[str] | None) -> list[Path]:
    """The profile given on the command line, or every GIMP 3 profile found on this machine."""
    if gimp_dir is not None:
        return [Path(gimp_dir).expanduser()]
    bases = config_bases()
    profiles = find_profiles(bases)
    if not profiles:
        looked = ", ".join(str(b) for b in bases)
        raise InstallError(
            f"no GIMP 3 profile folder found (looked for 3.x folders in {looked}); "
            "start GIMP 3 once so it creates one, or pass --gimp-dir"
        )
    return profiles
