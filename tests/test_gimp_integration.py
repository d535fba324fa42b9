"""The plug-in inside a real GIMP 3.0 and 3.2 (Debian trixie and sid chroots), against the core's own output.

The chroots are built on first use (a few minutes each) and reused; see
tests/gimp3_chroot.py.  Every test runs on both releases.  Machines that
cannot build them (not root, no Debian mirror) skip these tests, unless
FBCNN_REQUIRE_GIMP=1 (CI) makes that a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import gimp3_chroot
from fbcnn_plugins.core.restorer import Restorer
from fbcnn_plugins.gimp.install import present_devices

from conftest import natural_image

HERE = Path(__file__).resolve().parent
EIGHT_BIT = 1.0 / 255.0 + 1e-6


class Gimp3:
    """Runs jobs of tests/gimp_batch.py in the chroot's GIMP and returns their results."""

    def __init__(self, release: gimp3_chroot.Release) -> None:
        self.release = release
        self.root = release.root
        self.work = self.root / "root" / "fbcnn-tests" / uuid.uuid4().hex[:8]  # this run's own: runs may overlap

    def folder(self) -> Path:
        folder = self.work / uuid.uuid4().hex[:8]
        folder.mkdir(parents=True)
        return folder

    def inside(self, path: Path) -> str:
        return "/" + str(path.relative_to(self.root))

    def run(self, folder: Path, job: dict, *, display: bool = False, env: dict | None = None) -> dict:
        (folder / "job.json").write_text(json.dumps(job))
        variables = {"FBCNN_GIMP_JOB": self.inside(folder / "job.json"),
                     "FBCNN_GIMP_REPORT": self.inside(folder / "report.jsonl"), **(env or {})}
        command = gimp3_chroot.gimp_command(self.release, str(HERE / "gimp_batch.py"), display=display,
                                            env=variables)
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        result_file = folder / "result.json"
        assert result_file.exists(), f"GIMP wrote no result (exit {done.returncode}):\n{done.stderr[-3000:]}"
        result = json.loads(result_file.read_text())
        result["stderr"] = done.stderr
        report = folder / "report.jsonl"
        result["report"] = [json.loads(line) for line in report.read_text().splitlines()] if report.exists() else []
        return result


@pytest.fixture(scope="module", params=sorted(gimp3_chroot.RELEASES), ids=lambda v: f"gimp{v}")
def gimp3(request, bundled_color_model):
    release = gimp3_chroot.RELEASES[request.param]
    try:
        root = gimp3_chroot.build(release)
        gimp3_chroot.warm_up(release)
    except (gimp3_chroot.ChrootUnavailable, subprocess.CalledProcessError) as error:
        if os.environ.get("FBCNN_REQUIRE_GIMP") == "1":
            pytest.fail(f"the GIMP {release.version} chroot could not be built: {error}")
        pytest.skip(f"no GIMP {release.version} here: {error}")
    install = subprocess.run([sys.executable, "-P", "-m", "fbcnn_plugins.cli.main", "install-gimp",
                              "--gimp-dir", str(root / release.profile)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    gimp = Gimp3(release)
    yield gimp
    shutil.rmtree(gimp.work, ignore_errors=True)


def jpeg_file(folder: Path, quality: int, seed: int = 0, size=(96, 128)) -> Path:
    path = folder / f"photo-q{quality}.jpg"
    Image.fromarray(natural_image(*size, seed=seed)).save(path, quality=quality)
    return path


def core_output(pixels: np.ndarray, qf: int, self_ensemble: bool = False) -> np.ndarray:
    restorer = Restorer(device="cpu", self_ensemble=self_ensemble)
    return np.clip(restorer.restore(np.ascontiguousarray(pixels, np.float32), qf).image, 0, 1)


def test_fixed_qf_matches_the_core(gimp3):
    folder = gimp3.folder()
    source = jpeg_file(folder, 20)
    exported = folder / "restored.png"
    result = gimp3.run(folder, {"action": "restore", "input": gimp3.inside(source), "export": gimp3.inside(exported),
                                "arguments": {"automatic-qf": False, "qf": 20}})
    assert result["success"], result
    before, after = np.load(folder / "before.npy"), np.load(folder / "after.npy")
    expected = core_output(before, 20)
    assert np.abs(after - expected).max() <= EIGHT_BIT
    # The file GIMP exports holds the same pixels.
    written = np.asarray(Image.open(exported).convert("RGB"), np.float32) / 255.0
    assert np.abs(written - expected).max() <= EIGHT_BIT
    assert np.abs(after - before).mean() > 1e-3  # something was restored
    assert result["report"][-1]["qf"] == {**result["report"][-1]["qf"], "value": 20, "source": "given"}


def test_best_quality_option_runs_the_self_ensemble(gimp3):
    folder = gimp3.folder()
    source = jpeg_file(folder, 20, seed=5)
    result = gimp3.run(folder, {"action": "restore", "input": gimp3.inside(source),
                                "arguments": {"automatic-qf": False, "qf": 20, "self-ensemble": True}})
    assert result["success"], result
    before, after = np.load(folder / "before.npy"), np.load(folder / "after.npy")
    assert np.abs(after - core_output(before, 20, self_ensemble=True)).max() <= EIGHT_BIT
    assert np.abs(after - core_output(before, 20)).max() > 2 * EIGHT_BIT  # not the single pass


def test_automatic_qf_reads_the_jpeg_header(gimp3):
    folder = gimp3.folder()
    source = jpeg_file(folder, 35, seed=1)
    result = gimp3.run(folder, {"action": "restore", "input": gimp3.inside(source),
                                "arguments": {"automatic-qf": True, "qf": 90}})
    assert result["success"], result
    used = result["report"][-1]["qf"]
    assert used["source"] == "header" and used["value"] == 35
    before, after = np.load(folder / "before.npy"), np.load(folder / "after.npy")
    assert np.abs(after - core_output(before, 35)).max() <= EIGHT_BIT


def test_selection_with_soft_edges_on_an_offset_layer(gimp3):
    folder = gimp3.folder()
    source = jpeg_file(folder, 15, seed=2)
    offset = (8, 5)
    result = gimp3.run(folder, {"action": "restore", "input": gimp3.inside(source), "offset": list(offset),
                                "select": [40, 24, 48, 40], "feather": 10,
                                "arguments": {"automatic-qf": False, "qf": 15}})
    assert result["success"], result
    assert result["offsets"] == list(offset)
    before, after = np.load(folder / "before.npy"), np.load(folder / "after.npy")
    selection = np.load(folder / "selection.npy")  # image coordinates
    height, width = before.shape[:2]
    mask = np.zeros((height, width), np.float32)  # drawable coordinates; off-canvas is unselected
    visible = selection[offset[1] : offset[1] + height, offset[0] : offset[0] + width]
    mask[: visible.shape[0], : visible.shape[1]] = visible
    left, top, w, h = result["report"][-1]["rect"]
    assert left % 8 == 0 and top % 8 == 0  # the region keeps the JPEG grid
    restored = before.copy()
    restored[top : top + h, left : left + w] = core_output(before[top : top + h, left : left + w], 15)
    full = mask >= 1.0
    assert full.sum() > 100 and np.abs(after - restored)[full].max() <= EIGHT_BIT  # fully selected: the core's pixels
    assert np.array_equal(after[mask == 0], before[mask == 0])  # outside the selection nothing moves
    # The feathered edge mixes the two. GIMP mixes in its own blend space (linear light, not the
    # perceptual values the mask would weigh), so the test asks for the mix, not a formula:
    # every soft pixel lies between the input and the restored value, and moves towards the latter.
    soft = (mask > 0.05) & (mask < 0.95)
    low, high = np.minimum(before, restored)[soft], np.maximum(before, restored)[soft]
    assert soft.sum() > 50
    assert np.all(after[soft] >= low - EIGHT_BIT) and np.all(after[soft] <= high + EIGHT_BIT)
    assert np.abs(after - before)[soft].max() > 0


def test_every_selected_layer_is_restored(gimp3):
    folder = gimp3.folder()
    source = jpeg_file(folder, 20, seed=7)
    result = gimp3.run(folder, {"action": "restore", "input": gimp3.inside(source), "second_layer_offset": [16, 8],
                                "arguments": {"automatic-qf": False, "qf": 20}})
    assert result["success"], result
    assert len([entry for entry in result["report"] if "drawable" in entry]) == 2
    for index in range(2):
        before, after = np.load(folder / f"before{index}.npy"), np.load(folder / f"after{index}.npy")
        assert np.abs(after - core_output(before, 20)).max() <= EIGHT_BIT
    assert not np.array_equal(np.load(folder / "before0.npy"), np.load(folder / "before1.npy"))


def test_gray_layer_with_alpha_keeps_its_alpha(gimp3):
    folder = gimp3.folder()
    source = jpeg_file(folder, 20, seed=8)
    result = gimp3.run(folder, {"action": "restore", "input": gimp3.inside(source), "gray": True,
                                "alpha_hole": [30, 20, 50, 40, 12],
                                "arguments": {"automatic-qf": False, "qf": 20}})
    assert result["success"], result
    before, after = np.load(folder / "before.npy"), np.load(folder / "after.npy")
    assert before.shape[2] == 2 and len(np.unique(before[:, :, 1])) > 10  # gray + a soft alpha
    assert np.array_equal(after[:, :, 1], before[:, :, 1])
    assert np.abs(after - core_output(before, 20)).max() <= EIGHT_BIT


def test_sixteen_bit_image(gimp3):
    folder = gimp3.folder()
    source = jpeg_file(folder, 25, seed=3)
    result = gimp3.run(folder, {"action": "restore", "input": gimp3.inside(source), "precision": "u16",
                                "arguments": {"automatic-qf": False, "qf": 25}})
    assert result["success"], result
    before, after = np.load(folder / "before.npy"), np.load(folder / "after.npy")
    difference = np.abs(after - core_output(before, 25))
    assert difference.max() <= 1.0 / 65535 + 1e-6  # stored at 16 bits, not squeezed through 8
    assert len(np.unique(np.rint(after * 65535) % 257)) > 1  # values between the 8-bit levels exist


def eight_bit(pixels: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)


def preview_on_screen(screen: dict, expected: np.ndarray) -> np.ndarray:
    """The preview's pixels in the screenshot: the area's window, where the expected view fits.

    GIMP's preview area centres its buffer in the space it is given, so the view is looked
    for at every offset that fits; the closest one is returned for the comparison.
    """
    shot = np.asarray(Image.open(screen["path"]).convert("RGB"))
    left, top, width, height = screen["area"]
    area = shot[top : top + height, left : left + width].astype(np.int16)
    h, w = expected.shape[:2]
    best = None
    for dy in range(0, max(1, height - h + 1)):
        for dx in range(0, max(1, width - w + 1)):
            candidate = area[dy : dy + h, dx : dx + w]
            if candidate.shape[:2] != (h, w):
                continue
            error = np.abs(candidate - expected).max()
            if best is None or error < best[0]:
                best = (error, candidate)
    assert best is not None, f"the preview area {screen['area']} is smaller than the {w}x{h} view"
    return best[1]


def preview_expected(before: np.ndarray, shown: dict) -> np.ndarray:
    """What the preview must show for ``shown`` (the plug-in's report): the core's output for the view, 8-bit."""
    rx, ry, rw, rh = shown["region"]
    x, y, w, h = shown["view"]
    restored = core_output(before[ry : ry + rh, rx : rx + rw], shown["qf"])
    view = restored[y - ry : y - ry + h, x - rx : x - rx + w]
    if shown["split"]:
        view = view.copy()
        view[:, : w // 2] = before[y : y + h, x : x + w // 2]
    return eight_bit(view)


def test_preview_stays_restored_as_the_estimate_arrives(gimp3):
    """The pixels' estimate confirms the header's QF: the restored preview stays, never the unrestored layer.

    Screenshots just before the final estimate is applied and up to a second after; each must
    show the core's output for what the preview reports, whichever of the first preview and the
    pixels' estimate the worker finishes first.  Then Cancel: the image is unchanged and not
    marked modified.
    """
    folder = gimp3.folder()
    source = jpeg_file(folder, 30, seed=4, size=(256, 320))
    env = {"FBCNN_GIMP_TEST_STEPS": "[]", "FBCNN_GIMP_TEST_FINISH": "cancel", "FBCNN_GIMP_TEST_WATCH_ESTIMATE": "1",
           "FBCNN_GIMP_TEST_SCREENSHOT": gimp3.inside(folder / "screen.png")}
    result = gimp3.run(folder, {"action": "restore", "input": gimp3.inside(source), "interactive": True},
                       display=True, env=env)
    assert result["status"] == "cancel", result
    screens = {entry["step"]: entry["screen"] for entry in result["report"] if "screen" in entry}
    assert sorted(screens) == sorted(["estimate+0", "estimate+50", "estimate+150", "estimate+300", "estimate+600",
                                      "estimate+1000"])
    estimate = next(entry["estimate"] for entry in result["report"] if "estimate" in entry)
    assert estimate["value"] == 30  # the header's QF, confirmed: nothing to recompute
    before = np.load(folder / "before.npy")
    for name, screen in sorted(screens.items()):
        shown = screen["shown"]
        assert shown is not None and shown["qf"] == 30, f"{name}: no restored preview was on screen: {screen}"
        screen["path"] = str(gimp3.root / screen["path"].lstrip("/"))
        wanted = preview_expected(before, shown)
        on_screen = preview_on_screen(screen, wanted)
        assert np.abs(on_screen - wanted).max() <= 1, f"{name}: the preview is not the restored view"
    assert np.array_equal(np.load(folder / "after.npy"), before)
    assert result["dirty"] is False, "Cancel marked the image modified"
    # GIMP redraws the unrestored drawable and asks again once the preview area is allocated:
    # the view already restored (or being restored) is drawn again, never restored twice.
    asked = [json.dumps(entry["preview asked"], sort_keys=True) for entry in result["report"] if "preview asked" in entry]
    assert asked and len(asked) == len(set(asked)), asked


def test_dialog_preview_and_estimate_on_screen(gimp3):
    """The real dialog under Xvfb: the estimate, the QF field, the preview's pixels against the core."""
    folder = gimp3.folder()
    source = jpeg_file(folder, 30, seed=4, size=(256, 320))
    steps = [{"automatic-qf": False, "qf": 70},  # a remembered manual QF...
             {"automatic-qf": True},  # ...then Automatic ticked: the field must show the estimate
             {"automatic-qf": False, "qf": 15},  # the preview follows the QF
             {"split": True},  # split view: the left half unchanged
             {"split": False, "automatic-qf": True}]
    result = gimp3.run(folder, {"action": "restore", "input": gimp3.inside(source), "interactive": True},
                       display=True, env={"FBCNN_GIMP_TEST_STEPS": json.dumps(steps),
                                          "FBCNN_GIMP_TEST_SCREENSHOT": gimp3.inside(folder / "screen.png")})
    assert result["success"], result
    estimate = next(entry["estimate"] for entry in result["report"] if "estimate" in entry)
    assert estimate["source"] == "header" and estimate["value"] == 30
    screens = {entry["step"]: entry["screen"] for entry in result["report"] if "screen" in entry}
    assert sorted(screens) == list(range(len(steps)))
    for screen in screens.values():
        screen["path"] = str(gimp3.root / screen["path"].lstrip("/"))
    before = np.load(folder / "before.npy")

    def expected(shown: dict) -> np.ndarray:
        return preview_expected(before, shown)

    assert screens[0]["qf_field"] == 70 and screens[0]["shown"]["qf"] == 70
    assert screens[1]["automatic"] and screens[1]["qf_field"] == 30 and screens[1]["shown"]["qf"] == 30
    assert screens[1]["status"].startswith("Estimated JPEG quality: 30 (from the JPEG file")
    assert screens[2]["shown"]["qf"] == 15 and screens[3]["shown"]["split"]
    assert screens[4]["qf_field"] == 30
    # An RGB layer: the gray model is not offered, the colour one is.
    assert "fbcnn-color-small" in screens[0]["models_offered"]
    assert "fbcnn-gray-small" not in screens[0]["models_offered"]
    for index, screen in screens.items():
        shown = screen["shown"]
        assert shown["view"][2] >= 64 and shown["view"][3] >= 64, shown
        wanted = expected(shown)
        on_screen = preview_on_screen(screen, wanted)
        assert np.abs(on_screen - wanted).max() <= 1, f"step {index}: the preview is not the core's output"
        assert np.abs(on_screen - eight_bit(before[shown["view"][1] :][: shown["view"][3],
                                                   shown["view"][0] :][:, : shown["view"][2]])).max() > 3
    # OK with Automatic ticked: the whole image restored at the estimate.
    assert result["report"][-1]["qf"]["value"] == 30
    after = np.load(folder / "after.npy")
    assert np.abs(after - core_output(before, 30)).max() <= EIGHT_BIT
    assert "no mnemonic" not in result["stderr"] and "not supported" not in result["stderr"], result["stderr"][-2000:]


def test_tile_size_choice_reaches_the_core(gimp3):
    folder = gimp3.folder()
    source = jpeg_file(folder, 30, seed=9, size=(288, 320))
    result = gimp3.run(folder, {"action": "restore", "input": gimp3.inside(source),
                                "arguments": {"automatic-qf": False, "qf": 30, "tile-size": "256"}})
    assert result["success"], result
    before, after = np.load(folder / "before.npy"), np.load(folder / "after.npy")
    tiled = np.clip(Restorer(device="cpu", tile=256).restore(before, 30).image, 0, 1)
    assert np.abs(after - tiled).max() <= EIGHT_BIT
    assert result["registration"]["tile-size"] == ["auto", "256", "512", "1024"]
    assert result["registration"]["device"] == ["auto", *present_devices()]
    assert result["registration"]["menu-label"].startswith("_JPEG Artifacts Removal")


@pytest.mark.parametrize("precision, tolerance", [("u8", EIGHT_BIT), ("u16-linear", 1e-3)])
def test_xcf_written_by_fbcnn_restore_opens_in_gimp(gimp3, precision, tolerance):
    folder = gimp3.folder()
    first, second = jpeg_file(folder, 20, seed=5), jpeg_file(folder, 40, seed=6, size=(48, 64))
    made = folder / "layers.xcf"
    layers = [{"file": gimp3.inside(first), "name": "photo", "offsets": [0, 0]},
              {"file": gimp3.inside(second), "name": "pasted patch", "offsets": [24, 16], "visible": False,
               "alpha": True}]
    assert gimp3.run(folder, {"action": "build", "size": [128, 96], "layers": layers, "precision": precision,
                              "output": gimp3.inside(made)})["success"]
    restored = folder / "restored.xcf"
    cli = subprocess.run([sys.executable, "-P", "-m", "fbcnn_plugins.cli.main", "restore", str(made), "-o", str(restored),
                          "--qf", "20", "--device", "cpu"], capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    inspect_before = gimp3.folder()
    before = gimp3.run(inspect_before, {"action": "inspect", "input": gimp3.inside(made)})
    inspect_after = gimp3.folder()
    after = gimp3.run(inspect_after, {"action": "inspect", "input": gimp3.inside(restored)})
    assert after["success"], after
    assert after["layers"] == before["layers"] and after["size"] == before["size"]
    for index in range(len(layers)):
        original_pixels = np.load(inspect_before / f"layer{index}.npy")
        restored_pixels = np.load(inspect_after / f"layer{index}.npy")
        assert np.abs(restored_pixels - core_output(original_pixels, 20)).max() <= tolerance
        assert np.abs(restored_pixels - original_pixels).max() > 1e-3  # the layer was restored, not copied
