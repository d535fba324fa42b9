"""Run every bad-input, interruption and re-run case of ``fbcnn restore`` / ``fbcnn qf`` and tabulate what happens.

Each case gets a fresh folder with real files (Pillow, tifffile, OpenCV, real weights files),
runs the real command as a child process, and records its exit status, the message it
printed, and what changed on disk.  The table in docs/reliability.md is this script's output:

    .venv/bin/python benchmarks/reliability_table.py --write docs/reliability.md

(without ``--write`` it prints the table).  It takes a few minutes: every case starts a
fresh interpreter with PyTorch, as a user's command would.
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
]


# -- running -------------------------------------------------------------------------------------

def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in folder.rglob("*") if p.is_file() or p.is_fifo()}


def run_case(case: Case) -> dict:
    with tempfile.TemporaryDirectory(prefix="fbcnn-reliability-") as name:
        folder = Path(name)
        case.setup(folder)
        before = snapshot(folder)
        command = [*FBCNN, case.command, *case.args]
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
        return {"case": case, "status": child.returncode, "stdout": out.replace(prefix, ""),
                "stderr": err.replace(prefix, ""), "seconds": seconds, "added": added, "changed": changed,
                "removed": removed, "parts": [p for p in added if ".part" in p]}


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
    return "; ".join(parts) or "nothing"


def _short(paths: list[str], limit: int = 4) -> list[str]:
    return paths[:limit] + ([f"... ({len(paths)} in all)"] if len(paths) > limit else [])


def table(results: list[dict]) -> str:
    rows = ["| case | command | exit | message (stderr) | left on disk |", "|---|---|---|---|---|"]
    for result in results:
        case = result["case"]
        command = " ".join(["fbcnn", case.command, *case.args])
        rows.append(f"| {case.what} | `{command}` | {result['status']} | {message(result)} | {disk(result)} |")
    return "\n".join(rows) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="replace the table between the markers in this Markdown file")
    parser.add_argument("-k", dest="only", help="run only cases whose description contains this text")
    args = parser.parse_args()
    cases = [c for c in CASES if not args.only or args.only in c.what]
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
        _, tail = rest.split(END, 1)
        args.write.write_text(f"{head}{START}\n{text}{END}{tail}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
