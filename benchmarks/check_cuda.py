"""The CUDA path against the CPU, and its speed (a check for a GPU machine, not a test).

CI has no GPU, so the tests never need one; run this script on a GPU machine
to check that the same weights give the same pixels there.  It
restores the bundled example on the CPU (fp32) and on CUDA in fp32, bf16 and
fp16, reports how far each is from the CPU result, times a 12 MP photo at
the default tile size, and compares tiled with whole-image output on the GPU.

    python benchmarks/check_cuda.py                          # the bundled colour model
    python benchmarks/check_cuda.py --model path/to/weights.safetensors
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fbcnn_plugins.core.catalog import load_model
from fbcnn_plugins.core.metrics import psnr
from fbcnn_plugins.core.restorer import Restorer

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "blocky.jpg"


def photo_of(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """The example tiled up to a photo size: big enough to time, real JPEG content throughout."""
    reps = (-(-height // image.shape[0]), -(-width // image.shape[1]), 1)
    return np.ascontiguousarray(np.tile(image, reps)[:height, :width])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="weights file or registered name (default: the bundled colour model)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("check_cuda: this PyTorch sees no CUDA GPU", file=sys.stderr)
        return 2
    model = load_model(args.model, gray=False)
    image = np.asarray(Image.open(EXAMPLE).convert("RGB"))
    print(f"{model.name} on {torch.cuda.get_device_name(0)}, example {image.shape[1]}x{image.shape[0]}")
    cpu = Restorer(model, device="cpu", precision="fp32", backend="pytorch").restore(image)
    print(f"cpu fp32: predicted QF {cpu.qf.predicted:.2f}")
    for precision in ("fp32", "bf16", "fp16"):
        result = Restorer(model, device="cuda", precision=precision).restore(image)
        diff = np.abs(result.image.astype(np.int16) - cpu.image.astype(np.int16))
        print(
            f"cuda {precision}: predicted QF {result.qf.predicted:.2f}, max |diff| {diff.max()} levels, "
            f"PSNR against the CPU output {psnr(cpu.image, result.image):.2f} dB"
        )
    photo = photo_of(image, 3000, 4000)
    for precision in ("fp32", "bf16"):
        restorer = Restorer(model, device="cuda", precision=precision)
        restorer.restore(photo[:512, :512], qf=30)  # warm-up: cuDNN picks its kernels
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
        started = time.perf_counter()
        restorer.restore(photo, qf=30)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        peak = torch.cuda.max_memory_allocated() / 2**20
        print(f"cuda {precision} 12 MP: {seconds:.2f} s ({12 / seconds:.1f} MP/s), peak GPU memory {peak:.0f} MiB")
    crop = photo[:1024, :1024]
    whole = Restorer(model, device="cuda", tile=4096).restore(crop, qf=30).image
    tiled = Restorer(model, device="cuda", tile=256).restore(crop, qf=30).image
    print(f"cuda tile 256 against whole image (1024x1024): {psnr(whole, tiled):.2f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
