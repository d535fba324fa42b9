"""Shared fixtures: real images, real JPEG encoding, small real networks."""

from __future__ import annotations

import io
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fbcnn_plugins.core.configs import NetworkConfig, get_config, state_dict_shapes
from fbcnn_plugins.core.torch_extra import torch_installed
from fbcnn_plugins.core.weights import LoadedModel, load_weights, save_weights

REPO = Path(__file__).resolve().parents[1]
#: The team data beside the project.  FBCNN_SHARED_DIR points elsewhere; a path that does not exist
#: hides it, which is how CI checks that a fresh clone with nothing beside it passes.
SHARED = Path(os.environ.get("FBCNN_SHARED_DIR") or REPO.parent / "shared")
SHARED_VAL = SHARED / "data" / "val"

#: Tests of the parts that need PyTorch (the torch extra: training, export, the PyTorch engine, .pth files).
needs_torch = pytest.mark.skipif(not torch_installed(), reason="needs PyTorch (pip install 'fbcnn-plugins[torch]')")

needs_shared = pytest.mark.skipif(
    not SHARED_VAL.is_dir(),
    reason=f"team data not found at {SHARED_VAL} (set FBCNN_SHARED_DIR, or put it at ../shared)",
)

#: scikit-image's bundled photos (installed with it, no download): the real photos tests use when
#: the team data is absent.  Colour photos only; the gray ones are a channel of these.
SAMPLE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


@lru_cache(maxsize=None)
def _photo(source: str, index: int) -> np.ndarray:
    if source == "shared":
        files = sorted(SHARED_VAL.rglob("*.png"))
        with Image.open(files[index % len(files)]) as im:
            return np.asarray(im.convert("RGB"))
    import skimage.data

    return getattr(skimage.data, SAMPLE_PHOTOS[index % len(SAMPLE_PHOTOS)])()


def _centre(array: np.ndarray, height: int, width: int) -> np.ndarray | None:
    if array.shape[0] < height or array.shape[1] < width:
        return None
    top, left = (array.shape[0] - height) // 2, (array.shape[1] - width) // 2
    return np.ascontiguousarray(array[top : top + height, left : left + width])


def natural_image(height: int = 96, width: int = 128, seed: int = 0) -> np.ndarray:
    """A real RGB uint8 photo crop: from ../shared/data/val when present, else scikit-image's samples.

    A synthetic photo-like image (shading, edges, texture) is the last resort for sizes no
    sample covers.
    """
    if SHARED_VAL.is_dir():
        crop = _centre(_photo("shared", seed), height, width)
        if crop is not None:
            return crop
    for step in range(len(SAMPLE_PHOTOS)):  # the seed's sample, else the next one large enough
        crop = _centre(_photo("skimage", seed + step), height, width)
        if crop is not None:
            return crop
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([128 + 60 * np.sin(x / 9), 100 + y, 200 - x / 2], axis=2)
    base[(x - width / 2) ** 2 + (y - height / 2) ** 2 < (height / 4) ** 2] = (240, 40, 60)
    return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)


def pillow_jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """Compress through Pillow's libjpeg and decode again."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return np.asarray(Image.open(buffer))


def random_tensors(config: NetworkConfig, channels: int, seed: int) -> dict[str, np.ndarray]:
    """A state dict drawn as PyTorch's default initialisation draws it (uniform in +-1/sqrt(fan-in)), in numpy."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for key, shape in state_dict_shapes(config, channels).items():
        weight = shape if key.endswith(".weight") else state_dict_shapes(config, channels)[key.replace(".bias", ".weight")]
        fan_in = int(np.prod(weight[1:]))
        tensors[key] = rng.uniform(-1, 1, shape).astype(np.float32) / np.sqrt(fan_in)
    return tensors


def saved_random_model(folder: Path, channels: int, seed: int) -> LoadedModel:
    """A randomly initialised 'tiny' network written and read back through our weights format."""
    path = folder / f"tiny-{channels}ch.safetensors"
    save_weights(random_tensors(get_config("tiny"), channels, seed), path, get_config("tiny"), dtype="float32")
    return load_weights(path)


@pytest.fixture(scope="session")
def tiny_color_model(tmp_path_factory) -> LoadedModel:
    return saved_random_model(tmp_path_factory.mktemp("weights"), 3, seed=0)


@pytest.fixture(scope="session")
def tiny_gray_model(tmp_path_factory) -> LoadedModel:
    return saved_random_model(tmp_path_factory.mktemp("weights"), 1, seed=1)


@pytest.fixture(scope="session")
def bundled_color_model() -> LoadedModel:
    """The shipped colour model (part of the package: its absence is a failure, not a skip)."""
    from fbcnn_plugins.core.catalog import load_model

    return load_model(None, gray=False)


def clip_from_arrays(arrays: list[np.ndarray], fmt=None, *, fpsnum: int = 24):
    """A real VapourSynth clip whose frame n holds arrays[n] (HxWxC planes in the format's sample type)."""
    import vapoursynth as vs

    height, width = arrays[0].shape[:2]
    blank = vs.core.std.BlankClip(width=width, height=height, format=fmt or vs.RGB24, length=len(arrays),
                                  fpsnum=fpsnum)

    def fill(n, f):
        out = f.copy()
        for p in range(out.format.num_planes):
            np.copyto(np.asarray(out[p]), arrays[n][:, :, p] if arrays[n].ndim == 3 else arrays[n])
        return out

    return vs.core.std.ModifyFrame(blank, blank, fill)
