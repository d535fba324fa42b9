"""Run every bad-input, interruption and re-run case of ``fbcnn restore`` / ``fbcnn qf`` and tabulate what happens.

Each case gets a fresh folder with real files (Pillow, tifffile, OpenCV, real weights files),
runs the real command as a child process, and records its exit status, the message it
printed, and what changed on disk.  The table in docs/reliability.md is this script's output:

    .venv/bin/python benchmarks/reliability_table.py --write docs/reliability.md

(without ``--write`` it prints the table).  It takes a few minutes: every case starts a
fresh interpreter with PyTorch, as a user's command would.  ``-k TEXT`` (repeatable) runs only
the cases whose description contains one of the texts; with ``--write`` their rows are
replaced in the table and the other rows are kept as they are.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

FBCNN = [sys.executable, "-m", "fbcnn_plugins.cli.main"]
START, END = "<!-- reliability-table:start -->", "<!-- reliability-table:end -->"


@dataclass
class Case:
    what: str
    args: list[str]
    setup: Callable[[Path], None] = lambda folder: None
    signal_after_first_output: int | None = None
    command: str = "restore"
    notes: list[str] = field(default_factory=list)
    #: Undoes what ``setup`` did outside the folder's files (a mounted file system).
    cleanup: Callable[[Path], None] = lambda folder: None
    #: Runs this instead of ``fbcnn COMMAND ARGS``: for the Python API and for shell pipelines.
    argv: list[str] | None = None
    shown: str | None = None  # the command as the table shows it, for ``argv`` cases
    #: Looks at the outputs after the run and says in a few words what they hold (kept metadata...).
    verify: Callable[[Path], str] | None = None


# -- inputs -----------------------------------------------------------------------------------

def photo(height: int = 64, width: int = 80, seed: int = 0) -> np.ndarray:
    import skimage.data

    source = [skimage.data.astronaut, skimage.data.coffee, skimage.data.chelsea][seed % 3]()
    return np.ascontiguousarray(source[:height, :width])


def jpeg(folder: Path, name: str = "photo.jpg", seed: int = 0, size: tuple[int, int] = (64, 80)) -> None:
    Image.fromarray(photo(*size, seed=seed)).save(folder / name, quality=20)


def batch(count: int, size: tuple[int, int] = (64, 80)) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        (folder / "batch").mkdir()
        for i in range(count):
            jpeg(folder / "batch", f"f{i:02d}.jpg", seed=i, size=size)
    return make


def both(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        for step in steps:
            step(folder)
    return make


def text_file(folder: Path) -> None:
    (folder / "notes.jpg").write_text("this is not an image")


def truncated(folder: Path) -> None:
    jpeg(folder, "cut.jpg")
    (folder / "cut.jpg").write_bytes((folder / "cut.jpg").read_bytes()[:400])


def bomb(folder: Path) -> None:
    Image.new("1", (12000, 12000)).save(folder / "bomb.png")


def cmyk(folder: Path) -> None:
    Image.new("CMYK", (32, 32), (0, 50, 100, 0)).save(folder / "print.jpg")


def fifo(folder: Path) -> None:
    os.mkfifo(folder / "pipe.jpg")


def existing_output(folder: Path) -> None:
    jpeg(folder)
    (folder / "photo_fbcnn.png").write_bytes(b"precious")


def users_file_named_like_an_output(folder: Path) -> None:
    jpeg(folder, "good.jpg")
    Image.fromarray(photo(seed=1)).save(folder / "good_fbcnn.png")


def earlier_run(folder: Path, suffix: str = "_fbcnn") -> None:
    """A folder an earlier batch was killed in: two outputs written, a temporary file of the third."""
    batch(3)(folder)
    subprocess.run([*FBCNN, "restore", "batch/f00.jpg", "batch/f01.jpg", "--qf", "30", "--suffix", suffix, "-q"],
                   cwd=folder, check=True, capture_output=True)
    stale = folder / "batch" / f".f02{suffix}.k3j_x9.part.png"
    stale.write_bytes(b"\x89PNG half")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))  # killed an hour ago


def same_output_names(folder: Path) -> None:
    jpeg(folder, "a.jpg")
    Image.fromarray(photo(seed=1)).save(folder / "a.png")


def two_photos(folder: Path) -> None:
    jpeg(folder, "a.jpg")
    jpeg(folder, "b.jpg", seed=1)


def file_in_the_way(folder: Path) -> None:
    jpeg(folder)
    (folder / "a-file").write_text("not a folder")


def frames(folder: Path) -> list[np.ndarray]:
    from fbcnn_plugins.core.jpeg import jpeg_roundtrip

    return [jpeg_roundtrip(photo(48, 64, seed=s), 20) for s in range(3)]


def animated_gif(folder: Path) -> None:
    images = [Image.fromarray(f) for f in frames(folder)]
    images[0].save(folder / "anim.gif", save_all=True, append_images=images[1:], duration=100, loop=0)


def animated_webp(folder: Path) -> None:
    images = [Image.fromarray(f) for f in frames(folder)]
    images[0].save(folder / "anim.webp", save_all=True, append_images=images[1:], duration=100, lossless=True)


def multi_page_tiff(folder: Path) -> None:
    import tifffile

    with tifffile.TiffWriter(folder / "pages.tif") as tiff:
        for frame in frames(folder):
            tiff.write(frame, photometric="rgb")


def float_tiff(folder: Path, scale: float = 1.0, offset: float = 0.0) -> None:
    import tifffile

    tifffile.imwrite(folder / "float.tif", photo(48, 64).astype(np.float32) / 255 * scale + offset, photometric="rgb")


def deep_png(folder: Path) -> None:
    import cv2

    cv2.imwrite(str(folder / "deep.png"), photo(48, 64).astype(np.uint16)[:, :, ::-1] * 257)


def ascii_orientation(folder: Path) -> None:
    """EXIF whose Orientation is stored as text, as some broken tools write it."""
    import struct

    value = b"upright\0"
    tiff = b"II*\0" + struct.pack("<IHHHII", 8, 1, 0x0112, 2, len(value), 26) + struct.pack("<I", 0) + value
    Image.fromarray(photo()).save(folder / "odd.jpg", quality=25, exif=b"Exif\0\0" + tiff)


def gray_alpha(folder: Path) -> None:
    gray = np.asarray(Image.fromarray(photo()).convert("L"))
    Image.fromarray(np.dstack([gray, np.full_like(gray, 200)]), mode="LA").save(folder / "gray-alpha.png")


def weights(kind: str) -> Callable[[Path], None]:
    """A small real network written as a user might get it: without its card, damaged, tampered, or a pickle."""
    def make(folder: Path) -> None:
        import torch
        from safetensors.torch import save_file

        from fbcnn_plugins.core.configs import create_network, get_config
        from fbcnn_plugins.core.weights import save_weights

        jpeg(folder)
        torch.manual_seed(0)
        network = create_network("tiny", 3)
        tensors = {k: v.contiguous() for k, v in network.state_dict().items()}
        if kind == "no card":
            save_file(tensors, str(folder / "model.safetensors"))
        elif kind == "nan":
            tensors["m_head.weight"][0, 0, 0, 0] = float("nan")
            save_file(tensors, str(folder / "model.safetensors"))
        elif kind == "overflow":
            tensors["m_head.weight"].fill_(3e38)
            save_file(tensors, str(folder / "model.safetensors"))
        elif kind == "tampered":
            save_weights(network, folder / "model.safetensors", get_config("tiny"), dtype=torch.float32)
            data = bytearray((folder / "model.safetensors").read_bytes())
            data[-1] ^= 1
            (folder / "model.safetensors").write_bytes(bytes(data))
        elif kind == "pickle":
            class Payload:
                def __reduce__(self):
                    return (os.system, ("touch pwned",))
            torch.save({"state_dict": Payload()}, folder / "model.pth")
    return make


# -- issue 30: phone files, hostile checkpoints and XCFs, full disks, silent losses -----------------------

def camera_exif() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "Phonecam"
    return exif.tobytes()


def mpo(folder: Path) -> None:
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(photo()).save(folder / "phone.jpg", format="MPO", save_all=True, quality=30,
                                  append_images=[Image.fromarray(photo(32, 40, seed=1))], exif=camera_exif(),
                                  icc_profile=icc)


def xcf(folder: Path, name: str = "small.xcf", width: int = 64, height: int = 64, *, shared_tile: bool = False,
        damage_trailer: bool = False) -> None:
    """An XCF (version 11, 8-bit RGB, zlib tiles, one layer) laid out as GIMP 3 writes it."""
    import struct
    import zlib

    pixels = photo(64, 64)
    tiles = -(-width // 64) * -(-height // 64)
    blob = bytearray(zlib.compress(pixels.tobytes()))
    if damage_trailer:
        blob[-1] ^= 0xFF
    blobs = [bytes(blob)] if shared_tile or tiles == 1 else None
    if blobs is None:
        raise ValueError("this writer makes one-tile layers, or layers whose tiles share one")
    name_bytes = b"Background\0"
    head = b"gimp xcf v011\0" + struct.pack(">IIII", width, height, 0, 150) + struct.pack(">II", 17, 1) + b"\2" + bytes(8)
    layer_at = len(head) + 24
    layer = struct.pack(">IIII", width, height, 0, len(name_bytes)) + name_bytes + bytes(8)
    hierarchy_at = layer_at + len(layer) + 16
    level_at = hierarchy_at + 28
    tile_at = level_at + 8 + 8 * tiles + 8
    data = head + struct.pack(">QQQ", layer_at, 0, 0) + layer + struct.pack(">QQ", hierarchy_at, 0)
    data += struct.pack(">III", width, height, 3) + struct.pack(">QQ", level_at, 0) + struct.pack(">II", width, height)
    data += struct.pack(">Q", tile_at) * tiles + bytes(8) + blobs[0]
    (folder / name).write_bytes(data)


def colour_key(folder: Path) -> None:
    pixels = photo()
    pixels[:16] = 0
    Image.fromarray(pixels).save(folder / "keyed.png", transparency=(0, 0, 0))


def full_disk(folder: Path) -> None:
    """A 1 MiB tmpfs at disk/ holding an earlier output, then filled to its last 8 KiB (needs root)."""
    disk = folder / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], check=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (160, 192, 3), dtype=np.uint8)).save(folder / "noise.png")
    subprocess.run([*FBCNN, "restore", "noise.png", "-o", "disk/out.jpg", "--qf", "90", "-q"], cwd=folder, check=True,
                   capture_output=True)
    fd = os.open(disk / "filler", os.O_CREAT | os.O_WRONLY | os.O_APPEND)
    try:
        while os.write(fd, bytes(4096)):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    os.truncate(disk / "filler", max(0, (disk / "filler").stat().st_size - 8192))


def unmount(folder: Path) -> None:
    subprocess.run(["umount", str(folder / "disk")], check=False, capture_output=True)


def earlier_bmp_and_xcf_outputs(folder: Path) -> None:
    jpeg(folder, "b.jpg")
    xcf(folder)
    subprocess.run([*FBCNN, "restore", ".", "--qf", "30", "--format", "bmp", "-q"], cwd=folder, check=True,
                   capture_output=True)


def palette_tiff(folder: Path) -> None:
    Image.fromarray(photo()).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "in.tif")


def long_names(folder: Path) -> None:
    jpeg(folder, "a" * 248 + ".jpg")  # a legal name; its output's (258 bytes) is not
    jpeg(folder, "b.jpg", seed=1)


def looped_links(folder: Path) -> None:
    (folder / "shots" / "day").mkdir(parents=True)
    jpeg(folder / "shots" / "day", "a.jpg")
    for name, target in (("up", ".."), ("up2", "../.."), ("up3", "..")):
        os.symlink(target, folder / "shots" / "day" / name)


def checkpoint(**changes) -> Callable[[Path], None]:
    """A real training run's checkpoint (tiny network, no steps) under run/, with entries changed."""
    def make(folder: Path) -> None:
        import torch

        from fbcnn_plugins.training.config import TrainConfig
        from fbcnn_plugins.training.trainer import Trainer

        (folder / "train").mkdir()
        Image.fromarray(photo(96, 96)).save(folder / "train" / "a.png")
        config = TrainConfig(name="fbcnn-color-test", network="tiny", gray=False, train_dirs=[str(folder / "train")],
                             val_dirs=[str(folder / "train")], patch_size=32, batch_size=2, workers=0, val_images=1,
                             val_crop=64)
        path = Trainer(config, folder / "run", log=lambda _: None).save()
        state = torch.load(path, map_location="cpu", weights_only=True)
        state.update(changes)
        torch.save(state, path)
    return make


def fifo_named(name: str) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        jpeg(folder)
        os.mkfifo(folder / name)
    return make


def rgba(folder: Path) -> None:
    Image.fromarray(np.dstack([photo(), np.full(photo().shape[:2], 128, np.uint8)])).save(folder / "clear.png")


def big_exif(folder: Path) -> None:
    exif = Image.Exif()
    exif[0x010F] = "Phonecam"
    exif[0x010E] = ""
    exif[0x010E] = "x" * (65_530 - len(exif.tobytes()))
    Image.fromarray(photo()).save(folder / "big.jpg", quality=30, exif=exif.tobytes())


MATRIX_SNIPPET = (
    "import numpy as np; from fbcnn_plugins.core.restorer import Restorer; "
    "gray = np.asarray(__import__('PIL.Image', fromlist=['Image']).open('photo.jpg').convert('L')); "
    "out = Restorer(device='cpu').restore(np.matrix(gray), 30).image; "
    "print(type(out).__name__, out.shape, out.dtype)"
)


def describe(name: str) -> Callable[[Path], str]:
    """What an output holds: size, mode, pages, and which metadata it kept."""
    def look(folder: Path) -> str:
        path = folder / name
        if not path.exists():
            return f"{name}: not written"
        with Image.open(path) as image:
            facts = [f"{image.size[0]}x{image.size[1]} {image.mode}"]
            if getattr(image, "n_frames", 1) > 1:
                facts.append(f"{image.n_frames} frames")
            exif = image.getexif()
            if exif.get(0x010F):
                facts.append(f"EXIF Make {exif[0x010F]}")
            for key, label in (("icc_profile", "ICC"), ("xmp", "XMP")):
                if image.info.get(key):
                    facts.append(label)
            if image.mode in ("RGBA", "LA"):
                alpha = np.asarray(image.getchannel("A"))
                facts.append(f"{np.mean(alpha == 0):.0%} transparent")
        return f"{name}: " + ", ".join(facts)
    return look


def compare(name: str, source: str) -> Callable[[Path], str]:
    """How far an output is from its input (mean absolute difference, 8-bit RGB): small means the same picture."""
    def look(folder: Path) -> str:
        if not (folder / name).exists():
            return f"{name}: not written"
        with Image.open(folder / source) as a, Image.open(folder / name) as b:
            left, right = np.asarray(a.convert("RGB"), dtype=float), np.asarray(b.convert("RGB"), dtype=float)
        if left.shape != right.shape:
            return f"{name}: {right.shape[1]}x{right.shape[0]}, not the input's size"
        return f"{name}: mean difference to the input {np.abs(left - right).mean():.1f}"
    return look


CASES = [
    Case("a good JPEG", ["photo.jpg"], jpeg),
    Case("a missing file", ["nope.jpg"]),
    Case("a text file named .jpg", ["notes.jpg"], text_file),
    Case("a truncated JPEG", ["cut.jpg"], truncated),
    Case("a decompression bomb (144 MP PNG of a few KB)", ["bomb.png"], bomb),
    Case("a CMYK JPEG", ["print.jpg"], cmyk),
    Case("a FIFO given as input", ["pipe.jpg"], fifo),
    Case("a character device given as input", ["/dev/zero"]),
    Case("a folder without images", ["."]),
    Case("the output exists", ["photo.jpg"], existing_output),
    Case("the output exists, --overwrite", ["photo.jpg", "--overwrite"], existing_output),
    Case("an input is another input's output", ["good.jpg", "good_fbcnn.png", "--overwrite"],
         users_file_named_like_an_output),
    Case("-o is the input", ["photo.jpg", "-o", "photo.jpg", "--overwrite"], jpeg),
    Case("two inputs with the same output name", ["a.jpg", "a.png"], same_output_names),
    Case("several inputs, -o names a file", ["a.jpg", "b.jpg", "-o", "out.png"], two_photos),
    Case("-o names a GIF", ["photo.jpg", "-o", "result.gif"], jpeg),
    Case("-o on a read-only file system", ["photo.jpg", "-o", "/proc/fbcnn-out"], jpeg),
    Case("-o below a file", ["photo.jpg", "-o", "a-file/out"], file_in_the_way),
    Case("re-run on a killed batch's folder", ["batch", "--qf", "30"], earlier_run),
    Case("re-run on a killed batch's folder, --skip-existing", ["batch", "--qf", "30", "--skip-existing"], earlier_run),
    Case("re-run with another --suffix", ["batch", "--qf", "30", "--suffix", "_v2", "--skip-existing"],
         lambda folder: earlier_run(folder, "_clean")),
    Case("SIGTERM in the middle of a batch (--json)", ["batch", "--qf", "30", "--json"], batch(12, (160, 192)),
         signal_after_first_output=signal.SIGTERM),
    Case("Ctrl-C (SIGINT) in the middle of a batch", ["batch", "--qf", "30"], batch(12, (160, 192)),
         signal_after_first_output=signal.SIGINT),
    Case("--tile 0", ["photo.jpg", "--tile", "0"], jpeg),
    Case("--tile 100 (not a multiple of 8)", ["photo.jpg", "--tile", "100"], jpeg),
    Case("--suffix /x", ["photo.jpg", "--suffix", "/x"], jpeg),
    Case("--qf 250", ["photo.jpg", "--qf", "250"], jpeg),
    Case("--overwrite with --skip-existing", ["photo.jpg", "--overwrite", "--skip-existing"], jpeg),
    Case("--model that is not registered", ["photo.jpg", "--model", "no-such-model"], jpeg),
    Case("--model .safetensors without its card", ["photo.jpg", "--model", "model.safetensors", "--qf", "30"],
         weights("no card")),
    Case("--model with a NaN weight", ["photo.jpg", "--model", "model.safetensors"], weights("nan")),
    Case("--model whose output overflows", ["photo.jpg", "--model", "model.safetensors", "--qf", "30"],
         weights("overflow")),
    Case("--model whose card's sha256 does not match", ["photo.jpg", "--model", "model.safetensors"],
         weights("tampered")),
    Case("--model .pth that runs code when unpickled", ["photo.jpg", "--model", "model.pth"], weights("pickle")),
    Case("an animated GIF", ["anim.gif", "--qf", "20"], animated_gif),
    Case("an animated GIF, -o a JPEG", ["anim.gif", "-o", "one.jpg"], animated_gif),
    Case("an animated WebP", ["anim.webp", "--format", "webp", "--qf", "20"], animated_webp),
    Case("a multi-page TIFF", ["pages.tif", "--format", "tiff", "--qf", "20"], multi_page_tiff),
    Case("a float32 TIFF, default PNG output", ["float.tif", "--qf", "30"], float_tiff),
    Case("a float32 TIFF, -o a TIFF", ["float.tif", "-o", "out.tif", "--qf", "30"], float_tiff),
    Case("a float32 TIFF with values outside [0, 1]", ["float.tif", "-o", "out.tif", "--qf", "30"],
         lambda folder: float_tiff(folder, 1.5, -0.2)),
    Case("a 16-bit PNG, -o a JPEG", ["deep.png", "-o", "deep.jpg", "--qf", "30"], deep_png),
    Case("a JPEG whose EXIF orientation is text", ["odd.jpg"], ascii_orientation),
    Case("`fbcnn qf` on gray+alpha", ["gray-alpha.png"], gray_alpha, command="qf"),
    Case("`fbcnn qf` on a FIFO and a good file", ["pipe.jpg", "photo.jpg"], both(fifo, jpeg), command="qf"),
    Case("a camera MPO (photo, EXIF, ICC, a second image after it)", ["phone.jpg"], mpo,
         verify=describe("phone_fbcnn.png")),
    Case("`fbcnn export` of a checkpoint whose name is a path", ["run"],
         checkpoint(config_name="../../../../../../../../tmp/evil"), command="export"),
    Case("an XCF declaring a 10000x10000 layer over one shared tile", ["bomb.xcf"],
         lambda folder: xcf(folder, "bomb.xcf", 10000, 10000, shared_tile=True)),
    Case("re-run with another --suffix on BMP and XCF outputs", [".", "--format", "bmp", "--suffix", "_v2",
         "--skip-existing", "--qf", "30"], earlier_bmp_and_xcf_outputs),
    Case("a PNG with a colour key (tRNS)", ["keyed.png"], colour_key, verify=describe("keyed_fbcnn.png")),
    Case("an input whose output name is longer than the file system allows", [".", "--qf", "30"], long_names),
    Case("an output name of exactly 255 bytes", [".", "--qf", "30"], lambda folder: jpeg(folder, "c" * 245 + ".jpg")),
    Case("a full disk (1 MiB tmpfs), --overwrite an earlier output", ["noise.png", "-o", "disk/out.jpg", "--overwrite"],
         full_disk, cleanup=unmount),
    Case("a palette TIFF, -o a TIFF", ["in.tif", "-o", "out.tif"], palette_tiff, verify=compare("out.tif", "in.tif")),
    Case("--suffix \"\" --overwrite beside the user's own a.png", [".", "--suffix", "", "--overwrite", "--qf", "30"],
         same_output_names, shown='fbcnn restore . --suffix "" --overwrite --qf 30'),
    Case("a FIFO named .xcf", ["pipe.xcf"], fifo_named("pipe.xcf")),
    Case("a recursive glob through links to parent folders", ["shots/**/*.jpg", "--recursive", "--qf", "30"],
         looped_links),
    Case("an np.matrix given to the Python API", [], jpeg, argv=[sys.executable, "-c", MATRIX_SNIPPET],
         shown="Restorer().restore(np.matrix(gray), 30)"),
    Case("RGBA, -o a JPEG", ["clear.png", "-o", "clear.jpg"], rgba),
    Case("a JPEG with 64 KB of EXIF, -o a JPEG", ["big.jpg", "-o", "out.jpg"], big_exif, verify=describe("out.jpg")),
    Case("`fbcnn models --json` into a closed pipe", [],
         argv=["sh", "-c", f"{sys.executable} -m fbcnn_plugins.cli.main models --json | head -c 0"],
         shown="fbcnn models --json \\| head -c 0"),
]


# -- running -------------------------------------------------------------------------------------

def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in folder.rglob("*") if p.is_file() or p.is_fifo()}


def run_case(case: Case) -> dict:
    with tempfile.TemporaryDirectory(prefix="fbcnn-reliability-") as name:
        folder = Path(name)
        try:
            case.setup(folder)
            return _run_in(case, folder)
        finally:
            case.cleanup(folder)


def _run_in(case: Case, folder: Path) -> dict:
    before = snapshot(folder)
    command = case.argv or [*FBCNN, case.command, *case.args]
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if case.signal_after_first_output:
        while child.poll() is None and not list(folder.glob("batch/*_fbcnn.png")):
            time.sleep(0.05)
        child.send_signal(case.signal_after_first_output)
    try:
        out, err = child.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        child.kill()
        out, err = child.communicate()
        err += "\n(killed after 600 s: hung)"
    seconds = time.perf_counter() - started
    after = snapshot(folder)
    added = sorted(set(after) - set(before))
    changed = sorted(p for p in set(after) & set(before) if after[p] != before[p])
    removed = sorted(set(before) - set(after))
    prefix = f"{folder.resolve()}/"
    checked = case.verify(folder) if case.verify else ""
    return {"case": case, "status": child.returncode, "stdout": out.replace(prefix, ""),
            "stderr": err.replace(prefix, ""), "seconds": seconds, "added": added, "changed": changed,
            "removed": removed, "parts": [p for p in added if ".part" in p], "checked": checked}


def message(result: dict) -> str:
    """The lines a user reads first: errors, warnings and refusals, not progress."""
    lines = [line for line in result["stderr"].splitlines()
             if re.match(r"(error|warning|fbcnn \w+|skipped)", line) or " -> " in line]
    if not lines and result["stdout"].strip() and not result["stdout"].startswith(("{", "[")):
        lines = [result["stdout"].strip().splitlines()[-1]]
    lines = [re.sub(r" in \d+\.\d s", "", line) for line in lines]  # times differ from run to run
    text = " / ".join(dict.fromkeys(lines[:3]))
    return text.replace("|", "\\|")


def disk(result: dict) -> str:
    parts = []
    if result["added"]:
        parts.append("new: " + ", ".join(_short(result["added"])))
    if result["changed"]:
        parts.append("replaced: " + ", ".join(_short(result["changed"])))
    if result["removed"]:
        parts.append("removed: " + ", ".join(_short(result["removed"])))
    if result["parts"]:
        parts.append("**temporary files left: " + ", ".join(result["parts"]) + "**")
    if result.get("checked"):
        parts.append(result["checked"])
    return ("; ".join(parts) or "nothing").replace("|", "\\|")


def _short(paths: list[str], limit: int = 4) -> list[str]:
    return paths[:limit] + ([f"... ({len(paths)} in all)"] if len(paths) > limit else [])


def table(results: list[dict]) -> str:
    rows = ["| case | command | exit | message (stderr) | left on disk |", "|---|---|---|---|---|"]
    for result in results:
        case = result["case"]
        command = case.shown or " ".join(["fbcnn", case.command, *case.args])
        rows.append(f"| {case.what} | `{command}` | {result['status']} | {message(result)} | {disk(result)} |")
    return "\n".join(rows) + "\n"


def merged_table(old: str, new: str) -> str:
    """The rows of ``new`` in place of the same cases' rows of ``old``, every row in the order of CASES."""
    def rows(text: str) -> dict[str, str]:
        found = {}
        for line in text.strip().splitlines()[2:]:
            what = line.split(" | ", 1)[0].removeprefix("| ").strip()
            found[what] = line
        return found

    kept, fresh = rows(old), rows(new)
    lines = new.strip().splitlines()[:2]
    lines += [fresh.get(case.what.replace("|", "\\|")) or kept.get(case.what.replace("|", "\\|")) or ""
              for case in CASES]
    return "\n".join(line for line in lines if line) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="replace the table between the markers in this Markdown file")
    parser.add_argument("-k", dest="only", action="append",
                        help="run only cases whose description contains this text (repeatable)")
    args = parser.parse_args()
    cases = [c for c in CASES if not args.only or any(text in c.what for text in args.only)]
    results = []
    for case in cases:
        result = run_case(case)
        print(f"{result['status']:>4}  {result['seconds']:5.1f} s  {case.what}", file=sys.stderr)
        results.append(result)
    text = table(results)
    if args.write:
        document = args.write.read_text()
        if START not in document or END not in document:
            raise SystemExit(f"{args.write}: no {START} ... {END} markers to put the table between")
        head, rest = document.split(START, 1)
        old, tail = rest.split(END, 1)
        if args.only:
            text = merged_table(old, text)
        args.write.write_text(f"{head}{START}\n{text}{END}{tail}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
