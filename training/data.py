"""Training batches: clean patches and their real-libjpeg degradations.

Every batch is a pure function of (seed, step): its random generator is seeded
with both.  That makes a resumed run see exactly the batches an uninterrupted
run would have seen, whatever the number of worker processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
from PIL import Image

from fbcnn_plugins.core.jpeg import double_jpeg, jpeg_roundtrip, rgb_to_y

IMAGE_SUFFIXES = {".png", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".webp"}
GRID = 8


@dataclass
class QualityDistribution:
    """A mixture of uniform integer ranges: [[weight, low, high], ...]."""

    components: list[tuple[float, int, int]] = field(default_factory=lambda: [(1.0, 10, 95)])

    def sample(self, rng: np.random.Generator) -> int:
        weights = np.array([c[0] for c in self.components], dtype=np.float64)
        _, low, high = self.components[rng.choice(len(self.components), p=weights / weights.sum())]
        return int(rng.integers(low, high + 1))


@dataclass
class DegradationConfig:
    """How a clean patch is compressed: single JPEG, non-aligned double JPEG, or a resize chain.

    The chain (``chain_ratio`` of the samples) is what photos that were saved, resized and saved
    again look like: JPEG at ``chain_first``, resize by a factor from ``chain_scale``, JPEG at a
    high ``chain_second``. The first grid is then no longer on 8-pixel steps, so the QF head has
    nothing it was taught to read: such samples count as double (no QF loss) and their label
    is the smaller QF, almost always the first, harsher one, which is what a user wants undone.
    ``double_ratio`` applies to the samples that are not chains.
    """

    single: QualityDistribution = field(default_factory=QualityDistribution)
    double_ratio: float = 0.0
    double_first: QualityDistribution = field(default_factory=QualityDistribution)
    double_second: QualityDistribution = field(default_factory=QualityDistribution)
    max_shift: int = 7
    chain_ratio: float = 0.0
    chain_first: QualityDistribution = field(default_factory=QualityDistribution)
    chain_second: QualityDistribution = field(default_factory=lambda: QualityDistribution([(1.0, 80, 95)]))
    chain_scale: tuple[float, float] = (0.75, 1.5)

    def __post_init__(self) -> None:
        for name in ("double_ratio", "chain_ratio"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} is a probability in 0..1, got {getattr(self, name)}")
        if len(self.chain_scale) != 2 or not 0.0 < self.chain_scale[0] <= self.chain_scale[1]:
            raise ValueError(f"chain_scale must be [low, high] with 0 < low <= high, got {list(self.chain_scale)}")


@dataclass
class Downscale:
    """Shrink the clean source region before a patch is cut from it (area averaging).

    Most training photos were JPEGs once (BSDS at about q92); shrinking by 0.5..1 averages
    their old 8x8 grid and ringing away, gives sharper detail per pixel and more scales of
    the same scenes, so the network learns what clean looks like rather than what q92 looks
    like.  The factor is drawn log-uniformly from ``range`` for ``probability`` of the patches.
    """

    probability: float = 0.0
    range: tuple[float, float] = (0.5, 1.0)

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"downscale probability is in 0..1, got {self.probability}")
        if len(self.range) != 2 or not 0.0 < self.range[0] <= self.range[1] <= 1.0:
            raise ValueError(f"downscale range must be [low, high] with 0 < low <= high <= 1, got {list(self.range)}")

    @property
    def active(self) -> bool:
        return self.probability > 0 and self.range != (1.0, 1.0)

    def draw(self, rng: np.random.Generator) -> float:
        if rng.random() >= self.probability:
            return 1.0
        low, high = self.range
        return float(np.exp(rng.uniform(np.log(low), np.log(high))))


@dataclass
class ColorAugmentation:
    """Colour changes of the clean patch before it is compressed (colour models only).

    The training photos were mostly JPEGs once (BSDS at about q92, 4:2:0), so their chroma is
    smooth and pale; a model that only saw them learns that chroma is smooth and smears the
    sharp, saturated colour edges of real lossless images, worse than the JPEG it was given at
    high QF. Permuting the RGB channels and raising the saturation (which keeps the BT.601
    luma) show it chroma detail and colour edges the data lacks.
    """

    channel_shuffle: float = 0.0
    saturation_probability: float = 0.0
    saturation_range: tuple[float, float] = (1.0, 1.0)

    def __post_init__(self) -> None:
        for name in ("channel_shuffle", "saturation_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} is a probability in 0..1, got {getattr(self, name)}")
        if len(self.saturation_range) != 2 or not 0.0 < self.saturation_range[0] <= self.saturation_range[1]:
            raise ValueError(f"saturation_range must be [low, high] with 0 < low <= high, got {list(self.saturation_range)}")

    @property
    def saturates(self) -> bool:
        return self.saturation_probability > 0 and self.saturation_range != (1.0, 1.0)

    @property
    def active(self) -> bool:
        return self.channel_shuffle > 0 or self.saturates

    def apply(self, patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if patch.ndim != 3:
            return patch
        if rng.random() < self.channel_shuffle:
            patch = np.ascontiguousarray(patch[:, :, rng.permutation(3)])
        if self.saturates and rng.random() < self.saturation_probability:
            low, high = self.saturation_range
            patch = scale_saturation(patch, float(np.exp(rng.uniform(np.log(low), np.log(high)))))
        return patch


def scale_saturation(image: np.ndarray, factor: float) -> np.ndarray:
    """Scale each pixel's distance from its gray value (BT.601 luma) by ``factor``, clipped to 8 bits."""
    rgb = image.astype(np.float32)
    luma = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    scaled = luma[..., None] + factor * (rgb - luma[..., None])
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


@dataclass
class VideoDamage:
    """Patches from real codec output (``video_pairs.build``) mixed into the JPEG batches.

    ``ratio`` of the samples are cut from a decoded frame and its clean source instead of being
    JPEG-compressed.  Their QF label is the JPEG quality whose damage to the same clean patch is
    as large (equal PSNR): the decoder's control keeps meaning "this much damage, restore this
    strongly", and the QF head learns to read codec damage on the same scale.
    """

    pairs_dir: str = ""
    ratio: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio <= 1.0:
            raise ValueError(f"video ratio is a probability in 0..1, got {self.ratio}")
        if self.ratio and not self.pairs_dir:
            raise ValueError("[data.video] ratio > 0 needs pairs_dir (made by python -m fbcnn_plugins.training.video_pairs)")

    @property
    def active(self) -> bool:
        return self.ratio > 0


def matching_jpeg_quality(clean: np.ndarray, degraded: np.ndarray) -> int:
    """The JPEG quality (5..100) whose round trip of ``clean`` comes closest to ``degraded``'s PSNR.

    JPEG's error falls as quality rises, so a bisection over the quality finds it in about seven
    encodes of the patch.
    """
    target = _mse(clean, degraded)
    low, high = 5, 100
    while high - low > 1:
        middle = (low + high) // 2
        if _mse(clean, jpeg_roundtrip(clean, middle)) > target:
            low = middle
        else:
            high = middle
    closest = min((low, high), key=lambda q: abs(_mse(clean, jpeg_roundtrip(clean, q)) - target))
    return int(closest)


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))


def video_sample(pairs: Sequence, rng: np.random.Generator, size: int, gray: bool) -> "Sample":
    """A ``size`` patch of a random decoded frame and the same patch of its clean source, flipped alike."""
    pair = pairs[int(rng.integers(len(pairs)))]
    clean_frames, decoded_frames = (pair.clean_y, pair.decoded_y) if gray else (pair.clean, pair.decoded)
    t = int(rng.integers(clean_frames.shape[0]))
    top = int(rng.integers(0, clean_frames.shape[1] - size + 1))
    left = int(rng.integers(0, clean_frames.shape[2] - size + 1))
    mode = int(rng.integers(0, 8))
    clean = augment(clean_frames[t, top : top + size, left : left + size], mode)
    degraded = augment(decoded_frames[t, top : top + size, left : left + size], mode)
    return Sample(clean, degraded, matching_jpeg_quality(clean, degraded), False)


@dataclass
class Sample:
    clean: np.ndarray
    degraded: np.ndarray
    qf: int
    is_double: bool
    shift: tuple[int, int] = (0, 0)


def list_images(folders: Sequence[str | Path]) -> list[Path]:
    files: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: training image folder not found")
        # Regular files only: a FIFO or device named like an image would block the reader forever.
        files.extend(sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()))
    if not files:
        raise FileNotFoundError(f"no lossless images found under {', '.join(map(str, folders))}")
    return files


def load_training_image(path: Path, gray: bool) -> np.ndarray:
    """RGB uint8 for colour models, MATLAB-style Y for gray models (gray sources stay gray).

    16-bit gray is scaled to 8 bits (Pillow's own conversion would clip it); a file that cannot
    be read raises ValueError naming it.
    """
    try:
        with Image.open(path) as image:
            if image.mode.startswith("I"):
                array = _gray_to_8bit(np.asarray(image), image.mode)
                return array if gray else np.repeat(array[:, :, None], 3, axis=2)
            if image.mode == "L":
                array = np.asarray(image)
                return array if gray else np.repeat(array[:, :, None], 3, axis=2)
            array = np.asarray(image.convert("RGB"))
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
        raise ValueError(f"{path}: cannot be read as an image ({error})") from None
    return rgb_to_y(array) if gray else array


def _gray_to_8bit(array: np.ndarray, mode: str) -> np.ndarray:
    """16-bit (or 32-bit integer) gray to 8 bits by its depth: 65535 becomes 255, nothing is clipped."""
    values = array.astype(np.float64)
    top = 65535.0 if mode.startswith("I;16") or values.max() > 255 else 255.0
    return np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)


def augment(patch: np.ndarray, mode: int) -> np.ndarray:
    """One of the 8 dihedral transforms (flips and 90-degree rotations)."""
    if mode >= 4:
        patch = patch[:, ::-1]
    return np.ascontiguousarray(np.rot90(patch, mode % 4))


def resize_square(image: np.ndarray, side: int) -> np.ndarray:
    """Resize a square uint8 region to ``side`` pixels: area averaging to shrink (no aliasing),
    Lanczos to enlarge (what photo editors offer); gray stays 2-D."""
    if image.shape[0] == side and image.shape[1] == side:
        return image
    shrinking = side < min(image.shape[:2])
    resized = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LANCZOS4)
    return np.ascontiguousarray(resized)


def degrade_chain(source: np.ndarray, rng: np.random.Generator, config: DegradationConfig, size: int) -> Sample:
    """JPEG, resize to ``size + 2*GRID``, JPEG again at a high QF; the clean target is resized alike.

    ``source`` is the clean region before the resize (its side divided by the chain's scale).
    The second grid starts at the region's corner; the patch is cut at a random 0..7 offset.
    """
    q1, q2 = config.chain_first.sample(rng), config.chain_second.sample(rng)
    region = size + 2 * GRID
    clean = resize_square(source, region)
    degraded = jpeg_roundtrip(resize_square(jpeg_roundtrip(source, q1), region), q2)
    dy, dx = (int(v) for v in rng.integers(0, GRID, size=2))
    window = (slice(dy, dy + size), slice(dx, dx + size))
    return Sample(clean[window], degraded[window], min(q1, q2), True)


def degrade_patch(clean: np.ndarray, rng: np.random.Generator, config: DegradationConfig, size: int) -> Sample:
    """Degrade a clean region of at least size + 2*GRID pixels and cut a ``size`` patch from it.

    The patch starts at a random 0..7 offset inside the JPEG grid, so the
    network never learns that block edges sit at patch multiples of 8.
    """
    if rng.random() < config.double_ratio:
        q1, q2 = config.double_first.sample(rng), config.double_second.sample(rng)
        shift = (int(rng.integers(0, config.max_shift + 1)), int(rng.integers(0, config.max_shift + 1)))
        degraded = double_jpeg(clean, q1, q2, shift)
        clean = clean[shift[0] :, shift[1] :]
        # The QF the user would want to undo is the stronger (smaller) one.
        qf, is_double = min(q1, q2), True
    else:
        qf = config.single.sample(rng)
        degraded, shift, is_double = jpeg_roundtrip(clean, qf), (0, 0), False
    dy, dx = (int(v) for v in rng.integers(0, GRID, size=2))
    window = (slice(dy, dy + size), slice(dx, dx + size))
    return Sample(clean[window], degraded[window], qf, is_double, shift)


class PatchBatches(torch.utils.data.Dataset):
    """Map-style dataset whose item ``step`` is the whole batch for that training step."""

    def __init__(
        self,
        images: list[np.ndarray],
        *,
        patch_size: int,
        batch_size: int,
        degradation: DegradationConfig,
        seed: int,
        total_steps: int,
        label_control: float = 0.0,
        label_control_from_step: int = 0,
        color_augmentation: ColorAugmentation | None = None,
        downscale: Downscale | None = None,
        video: VideoDamage | None = None,
        video_pairs: Sequence = (),
    ) -> None:
        small = [i for i, im in enumerate(images) if min(im.shape[:2]) < patch_size + 3 * GRID]
        if small:
            raise ValueError(f"{len(small)} training images are smaller than the patch size plus margins")
        self.images = images
        self.patch_size = patch_size
        self.batch_size = batch_size
        self.degradation = degradation
        self.seed = seed
        self.total_steps = total_steps
        self.label_control = label_control
        self.label_control_from_step = label_control_from_step
        self.color_augmentation = color_augmentation if color_augmentation and color_augmentation.active else None
        self.downscale = downscale if downscale and downscale.active else None
        self.video = video if video and video.active else None
        if self.video and not video_pairs:
            raise ValueError("[data.video] is on but no video pairs were given")
        self.video_pairs = video_pairs
        self.gray = bool(images) and images[0].ndim == 2
        areas = np.array([im.shape[0] * im.shape[1] for im in images], dtype=np.float64)
        self.image_weights = areas / areas.sum()

    def __len__(self) -> int:
        return self.total_steps

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(step)])
        region = self.patch_size + 2 * GRID
        clean_batch, degraded_batch, qfs, doubles = [], [], [], []
        for _ in range(self.batch_size):
            if self.video and rng.random() < self.video.ratio:  # drawn only when configured, as below
                sample = video_sample(self.video_pairs, rng, self.patch_size, self.gray)
                clean_batch.append(sample.clean)
                degraded_batch.append(sample.degraded)
                qfs.append(sample.qf)
                doubles.append(sample.is_double)
                continue
            # Large images are drawn more often so every pixel is about equally likely.
            image = self.images[rng.choice(len(self.images), p=self.image_weights)]
            # The downscale and the chain are only drawn when configured, so runs without them keep
            # their exact batches.
            shrink = self.downscale.draw(rng) if self.downscale else 1.0
            chain_scale = None
            if self.degradation.chain_ratio and rng.random() < self.degradation.chain_ratio:
                chain_scale = float(rng.uniform(*self.degradation.chain_scale))
            # The side the region has before the chain's resize, and before that the source's side.
            before_chain = min(round(region / chain_scale), *image.shape[:2]) if chain_scale else region
            side = min(round(before_chain / shrink), *image.shape[:2])
            top = int(rng.integers(0, image.shape[0] - side + 1))
            left = int(rng.integers(0, image.shape[1] - side + 1))
            clean = resize_square(image[top : top + side, left : left + side], before_chain)
            clean = augment(clean, int(rng.integers(0, 8)))
            if self.color_augmentation:
                clean = self.color_augmentation.apply(clean, rng)
            if chain_scale:
                sample = degrade_chain(clean, rng, self.degradation, self.patch_size)
            else:
                sample = degrade_patch(clean, rng, self.degradation, self.patch_size)
            clean_batch.append(sample.clean)
            degraded_batch.append(sample.degraded)
            qfs.append(sample.qf)
            doubles.append(sample.is_double)
        batch = {
            "clean": _to_tensor(clean_batch),
            "degraded": _to_tensor(degraded_batch),
            "qf": torch.tensor(qfs, dtype=torch.float32),
            "double": torch.tensor(doubles, dtype=torch.bool),
        }
        if self.label_control and step >= self.label_control_from_step:
            # Drawn after the patches, so the patches of every step stay what they were without it.
            batch["use_label"] = torch.from_numpy(rng.random(self.batch_size) < self.label_control)
        return batch


def _to_tensor(patches: list[np.ndarray]) -> torch.Tensor:
    """NCHW uint8: a quarter of float32's bytes through the worker queue; the trainer scales on its device."""
    stack = np.stack([p if p.ndim == 3 else p[:, :, None] for p in patches])
    return torch.from_numpy(stack).permute(0, 3, 1, 2).contiguous()
