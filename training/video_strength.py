"""Fit the video model's strength head: the control that restores each decoded frame best.

The video model's QF head reads codec damage on JPEG's scale (its training label is the JPEG
quality of equal damage, see ``data.VideoDamage``).  Equal damage is not equal cure: H.264's
in-loop deblocking leaves blur that a JPEG-strength restoration can over- or under-treat.  So,
as for photos (``qf_head.py``), a strength head is fitted to what is measured: crops of decoded
frames from the video training pairs are restored by the frozen video model at a grid of
strengths, and the head learns, from the pooled encoder features, the strength whose PSNR is
best.  Nothing else in the weights changes.

    python -m fbcnn_plugins.training.video_strength --pairs runs/video-pairs --count 1200 \\
        --model fbcnn_plugins/models/fbcnn-color-video-small.safetensors --out runs/video-strength/model.safetensors
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from fbcnn_plugins.core.metrics import psnr
from fbcnn_plugins.core.weights import LoadedModel, load_weights

from .chains import Degraded
from .qf_head import QF_GRID, best_qf, fit_head, pooled_features, predict, psnr_curve, with_strength_head
from .video_pairs import ClipPair, load_pairs

#: Crop sides: the tiles and small frames the filter pools its estimate over.
CROP_SIDES = (96, 128, 192, 256)


def collect(model: LoadedModel, pairs: Sequence[ClipPair], count: int, seed: int) -> dict[str, np.ndarray]:
    """``count`` decoded crops: pooled features, PSNR curves over ``QF_GRID``, codec and PSNR of the input."""
    rng = np.random.default_rng(seed)
    network = model.network.float().eval()
    gray = model.is_gray
    features, curves, codecs, inputs = [], [], [], []
    start = time.perf_counter()
    for index in range(count):
        pair = pairs[int(rng.integers(len(pairs)))]
        clean_frames, decoded_frames = (pair.clean_y, pair.decoded_y) if gray else (pair.clean, pair.decoded)
        t = int(rng.integers(clean_frames.shape[0]))
        side = min(int(rng.choice(CROP_SIDES)), *clean_frames.shape[1:3])
        top = int(rng.integers(0, clean_frames.shape[1] - side + 1))
        left = int(rng.integers(0, clean_frames.shape[2] - side + 1))
        window = (t, slice(top, top + side), slice(left, left + side))
        case = Degraded(_channels_last(decoded_frames[window]), _channels_last(clean_frames[window]))
        features.append(pooled_features(network, case.pixels))
        curves.append(psnr_curve(network, case))
        codecs.append(pair.encoding.codec)
        inputs.append(psnr(case.reference, case.pixels))
        if (index + 1) % 100 == 0:
            print(f"{index + 1}/{count} crops, {time.perf_counter() - start:.0f} s", flush=True)
    return {"features": np.stack(features), "curves": np.stack(curves), "codec": np.array(codecs),
            "psnr_in": np.array(inputs), "grid": np.array(QF_GRID)}


def _channels_last(pixels: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(pixels if pixels.ndim == 3 else pixels[:, :, None])


def regret_by_codec(data: dict[str, np.ndarray], predicted: np.ndarray, rows: np.ndarray) -> dict[str, float]:
    """Mean PSNR lost against each crop's best strength, per codec, on ``rows``."""
    grid = np.asarray(QF_GRID, dtype=np.float64)
    lost = {}
    for codec in sorted(set(data["codec"][rows])):
        chosen = rows[data["codec"][rows] == codec]
        at = np.array([np.interp(predicted[i], grid, data["curves"][i]) for i in chosen])
        lost[str(codec)] = round(float(np.mean(data["curves"][chosen].max(axis=1) - at)), 3)
    return lost


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=Path, required=True, help="folder of video training pairs (video_pairs.py)")
    parser.add_argument("--model", type=Path, required=True, help="the video model's weights (.safetensors)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--count", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=20261204)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_weights(args.model)
    data = collect(model, load_pairs(args.pairs), args.count, args.seed)
    order = np.random.default_rng(0).permutation(len(data["curves"]))
    held, kept = order[: len(order) // 5], order[len(order) // 5 :]
    network = copy.deepcopy(model.network).float()
    quality_head = np.array([float(v) for v in predict_quality(network, data["features"])])
    fit_head(network, data["features"][kept], data["curves"][kept], steps=args.steps)
    summary = {
        "crops": int(len(order)),
        "held_out_lost_db_quality_head": regret_by_codec(data, quality_head, held),
        "held_out_lost_db_strength_head": regret_by_codec(data, predict(network, data["features"]), held),
        "median_best_strength": {str(c): float(np.median(best_qf(data["curves"][data["codec"] == c])))
                                 for c in sorted(set(data["codec"]))},
    }
    print(json.dumps(summary, indent=1))
    network = copy.deepcopy(model.network).float()  # the shipped head is fitted on every crop
    fit_head(network, data["features"], data["curves"], steps=args.steps)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with_strength_head(model, network, args.out, {
        "recipe": "a strength head fitted to each decoded crop's best measured strength (PSNR curves over "
                  "QF 5..100 of MPEG-2/H.264/HEVC/MJPEG frames of the video training pairs; training/video_strength.py)",
        "command": "python -m fbcnn_plugins.training.video_strength",
        **summary,
    })
    print(f"wrote {args.out}")
    return 0


@torch.no_grad()
def predict_quality(network: torch.nn.Module, features: np.ndarray) -> list[float]:
    """What the QF head says for each crop: the control the filter would use without a strength head."""
    from fbcnn_plugins.core.quality import scalar_to_qf

    values = network.quality_from_features(torch.from_numpy(features).float())
    return [scalar_to_qf(float(v)) for v in values.reshape(-1)]


if __name__ == "__main__":
    raise SystemExit(main())
