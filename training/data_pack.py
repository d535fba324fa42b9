"""A compact, lossless training set that travels with the code to a GPU machine.

    python -m fbcnn_plugins.training.data_pack                       # ../shared/data -> data-pack/
    python -m fbcnn_plugins.training.data_pack --source DIR --out PACK --budget-mib 30

A GPU window receives the working tree and nothing beside it, 64 MiB in all, so the training
images have to go along in whatever the tracked tree leaves over.  Lossless WebP stores the same
pixels as PNG in about three quarters of the bytes.  Folders whose photos were JPEGs once
(BSDS at about q92) are shrunk by half with area averaging first: that averages their old 8x8
grid away and stores four times fewer pixels, which are also sharper per pixel.  Folders
that never were JPEGs (the wallpapers, already shrunk 2x or more from their sources; Urban100)
keep their pixels.

Images are taken byte-balanced: the next image always comes from the folder that holds the
fewest bytes of the pack relative to its weight, so no single folder of large images crowds the
rest out; a folder stops when its next image would not fit.  The validation images become their
central crops (the crops ``fbcnn train`` validates on).  ``MANIFEST.json`` says what the pack
holds.  The pack is a build product: git ignores it and the GPU run's ``carry`` names it.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from fbcnn_plugins.core.atomic import atomic_target

from .data import GRID, IMAGE_SUFFIXES

MIB = 1 << 20
#: What one GPU call sends: the tracked tree, untracked files git does not ignore, and the carried paths.
TRANSFER_LIMIT = 64 * MIB
#: Patches of 128 px need 128 + 3 * GRID pixels of image (a random 0..7 offset and a double-JPEG shift).
DEFAULT_MIN_SIDE = 128 + 3 * GRID


@dataclass(frozen=True)
class FolderRule:
    """How one training folder goes into the pack: its share of the bytes and its shrink factor."""

    weight: float
    scale: float
    why: str


#: The team's training folders (../shared/data/train); a folder not named here gets DEFAULT_RULE.
FOLDER_RULES: dict[str, FolderRule] = {
    "debian_wallpapers": FolderRule(1.0, 1.0, "never a JPEG, already shrunk 2x or more: sharp detail and saturated colour edges"),
    "urban36": FolderRule(1.0, 1.0, "Urban100 images without a JPEG grid: sharp lines, the sharpest chroma of the photos"),
    "bsds_train200": FolderRule(0.6, 0.5, "decoded from q92 JPEGs: shrunk by half to average the old grid away"),
    "bsds_val32": FolderRule(0.15, 0.5, "decoded from q92 JPEGs: shrunk by half to average the old grid away"),
    "t91": FolderRule(0.15, 0.5, "small photos that were JPEGs once: shrunk as far as the patch size allows, at most by half"),
    "skimage": FolderRule(0.1, 1.0, "scikit-image's natural photos, kept as they are"),
}
DEFAULT_RULE = FolderRule(0.5, 1.0, "a folder without a rule: kept as it is")


def encode_lossless_webp(image: np.ndarray) -> bytes:
    """Lossless WebP (method 4: within 2 % of the smallest files at a twentieth of method 6's time)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="WEBP", lossless=True, quality=70, method=4)
    return buffer.getvalue()


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("L" if image.mode in ("L", "I;16", "I") else "RGB"))


def shrink(image: np.ndarray, scale: float, min_side: int) -> np.ndarray | None:
    """Area-average ``image`` by ``scale``, but never below ``min_side``; None when it is already smaller."""
    smallest = min(image.shape[:2])
    if smallest < min_side:
        return None
    scale = max(scale, min_side / smallest)
    if scale >= 1.0:
        return image
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return np.ascontiguousarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA))


def central_crop(image: np.ndarray, crop: int) -> np.ndarray:
    """The crop ``ValidationSet`` takes: centred, its corner on the 8-pixel JPEG grid."""
    top = max(0, (image.shape[0] - crop) // 2) // GRID * GRID
    left = max(0, (image.shape[1] - crop) // 2) // GRID * GRID
    return np.ascontiguousarray(image[top : top + crop, left : left + crop])


def images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def tree_bytes(repo: Path) -> dict[str, int]:
    """Bytes of what a GPU call sends besides the carried paths: tracked files and untracked ones git does not ignore."""
    def total(*args: str) -> int:
        listed = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", *args], check=True,
                                capture_output=True).stdout.split(b"\0")
        return sum((repo / name.decode()).stat().st_size for name in listed if name and (repo / name.decode()).is_file())

    return {"tracked": total(), "untracked": total("--others", "--exclude-standard")}


def byte_budget(repo: Path, reserve: int) -> tuple[int, dict[str, int]]:
    """What the pack may take: the transfer limit less the tree and ``reserve`` (other carried paths, margin)."""
    sizes = tree_bytes(repo)
    return TRANSFER_LIMIT - sizes["tracked"] - sizes["untracked"] - reserve, sizes


@dataclass
class _Folder:
    name: str
    rule: FolderRule
    queue: list[Path]
    bytes: int = 0
    images: int = 0
    pixels: int = 0
    full: bool = False


def build_pack(
    train_root: Path, val_root: Path | None, out: Path, budget: int, *,
    min_side: int = DEFAULT_MIN_SIDE, val_crop: int = 256, seed: int = 0, log=print,
) -> dict:
    """Write the pack under ``out`` (train/FOLDER/*.webp, val/SET/*.webp, MANIFEST.json) within ``budget`` bytes."""
    if out.exists() and any(out.iterdir()) and not (out / "MANIFEST.json").exists():
        raise FileExistsError(f"{out}: exists and is not a data pack; refusing to write into it")
    folders = sorted(p for p in train_root.iterdir() if p.is_dir()) if train_root.is_dir() else []
    if not folders:
        raise FileNotFoundError(f"{train_root}: no training folders (one folder of lossless images per source)")
    for old in out.glob("*/*/*.webp") if out.exists() else []:
        old.unlink()
    used = 0
    manifest: dict = {"budget_bytes": budget, "min_side": min_side, "train": {}, "val": {}}
    if val_root is not None:
        for folder in sorted(p for p in val_root.iterdir() if p.is_dir()):
            files = images_in(folder)
            target = out / "val" / folder.name
            target.mkdir(parents=True, exist_ok=True)
            size = 0
            for path in files:
                data = encode_lossless_webp(central_crop(read_rgb(path), val_crop))
                (target / f"{path.stem}.webp").write_bytes(data)
                size += len(data)
            used += size
            manifest["val"][folder.name] = {"images": len(files), "crop": val_crop, "bytes": size}
        if used > budget:
            raise ValueError(f"the validation crops alone take {used / MIB:.1f} MiB, over the {budget / MIB:.1f} MiB budget")
    order = random.Random(seed)
    queues = []
    for folder in folders:
        files = images_in(folder)
        order.shuffle(files)
        queues.append(_Folder(folder.name, FOLDER_RULES.get(folder.name, DEFAULT_RULE), files))
    while True:
        open_folders = [f for f in queues if not f.full and f.queue]
        if not open_folders:
            break
        folder = min(open_folders, key=lambda f: (f.bytes / f.rule.weight, f.name))
        path = folder.queue.pop(0)
        image = shrink(read_rgb(path), folder.rule.scale, min_side)
        if image is None:
            continue
        data = encode_lossless_webp(image)
        if used + len(data) > budget:
            folder.full = True
            continue
        target = out / "train" / folder.name
        target.mkdir(parents=True, exist_ok=True)
        (target / f"{path.stem}.webp").write_bytes(data)
        used += len(data)
        folder.bytes += len(data)
        folder.images += 1
        folder.pixels += image.shape[0] * image.shape[1]
    for folder in queues:
        available = len(images_in(train_root / folder.name))
        manifest["train"][folder.name] = {
            "images": folder.images, "of": available, "megapixels": round(folder.pixels / 1e6, 2),
            "bytes": folder.bytes, "weight": folder.rule.weight, "scale": folder.rule.scale, "why": folder.rule.why,
        }
        log(f"{folder.name:<20} {folder.images:>4} of {available:<4} images  {folder.pixels / 1e6:6.1f} MP  "
            f"{folder.bytes / MIB:6.2f} MiB  (scale {folder.rule.scale})")
    manifest["bytes"] = used
    with atomic_target(out / "MANIFEST.json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"pack {out}: {used / MIB:.2f} MiB of {budget / MIB:.2f} MiB")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=Path("../shared/data"),
                        help="folder with train/FOLDER/ and val/SET/ of lossless images (default: ../shared/data)")
    parser.add_argument("--out", type=Path, default=Path("data-pack"), help="the pack folder (default: data-pack)")
    parser.add_argument("--budget-mib", type=float,
                        help="bytes the pack may take (default: 64 MiB less this checkout's tree less --reserve-mib)")
    parser.add_argument("--reserve-mib", type=float, default=1.0,
                        help="room kept for other carried paths and files written before the call (default: 1)")
    parser.add_argument("--min-side", type=int, default=DEFAULT_MIN_SIDE, help="smallest image side kept (default: 152)")
    parser.add_argument("--val-crop", type=int, default=256, help="side of the validation crops (default: 256)")
    args = parser.parse_args(argv)
    if args.budget_mib is not None:
        budget = int(args.budget_mib * MIB)
    else:
        # The checkout the GPU call sends is the one this runs in; the pack is ignored, so not in it.
        budget, sizes = byte_budget(Path.cwd(), int(args.reserve_mib * MIB))
        print(f"tree: {sizes['tracked'] / MIB:.2f} MiB tracked, {sizes['untracked'] / MIB:.2f} MiB untracked; "
              f"pack budget {budget / MIB:.2f} MiB")
    val_root = args.source / "val"
    try:
        build_pack(args.source / "train", val_root if val_root.is_dir() else None, args.out, budget,
                   min_side=args.min_side, val_crop=args.val_crop)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"data_pack: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
