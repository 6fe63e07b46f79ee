"""Report figures, each saved as PNG and SVG (matplotlib, no display needed).

Uses :class:`matplotlib.figure.Figure` directly (the Agg canvas), never pyplot, so nothing depends
on a GUI backend or global state.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autointerp.analysis.analyze import Analysis

TOP_COLOUR = "#d62728"
MIDDLE_COLOUR = "#1f77b4"
OTHER_COLOUR = "#9a9a9a"


@dataclass
class Plot:
    """A saved figure: ``name.png`` and ``name.svg`` in the report folder."""

    name: str
    title: str
    caption: str

    @property
    def png(self) -> str:
        return f"{self.name}.png"

    @property
    def svg(self) -> str:
        return f"{self.name}.svg"


def safe_name(text: str) -> str:
    """A file-name-safe version of a rater name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "rater"


def _figure(width: float = 6.4, height: float = 4.2):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig: Any, out_dir: Path, name: str) -> None:
    import matplotlib

    fig.savefig(out_dir / f"{name}.png", dpi=110)
    # a fixed salt for the SVG's element ids (random by default): the same run gives byte-identical figures
    with matplotlib.rc_context({"svg.hashsalt": f"autointerp-{name}"}):
        fig.savefig(out_dir / f"{name}.svg", metadata={"Date": None})


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def importance_histogram(analysis: Analysis, out_dir: Path) -> Plot | None:
    """The study's Figure 1: distribution of importance over all features, groups marked."""
    imp = analysis.importance[np.isfinite(analysis.importance)]
    if len(imp) == 0:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    bins = min(60, max(10, int(np.sqrt(len(imp)) * 2)))
    ax.hist(imp, bins=bins, color=OTHER_COLOUR, edgecolor="white", linewidth=0.4, label="all features")
    for label, colour in (("top", TOP_COLOUR), ("middle", MIDDLE_COLOUR)):
        sel = analysis.importance[(analysis.group == label) & np.isfinite(analysis.importance)]
        if len(sel):
            ax.hist(
                sel,
                bins=np.histogram_bin_edges(imp, bins=bins),
                color=colour,
                alpha=0.85,
                edgecolor="white",
                linewidth=0.4,
                label=f"{label} group (n={len(sel)})",
            )
    ax.axvline(float(np.mean(imp)), color="black", linestyle="--", linewidth=1, label=f"mean {np.mean(imp):.2f}")
    ax.axvline(float(np.median(imp)), color="black", linestyle=":", linewidth=1, label=f"median {np.median(imp):.2f}")
    ax.set_xlabel("importance (Δ correct top-k when the feature is mean-ablated)")
    ax.set_ylabel("number of features")
    ax.set_title(f"Importance of {len(imp)} features")
    ax.legend(frameon=False, fontsize=8)
    _save(fig, out_dir, "importance_hist")
    return Plot(
        "importance_hist",
        "Importance histogram (the study's Figure 1)",
        f"Importance of all {len(imp)} features; the top and middle groups are coloured.",
    )


def group_histograms(analysis: Analysis, out_dir: Path) -> Plot | None:
    """The study's Figure 2: interpretability of the top group vs the middle group, one panel per rater."""
    names = [n for n, v in analysis.scores.items() if np.isfinite(v[analysis.group != ""]).any()]
    if not names:
        return None
    cols = min(3, len(names))
    rows = int(np.ceil(len(names) / cols))
    fig = _figure(4.2 * cols, 3.4 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel()[len(names) :]:
        ax.set_visible(False)
    for ax, name in zip(axes.ravel(), names, strict=False):
        values = analysis.scores[name]
        top = values[(analysis.group == "top") & np.isfinite(values)]
        mid = values[(analysis.group == "middle") & np.isfinite(values)]
        both = np.concatenate([top, mid])
        lo, hi = (0.0, 1.0) if both.min() >= 0 and both.max() <= 1 else (both.min(), both.max())
        edges = np.linspace(lo, hi if hi > lo else lo + 1, 11)
        for label, group, colour in (("middle", mid, MIDDLE_COLOUR), ("top", top, TOP_COLOUR)):
            text = f"{label} (n={len(group)}, mean {group.mean():.2f})" if len(group) else f"{label} (none rated)"
            ax.hist(group, bins=edges, color=colour, alpha=0.6, label=text)
        ax.set_title(name)
        ax.set_xlabel("interpretability I")
        ax.set_ylabel("number of features")
        ax.legend(frameon=False, fontsize=8)
    _save(fig, out_dir, "group_hist")
    return Plot(
        "group_hist",
        "Interpretability of the two groups (the study's Figure 2)",
        "Histograms of I for the most important features (top) and those around the median (middle).",
    )


def importance_scatter(analysis: Analysis, out_dir: Path, name: str) -> Plot | None:
    """Importance vs a rater's I, coloured by group, with a least-squares trend and Spearman's ρ."""
    values = analysis.scores[name]
    ok = np.isfinite(values) & np.isfinite(analysis.importance)
    if ok.sum() == 0:
        return None
    x, y, grp = analysis.importance[ok], values[ok], analysis.group[ok]
    fig = _figure()
    ax = fig.add_subplot()
    for label, colour in (("", OTHER_COLOUR), ("middle", MIDDLE_COLOUR), ("top", TOP_COLOUR)):
        sel = grp == label
        if sel.any():
            ax.scatter(
                x[sel],
                y[sel],
                s=14,
                color=colour,
                alpha=0.75,
                linewidths=0,
                label={"": "other", "middle": "middle group", "top": "top group"}[label],
            )
    corr = analysis.summary["correlations"].get(name, {})
    rho = corr.get("spearman")
    if len(x) >= 2 and np.ptp(x) > 0:
        slope, intercept = np.polyfit(x, y, 1)
        grid = np.linspace(x.min(), x.max(), 50)
        ax.plot(grid, slope * grid + intercept, color="black", linewidth=1.2, label="linear fit")
    ci = corr.get("ci95")
    ci_text = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
    scope = corr.get("scope")
    ax.set_title(f"{name}: Spearman ρ = {_fmt(rho)}{ci_text} (n={len(x)}{', ' + scope if scope else ''})", fontsize=10)
    ax.set_xlabel("importance")
    ax.set_ylabel(f"I ({name})")
    ax.legend(frameon=False, fontsize=8)
    file = f"scatter_importance_{safe_name(name)}"
    _save(fig, out_dir, file)
    label = corr.get("scope_label") or f"n={len(x)}"
    return Plot(file, f"Importance vs I: {name}", f"Each dot is a feature; ρ = {_fmt(rho)}{ci_text} ({label}).")


def agreement_scatter(analysis: Analysis, out_dir: Path, auto: str, human: str) -> Plot | None:
    """Human (or reference answer key) I vs automatic I, with the identity line."""
    a, h = analysis.scores[auto], analysis.scores[human]
    ok = np.isfinite(a) & np.isfinite(h)
    if ok.sum() == 0:
        return None
    fig = _figure(4.8, 4.4)
    ax = fig.add_subplot()
    colours = np.where(
        analysis.group[ok] == "top", TOP_COLOUR, np.where(analysis.group[ok] == "middle", MIDDLE_COLOUR, OTHER_COLOUR)
    )
    ax.scatter(h[ok], a[ok], s=16, c=list(colours), alpha=0.8, linewidths=0)
    lo = float(min(h[ok].min(), a[ok].min()))
    hi = float(max(h[ok].max(), a[ok].max()))
    ax.plot([lo, hi], [lo, hi], color="black", linewidth=0.8, linestyle="--", label="y = x")
    res = analysis.summary["agreement"].get(auto, {}).get(human, {}).get("I", {})
    if res.get("alpha_reason"):
        values = f"α, MAE {res['alpha_reason']}"
    else:
        values = f"α = {_fmt(res.get('krippendorff_alpha'))}, MAE = {_fmt(res.get('mae'))}"
    ax.set_title(f"ρ = {_fmt(res.get('spearman'))}, {values} (n={int(ok.sum())})", fontsize=10)
    reference = next((r.is_reference for r in analysis.raters if r.name == human), False)
    ax.set_xlabel(f"I ({human}, ground truth)" if reference else f"I ({human})")
    ax.set_ylabel(f"I ({auto})")
    ax.legend(frameon=False, fontsize=8)
    file = f"agreement_{safe_name(auto)}_vs_{safe_name(human)}"
    _save(fig, out_dir, file)
    title = f"{auto} vs {human} (ground truth)" if reference else f"{auto} vs {human}"
    return Plot(file, title, "Each dot is a feature rated by both; dashed: perfect agreement.")


def rater_heatmap(analysis: Analysis, out_dir: Path) -> Plot | None:
    """Spearman correlation between importance and every rater (pairwise complete features)."""
    info = analysis.summary["rater_correlations"]
    names = info["names"]
    if len(names) < 2:
        return None
    matrix = np.array([[np.nan if v is None else v for v in row] for row in info["matrix"]], dtype=float)
    size = 1.2 + 0.7 * len(names)
    fig = _figure(size + 1.2, size)
    ax = fig.add_subplot()
    image = ax.imshow(matrix, vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            text = "n/a" if np.isnan(matrix[i, j]) else f"{matrix[i, j]:.2f}"
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=8,
                color="white" if np.isfinite(matrix[i, j]) and abs(matrix[i, j]) > 0.6 else "black",
            )
    fig.colorbar(image, ax=ax, shrink=0.8, label="Spearman ρ")
    ax.set_title("Rater × rater correlation")
    _save(fig, out_dir, "rater_correlations")
    return Plot(
        "rater_correlations",
        "Rater × rater correlation",
        "Spearman ρ between importance and each rater's I over the features both scored.",
    )


def ablation_curve(curve: dict[str, list[float]], out_dir: Path) -> Plot | None:
    """Accuracy as features are ablated cumulatively in importance order."""
    x = np.asarray(curve.get("n_ablated", []), dtype=float)
    series = {k: np.asarray(v, dtype=float) for k, v in curve.items() if k != "n_ablated"}
    if len(x) == 0 or not series:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    for key, values in series.items():
        ok = np.isfinite(values) & np.isfinite(x)
        ax.plot(x[ok], values[ok], marker="o", markersize=2.5, linewidth=1.2, label=key)
    ax.set_xlabel("features ablated (most important first)")
    ax.set_ylabel("accuracy")
    ax.set_title("Accuracy drop under cumulative ablation")
    ax.legend(frameon=False, fontsize=8)
    _save(fig, out_dir, "ablation_curve")
    return Plot(
        "ablation_curve",
        "Accuracy-drop curve",
        "Accuracy of the model as more features are replaced by their mean, in importance order.",
    )


def make_plots(analysis: Analysis, out_dir: Path, ablation: dict[str, list[float]] | None = None) -> list[Plot]:
    """Draw every figure the data allows; returns them in page order."""
    plots: list[Plot | None] = [importance_histogram(analysis, out_dir), group_histograms(analysis, out_dir)]
    plots += [importance_scatter(analysis, out_dir, name) for name in analysis.scores]
    plots += [
        agreement_scatter(analysis, out_dir, a, h) for a in analysis.auto_raters for h in analysis.reference_raters
    ]
    plots.append(rater_heatmap(analysis, out_dir))
    if ablation:
        plots.append(ablation_curve(ablation, out_dir))
    return [p for p in plots if p is not None]
