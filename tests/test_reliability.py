"""The command line under bad input, interruption and re-runs (issue 18's defects 1-10, one or more tests each).

Every test drives the real ``fbcnn`` command (in this process through ``main``, or as a child
process where signals, FIFOs or imports are the point) on real files written by Pillow,
tifffile and OpenCV, with the bundled model unless a damaged one is the point.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fbcnn_plugins.cli.main import main

from conftest import natural_image

FBCNN = [sys.executable, "-P", "-m", "fbcnn_plugins.cli.main"]


def run_cli(*args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def jpeg(path: Path, seed: int = 0, quality: int = 20, size: tuple[int, int] = (48, 64)) -> Path:
    Image.fromarray(natural_image(*size, seed=seed)).save(path, quality=quality)
    return path


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".part" in p.name)


# -- defect 1: an output that is also an input ------------------------------------------------

def test_an_input_that_is_another_inputs_output_is_refused_before_any_work(tmp_path, capsys):
    source = jpeg(tmp_path / "good.jpg")
    theirs = tmp_path / "good_fbcnn.png"
    Image.fromarray(natural_image(48, 64, seed=2)).save(theirs)
    before = theirs.read_bytes()
    code, out, err = run_cli("restore", source, theirs, "--overwrite", capsys=capsys)
    assert code == 2
    assert str(theirs) in err and str(source) in err and "both an input and the output" in err
    assert theirs.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.jpg", "good_fbcnn.png"]


def test_an_output_equal_to_its_input_is_a_usage_error(tmp_path, capsys):
    source = jpeg(tmp_path / "a.jpg")
    before = source.read_bytes()
    code, _, err = run_cli("restore", source, "-o", source, "--overwrite", capsys=capsys)
    assert code == 2 and "replace the input" in err and source.read_bytes() == before


# -- defect 2: re-running on a folder, resuming ---------------------------------------------------

def test_rerun_on_a_folder_skips_outputs_and_temporaries_and_resumes(tmp_path, capsys):
    folder = tmp_path / "shots"
    folder.mkdir()
    for i in range(3):
        jpeg(folder / f"p{i}.jpg", seed=i)
    code, _, err = run_cli("restore", folder, "--qf", 30, capsys=capsys)
    assert code == 0, err
    outputs = {p.name: p.read_bytes() for p in folder.glob("*_fbcnn.png")}
    assert len(outputs) == 3
    (folder / "p2_fbcnn.png").unlink()  # as if the batch had been stopped before the last file...
    stale = folder / ".p2_fbcnn.k3j_x9.part.png"
    stale.write_bytes(b"\x89PNG half")  # ...by SIGKILL while writing it, an hour ago
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    code, out, err = run_cli("restore", folder, "--qf", 30, "--skip-existing", "--json", capsys=capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["restored"] == 1 and report["failed"] == 0
    done = [f for f in report["files"] if "seconds" in f]
    assert [Path(f["input"]).name for f in done] == ["p2.jpg"]
    skipped = {Path(f["input"]).name: f["skipped"] for f in report["files"] if "skipped" in f}
    assert skipped["p0.jpg"] == "output exists" and "in this run" in skipped["p0_fbcnn.png"]
    assert not list(folder.glob("*_fbcnn_fbcnn*"))
    assert not leftovers(folder)  # the killed write's temporary file went once its output was written
    for name, data in outputs.items():
        if name != "p2_fbcnn.png":
            assert (folder / name).read_bytes() == data  # finished files untouched


def test_outputs_are_recognised_by_their_marker_with_any_suffix(tmp_path, capsys):
    folder = tmp_path / "shots"
    folder.mkdir()
    jpeg(folder / "a.jpg")
    code, _, err = run_cli("restore", folder, "--suffix", "_clean", "--qf", 30, capsys=capsys)
    assert code == 0, err
    # A second run with another suffix must not restore a_clean.png into a_clean_v2.png.
    code, out, err = run_cli("restore", folder, "--suffix", "_v2", "--qf", 30, "--json", capsys=capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["restored"] == 1
    assert any("written by fbcnn-plugins" in f.get("skipped", "") for f in report["files"])
    assert sorted(p.name for p in folder.iterdir()) == ["a.jpg", "a_clean.png", "a_v2.png"]
    # Named on the command line, an output is restored again: the user asked for it.
    code, _, err = run_cli("restore", folder / "a_clean.png", "--qf", 30, capsys=capsys)
    assert code == 0 and (folder / "a_clean_fbcnn.png").exists()


@pytest.mark.parametrize("extension", ["png", "jpg", "tiff", "webp"])
def test_every_output_format_with_metadata_carries_the_marker(tmp_path, capsys, extension):
    from fbcnn_plugins.files.images import is_restored_output

    source = jpeg(tmp_path / "a.jpg")
    target = tmp_path / f"out.{extension}"
    code, _, err = run_cli("restore", source, "-o", target, "--qf", 30, capsys=capsys)
    assert code == 0, err
    assert is_restored_output(target) and not is_restored_output(source)


# -- defect 3: gray+alpha in fbcnn qf and dominant_quality -----------------------------------------

def test_qf_command_and_dominant_quality_read_gray_with_alpha(tmp_path, capsys):
    from fbcnn_plugins.core.jpeg import jpeg_roundtrip
    from fbcnn_plugins.core.qf_estimation import dominant_quality

    gray = jpeg_roundtrip(natural_image(96, 128, seed=1)[:, :, 1], 30)
    alpha = np.full_like(gray, 200)
    with_alpha = np.dstack([gray, alpha])
    assert dominant_quality(with_alpha).quality == dominant_quality(gray).quality
    Image.fromarray(with_alpha, mode="LA").save(tmp_path / "la.png")
    jpeg(tmp_path / "b.jpg", quality=42)
    code, out, err = run_cli("qf", tmp_path / "la.png", tmp_path / "b.jpg", "--json", capsys=capsys)
    assert code == 0, err
    reports = json.loads(out)
    assert [Path(r["file"]).name for r in reports] == ["la.png", "b.jpg"]
    assert reports[0]["dominant"]["quality"] == dominant_quality(gray).quality and reports[1]["header"]["quality"] == 42


# -- defect 4: weights that are not verified, or damaged -------------------------------------------

def _cardless_copy(model, folder: Path, name: str, damage=None) -> Path:
    from safetensors.numpy import save_file

    tensors = {k: v.copy() for k, v in model.tensors.items()}
    if damage:
        damage(tensors)
    path = folder / f"{name}.safetensors"
    save_file(tensors, str(path))
    return path


def test_weights_without_a_card_load_with_an_unverified_warning(tmp_path, capsys, tiny_color_model):
    from fbcnn_plugins.core.weights import UnverifiedWeightsWarning, load_weights

    weights = _cardless_copy(tiny_color_model, tmp_path, "loose")
    with pytest.warns(UnverifiedWeightsWarning, match="unverified"):
        loaded = load_weights(weights)
    assert not loaded.verified and tiny_color_model.verified
    code, _, err = run_cli("restore", jpeg(tmp_path / "a.jpg"), "--model", weights, "--qf", 30, capsys=capsys)
    assert code == 0
    assert "warning:" in err and str(weights) in err and "sha256 was not checked" in err


def test_weights_with_nan_are_refused_and_write_nothing(tmp_path, capsys, tiny_color_model):
    from fbcnn_plugins.core.weights import WeightsError, load_weights

    def poison(tensors):
        tensors["m_head.weight"][0, 0, 0, 0] = float("nan")

    weights = _cardless_copy(tiny_color_model, tmp_path, "nan", poison)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(WeightsError, match="NaN or infinite.*m_head.weight"):
            load_weights(weights)
    source = jpeg(tmp_path / "a.jpg")
    code, _, err = run_cli("restore", source, "--model", weights, capsys=capsys)
    assert code == 2 and str(weights) in err and "NaN" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg", "nan.safetensors"]


def test_non_finite_network_output_is_an_error_naming_the_file(tmp_path, capsys, tiny_color_model):
    from fbcnn_plugins.core.restorer import Restorer

    def overflow(tensors):  # finite weights whose products overflow float32
        tensors["m_head.weight"].fill(3e38)

    weights = _cardless_copy(tiny_color_model, tmp_path, "huge", overflow)
    image = natural_image(32, 40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="NaN or infinite"):
            Restorer(str(weights), device="cpu").restore(image, 30)
    source = jpeg(tmp_path / "a.jpg")
    code, out, err = run_cli("restore", source, "--model", weights, "--qf", 30, "--json", capsys=capsys)
    assert code == 1
    [record] = json.loads(out)["files"]
    assert str(source) in record["error"] and "NaN or infinite" in record["error"]
    assert not (tmp_path / "a_fbcnn.png").exists() and not leftovers(tmp_path)


# -- defect 5 (and 8's interrupted --json): signals -------------------------------------------------

@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_mid_batch_leaves_no_temporary_and_reports_the_finished_files(tmp_path, signum, status):
    folder = tmp_path / "batch"
    folder.mkdir()
    for i in range(8):
        jpeg(folder / f"f{i:02d}.jpg", seed=i, size=(128, 160))
    child = subprocess.Popen([*FBCNN, "restore", folder, "--qf", "25", "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not list(folder.glob("*_fbcnn.png")) and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
    child.send_signal(signum)
    out, err = child.communicate(timeout=120)
    assert child.returncode == status, err
    assert f"stopped by {signal.Signals(signum).name}" in err and "--skip-existing" in err
    report = json.loads(out)
    assert report["interrupted"] == signal.Signals(signum).name
    finished = [f for f in report["files"] if "seconds" in f]
    assert 1 <= len(finished) < 8
    assert not leftovers(folder)
    written = sorted(folder.glob("*_fbcnn.png"))
    assert [p.name for p in written] == sorted(Path(f["output"]).name for f in finished)
    for path in written:
        with Image.open(path) as image:
            image.load()  # complete files only
            assert image.size == (160, 128)
    if signum != signal.SIGTERM:
        return
    # ...and the batch resumes where it stopped.
    resumed = subprocess.run([*FBCNN, "restore", folder, "--qf", "25", "--skip-existing", "--json"],
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    again = json.loads(resumed.stdout)
    assert again["restored"] == 8 - len(finished) and again["failed"] == 0
    assert len(list(folder.glob("*_fbcnn.png"))) == 8 and not list(folder.glob("*_fbcnn_fbcnn*"))


def test_an_interrupted_write_removes_its_temporary_file(tmp_path):
    from fbcnn_plugins.cli.signals import Interrupted
    from fbcnn_plugins.core.atomic import atomic_target

    with pytest.raises(Interrupted):
        with atomic_target(tmp_path / "out.png") as temporary:
            temporary.write_bytes(b"half")
            raise Interrupted(signal.SIGTERM)
    assert list(tmp_path.iterdir()) == []


# -- defect 6: the destination is checked before the work -----------------------------------------

def test_an_unwritable_destination_is_refused_before_any_work(tmp_path, capsys):
    source = jpeg(tmp_path / "a.jpg")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    started = time.perf_counter()
    code, _, err = run_cli("restore", source, "-o", blocker / "out", capsys=capsys)
    assert code == 2 and "cannot write outputs" in err and str(blocker) in err
    code, _, err = run_cli("restore", source, "-o", "/proc/fbcnn-outputs", capsys=capsys)  # read-only even for root
    assert code == 2 and "cannot write outputs to /proc/fbcnn-outputs" in err
    assert time.perf_counter() - started < 10  # no model was loaded, no image restored
    if os.geteuid() != 0:  # root writes through permission bits; /proc above covers it
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        try:
            code, _, err = run_cli("restore", source, "-o", locked, capsys=capsys)
            assert code == 2 and "Permission denied" in err
        finally:
            locked.chmod(0o755)


# -- defect 7: options and odd inputs --------------------------------------------------------------

def test_tile_zero_is_refused_by_the_command_line_and_the_api_alike(tmp_path, capsys):
    from fbcnn_plugins.core.restorer import Restorer

    code, _, err = run_cli("restore", jpeg(tmp_path / "a.jpg"), "--tile", 0, capsys=capsys)
    assert code == 2 and "positive multiple of 8" in err and "got 0" in err
    with pytest.raises(ValueError, match="positive multiple of 8, got 0"):
        Restorer(device="cpu", tile=0)
    assert not (tmp_path / "a_fbcnn.png").exists()


@pytest.mark.parametrize("suffix", ["/x", "a/b"])
def test_a_suffix_with_a_folder_separator_is_a_usage_error(tmp_path, capsys, suffix):
    source = jpeg(tmp_path / "a.jpg")
    code, _, err = run_cli("restore", source, "--suffix", suffix, capsys=capsys)  # an exception would fail here
    assert code == 2 and "--suffix" in err and "must not contain '/'" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg"]


def test_an_output_named_in_a_format_we_do_not_write_is_refused_not_made_a_folder(tmp_path, capsys):
    source = jpeg(tmp_path / "a.jpg")
    code, _, err = run_cli("restore", source, "-o", tmp_path / "result.gif", capsys=capsys)
    assert code == 2 and "cannot write .gif" in err
    assert not (tmp_path / "result.gif").exists()


def test_a_fifo_or_a_device_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    done = subprocess.run([*FBCNN, "restore", fifo, "/dev/zero", "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    errors = [f["error"] for f in json.loads(done.stdout)["files"]]
    assert any(str(fifo) in e and "FIFO" in e for e in errors)
    assert any("/dev/zero" in e and "device" in e for e in errors)


# -- defect 8: frames, float, EXIF ---------------------------------------------------------------

def _frames(count: int = 3) -> list[np.ndarray]:
    from fbcnn_plugins.core.jpeg import jpeg_roundtrip

    return [jpeg_roundtrip(natural_image(48, 64, seed=s), 20) for s in range(count)]


@pytest.mark.parametrize("source_name, target_name", [
    ("anim.gif", "anim_fbcnn.png"), ("anim.webp", "out.webp"), ("pages.tiff", "pages_fbcnn.tiff")])
def test_every_frame_of_a_multi_frame_input_is_restored(tmp_path, capsys, source_name, target_name):
    frames = _frames()
    source = tmp_path / source_name
    if source_name.endswith(".tiff"):
        import tifffile

        with tifffile.TiffWriter(source) as tiff:
            for frame in frames:
                tiff.write(frame, photometric="rgb")
    else:
        images = [Image.fromarray(f) for f in frames]
        options = {"lossless": True} if source_name.endswith(".webp") else {}
        images[0].save(source, save_all=True, append_images=images[1:], duration=[100, 200, 300], loop=0, **options)
    with Image.open(source) as check:
        inputs = []
        for index in range(check.n_frames):
            check.seek(index)
            inputs.append(np.asarray(check.convert("RGB")).astype(int))
    options = ["-o", tmp_path / target_name] if target_name.startswith("out") else (
        ["--format", "tiff"] if target_name.endswith(".tiff") else [])
    code, out, err = run_cli("restore", source, *options, "--qf", 20, "--json", capsys=capsys)
    assert code == 0, err
    assert json.loads(out)["files"][0]["frames"] == 3
    with Image.open(tmp_path / target_name) as written:
        assert written.n_frames == 3
        for index in range(3):
            written.seek(index)
            restored = np.asarray(written.convert("RGB")).astype(int)
            assert restored.shape == inputs[index].shape
            assert 0.5 < np.abs(restored - inputs[index]).mean() < 20  # restored, and each frame its own
        if source_name.endswith(".gif"):
            written.seek(1)
            assert written.info.get("duration") == 200


def test_several_frames_into_a_single_image_format_are_refused_before_the_work(tmp_path, capsys):
    frames = [Image.fromarray(f) for f in _frames()]
    source = tmp_path / "anim.gif"
    frames[0].save(source, save_all=True, append_images=frames[1:])
    code, _, err = run_cli("restore", source, "-o", tmp_path / "one.jpg", capsys=capsys)
    assert code == 1 and str(source) not in err or "3 frames" in err
    assert "holds one image, not 3 frames" in err and not (tmp_path / "one.jpg").exists()


def test_float_tiff_stays_float_or_says_what_it_becomes(tmp_path, capsys):
    import cv2
    import tifffile

    pixels = natural_image(40, 48).astype(np.float32) / 255.0
    source = tmp_path / "float.tif"
    tifffile.imwrite(source, pixels, photometric="rgb")
    code, _, err = run_cli("restore", source, "-o", tmp_path / "kept.tiff", "--qf", 30, capsys=capsys)
    assert code == 0, err
    kept = tifffile.imread(tmp_path / "kept.tiff")
    assert kept.dtype == np.float32 and kept.shape == pixels.shape and 0 < np.abs(kept - pixels).mean() < 0.1
    code, _, err = run_cli("restore", source, "--qf", 30, capsys=capsys)
    assert code == 0, err
    assert "float samples clipped to [0, 1] and written as 16-bit PNG" in err and str(source) in err
    assert cv2.imread(str(tmp_path / "float_fbcnn.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16


def test_float_input_outside_zero_to_one_is_clipped_with_a_warning(tmp_path, capsys, bundled_color_model):
    import tifffile

    from fbcnn_plugins.core.pixels import InputClippedWarning
    from fbcnn_plugins.core.restorer import Restorer

    pixels = natural_image(32, 40).astype(np.float32) / 255.0 * 1.5 - 0.2
    with pytest.warns(InputClippedWarning, match="clipped to"):
        out = Restorer(bundled_color_model, device="cpu").restore(pixels, 30).image
    clipped = Restorer(bundled_color_model, device="cpu").restore(np.clip(pixels, 0, 1), 30).image
    assert np.array_equal(out, clipped)
    source = tmp_path / "hdr.tif"
    tifffile.imwrite(source, pixels, photometric="rgb")
    code, _, err = run_cli("restore", source, "-o", tmp_path / "out.tiff", "--qf", 30, capsys=capsys)
    assert code == 0 and "warning:" in err and str(source) in err and "clipped to [0, 1]" in err


def ascii_orientation_exif() -> bytes:
    """An EXIF block whose Orientation is stored as text ("upright"), as some broken tools write it."""
    import struct

    entries = [(0x010F, b"Oddcam\0"), (0x0112, b"upright\0")]  # Make, Orientation: both ASCII (type 2)
    data_offset = 8 + 2 + 12 * len(entries) + 4
    ifd, data = struct.pack("<H", len(entries)), b""
    for tag, value in entries:
        ifd += struct.pack("<HHII", tag, 2, len(value), data_offset + len(data))
        data += value
    return b"Exif\0\0" + b"II*\0" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + data


def test_a_bad_exif_orientation_does_not_cost_a_readable_jpeg(tmp_path, capsys):
    source = tmp_path / "odd.jpg"
    Image.fromarray(natural_image(48, 64)).save(source, quality=25, exif=ascii_orientation_exif())
    with Image.open(source) as check:
        assert check.getexif().get(0x0112) == "upright"
    code, out, err = run_cli("restore", source, "--json", capsys=capsys)
    assert code == 0, err
    [record] = json.loads(out)["files"]
    assert any("orientation" in note for note in record["warnings"])
    with Image.open(tmp_path / "odd_fbcnn.png") as written:
        assert written.size == (64, 48) and written.getexif().get(0x010F) == "Oddcam"


# -- defect 10: progress and a light `fbcnn models` ----------------------------------------------

def test_each_file_announces_itself_on_stderr_before_it_is_done(tmp_path):
    for i in range(2):
        jpeg(tmp_path / f"p{i}.jpg", seed=i)
    done = subprocess.run([*FBCNN, "restore", tmp_path, "--qf", "30"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    start = lines.index(f"[1/2] {tmp_path / 'p0.jpg'}")
    finish = next(i for i, line in enumerate(lines) if line.startswith(f"{tmp_path / 'p0.jpg'} -> "))
    assert start < finish and f"[2/2] {tmp_path / 'p1.jpg'}" in lines


def test_large_images_report_their_stages_and_tiles_in_plain_lines():
    import io

    from fbcnn_plugins.batch.progress import BatchProgress

    stream = io.StringIO()
    progress = BatchProgress(1, stream=stream)
    progress.start(Path("big.tif"))
    progress.stage("estimating QF", (4000, 6000))
    tiles = progress.tiles((4000, 6000))
    for done in range(1, 9):
        tiles(done, 8)
    assert progress.tiles((100, 100)) is None  # small images: one line is enough
    lines = stream.getvalue().splitlines()
    assert lines[0] == "[1/1] big.tif" and lines[1].startswith("[1/1] big.tif: estimating QF")
    assert [line.split(": ")[1].split(" (")[0] for line in lines[2:]] == ["2 of 8 tiles", "4 of 8 tiles", "6 of 8 tiles"]


def test_models_command_does_not_import_torch():
    code = ("import sys; from fbcnn_plugins.cli.main import main; status = main(['models']); "
            "heavy = [m for m in ('torch', 'cv2', 'PIL') if m in sys.modules]; "
            "print('HEAVY', heavy); sys.exit(status)")
    done = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "fbcnn-color-small" in done.stdout and "HEAVY []" in done.stdout


# -- defect 9: the suite needs nothing beside the project -----------------------------------------

def test_test_photos_come_from_scikit_image_when_the_team_data_is_hidden():
    code = ("import sys; sys.path.insert(0, 'tests'); import conftest, skimage.data, numpy as np; "
            "assert not conftest.SHARED_VAL.exists(), conftest.SHARED_VAL; "
            "photo = skimage.data.astronaut(); crop = photo[208:304, 192:320]; "
            "assert np.array_equal(conftest.natural_image(96, 128, seed=0), crop); "
            "assert np.array_equal(conftest.natural_image(400, 600, seed=0), skimage.data.coffee()); "
            "print('ok')")
    environment = {**os.environ, "FBCNN_SHARED_DIR": "/nonexistent/fbcnn-shared"}
    done = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1], env=environment)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr



HELD_SECTION_SCRIPT = """
import os, signal, sys, time
from pathlib import Path
from fbcnn_plugins.cli.signals import Interrupted, stop_on_signals
from fbcnn_plugins.core.atomic import atomic_target
from fbcnn_plugins.core.interrupts import held

reached_end = False
with stop_on_signals():
    try:
        with held():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the handler has run by now, and kept the exception
            reached_end = True
        sys.exit("the held signal was lost")
    except Interrupted as stop:
        assert reached_end and stop.signum == signal.SIGTERM
target = Path(sys.argv[1]) / "out.png"
with stop_on_signals():
    try:
        with atomic_target(target) as tmp:
            tmp.write_bytes(b"complete")
            with held():  # the stop arrives while the output takes its place: it lands after
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
        sys.exit("the held signal was lost")
    except Interrupted:
        pass
assert not [p.name for p in target.parent.iterdir() if ".part" in p.name] and not target.exists()
"""


def test_a_signal_during_a_held_section_is_raised_when_it_ends(tmp_path):
    # The race behind defect 5: a stop between creating a temporary file and arming its removal.
    # In a process of its own: a signal sent to the test process would reach its library threads.
    done = subprocess.run([sys.executable, "-P", "-c", HELD_SECTION_SCRIPT, str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not leftovers(tmp_path)
