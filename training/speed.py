"""Training speed of a network per precision (fp32 against bf16 autocast) on this machine.

    python -m fbcnn_plugins.training.speed [--config small] [--threads 1] [--batch 16] [--patch 96]

Whether bf16 autocast pays for training depends on the CPU (native on AVX-512-BF16 / AMX,
emulated and slower elsewhere), so the choice is measured, not assumed: the same fixed batches
(real patches and real libjpeg degradations of ``--images``), the same initial weights, the two
precisions alternated over two rounds so a busy machine slows both alike. It prints patches/s
and the losses of each step (bf16 should follow fp32's), then the ratio of the best rounds.
"""

from __future__ import annotations

import argparse
import time

import torch

from fbcnn_plugins.core.configs import create_network

from .data import DegradationConfig, PatchBatches, list_images, load_training_image
from .trainer import prepare_batch, training_loss


def measure(config: str, batches: list[dict[str, torch.Tensor]], precision: str, steps: int) -> tuple[float, list[float]]:
    torch.manual_seed(0)
    network = create_network(config, batches[0]["clean"].shape[1]).train()
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-4)
    seconds, losses = [], []
    for step in range(steps + 2):  # the first two steps warm the allocator and the kernels up
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss, _ = training_loss(network, batches[step % len(batches)], 0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seconds.append(time.perf_counter() - started)
        losses.append(float(loss.detach()))
    patches = batches[0]["clean"].shape[0] * steps
    return patches / sum(seconds[2:]), losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="small")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=96)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--images", default="../shared/data/train/bsds_val32")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = [load_training_image(path, False) for path in list_images([args.images])]
    data = PatchBatches(images, patch_size=args.patch, batch_size=args.batch, seed=1, total_steps=4,
                        degradation=DegradationConfig(double_ratio=0.25))
    batches = [prepare_batch(data[step]) for step in range(4)]
    best: dict[str, float] = {}
    for _ in range(2):
        for precision in ("fp32", "bf16"):
            rate, losses = measure(args.config, batches, precision, args.steps)
            best[precision] = max(best.get(precision, 0.0), rate)
            print(f"{precision}: {rate:.2f} patches/s, losses {' '.join(f'{v:.4f}' for v in losses)}", flush=True)
    print(f"{args.config}, batch {args.batch} x {args.patch}px, {args.threads} thread(s): "
          f"bf16/fp32 = {best['bf16'] / best['fp32']:.2f}")


if __name__ == "__main__":
    main()
