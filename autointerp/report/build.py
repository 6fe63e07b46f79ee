"""Write a report folder: ``index.html``, figures (PNG + SVG), ``summary.json`` and ``summary.md``.

The folder is written atomically: into a temporary sibling, renamed into place when complete.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from autointerp.analysis.analyze import Analysis
from autointerp.atomic import atomic_dir, json_safe
from autointerp.errors import UserError
from autointerp.report.html import FeatureMedia, render_page, target_label
from autointerp.report.plots import make_plots
from autointerp.runfiles import read_index, write_report_summary
from autointerp.runfolder import RunPaths, report_paths


def _f(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _pf(p: float | None) -> str:
    """A p-value: 4 decimals, or scientific notation below 1e-4."""
    return "n/a" if p is None else (f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}")


def _empty_line(s: dict[str, Any], section: str, fallback: str) -> list[str]:
    return ["", f"_{s.get('empty_reasons', {}).get(section) or fallback}_"]


def render_markdown(summary: dict[str, Any], title: str) -> str:
    """A short human-readable summary (the headline numbers and tables of the page)."""
    s = summary
    g = s["groups"]
    lines = [f"# {title}", ""]
    if s.get("model") or s.get("layer"):
        lines += [f"Model `{s.get('model')}`, layer `{s.get('layer')}`.", ""]
    lines += [
        f"- features with an importance: {s['n_features']} (all features seen: {s['n_features_total']})",
        f"- importance: mean {_f(s['importance']['mean'], 2)}, median {_f(s['importance']['median'], 2)}",
        f"- top group: {g['top']['n']} features, mean importance {_f(g['top']['importance_mean'], 2)}",
        f"- middle group: {g['middle']['n']} features, mean importance {_f(g['middle']['importance_mean'], 2)}",
        "",
        "## Importance vs interpretability",
        "",
        "Spearman ρ over every feature a rater scored; *layer-wide* = (nearly) every feature with an importance, "
        "*extreme groups* = only the top and middle groups (within-group ρ beside it), *subset* = other coverage.",
    ]
    if s.get("headline"):
        lines += [
            "",
            "| rater | scope | scored | Spearman ρ [95% CI] | p | extreme groups ρ | within top ρ | within middle ρ |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in s["headline"]:
            ci = row["ci95"]
            ci_text = f" [{_f(ci[0])}, {_f(ci[1])}]" if ci else ""
            lines.append(
                f"| {row['rater']} | {row['scope']} | {row['n_scored']} of {row['n_with_importance']} | "
                f"{_f(row['spearman'])}{ci_text} | {_pf(row['p'])} | "
                f"{_f(row['extreme_groups'])} | {_f(row['within_top'])} | {_f(row['within_middle'])} |"
            )
    else:
        lines += _empty_line(s, "correlations", "no raters")
    lines += ["", "## Top vs middle", ""]
    if g["comparison"]:
        lines += [
            "| rater | mean I top | mean I middle | difference [95% CI] | Mann–Whitney p | rank-biserial r |",
            "|---|---|---|---|---|---|",
        ]
    else:
        lines += _empty_line(s, "correlations", "no raters")[1:]
    for name, c in g["comparison"].items():
        ci = c["ci95"]
        ci_text = f" [{_f(ci[0])}, {_f(ci[1])}]" if ci else ""
        lines.append(
            f"| {name} | {_f(g['top']['I_mean'].get(name))} (n={g['top']['n_rated'].get(name, 0)}) | "
            f"{_f(g['middle']['I_mean'].get(name))} (n={g['middle']['n_rated'].get(name, 0)}) | "
            f"{_f(c['difference'])}{ci_text} | {_pf(c['p'])} | "
            f"{_f(c['rank_biserial'])} |"
        )
    if s["correlations"]:
        lines += [
            "",
            "## Importance vs I: all coefficients",
            "",
            "| rater | scope | n | Spearman ρ [95% CI] | p | Kendall τ | Pearson r |",
            "|---|---|---|---|---|---|---|",
        ]
    for name, c in s["correlations"].items():
        ci = c["ci95"]
        ci_text = f" [{_f(ci[0])}, {_f(ci[1])}]" if ci else ""
        reason = f" ({c['reason']})" if c.get("reason") else ""
        lines.append(
            f"| {name} | {c.get('scope', '')} | {c['n']} | {_f(c['spearman'])}{ci_text}{reason} | "
            f"{_pf(c['p'])} | {_f(c['kendall']['value'])} | "
            f"{_f(c['pearson']['value'])} |"
        )
    im = s.get("importance_measures")
    if im:
        rel = im["reliability"]
        lines += ["", "## Importance measures and their reliability", ""]
        if not rel["available"]:
            lines += [f"_{rel['reason']}_", ""]
        lines += ["| measure | n | split-half reliability (Spearman–Brown) |", "|---|---|---|"]
        for key, m in im["measures"].items():
            lines.append(f"| {key} | {m['n']} | {_f(m['reliability'])} |")
        if im["correlations"]:
            keys = list(im["measures"])
            lines += [
                "",
                "| rater | " + " | ".join(f"ρ with {k} | corrected" for k in keys) + " |",
                "|---|" + "---|---|" * len(keys),
            ]
            for name, per in im["correlations"].items():
                lines.append(
                    f"| {name} | "
                    + " | ".join(
                        f"{_f(per[k]['spearman'])} (n={per[k]['n']}) | {_f(per[k]['corrected'])}" for k in keys
                    )
                    + " |"
                )
    lines += ["", "## Human vs automatic (I)"]
    if s["agreement"] and any(s["agreement"].values()):
        lines += [
            "",
            "| automatic | human / reference | n | Spearman | Krippendorff α | MAE |",
            "|---|---|---|---|---|---|",
        ]
        for auto, by_human in s["agreement"].items():
            lower = " (lower is better)" if s["raters"].get(auto, {}).get("higher_is_better") is False else ""
            for human, res in by_human.items():
                r = res.get("I", {"n": 0, "spearman": None, "krippendorff_alpha": None, "mae": None})
                alpha = r.get("alpha_reason") or _f(r["krippendorff_alpha"])
                mae = r.get("alpha_reason") or _f(r["mae"])
                lines.append(
                    f"| {auto}{lower} | {target_label(s, human)} | {r['n']} | {_f(r['spearman'])} | {alpha} | {mae} |"
                )
    else:
        lines += _empty_line(s, "agreement", "no automatic rater and human rater to compare")
    lines += ["", "## Noise ceiling"]
    if s["noise_ceiling"]:
        lines.append("")
        for human, res in s["noise_ceiling"].items():
            if not res.get("available"):
                lines.append(f"- {human}: {res.get('reason')}")
                continue
            r = res["I"]
            lines.append(
                f"- {human} (I): reliability of the mean of {r['n_participants']} raters (split-half, "
                f"Spearman–Brown) {_f(r['split_half'])}; noise ceiling ρ ≈ √reliability "
                f"{_f(r['ceiling'])}; α among humans {_f(r['krippendorff_alpha'])}; mean ρ with individual "
                f"raters (Nili bounds) {_f(r['individual_lower'])}–{_f(r['individual_upper'])}"
            )
    else:
        lines += _empty_line(s, "noise_ceiling", "no human answers, so no noise ceiling")
    if s["issues"]:
        lines += ["", "## Data notes", ""] + [f"- **{i['kind']}**: {i['message']}" for i in s["issues"]]
    return "\n".join(lines) + "\n"


def collect_media(run_root: Path, out_dir: Path) -> dict[int, FeatureMedia]:
    """Card, visualisation and example paths of every feature of a run, relative to ``out_dir``.

    Reads ``visualizations/index.json`` and ``examples/index.json`` when present; files listed there
    but missing on disk are flagged on the feature rather than linked.
    """
    media: dict[int, FeatureMedia] = {}

    def rel(path: str) -> str | None:
        target = run_root / path
        if not target.exists():
            return None
        return Path(os.path.relpath(target, out_dir)).as_posix()

    paths = RunPaths(run_root)
    for key, entry in read_index(paths.visualizations_index).items():
        m = media.setdefault(key, FeatureMedia())
        if entry.get("card"):
            m.card = rel(entry["card"])
            if m.card is None:
                m.flags.append("card file missing")
        m.vis = [p for p in (rel(v) for v in entry.get("vis", [])) if p]
        quality = entry.get("quality") or {}
        if quality.get("ok") is False:
            m.flags.append("visualisation weaker than examples")
        m.flags += [str(f) for f in entry.get("flags", [])]
    for key, entry in read_index(paths.examples_index).items():
        m = media.setdefault(key, FeatureMedia())
        m.examples = [p for p in (rel(e.get("path", "")) for e in entry.get("top", [])) if p]
    return media


def write_report(
    analysis: Analysis,
    out_dir: str | Path,
    media: dict[int, FeatureMedia] | None = None,
    ablation: dict[str, list[float]] | None = None,
    title: str = "autointerp report",
    overwrite: bool = False,
) -> Path:
    """Write the report folder for an :class:`Analysis`; returns the path of ``index.html``.

    Raises :class:`UserError` when ``out_dir`` exists and is not empty, unless ``overwrite``.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        if not overwrite:
            raise UserError(f"{out_dir}: report folder exists; pass --overwrite to replace it")
        html, summary_json, _ = report_paths(out_dir)
        if not out_dir.is_dir() or not (html.exists() or summary_json.exists()):
            raise UserError(
                f"{out_dir}: exists and does not look like a report folder (no {html.name}); "
                "refusing to replace it, choose another --out"
            )
    summary = json_safe(analysis.summary)
    with atomic_dir(out_dir) as tmp:
        plots = make_plots(analysis, tmp, ablation)
        summary["figures"] = [{"name": p.name, "png": p.png, "svg": p.svg, "title": p.title} for p in plots]
        html, _, markdown = report_paths(tmp)
        write_report_summary(tmp, summary)
        markdown.write_text(render_markdown(summary, title), encoding="utf-8")
        analysis.summary = summary
        html.write_text(render_page(analysis, plots, media or {}, title), encoding="utf-8")
    return report_paths(out_dir)[0]
