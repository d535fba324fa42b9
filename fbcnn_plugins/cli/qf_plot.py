"""A picture of the FBCNN-D evidence: re-compression MSE against QF for the telling grid shifts."""

from __future__ import annotations

from pathlib import Path

from fbcnn_plugins.core.atomic import atomic_target
from fbcnn_plugins.core.qf_estimation import QUALITIES, DominantQF


def plot_curves(estimate: DominantQF, out: str | Path, title: str = "", shown: int = 4) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("plotting needs matplotlib: pip install 'fbcnn-plugins[plot]'") from None
    # The aligned grid, the chosen shift, and the shifts with the lowest first minima.
    ranked = sorted(estimate.minima, key=lambda s: estimate.minima[s][1])
    shifts = list(dict.fromkeys([(0, 0), *([estimate.shift] if estimate.shift else []), *ranked]))[:shown]
    figure, axis = plt.subplots(figsize=(7, 4))
    for shift in shifts:
        # Shifted grids are measured on their lowest frequencies only (see qf_estimation).
        scope = "all coefficients" if shift == (0, 0) else "low frequencies"
        axis.plot(QUALITIES, estimate.curves[shift], lw=1, label=f"shift {shift} ({scope})")
        if shift in estimate.minima:
            quality, mse = estimate.minima[shift]
            axis.plot([quality], [mse], "o", color=axis.lines[-1].get_color())
    if estimate.quality is not None and estimate.mse is not None:
        axis.annotate(f"dominant QF {estimate.quality}", (estimate.quality, estimate.mse), xytext=(10, 20),
                      textcoords="offset points", arrowprops={"arrowstyle": "->"})
    axis.set(xlabel="re-compression QF", ylabel="MSE", yscale="log", title=title)
    axis.legend()
    figure.tight_layout()
    out = Path(out)
    with atomic_target(out) as temporary:  # a failed or stopped plot leaves the old file
        figure.savefig(temporary, dpi=100, format=out.suffix.lstrip(".").lower() or "png")
    plt.close(figure)
