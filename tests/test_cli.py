"""``fbcnn restore`` end to end on real JPEG files written by Pillow, and every bad-input case."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fbcnn_plugins.cli.main import main

from conftest import natural_image

FBCNN = [sys.executable, "-P", "-m", "fbcnn_plugins.cli.main"]


@pytest.fixture()
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, quality in enumerate((10, 25)):
        Image.fromarray(natural_image(64, 80, seed=i)).save(folder / f"p{i}.jpg", quality=quality)
    return folder


def run_cli(*args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_restore_folder_writes_pngs_next_to_inputs(photos, capsys):
    code, out, err = run_cli("restore", photos, "--json", capsys=capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["restored"] == 2 and report["failed"] == 0
    for i in range(2):
        source, target = photos / f"p{i}.jpg", photos / f"p{i}_fbcnn.png"
        restored = np.asarray(Image.open(target))
        original = np.asarray(Image.open(source))
        assert restored.shape == original.shape and not np.array_equal(restored, original)
    assert not [p for p in photos.iterdir() if ".part" in p.name]


def test_single_file_output_format_follows_extension_and_qf_is_fixed(photos, tmp_path, capsys):
    target = tmp_path / "out.tiff"
    code, out, err = run_cli("restore", photos / "p0.jpg", "-o", target, "--qf", "15", "--json", capsys=capsys)
    assert code == 0, err
    assert Image.open(target).format == "TIFF"
    assert json.loads(out)["files"][0]["qf"] == 15


def test_recursive_glob_and_output_folder_mirror_subfolders(photos, tmp_path, capsys):
    nested = photos / "sub"
    nested.mkdir()
    Image.fromarray(natural_image(40, 40)).save(nested / "n.jpg", quality=20)
    out_dir = tmp_path / "out"
    code, _, err = run_cli("restore", photos, "-o", out_dir, "--recursive", "--format", "webp", capsys=capsys)
    assert code == 0, err
    assert (out_dir / "sub" / "n_fbcnn.webp").exists() and (out_dir / "p1_fbcnn.webp").exists()
    code, _, _ = run_cli("restore", str(photos / "*.jpg"), "-o", tmp_path / "g", capsys=capsys)
    assert code == 0 and len(list((tmp_path / "g").iterdir())) == 2


def test_existing_output_is_kept_without_overwrite(photos, capsys):
    target = photos / "p0_fbcnn.png"
    target.write_bytes(b"precious")
    code, _, err = run_cli("restore", photos / "p0.jpg", capsys=capsys)
    assert code == 1 and "--overwrite" in err and str(target) in err
    assert target.read_bytes() == b"precious"
    code, _, err = run_cli("restore", photos / "p0.jpg", "--overwrite", capsys=capsys)
    assert code == 1 and "not written by fbcnn-plugins" in err  # --overwrite replaces earlier outputs only
    assert target.read_bytes() == b"precious"
    target.unlink()
    assert run_cli("restore", photos / "p0.jpg", capsys=capsys)[0] == 0
    earlier = target.read_bytes()
    code, _, _ = run_cli("restore", photos / "p0.jpg", "--overwrite", "--qf", 50, capsys=capsys)
    assert code == 0 and Image.open(target).format == "PNG" and target.read_bytes() != earlier


def test_input_is_never_replaced(photos, capsys):
    source = photos / "p0.jpg"
    before = source.read_bytes()
    code, _, err = run_cli("restore", source, "-o", source, "--overwrite", capsys=capsys)
    assert code == 2 and "replace the input" in err  # refused when the run is planned, before any work
    assert source.read_bytes() == before


def _bad_inputs(folder: Path) -> dict[str, tuple[Path, str]]:
    text = folder / "notes.jpg"
    text.write_text("this is not an image")
    truncated = folder / "cut.jpg"
    Image.fromarray(natural_image(64, 64)).save(truncated, quality=90)
    truncated.write_bytes(truncated.read_bytes()[:400])
    bomb = folder / "bomb.png"
    Image.new("1", (12000, 12000)).save(bomb)  # 144 MP in a few kilobytes
    cmyk = folder / "print.jpg"
    Image.new("CMYK", (32, 32), (0, 50, 100, 0)).save(cmyk)
    return {
        "missing": (folder / "nope.jpg", "no such file"),
        "not an image": (text, "not an image"),
        "truncated": (truncated, "truncated"),
        "bomb": (bomb, "decompression bomb"),
        "unsupported mode": (cmyk, "unsupported image mode CMYK"),
    }


def test_every_bad_input_is_named_and_the_good_files_still_run(photos, capsys):
    bad = _bad_inputs(photos.parent)
    good = photos / "p1.jpg"
    code, out, err = run_cli("restore", *[p for p, _ in bad.values()], good, "--json", capsys=capsys)
    assert code == 1
    report = json.loads(out)
    assert report["restored"] == 1 and report["failed"] == len(bad)
    errors = [f["error"] for f in report["files"] if "error" in f]
    for path, message in bad.values():
        assert any(str(path) in e and message in e for e in errors), (path, message, errors)
        assert str(path) in err
    assert (photos / "p1_fbcnn.png").exists()


def test_exif_orientation_is_applied_and_icc_profile_kept(tmp_path, capsys):
    from PIL import ImageCms

    image = Image.fromarray(natural_image(48, 80))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    exif[0x010F] = "Testcam"  # Make: any other tag must survive
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    source = tmp_path / "rotated.jpg"
    image.save(source, quality=30, exif=exif, icc_profile=icc)
    code, _, err = run_cli("restore", source, capsys=capsys)
    assert code == 0, err
    restored = Image.open(tmp_path / "rotated_fbcnn.png")
    assert restored.size == (48, 80)  # upright: width and height swapped
    assert restored.info.get("icc_profile") == icc
    assert restored.getexif().get(0x0112, 1) == 1
    assert restored.getexif().get(0x010F) == "Testcam"


def test_sixteen_bit_png_stays_sixteen_bit_with_its_profile_and_tags(tmp_path, capsys):
    import cv2
    from PIL import ImageCms

    from fbcnn_plugins.files.png_metadata import add_png_metadata

    deep = (natural_image(48, 56).astype(np.uint16) * 257 + 100)
    source = tmp_path / "deep.png"
    cv2.imwrite(str(source), deep[:, :, ::-1])
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "Deepcam"
    source.write_bytes(add_png_metadata(source.read_bytes(), icc_profile=icc, exif=exif.tobytes()))
    target = tmp_path / "deep_out.png"
    code, _, err = run_cli("restore", source, "-o", target, "--qf", "40", capsys=capsys)
    assert code == 0, err
    restored = cv2.imread(str(target), cv2.IMREAD_UNCHANGED)
    assert restored.dtype == np.uint16 and restored.shape == deep.shape
    with Image.open(target) as written:
        assert written.info.get("icc_profile") == icc
        assert written.getexif().get(0x010F) == "Deepcam"


@pytest.mark.parametrize("channels", [3, 4, 1])
def test_sixteen_bit_tiff_keeps_depth_icc_profile_and_camera_tags(tmp_path, capsys, channels):
    import tifffile
    from PIL import ImageCms

    deep = natural_image(48, 56).astype(np.uint16) * 257 + 100
    if channels == 4:
        deep = np.dstack([deep, np.linspace(0, 65535, 48 * 56).astype(np.uint16).reshape(48, 56)])
    elif channels == 1:
        deep = deep[:, :, 1]
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    source = tmp_path / "deep.tif"
    tifffile.imwrite(source, deep, photometric="rgb" if channels > 1 else "minisblack",
                     extrasamples=["unassalpha"] if channels == 4 else None, iccprofile=icc,
                     extratags=[(271, "s", 0, "Deepcam", True), (33432, "s", 0, "(c) someone", True)])
    target = tmp_path / "deep_out.tiff"
    code, _, err = run_cli("restore", source, "-o", target, "--qf", "40", capsys=capsys)
    assert code == 0, err
    with tifffile.TiffFile(target) as written:
        restored, tags = written.asarray(), written.pages[0].tags
        assert restored.dtype == np.uint16 and restored.shape == deep.shape
        assert tags["InterColorProfile"].value == icc
        assert tags["Make"].value == "Deepcam" and tags["Copyright"].value == "(c) someone"
    assert np.abs(restored.astype(int) - deep.astype(int)).mean() > 50  # restored, not copied
    if channels == 4:
        assert np.array_equal(restored[:, :, 3], deep[:, :, 3])


def test_sixteen_bit_tiff_metadata_that_tiff_cannot_hold_never_costs_the_pixels(tmp_path):
    import tifffile

    from fbcnn_plugins.files.tiff import encode_tiff_pages

    exif = Image.Exif()
    exif[306] = "2020:01:01"  # a date without a time: TIFF's DateTime cannot hold it
    exif[271] = "Deepcam"
    deep = natural_image(16, 24).astype(np.uint16) * 257
    for block in (exif.tobytes(), b"not an EXIF block"):
        target = tmp_path / "odd.tif"
        target.write_bytes(encode_tiff_pages([deep], exif=block))
        with tifffile.TiffFile(target) as written:
            assert np.array_equal(written.asarray(), deep)
            assert "DateTime" not in written.pages[0].tags
            assert ("Make" in written.pages[0].tags) == (block == exif.tobytes())


@pytest.mark.parametrize("name", ["deep.tiff", "photo.webp", "photo.bmp"])
def test_tiff_webp_and_bmp_inputs(tmp_path, capsys, name):
    import cv2

    source = tmp_path / name
    pixels = natural_image(40, 48, seed=3)
    if name.endswith(".tiff"):
        pixels = pixels.astype(np.uint16) * 257
        cv2.imwrite(str(source), pixels[:, :, ::-1])
    else:
        Image.fromarray(pixels).save(source)
    target = tmp_path / f"out{source.suffix}"
    code, _, err = run_cli("restore", source, "-o", target, "--qf", "30", capsys=capsys)
    assert code == 0, err
    restored = cv2.imread(str(target), cv2.IMREAD_UNCHANGED)
    assert restored.shape == pixels.shape and restored.dtype == pixels.dtype
    assert not np.array_equal(restored[:, :, ::-1], pixels)


def test_one_output_file_for_several_inputs_is_refused(photos, tmp_path, capsys):
    target = tmp_path / "all.png"
    code, _, err = run_cli("restore", photos / "p0.jpg", photos / "p1.jpg", "-o", target, capsys=capsys)
    assert code == 2 and "name a folder" in err
    assert not target.exists()


def test_an_output_that_appears_while_writing_is_not_clobbered(tmp_path):
    from fbcnn_plugins.core.atomic import atomic_target

    target = tmp_path / "out.png"
    with pytest.raises(FileExistsError):
        with atomic_target(target, replace=False) as temporary:
            temporary.write_bytes(b"new")
            target.write_bytes(b"someone else's")  # another process got there first
    assert target.read_bytes() == b"someone else's"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]  # no temporary left behind
    with atomic_target(tmp_path / "fresh.png", replace=False) as temporary:
        temporary.write_bytes(b"mine")
    assert (tmp_path / "fresh.png").read_bytes() == b"mine"


def test_bad_options_fail_cleanly(photos, capsys):
    code, _, err = run_cli("restore", photos / "p0.jpg", "--qf", "250", capsys=capsys)
    assert code == 2 and "--qf" in err
    code, _, err = run_cli("restore", photos / "p0.jpg", "--tile", "100", capsys=capsys)
    assert code == 2 and "multiple of 8" in err
    code, _, err = run_cli("restore", photos / "p0.jpg", "--model", "no-such-model", capsys=capsys)
    assert code == 2 and "no-such-model" in err


def test_console_script_version_models_and_help():
    version = subprocess.run([*FBCNN, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("fbcnn-plugins ")
    models = subprocess.run([*FBCNN, "models", "--json"], capture_output=True, text=True, check=True)
    names = {m["name"]: m for m in json.loads(models.stdout)}
    assert names["fbcnn-color-small"]["available"] and names["fbcnn-color-small"]["color"] == "rgb"
    for command in ("restore", "models", "train", "export"):
        helped = subprocess.run([*FBCNN, command, "--help"], capture_output=True, text=True)
        assert helped.returncode == 0 and "usage: fbcnn" in helped.stdout


def test_two_inputs_with_the_same_output_name_do_not_overwrite_each_other(tmp_path, capsys):
    Image.fromarray(natural_image(32, 32, seed=1)).save(tmp_path / "a.jpg", quality=20)
    Image.fromarray(natural_image(32, 32, seed=2)).save(tmp_path / "a.png")
    code, _, err = run_cli("restore", tmp_path / "a.jpg", tmp_path / "a.png", "--overwrite", capsys=capsys)
    assert code == 1 and "same output as" in err
    assert (tmp_path / "a_fbcnn.png").exists()


def test_no_inputs_at_all_is_a_usage_error(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli("restore", empty, capsys=capsys)
    assert code == 2 and "no input files" in err


def test_auto_qf_reads_the_file_then_the_pixels(tmp_path, capsys):
    from fbcnn_plugins.core.jpeg import jpeg_roundtrip

    pixels = natural_image(96, 128, seed=4)
    jpeg = tmp_path / "shot.jpg"
    Image.fromarray(pixels).save(jpeg, quality=35)
    screenshot = tmp_path / "shot-as-png.png"  # the same JPEG damage, but no JPEG file any more
    Image.fromarray(jpeg_roundtrip(pixels, 25)).save(screenshot)
    code, out, err = run_cli("restore", jpeg, screenshot, "--json", capsys=capsys)
    assert code == 0, err
    used = {Path(f["input"]).name: f for f in json.loads(out)["files"]}
    assert used["shot.jpg"]["qf_source"] == "header" and used["shot.jpg"]["qf"] == 35
    assert used["shot-as-png.png"]["qf_source"] == "dominant" and abs(used["shot-as-png.png"]["qf"] - 25) <= 2
    assert used["shot-as-png.png"]["qf_predicted"] is not None


def test_self_ensemble_option_gives_another_restoration(photos, tmp_path, capsys):
    outputs = {}
    for flag in ([], ["--self-ensemble"]):
        target = tmp_path / f"out{len(flag)}.png"
        code, _, err = run_cli("restore", photos / "p0.jpg", "-o", target, "--qf", "10", *flag, capsys=capsys)
        assert code == 0, err
        outputs[bool(flag)] = np.asarray(Image.open(target))
    assert outputs[True].shape == outputs[False].shape
    assert 0 < np.abs(outputs[True].astype(int) - outputs[False]).mean() < 3  # the same restoration, averaged


def test_bench_measures_each_setting_in_one_run(capsys):
    code, out, err = run_cli("bench", "--size", 96, 80, "--repeats", 1, "--precision", "fp32", "bf16",
                             "--tile", 512, 64, "--json", capsys=capsys)
    assert code == 0, err
    rows = json.loads(out)
    assert [(r["tile"], r["precision"]) for r in rows] == [(512, "fp32"), (512, "bf16"), (64, "fp32"), (64, "bf16")]
    assert rows[0]["speed_ratio"] == 1.0
    for row in rows:
        assert row["model"] == "fbcnn-color-small" and row["size"] == "96x80" and row["device"] == "cpu"
        assert row["mp_per_s"] > 0 and row["seconds"] > 0 and row["completed"]
        assert row["speed_ratio"] == pytest.approx(row["mp_per_s"] / rows[0]["mp_per_s"])
        assert row["peak_memory_mib"] > 100  # a whole interpreter with PyTorch and the model, measured on its own
    assert rows[2]["tiles"] == "4/4" and rows[0]["tiles"] == "1/1"  # 96x80 in 64-px tiles: 2x2
    code, out, err = run_cli("bench", "--size", 64, 64, "--repeats", 1, "--gray", "--json", capsys=capsys)
    assert code == 0, err
    assert json.loads(out)[0]["model"] == "fbcnn-gray-small"


@pytest.mark.parametrize("arguments, message", [
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--tile", "100"], "multiple of 8"),
    (["--model", "no-such-model"], "no-such-model"),
    (["--precision", "fp16", "--device", "cpu"], "fp16"),  # refused by the engine the CPU runs (PyTorch or OpenVINO)
    (["--size", "4", "64"], "at least 8 pixels"),
    (["--model", "fbcnn-gray-small"], "is a gray model; add --gray"),
])
def test_bench_refuses_bad_settings_before_measuring(capsys, arguments, message):
    code, out, err = run_cli("bench", *arguments, capsys=capsys)
    assert code == 2 and message in err and out == ""


def test_restore_with_small_tiles_needs_no_overlap_option(photos, tmp_path, capsys):
    target = tmp_path / "small_tiles.png"
    code, _, err = run_cli("restore", photos / "p0.jpg", "-o", target, "--tile", 64, "--qf", 30, capsys=capsys)
    assert code == 0, err
    assert target.exists()
