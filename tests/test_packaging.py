"""The package layout of the design card, in both an editable and a normal (wheel) install."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO

SUBPACKAGES = ["fbcnn_plugins.core", "fbcnn_plugins.gimp", "fbcnn_plugins.vapoursynth", "fbcnn_plugins.training"]


def test_subpackages_import_and_real_vapoursynth_is_not_shadowed():
    import importlib

    for name in SUBPACKAGES:
        assert importlib.import_module(name).__name__ == name
    import vapoursynth

    assert hasattr(vapoursynth, "core") and "site-packages" in vapoursynth.__file__


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
        check=True, capture_output=True,
    )
    return next(out.glob("fbcnn_plugins-*.whl"))


def test_wheel_maps_folders_to_subpackages_and_ships_weights(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in [
        "fbcnn_plugins/core/network.py", "fbcnn_plugins/training/trainer.py",
        "fbcnn_plugins/training/configs/color-small.toml", "fbcnn_plugins/vapoursynth/__init__.py",
        "fbcnn_plugins/gimp/__init__.py", "fbcnn_plugins/gimp/gimp_plugin.py", "fbcnn_plugins/gimp/protocol.py",
        "fbcnn_plugins/files/xcf.py", "fbcnn_plugins/batch/run.py", "fbcnn_plugins/batch/claims.py",
        "fbcnn_plugins/ray/restore.py", "fbcnn_plugins/models/fbcnn-color-small.safetensors",
        "fbcnn_plugins/models/fbcnn-color-small.json",
    ]:
        assert expected in names, expected
    top_level = {n.split("/")[0] for n in names}
    assert not top_level & {"core", "vapoursynth", "gimp", "training", "tests"}
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[fbcnn_plugins.models]" in text and "fbcnn = fbcnn_plugins.cli.main:main" in text


def test_normal_install_imports_from_the_wheel(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    code = (
        f"import sys; sys.path.insert(0, {str(target)!r}); "
        "import fbcnn_plugins.core.network as n, fbcnn_plugins.training.trainer, fbcnn_plugins.vapoursynth; "
        "print(n.__file__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert done.stdout.strip().startswith(str(target))


def test_a_checkout_on_sys_path_shadows_nothing():
    """Run from the repo root (which puts it on sys.path): the real VapourSynth loads, no top-level core."""
    code = (
        "import vapoursynth, sys; print(vapoursynth.__file__); print(vapoursynth.core.num_threads > 0)\n"
        "try:\n    import core\nexcept ImportError as e:\n    print('refused:', e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    real_file, has_core, refused = done.stdout.strip().splitlines()
    assert "site-packages" in real_file and has_core == "True"
    assert refused.startswith("refused:") and "fbcnn_plugins.core" in refused
