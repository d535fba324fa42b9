"""Files the readers and writers must not lose, truncate or misread (issue 30's items, one or more tests each).

Camera MPO files, XCF bombs, output markers in every format, colour-key transparency, TIFF
orientation and structure, XMP and the other metadata, full disks, array subclasses.  Every
test drives the real readers and writers (and the real ``fbcnn`` command where the report is
the point) on files written by Pillow, tifffile and OpenCV, or by the XCF layout in
:func:`xcf_file`.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from fbcnn_plugins.cli.main import main
from fbcnn_plugins.files.images import ImageFileError, is_restored_output, read_image, write_image

from conftest import natural_image

XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/>rights: someone</x:xmpmeta>'


def run_cli(*args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def report(*args, capsys) -> tuple[int, dict]:
    code, out, err = run_cli(*args, "--json", capsys=capsys)
    assert out.strip(), err
    return code, json.loads(out)


@lru_cache(maxsize=None)
def srgb_profile() -> bytes:  # made once: each profile made carries its own creation time
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def camera_exif(make: str = "Phonecam") -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = make
    return exif


def xcf_file(path: Path, width: int = 64, height: int = 64, *, pixels: np.ndarray | None = None,
             tile_data: bytes | None = None, shared_tile: bool = False) -> Path:
    """An XCF (version 11, 8-bit RGB, zlib tiles) with one layer, laid out as GIMP 3 writes it.

    ``tile_data`` replaces every tile's compressed bytes; ``shared_tile`` points every tile at
    the first one, as a hostile file does to declare far more pixels than it holds.
    """
    pixels = natural_image(height, width) if pixels is None else pixels
    header = b"gimp xcf v011\0" + struct.pack(">IIII", width, height, 0, 150)
    header += struct.pack(">II", 17, 1) + b"\x02" + struct.pack(">II", 0, 0)  # zlib tiles; end of properties
    layer_pointer_at = len(header)
    layer_at = layer_pointer_at + 8 * 3  # one layer, end of layers, end of channels
    name = b"Background\0"
    layer = struct.pack(">III", width, height, 0) + struct.pack(">I", len(name)) + name + struct.pack(">II", 0, 0)
    hierarchy_at = layer_at + len(layer) + 16
    tiles_x, tiles_y = -(-width // 64), -(-height // 64)
    level_at = hierarchy_at + 12 + 16
    first_tile_at = level_at + 8 + 8 * (tiles_x * tiles_y) + 8
    blobs = []
    for top in range(0, height, 64):
        for left in range(0, width, 64):
            raw = np.ascontiguousarray(pixels[top : top + 64, left : left + 64]).tobytes()
            blobs.append(tile_data if tile_data is not None else zlib.compress(raw))
            if shared_tile:
                break
        if shared_tile:
            break
    offsets, at = [], first_tile_at
    for blob in blobs:
        offsets.append(at)
        at += len(blob)
    if shared_tile:
        offsets = offsets * (tiles_x * tiles_y)
    data = header + struct.pack(">QQQ", layer_at, 0, 0) + layer + struct.pack(">QQ", hierarchy_at, 0)
    data += struct.pack(">III", width, height, 3) + struct.pack(">QQ", level_at, 0)
    data += struct.pack(">II", width, height) + b"".join(struct.pack(">Q", o) for o in offsets) + struct.pack(">Q", 0)
    assert len(data) == first_tile_at
    path.write_bytes(data + b"".join(blobs))
    return path


# -- item 1: camera MPO files --------------------------------------------------------------------

def mpo_photo(path: Path, quality: int = 30) -> Path:
    """A phone-style MPO: the photo (EXIF, ICC) and a second, smaller image after it, by Pillow's MPO writer."""
    photo = Image.fromarray(natural_image(64, 80))
    depth = Image.fromarray(natural_image(32, 40, seed=1))
    photo.save(path, format="MPO", save_all=True, append_images=[depth], quality=quality,
               exif=camera_exif().tobytes(), icc_profile=srgb_profile())
    with Image.open(path) as check:
        assert check.format == "MPO" and check.n_frames == 2
    return path


@pytest.mark.parametrize("extension", ["png", "tiff", "webp"])
def test_a_camera_mpo_restores_as_the_jpeg_it_is_with_exif_and_icc(tmp_path, capsys, extension):
    source = mpo_photo(tmp_path / "phone.jpg")
    target = tmp_path / f"out.{extension}"
    code, result = report("restore", source, "-o", target, capsys=capsys)
    assert code == 0, result
    record = result["files"][0]
    assert record["qf"] == 30 and record["qf_source"] == "header"
    assert any("MPO" in note for note in record["warnings"])  # the second image is named as left out
    with Image.open(target) as written:
        assert written.size == (80, 64) and getattr(written, "n_frames", 1) == 1
        assert written.info.get("icc_profile") == srgb_profile()
        assert written.getexif().get(0x010F) == "Phonecam"


# -- item 3: XCF decompression bombs ------------------------------------------------------------------

def test_an_xcf_declaring_a_huge_layer_over_one_shared_tile_is_refused_before_allocating(tmp_path):
    from fbcnn_plugins.files.xcf import read_xcf

    bomb = xcf_file(tmp_path / "bomb.xcf", 10000, 10000, pixels=natural_image(64, 64), shared_tile=True)
    assert bomb.stat().st_size < 300_000
    with pytest.raises(ImageFileError, match="decompression bomb"):
        read_xcf(bomb)


def test_an_xcf_tile_pointer_past_the_end_and_a_damaged_zlib_trailer_are_refused(tmp_path):
    from fbcnn_plugins.files.xcf import read_layer_pixels, read_xcf

    good = xcf_file(tmp_path / "good.xcf")
    image = read_xcf(good)
    assert np.array_equal(read_layer_pixels(image, image.layers[0]), natural_image(64, 64))
    tile = zlib.compress(natural_image(64, 64).tobytes())
    damaged = bytearray(tile)
    damaged[-1] ^= 0xFF  # the adler32 checksum at the end of the stream
    for name, data in (("damaged.xcf", bytes(damaged)), ("cut.xcf", tile[:-4])):  # checksum wrong, or cut off
        image = read_xcf(xcf_file(tmp_path / name, tile_data=data))
        with pytest.raises(ImageFileError, match="zlib"):
            read_layer_pixels(image, image.layers[0])


# -- item 4: every output format is recognised as an output ---------------------------------------

@pytest.mark.parametrize("extension", ["png", "jpg", "tiff", "webp", "bmp"])
def test_every_output_format_is_recognised_on_a_rerun_with_another_suffix(tmp_path, capsys, extension):
    Image.fromarray(natural_image(48, 64)).save(tmp_path / "b.jpg", quality=25)
    code, _, err = run_cli("restore", tmp_path, "--format", extension, "--qf", 25, capsys=capsys)
    assert code == 0, err
    output = tmp_path / f"b_fbcnn.{extension}"
    assert is_restored_output(output)
    code, result = report("restore", tmp_path, "--format", extension, "--qf", 25, "--suffix", "_v2",
                          "--skip-existing", capsys=capsys)
    assert code == 0
    assert not (tmp_path / f"b_fbcnn_v2.{extension}").exists()
    assert {r["input"]: r.get("skipped", "") for r in result["files"]}[str(output)].startswith("written by")


def test_a_bmp_from_elsewhere_is_not_taken_for_an_output(tmp_path):
    Image.fromarray(natural_image(16, 16)).save(tmp_path / "theirs.bmp")
    assert not is_restored_output(tmp_path / "theirs.bmp")
    write_image(tmp_path / "ours.bmp", natural_image(16, 16))
    assert is_restored_output(tmp_path / "ours.bmp")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "ours.bmp")), natural_image(16, 16))


def test_a_restored_xcf_is_recognised_on_a_rerun(tmp_path, capsys):
    source = xcf_file(tmp_path / "small.xcf")
    assert not is_restored_output(source)
    code, _, err = run_cli("restore", tmp_path, "--qf", 30, capsys=capsys)
    assert code == 0, err
    assert is_restored_output(tmp_path / "small_fbcnn.xcf")
    code, result = report("restore", tmp_path, "--qf", 30, "--suffix", "_v2", "--skip-existing", capsys=capsys)
    assert code == 0 and not (tmp_path / "small_fbcnn_v2.xcf").exists()
    skipped = {r["input"]: r.get("skipped", "") for r in result["files"]}
    assert skipped[str(tmp_path / "small_fbcnn.xcf")].startswith("written by")
    assert (tmp_path / "small_v2.xcf").exists()  # the photo itself is restored again under the new suffix


# -- item 5: colour keys, TIFF orientation, XMP ---------------------------------------------------------

@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_a_png_colour_key_becomes_real_transparency(tmp_path, capsys, mode):
    pixels = natural_image(48, 64)
    pixels[16:] = np.maximum(pixels[16:], 8)  # nothing below the band has the keyed colour
    pixels[:16] = 0  # the keyed colour: a black band
    image = Image.fromarray(pixels).convert(mode)
    key = (0, 0, 0) if mode == "RGB" else 0
    image.save(tmp_path / "keyed.png", transparency=key)
    assert read_image(tmp_path / "keyed.png").pixels.shape[2] == (4 if mode == "RGB" else 2)
    code, _, err = run_cli("restore", tmp_path / "keyed.png", "-o", tmp_path / "out.png", "--qf", 30, capsys=capsys)
    assert code == 0, err
    alpha = np.asarray(Image.open(tmp_path / "out.png"))[..., -1]
    assert (alpha[:16] == 0).all() and (alpha[16:] == 255).mean() > 0.99


@pytest.mark.parametrize("kind", ["pages", "float"])
def test_tiff_orientation_turns_the_pixels_upright(tmp_path, kind):
    import tifffile

    pixels = natural_image(48, 64)
    stored = pixels[::-1, ::-1]  # stored upside down, tagged Orientation 3 (rotate 180)
    data = stored.astype(np.float32) / 255 if kind == "float" else stored
    with tifffile.TiffWriter(tmp_path / "turned.tif") as tiff:
        for _ in range(2 if kind == "pages" else 1):
            tiff.write(data, photometric="rgb", extratags=[(274, "H", 1, 3, True)])
    image = read_image(tmp_path / "turned.tif")
    frames = image.frames or [image.pixels]
    expected = pixels.astype(np.float32) / 255 if kind == "float" else pixels
    for frame in frames:
        assert np.array_equal(frame, expected)


@pytest.mark.parametrize("extension", ["png", "jpg", "tiff", "webp"])
def test_xmp_comment_and_dpi_of_a_jpeg_are_kept(tmp_path, capsys, extension):
    Image.fromarray(natural_image(48, 64)).save(tmp_path / "tagged.jpg", quality=30, xmp=XMP, comment=b"my note",
                                                dpi=(300, 300))
    target = tmp_path / f"out.{extension}"
    code, result = report("restore", tmp_path / "tagged.jpg", "-o", target, capsys=capsys)
    assert code == 0
    with Image.open(target) as written:
        assert written.info.get("xmp") == XMP
        if extension != "webp":
            assert tuple(round(d) for d in written.info["dpi"]) == (300, 300)
        if extension == "jpg":
            assert written.info.get("comment") == b"my note"
    notes = " ".join(result["files"][0].get("warnings", []))
    assert ("DPI left out" in notes) == (extension == "webp")
    assert ("JPEG comment left out" in notes) == (extension in ("tiff", "webp"))


def test_png_text_and_sixteen_bit_metadata_are_kept(tmp_path, capsys):
    import cv2
    from PIL import PngImagePlugin

    from fbcnn_plugins.files.png_metadata import add_png_metadata

    text = PngImagePlugin.PngInfo()
    text.add_text("Copyright", "(c) someone")
    text.add_text("Author", "a photographer")
    Image.fromarray(natural_image(48, 64)).save(tmp_path / "eight.png", pnginfo=text, dpi=(150, 150))
    code, _, err = run_cli("restore", tmp_path / "eight.png", "-o", tmp_path / "eight_out.png", "--qf", 40, capsys=capsys)
    assert code == 0, err
    with Image.open(tmp_path / "eight_out.png") as written:
        assert written.info["Copyright"] == "(c) someone" and written.info["Author"] == "a photographer"
    deep = natural_image(48, 64).astype(np.uint16) * 257
    cv2.imwrite(str(tmp_path / "deep.png"), deep[:, :, ::-1])
    (tmp_path / "deep.png").write_bytes(add_png_metadata((tmp_path / "deep.png").read_bytes(),
                                                         text={"Copyright": "(c) someone", "XML:com.adobe.xmp": XMP.decode()},
                                                         dpi=(150, 150)))
    code, _, err = run_cli("restore", tmp_path / "deep.png", "-o", tmp_path / "deep_out.png", "--qf", 40, capsys=capsys)
    assert code == 0, err
    assert cv2.imread(str(tmp_path / "deep_out.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    with Image.open(tmp_path / "deep_out.png") as written:
        assert written.info["Copyright"] == "(c) someone" and written.info.get("xmp") == XMP
        assert tuple(round(d) for d in written.info["dpi"]) == (150, 150)


# -- item 8: a full disk ------------------------------------------------------------------------------

@pytest.fixture
def full_disk(tmp_path):
    """A 1 MiB tmpfs, filled to its last few KiB; needs root (mount)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=False)


def fill(folder: Path, leave: int = 8192) -> None:
    filler = folder / "filler"
    fd = os.open(filler, os.O_CREAT | os.O_WRONLY | os.O_APPEND)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    size = filler.stat().st_size
    os.truncate(filler, max(0, size - leave))


@pytest.mark.parametrize("extension", ["jpg", "bmp", "tif", "png", "webp"])
def test_a_full_disk_fails_the_file_and_keeps_the_earlier_output(tmp_path, capsys, full_disk, extension):
    source = tmp_path / "photo.png"
    noisy = np.random.default_rng(0).integers(0, 256, (160, 192, 3), dtype=np.uint8)  # encodes large in any format
    Image.fromarray(noisy).save(source)
    target = full_disk / f"out.{extension}"
    code, _, err = run_cli("restore", source, "-o", target, "--qf", 90, capsys=capsys)
    assert code == 0, err
    good = target.read_bytes()
    fill(full_disk)
    code, _, err = run_cli("restore", source, "-o", target, "--qf", 40, "--overwrite", capsys=capsys)
    assert code == 1 and "No space left" in err
    assert target.read_bytes() == good  # the earlier output, whole
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler", f"out.{extension}"]
    target.unlink()
    fill(full_disk)
    code, _, err = run_cli("restore", source, "-o", target, "--qf", 40, capsys=capsys)
    assert code == 1 and not target.exists()
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]


# -- item 9: 8-bit TIFFs of every layout --------------------------------------------------------------

@pytest.mark.parametrize("layout", ["planar", "palette"])
def test_an_eight_bit_tiff_output_never_copies_the_inputs_structure(tmp_path, capsys, layout):
    import tifffile

    pixels = natural_image(48, 64)
    source = tmp_path / "in.tif"
    if layout == "planar":
        tifffile.imwrite(source, np.moveaxis(pixels, 2, 0), photometric="rgb", planarconfig="separate")
    else:
        Image.fromarray(pixels).convert("P", palette=Image.Palette.ADAPTIVE).save(source)
    expected = read_image(source).pixels
    code, _, err = run_cli("restore", source, "-o", tmp_path / "out.tif", "--qf", 60, capsys=capsys)
    assert code == 0, err
    with Image.open(tmp_path / "out.tif") as written:
        restored = np.asarray(written.convert("RGB"))
    assert restored.shape == expected[:, :, :3].shape
    assert np.abs(restored.astype(int) - expected[:, :, :3].astype(int)).mean() < 12


# -- item 12: array subclasses in the Python API -----------------------------------------------------

def test_an_np_matrix_is_restored_as_a_plain_array_and_a_masked_array_is_refused(tiny_gray_model):
    from fbcnn_plugins.core.restorer import Restorer

    restorer = Restorer(tiny_gray_model, device="cpu")
    gray = natural_image(32, 40)[:, :, 1]
    restored = restorer.restore(np.matrix(gray), 30).image
    assert type(restored) is np.ndarray and restored.shape == gray.shape
    assert np.array_equal(restored, restorer.restore(gray, 30).image)
    with pytest.raises(TypeError, match="masked"):
        restorer.restore(np.ma.masked_array(gray, mask=gray > 128), 30)


# -- item 13: silent losses ----------------------------------------------------------------------------

def test_an_animation_with_an_exif_orientation_keeps_its_frames_upright(tmp_path):
    frames = [natural_image(32, 48, seed=s) for s in range(2)]
    exif = camera_exif()
    exif[0x0112] = 6  # rotate 90 clockwise to show
    images = [Image.fromarray(f) for f in frames]
    images[0].save(tmp_path / "anim.webp", save_all=True, append_images=images[1:], lossless=True, exif=exif.tobytes())
    image = read_image(tmp_path / "anim.webp")
    assert [f.shape for f in image.frames] == [(48, 32, 3)] * 2
    assert np.array_equal(image.frames[0], np.rot90(frames[0], -1))
    assert Image.Exif().load(image.exif) is None


def test_rgba_into_jpeg_says_the_alpha_is_dropped(tmp_path, capsys):
    rgba = np.dstack([natural_image(48, 64), np.full((48, 64), 128, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "clear.png")
    code, result = report("restore", tmp_path / "clear.png", "-o", tmp_path / "out.jpg", "--qf", 40, capsys=capsys)
    assert code == 0
    assert any("alpha" in note for note in result["files"][0]["warnings"])


def test_a_jpeg_with_64_kb_of_exif_is_still_written(tmp_path, capsys):
    exif = camera_exif()
    exif[0x010E] = ""
    exif[0x010E] = "x" * (65_530 - len(exif.tobytes()))  # ImageDescription: the block ends 3 bytes under 64 KB
    assert 65_520 < len(exif.tobytes()) <= 65_533
    Image.fromarray(natural_image(48, 64)).save(tmp_path / "big.jpg", quality=30, exif=exif.tobytes())
    code, result = report("restore", tmp_path / "big.jpg", "-o", tmp_path / "out.jpg", capsys=capsys)
    assert code == 0, result
    with Image.open(tmp_path / "out.jpg") as written:
        assert written.getexif().get(0x010F) == "Phonecam"
    assert any("64 KB" in note for note in result["files"][0]["warnings"])


def test_a_killed_writers_temporary_file_is_removed_at_once_and_a_live_ones_is_kept(tmp_path):
    from fbcnn_plugins.batch import remove_stale_temporaries
    from fbcnn_plugins.core.atomic import atomic_target

    target = tmp_path / "a_fbcnn.png"
    killed = tmp_path / ".a_fbcnn.x1y2z3.part.png"
    child = subprocess.Popen(["python3", "-c", f"""
import fcntl, os, signal
fd = os.open({str(killed)!r}, os.O_CREAT | os.O_WRONLY)
fcntl.flock(fd, fcntl.LOCK_EX)
os.kill(os.getpid(), signal.SIGKILL)
"""])
    child.wait()
    assert killed.exists()  # left by SIGKILL a moment ago
    with atomic_target(target) as live:
        live.write_bytes(b"being written")
        removed = remove_stale_temporaries(target)
        assert live.exists()
    assert removed == [killed] and not killed.exists()
