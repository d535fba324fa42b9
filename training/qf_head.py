"""Fit the strength head: the control that restores real degradation chains best.

The network's QF head was trained on single and double JPEGs, whose label is a quality
factor.  A photo compressed hard, resized and saved again at QF 90 then reads as ~80: the
head recognises the last save and barely sees the earlier damage, although the strength that
restores such a photo best is far lower (30-50).  What users need from ``predicted`` (and
``auto`` from its evidence) is the strength that restores the pixels best.

So the bundled colour model has a second head on the QF branch's pooled features, the *strength*
head (:meth:`~fbcnn_plugins.core.network.FBCNN.add_strength_head`), whose label is measured,
not assumed: every training patch goes through a random chain
from :mod:`fbcnn_plugins.training.chains` (the degradation model ``benchmarks/bench_chains.py``
scores ``auto`` on: single JPEG at 4:2:0 and 4:4:4, aligned and shifted double JPEG, JPEG ->
resize -> JPEG, never compressed), and is restored by the frozen network at a grid of QFs.
Its PSNR curve says which strength is best.  The strength head (three layers after the global
pooling, starting as a copy of the QF head's) is fitted on the pooled encoder features to
minimise the PSNR lost against each patch's best strength.  Nothing else changes: the QF head
still says which JPEG quality the damage looks like (``auto`` asks it whether an image was
compressed at all), and a fixed ``--qf`` restores exactly as before.

    python -m fbcnn_plugins.training.qf_head collect --out runs/qf-head/patches.npz --count 1600
    python -m fbcnn_plugins.training.qf_head fit --data runs/qf-head/patches.npz \\
        --out runs/qf-head/fbcnn-color-small.safetensors

``fit`` writes a copy of the bundled weights with the strength head, and its card says how.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from fbcnn_plugins.core.catalog import load_model
from fbcnn_plugins.core.drawn_content import flat_block_share
from fbcnn_plugins.core.qf_choice import HEAVIER_DAMAGE_MARGIN, STRENGTH_MARGIN
from fbcnn_plugins.core.metrics import psnr
from fbcnn_plugins.core.quality import qf_to_scalar, scalar_to_qf
from fbcnn_plugins.core.weights import LoadedModel, load_weights, save_weights
from fbcnn_plugins.training.chains import Degraded, custom_tables, double, rescaled, sharpened, single, untouched

from .data import list_images
from .drawn_images import drawn_image
from .strength_curves import QF_GRID, best_qf, header_of, load_patches

#: The folders of ``../shared/data/train`` the patches come from (never the validation images).
TRAIN_FOLDERS = ("bsds_train200", "bsds_val32", "t91", "urban36", "skimage", "debian_wallpapers")
#: Side of the degraded patches: the sizes ``auto`` sees, from icons to the tiles of photos.
PATCH_SIDES = (16, 24, 32, 48, 64, 96, 128, 192, 256)


@dataclass(frozen=True)
class ChainDraw:
    """One randomly drawn degradation: its family, its parameters, and what makes the input."""

    family: str
    params: tuple
    make: Callable[[np.ndarray, int], Degraded]


#: Chain families and how often each is drawn (re-saved and resized photos weigh most).  Gray
#: photos have no colour subsampling, so their draws leave the 4:4:4 and 4:2:2 families out.
FAMILIES = {"single": 0.2, "single444": 0.08, "single422": 0.05, "custom": 0.05, "sharpened": 0.07, "aligned": 0.07,
            "shifted": 0.1, "resized": 0.3, "clean": 0.08}
COLOR_ONLY_FAMILIES = ("single444", "single422")
#: Families drawn only when asked for (``--families``), with their weight among those asked for: a
#: single save of a generated drawn image (training/drawn_images.py), not of a training photo.
ASKED_FOR_FAMILIES = {"drawn": 0.2}


def draw_chain(rng: np.random.Generator, gray: bool = False, families: Sequence[str] | None = None) -> ChainDraw:
    """A chain in proportion to how often people meet it (:data:`FAMILIES`), from ``families`` when given."""
    names = [name for name in (families or FAMILIES) if not (gray and name in COLOR_ONLY_FAMILIES)]
    weights = np.array([FAMILIES.get(name, ASKED_FOR_FAMILIES.get(name, 0.0)) for name in names])
    family = str(rng.choice(names, p=weights / weights.sum()))
    if family == "drawn":
        quality = int(rng.integers(10, 99))
        return ChainDraw(family, (quality,), single(quality))
    if family in ("single", "single444", "single422"):
        quality = int(rng.integers(5, 99))
        subsampling = {"single": 2, "single444": 0, "single422": 1}[family]
        return ChainDraw(family, (quality,), single(quality, subsampling))
    if family == "custom":
        quality = int(rng.integers(30, 98))
        return ChainDraw(family, (quality,), custom_tables(quality))
    if family == "sharpened":
        quality, percent = int(rng.integers(75, 98)), int(rng.integers(30, 120))
        return ChainDraw(family, (quality, percent), sharpened(quality, percent))
    if family in ("aligned", "shifted"):
        first, second = int(rng.integers(5, 70)), int(rng.integers(50, 99))
        shift = (0, 0) if family == "aligned" else tuple(int(v) for v in rng.integers(0, 8, size=2))
        if shift == (0, 0) and family == "shifted":
            shift = (3, 5)
        return ChainDraw(family, (first, second, shift), double(first, second, shift))
    if family == "resized":
        first, second = int(rng.integers(5, 70)), int(rng.integers(70, 99))
        scale = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
        return ChainDraw(family, (first, round(scale, 3), second), rescaled(first, scale, second))
    return ChainDraw(family, (), untouched(None))


def random_region(image: np.ndarray, side: int, rng: np.random.Generator) -> np.ndarray:
    """A random square region of ``side`` px (the whole image when smaller), so a chain's centre crop varies."""
    height, width = image.shape[:2]
    top = int(rng.integers(0, max(1, height - side + 1)))
    left = int(rng.integers(0, max(1, width - side + 1)))
    return np.ascontiguousarray(image[top : top + side, left : left + side])


def as_tensor(pixels: np.ndarray) -> torch.Tensor:
    """An 8-bit HxW (gray) or HxWxC image as the network's 1xCxHxW input in [0, 1]."""
    planes = pixels[:, :, None] if pixels.ndim == 2 else pixels
    return torch.from_numpy(np.array(planes, dtype=np.float32)).permute(2, 0, 1)[None] / 255.0


@torch.inference_mode()
def pooled_features(network: torch.nn.Module, pixels: np.ndarray) -> np.ndarray:
    """The QF branch's pooled features of one image, as the restorer pools them for a small image."""
    tensor = as_tensor(pixels)
    feature_sum, count = network.quality_feature_sum(tensor)
    return (feature_sum[0] / count).numpy()


@torch.inference_mode()
def psnr_curve(network: torch.nn.Module, case: Degraded, grid: Sequence[int] = QF_GRID) -> np.ndarray:
    """PSNR against the reference of the input restored at every QF of ``grid`` (one encoder pass)."""
    encoded = network.encode_tile(as_tensor(case.pixels))
    values = []
    for quality in grid:
        control = torch.full((1, 1), qf_to_scalar(quality))
        restored = network.decode_tile(encoded, control)[0].clamp(0, 1).permute(1, 2, 0).numpy()
        restored = restored[:, :, 0] if case.reference.ndim == 2 else restored
        values.append(psnr(case.reference, np.rint(restored * 255.0).astype(np.uint8)))
    return np.array(values, dtype=np.float32)


def collect(model: LoadedModel, folders: Sequence[Path], count: int, seed: int, sides: Sequence[int] = PATCH_SIDES,
            log: Callable[[str], None] = lambda line: print(line, flush=True),
            save: Callable[[dict[str, np.ndarray]], None] | None = None, save_every: int = 25,
            grid: Sequence[int] = QF_GRID, families: Sequence[str] | None = None, min_last_save: float | None = None,
            bf16: bool = False) -> dict[str, np.ndarray]:
    """``count`` patches through random chains: pooled features, PSNR curves, what made them, the
    model's two readings of each (its QF estimate and its strength head's, with the sha256 of the
    weights that read them) and its flat-block share
    (:func:`~fbcnn_plugins.core.drawn_content.flat_block_share`).

    ``grid`` is where the curves are measured.  Above QF 80 a single save's curve peaks within a
    few QF, so on the default grid (80, 90, 100) a strength between grid points is scored by a
    straight line that can be off by 1 dB; choices between high QFs need a finer grid there
    (e.g. ``--grid 5 10 15 20 25 30 40 50 60 70 75 80 85 90 93 96 100``).  ``families`` limits
    the draws to some chain families, ``min_last_save`` to chains whose file header says at least
    that QF (what ``auto``'s heavier-damage rule decides on: training/heavier_damage.py), and
    ``bf16`` measures the curves in bfloat16, as the restorer does by default on CPUs with bf16
    instructions (twice as fast there, within 0.01 dB).  ``save`` gets what is gathered so far every ``save_every``
    patches, so a collection cut short on a busy machine still leaves its patches."""
    rng = np.random.default_rng(seed)
    gray = model.is_gray
    readings_by = str(model.card.get("sha256"))  # whose heads read the patches: a refitted head reads them anew
    network = model.network.float().eval()
    files = list_images(folders)
    features, curves, inputs, drawn_families, params, sizes, readings, flat_shares = [], [], [], [], [], [], [], []

    def gathered() -> dict[str, np.ndarray]:
        return {"features": np.stack(features), "curves": np.stack(curves), "psnr_in": np.array(inputs),
                "family": np.array(drawn_families), "params": np.array(params), "side": np.array(sizes),
                "quality_estimate": np.array([r[0] for r in readings]), "strength_estimate": np.array([r[1] for r in readings]),
                "flat_share": np.array(flat_shares), "grid": np.array(grid),
                "readings_sha256": np.array([readings_by] * len(features))}

    start = time.perf_counter()
    drawn = 0  # chains drawn, not counting those the header filter refuses
    while drawn < count:
        chain = draw_chain(rng, gray, families)
        side = int(rng.choice(sides))
        if min_last_save is not None and not header_of(chain.family, json.dumps(chain.params)) >= min_last_save:
            continue  # no header (NaN) or a lower last save: not a case for the rule being fitted
        drawn += 1
        if chain.family == "drawn":
            clean = drawn_image(rng, side + 16, side + 16)
            clean = np.asarray(Image.fromarray(clean).convert("L")) if gray else clean
        else:
            with Image.open(files[int(rng.integers(len(files)))]) as image:
                clean = np.asarray(image.convert("L" if gray else "RGB"))
        scale = chain.params[1] if chain.family == "resized" else 1.0
        region = random_region(clean, int(round(side / scale)) + 16, rng)
        case = chain.make(region, side)
        if min(case.pixels.shape[:2]) < min(sides):
            continue
        features.append(pooled_features(network, case.pixels))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            curves.append(psnr_curve(network, case, grid))
        inputs.append(psnr(case.reference, case.pixels))
        drawn_families.append(chain.family)
        params.append(json.dumps(chain.params))
        sizes.append(min(case.pixels.shape[:2]))
        readings.append((float(predict_quality(network, features[-1][None])[0]), float(predict(network, features[-1][None])[0])))
        flat_shares.append(flat_block_share(case.pixels))
        if drawn % save_every == 0:
            log(f"{drawn}/{count} patches, {time.perf_counter() - start:.0f} s")
            if save is not None:
                save(gathered())
    return gathered()


def regret(curves: torch.Tensor, qfs: torch.Tensor, grid: Sequence[int] = QF_GRID) -> torch.Tensor:
    """PSNR lost against each curve's best when restoring at ``qfs`` (linear between grid points)."""
    grid = [int(qf) for qf in grid]
    grid_t = torch.tensor(grid, dtype=curves.dtype)
    qfs = qfs.clamp(grid[0], grid[-1])
    upper = torch.searchsorted(grid_t, qfs.detach()).clamp(1, len(grid) - 1)
    lower = upper - 1
    weight = (qfs - grid_t[lower]) / (grid_t[upper] - grid_t[lower])
    at = torch.gather(curves, 1, lower[:, None])[:, 0] * (1 - weight) + torch.gather(curves, 1, upper[:, None])[:, 0] * weight
    return curves.max(dim=1).values - at


def head_layers(network: torch.nn.Module) -> torch.nn.Sequential:
    """The strength head (added as a copy of the QF head's last layers when missing): what this module fits."""
    if not network.has_strength_head:
        network.add_strength_head()
    return network.strength_pred


def fit_head(network: torch.nn.Module, features: np.ndarray, curves: np.ndarray, *, steps: int = 3000,
             lr: float = 3e-4, label_weight: float = 0.02, seed: int = 0, grid: Sequence[int] = QF_GRID) -> list[float]:
    """Fit the head (in place) to minimise the regret, with a small pull towards each patch's best QF
    (``curves`` measured at the QFs of ``grid``).

    The regret alone is flat wherever a curve is flat (a clean image restores alike at 90-100),
    so the pull keeps such predictions where the curve peaks instead of drifting.
    """
    torch.manual_seed(seed)
    head = head_layers(network).float().train()
    inputs = torch.from_numpy(features).float()
    curve_t = torch.from_numpy(curves).float()
    target = torch.from_numpy(best_qf(curves, grid)).float()
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    history = []
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        batch = torch.randint(0, len(inputs), (256,), generator=generator)
        qfs = (1 - head(inputs[batch])[:, 0]) * 100
        loss = regret(curve_t[batch], qfs, grid).mean() + label_weight * (qfs - target[batch]).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 500 == 0 or step == steps - 1:
            history.append(float(loss.detach()))
    head.eval()
    return history


@torch.no_grad()  # not inference_mode: the strength head may be created here, and is trained afterwards
def predict(network: torch.nn.Module, features: np.ndarray) -> np.ndarray:
    q = head_layers(network)(torch.from_numpy(features).float())[:, 0].numpy()
    return np.array([scalar_to_qf(float(v)) for v in q])


@torch.no_grad()
def predict_quality(network: torch.nn.Module, features: np.ndarray) -> np.ndarray:
    """The QF head's estimate (what ``auto`` calls the QF estimate) from the same pooled features."""
    q = network.quality_from_features(torch.from_numpy(features).float())[:, 0].numpy()
    return np.array([scalar_to_qf(float(v)) for v in q])


def rule_three_report(data: dict[str, np.ndarray], strength: np.ndarray, quality: np.ndarray, rows: np.ndarray,
                      strength_margin: float, quality_margin: float, high_save: float = 80, min_side: int = 64,
                      ) -> dict[str, dict[str, float]]:
    """What ``auto``'s rule 3 costs on the rows given, per chain family: among patches whose last save
    was at least ``high_save`` (and at least ``min_side`` px), the mean PSNR lost (dB) against each
    patch's best strength when restoring at the header, at the strength where it is ``strength_margin``
    or more below the header (the strength alone), and there only when the QF estimate is also
    ``quality_margin`` or more below it (both heads)."""
    headers = np.array([header_of(f, p) for f, p in zip(data["family"], data["params"])])
    rows = rows[(np.nan_to_num(headers[rows], nan=0.0) >= high_save) & (data["side"][rows] >= min_side)]
    curves = torch.from_numpy(data["curves"][rows]).float()
    header, strength, quality = headers[rows], strength[rows], quality[rows]
    alone = np.where(header - strength >= strength_margin, strength, header)
    both = np.where((header - strength >= strength_margin) & (header - quality >= quality_margin), strength, header)
    lost = {name: regret(curves, torch.from_numpy(qfs).float(), data["grid"]).numpy()
            for name, qfs in (("header", header), ("strength_alone", alone), ("strength_and_qf_estimate", both))}
    out = {}
    for family in sorted(set(data["family"][rows])):
        mask = data["family"][rows] == family
        out[family] = {"patches": int(mask.sum()), **{f"{name}_db": float(v[mask].mean()) for name, v in lost.items()}}
    return out


def report(data: dict[str, np.ndarray], predicted: np.ndarray, rows: np.ndarray) -> dict[str, dict[str, float]]:
    """Per chain family, on the rows given: mean regret (dB) of the prediction and of the header QF,
    the mean best and predicted QF, and the spread of prediction minus header (what ``auto``'s
    margins are set from)."""
    curves = torch.from_numpy(data["curves"][rows]).float()
    lost = regret(curves, torch.from_numpy(predicted[rows]).float(), data["grid"]).numpy()
    headers = np.array([header_of(f, p) for f, p in zip(data["family"][rows], data["params"][rows])])
    lost_header = regret(curves, torch.from_numpy(np.nan_to_num(headers, nan=100.0)).float(), data["grid"]).numpy()
    best = best_qf(data["curves"][rows], data["grid"])
    out = {}
    for family in sorted(set(data["family"][rows])):
        mask = data["family"][rows] == family
        gap = predicted[rows][mask] - headers[mask]
        out[family] = {"patches": int(mask.sum()), "regret_db": float(lost[mask].mean()),
                       "header_regret_db": float(lost_header[mask].mean()),
                       "best_qf": float(best[mask].mean()), "predicted_qf": float(predicted[rows][mask].mean())}
        if family != "clean":
            out[family]["predicted_minus_header_p5_p50_p95"] = [float(v) for v in np.percentile(gap, [5, 50, 95])]
    return out


def bundled_model(gray: bool = False) -> LoadedModel:
    """A fresh copy of the installed colour or gray model (not the shared cached one: its head gets trained)."""
    return load_weights(load_model(None, gray=gray).source)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    gather = sub.add_parser("collect", help="degrade training patches and measure their PSNR curves")
    gather.add_argument("--out", type=Path, required=True)
    gather.add_argument("--count", type=int, default=1600)
    gather.add_argument("--seed", type=int, default=20261202)
    gather.add_argument("--train-root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "train")
    gather.add_argument("--threads", type=int, default=2)
    gather.add_argument("--sides", type=int, nargs="+", default=list(PATCH_SIDES), help="patch sides drawn from")
    gather.add_argument("--gray", action="store_true", help="the bundled gray model, on gray patches")
    gather.add_argument("--grid", type=int, nargs="+", default=list(QF_GRID), help="QFs the PSNR curves are measured at")
    gather.add_argument("--families", nargs="+", choices=[*FAMILIES, *ASKED_FOR_FAMILIES], help="only these chain families")
    gather.add_argument("--min-last-save", type=float, help="only chains whose file header says at least this QF")
    gather.add_argument("--bf16", action="store_true", help="measure the PSNR curves in bfloat16 (CPU autocast)")
    fit = sub.add_parser("fit", help="fit the QF head on collected patches and write the weights")
    fit.add_argument("--data", type=Path, nargs="+", required=True)
    fit.add_argument("--out", type=Path, required=True)
    fit.add_argument("--steps", type=int, default=3000)
    fit.add_argument("--holdout", type=float, default=0.2, help="share of patches kept out to report on")
    fit.add_argument("--gray", action="store_true", help="fit the bundled gray model's head (on gray patches)")
    args = parser.parse_args(argv)
    model = bundled_model(args.gray)
    if args.command == "collect":
        torch.set_num_threads(args.threads)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        data = collect(model, [args.train_root / name for name in TRAIN_FOLDERS], args.count, args.seed, args.sides,
                       save=lambda partial: np.savez_compressed(args.out, **partial), grid=sorted(set(args.grid)),
                       families=args.families, min_last_save=args.min_last_save, bf16=args.bf16)
        np.savez_compressed(args.out, **data)
        print(f"wrote {len(data['curves'])} patches to {args.out}")
        return
    try:
        data = load_patches(args.data, log=print)
    except ValueError as error:
        raise SystemExit(f"qf_head: {error}") from None
    grid = tuple(int(qf) for qf in data["grid"])
    rng = np.random.default_rng(0)
    order = rng.permutation(len(data["curves"]))
    held = order[: int(len(order) * args.holdout)]
    kept = order[len(held) :]
    network = copy.deepcopy(model.network).float()
    before = predict(network, data["features"])
    fit_head(network, data["features"][kept], data["curves"][kept], steps=args.steps, grid=grid)
    after = predict(network, data["features"])
    summary = {"held_out_before": report(data, before, held), "held_out_after": report(data, after, held),
               "rule_3_held_out": rule_three_report(data, after, predict_quality(network, data["features"]), held,
                                                    STRENGTH_MARGIN, HEAVIER_DAMAGE_MARGIN)}
    print(json.dumps(summary, indent=1))
    # The held-out patches only measured the fit; the shipped head is fitted on all of them.
    network = copy.deepcopy(model.network).float()
    fit_head(network, data["features"], data["curves"], steps=args.steps, grid=grid)
    summary["patches"] = int(len(order))
    (args.data[0].parent / "qf_head_report.json").write_text(json.dumps(summary, indent=1))  # beside the data, not the weights
    save_qf_head_weights(model, network, args.out, summary)
    dropped = sorted(set(model.card.get("strength_head") or {}) & set(HEAD_DEPENDENT_FITS))
    if dropped:
        print(f"{args.out}: the previous head's {', '.join(dropped)} were fitted on its readings and are left out; "
              f"fit them again on this head's (single_saves --family drawn, heavier_damage)")


def save_qf_head_weights(model: LoadedModel, network: torch.nn.Module, out: Path, summary: dict) -> Path:
    """The bundled weights plus the fitted strength head, and a card saying how (``with_strength_head``)."""
    return with_strength_head(model, network, out, {
        "recipe": "a strength head (a copy of the QF head's last three layers) fitted to each patch's best "
                  "measured strength (PSNR curves over QF 5..100 of random degradation chains; training/qf_head.py)",
        "command": "python -m fbcnn_plugins.training.qf_head fit",
        "data": [f"../shared/data/train/{name}" for name in TRAIN_FOLDERS],
        "patches": summary.get("patches"),
        "held_out": summary.get("held_out_after"),
        "held_out_before": summary.get("held_out_before"),
        "rule_3_held_out": summary.get("rule_3_held_out"),
    })


#: Fits in a card's ``strength_head`` that a new head leaves valid: the single-save table is measured
#: from PSNR curves and save QFs alone (training/single_saves.py).  The drawn-save rule and the
#: heavier-damage margins are chosen on the head's readings, so a refitted head drops them until
#: they are fitted again on its readings.
HEAD_INDEPENDENT_FITS = ("single_save_strength", "single_save_fit")
HEAD_DEPENDENT_FITS = ("drawn_save_strength", "drawn_quality_margin", "drawn_strength_share", "drawn_flat_share",
                       "drawn_strength_pull", "drawn_save_fit", "heavier_damage_margins", "heavier_damage_fit")


def with_strength_head(model: LoadedModel, network: torch.nn.Module, out: Path, record: dict) -> Path:
    """``model``'s weights with ``network``'s strength head, at the model's precision, its card plus ``record``.

    Every other tensor is the model's own (fp16 -> fp32 -> fp16 is exact), so restoring and the QF
    estimate are unchanged; the card keeps the network's training history and adds the head's,
    with the sha256 of the weights it was added to, and keeps the :data:`HEAD_INDEPENDENT_FITS` of
    the previous head's record.
    """
    card = dict(model.card)
    dtype = getattr(torch, card.get("dtype", "float16"))
    extra = {key: value for key, value in card.items()
             if key not in {"format", "name", "config", "in_channels", "color", "qf_convention", "dtype", "sha256"}}
    previous = card.get("strength_head") or {}
    kept = {key: previous[key] for key in HEAD_INDEPENDENT_FITS if key in previous}
    extra["strength_head"] = {**record, **kept, "added_to_sha256": card.get("sha256")}
    return save_weights(network, out, model.config, name=model.name, dtype=dtype, extra=extra)


if __name__ == "__main__":
    main()
