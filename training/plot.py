"""A picture of a run: training loss and validation PSNR gain over steps."""

from __future__ import annotations

from pathlib import Path

from .trainer import read_log


def plot_run(run_dir: str | Path, out: str | Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # matplotlib is the optional "plot" extra
        raise SystemExit("plotting needs matplotlib: pip install 'fbcnn-plugins[plot]'") from None
    records = read_log(run_dir)
    train = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val"]
    if not train:
        raise SystemExit(f"{run_dir}: no training log to plot")
    figure, (loss_axis, val_axis) = plt.subplots(1, 2, figsize=(11, 4))
    loss_axis.plot([r["step"] for r in train], [r["l1"] for r in train], lw=0.8)
    loss_axis.set_yscale("log")
    loss_axis.set(xlabel="step", ylabel="L1 (image)", title="training loss")
    for qf in (val[0]["val"] if val else {}):
        val_axis.plot([r["step"] for r in val], [r["val"][qf]["gain"] for r in val], marker="o", label=f"QF {qf}")
    val_axis.set(xlabel="step", ylabel="PSNR gain over JPEG (dB)", title="validation")
    if val:
        val_axis.legend()
    val_axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out, dpi=100)
