"""``fbcnn install-gimp`` on Windows, macOS, the Flatpak and a native Linux GIMP, in simulated layouts.

No such machines here: each test builds the profile folders GIMP 3.0 and 3.2 create on that
platform under a temporary home, and checks what the installer finds, writes and how the plug-in
would start its worker there.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from fbcnn_plugins.gimp.install import (
    FLATPAK_PERMISSION, InstallError, config_bases, describe_profile, find_profiles, install_into,
)
from fbcnn_plugins.gimp.protocol import worker_command

#: platform, environment (with {home}), the folder that holds GIMP's version folders (under {home}).
LAYOUTS = {
    "windows": ("win32", {"APPDATA": "{home}/AppData/Roaming"}, "AppData/Roaming/GIMP"),
    "macos": ("darwin", {}, "Library/Application Support/GIMP"),
    "flatpak": ("linux", {}, ".var/app/org.gimp.GIMP/config/GIMP"),
    "linux": ("linux", {}, ".config/GIMP"),
}


def make_layout(home: Path, name: str) -> tuple[str, dict[str, str], list[Path]]:
    platform, env, base = LAYOUTS[name]
    env = {key: value.format(home=home) for key, value in env.items()} | {"HOME": str(home)}
    profiles = [home / base / version for version in ("3.0", "3.2")]
    for profile in profiles:
        profile.mkdir(parents=True)
    (home / base / "2.10").mkdir()  # GIMP 2's profile beside them is not a target
    return platform, env, profiles


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_profiles_of_gimp_3_0_and_3_2_are_found_newest_first(tmp_path, name):
    platform, env, (v30, v32) = make_layout(tmp_path, name)
    assert find_profiles(config_bases(platform, env, tmp_path)) == [v32, v30]


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_install_records_how_the_worker_starts_there(tmp_path, name):
    platform, env, profiles = make_layout(tmp_path, name)
    python = str(tmp_path / "venv" / ("Scripts/python.exe" if name == "windows" else "bin/python"))
    for profile in profiles:
        done = install_into(profile, python=python, platform=platform)
        assert done.platform.kind == name and done.platform.supported
        settings_path = done.folder / "fbcnn-worker.json"
        settings = json.loads(settings_path.read_text())
        command = worker_command(str(settings_path)) if name == "flatpak" else None
        if name == "flatpak":
            # Inside the sandbox the host's Python is started through flatpak-spawn; its path is the host's.
            assert settings["launcher"] == ["flatpak-spawn", "--host"]
            assert command == ["flatpak-spawn", "--host", python, "-m", "fbcnn_plugins.gimp.worker"]
            assert FLATPAK_PERMISSION in done.platform.note
        else:
            assert settings["launcher"] == [] and settings["python"] == python
        assert "Python" in done.platform.plugin_python or "python" in done.platform.plugin_python


def test_native_worker_command_is_this_environments_python(tmp_path):
    platform, env, profiles = make_layout(tmp_path, "linux")
    done = install_into(profiles[0], python=sys.executable, platform=platform)
    assert worker_command(str(done.folder / "fbcnn-worker.json")) == [sys.executable, "-m", "fbcnn_plugins.gimp.worker"]


def test_a_snap_gimp_is_refused_with_the_reason(tmp_path):
    profile = tmp_path / "snap" / "gimp" / "current" / ".config" / "GIMP" / "3.0"
    profile.mkdir(parents=True)
    assert find_profiles(config_bases("linux", {"HOME": str(tmp_path)}, tmp_path)) == [profile]
    assert describe_profile(profile, "linux").kind == "snap"
    with pytest.raises(InstallError, match="cannot start programs outside"):
        install_into(profile, platform="linux")
    assert not (profile / "plug-ins").exists()
