"""Put a GPU window's returned files in place, checked.

    python -m fbcnn_plugins.training.gpu_collect /work/.device/.../files   # into training/gpu_runs/

For each card among the returned files that names weight parts, every part's sha256 and the
joined file's are checked against the card, then the weights' 8-bit starting point
(``NAME.start.safetensors``, training/start_weights.py: half the bytes, which the next window's
data pack gets), the card and the window's ``report.json`` (as ``NAME.report.json``) are written
into ``--into``, the folder the next window starts from.  ``--keep-weights`` also keeps the fp16
weights themselves (``NAME.safetensors``), for a window whose model is to ship.  Nothing is
written unless every check passes.  First the bundled weights set aside for the window
(training/window_tree.py) go back into git's index, so the commit that follows holds them as before.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from fbcnn_plugins.core.atomic import atomic_target
from fbcnn_plugins.core.model_card import WeightsError, read_card

from .gpu_run import HISTORY_DIR, REPORT
from .start_weights import start_path, write_start_weights
from .weight_parts import join_weights, verified_parts
from .window_tree import put_back


def returned_cards(folder: Path) -> list[Path]:
    """The cards in ``folder`` that name weight parts (report.json and other JSON files are not cards)."""
    cards = []
    for path in sorted(folder.glob("*.json")):
        try:
            if read_card(path).get("parts"):
                cards.append(path)
        except WeightsError:
            continue
    return cards


def collect(folder: Path, into: Path, *, keep_weights: bool = False) -> list[Path]:
    """Check and place the returned weights; returns the cards written (``NAME.json``)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: returned-files folder not found")
    cards = returned_cards(folder)
    if not cards:
        raise FileNotFoundError(f"{folder}: no weights card naming parts (NAME.json beside NAME.sSTEP.partN)")
    for card in cards:  # every check before anything is written
        verified_parts(card)
    placed = []
    for card in cards:
        with tempfile.TemporaryDirectory(prefix="fbcnn-collect-") as scratch:
            joined = join_weights(card, into if keep_weights else Path(scratch))
            write_start_weights(joined, start_path(into, card.stem))
            if not keep_weights:
                shutil.copyfile(joined.with_suffix(".json"), into / f"{card.stem}.json")
        placed.append(into / f"{card.stem}.json")
        report = folder / REPORT
        if report.is_file():
            json.loads(report.read_text())  # a damaged report is an error, not a file to commit
            with atomic_target(into / f"{card.stem}.report.json") as tmp:
                shutil.copyfile(report, tmp)
    return placed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="the folder the GPU window's files were returned into")
    parser.add_argument("--into", type=Path, default=HISTORY_DIR, help=f"where the weights go (default: {HISTORY_DIR})")
    parser.add_argument("--keep-weights", action="store_true",
                        help="keep the fp16 weights beside their 8-bit starting point (a model to ship)")
    args = parser.parse_args(argv)
    try:
        restored = put_back(Path.cwd())
    except (OSError, subprocess.CalledProcessError):
        restored = []  # not run from a git checkout: nothing was set aside here
    if restored:
        print(f"put back into git's index (set aside for the window): {', '.join(restored)}")
    try:
        placed = collect(args.folder, args.into, keep_weights=args.keep_weights)
    except (FileNotFoundError, WeightsError, ValueError) as error:
        print(f"gpu_collect: {error}", file=sys.stderr)
        return 2
    for path in placed:
        card = read_card(path)
        run = card.get("training", {}).get("gpu_run", {})
        print(f"{path.with_suffix('')}: sha256 {card['sha256'][:16]}... checked; window {run.get('index', 0) + 1} of {run.get('planned', '?')}, "
              f"{card.get('training', {}).get('steps')} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
