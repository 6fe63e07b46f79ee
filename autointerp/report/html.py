"""The report page: one static ``index.html`` that opens from disk (no server, no CDN).

Figures are referenced by relative path (PNG, with a link to the SVG); feature cards by relative
path into the run folder. The feature gallery is a plain HTML table that the embedded script sorts
(click a column header) and filters (text box, group selector); clicking a card opens the feature's
visualisations and dataset examples.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autointerp.analysis.analyze import Analysis
from autointerp.report.plots import Plot
from autointerp.runfolder import SUMMARY_JSON, SUMMARY_MD


@dataclass
class FeatureMedia:
    """Relative paths (from the report folder) of one feature's images."""

    card: str | None = None
    vis: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{float(value):.{digits}f}"


def _ci(ci: list[float | None] | None) -> str:
    return "—" if not ci or ci[0] is None or ci[1] is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _p(p: float | None) -> str:
    return "—" if p is None else (f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}")


def _why(entry: dict[str, Any]) -> str:
    return f' <span class="reason">({_e(entry["reason"])})</span>' if entry.get("reason") else ""


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#fff;padding:16px 28px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#cfd8dc}main{padding:10px 28px 40px;max-width:1400px}
h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:28px}
table{border-collapse:collapse;background:#fff;font-size:13px}th,td{border:1px solid #ddd;padding:4px 8px;
text-align:right}th{background:#eceff1}td.l,th.l{text-align:left}.reason{color:#8a6d3b;font-size:12px}
.cards{display:flex;flex-wrap:wrap;gap:14px}.key{background:#fff;border:1px solid #ddd;border-radius:6px;
padding:10px 14px;min-width:150px}.key b{display:block;font-size:22px}.issues{background:#fff8e1;
border:1px solid #ffe082;border-radius:6px;padding:8px 16px}.issues li{margin:4px 0}
figure{display:inline-block;margin:8px;background:#fff;border:1px solid #ddd;padding:8px;vertical-align:top;
max-width:680px}figure img{max-width:100%}figcaption{font-size:12px;color:#555}
#gallery th{cursor:pointer;user-select:none;position:sticky;top:0}#gallery th.asc::after{content:" ▲"}
#gallery th.desc::after{content:" ▼"}#gallery img.thumb{height:64px;cursor:zoom-in}
tr.top td.g{color:#d62728;font-weight:600}tr.middle td.g{color:#1f77b4;font-weight:600}
.empty{color:#6d4c41;font-style:italic}td.na{text-align:center;color:#8a6d3b}
.controls{margin:8px 0;display:flex;gap:12px;align-items:center}
#detail{position:fixed;inset:0;background:rgba(0,0,0,.72);display:none;overflow:auto;z-index:10}
#detail .box{background:#fff;margin:30px auto;padding:16px;max-width:1100px;border-radius:6px}
#detail img{max-width:100%;margin:4px}#detail .row img{height:150px}
"""

SCRIPT = r"""
(function () {
  'use strict';
  var table = document.getElementById('gallery');
  if (!table) { return; }
  var body = table.tBodies[0];
  var headers = table.tHead.rows[0].cells;
  var state = {col: -1, dir: 1};
  function key(row, col) {
    var cell = row.cells[col];
    var v = cell.getAttribute('data-v');
    if (v === null) { v = cell.textContent.trim(); }
    var num = parseFloat(v);
    return {num: isNaN(num) ? null : num, text: v};
  }
  function sortBy(col) {
    state.dir = (state.col === col) ? -state.dir : 1;
    state.col = col;
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var ka = key(a, col), kb = key(b, col);
      if (ka.num === null && kb.num === null) { return state.dir * ka.text.localeCompare(kb.text); }
      if (ka.num === null) { return 1; }   // missing values always last
      if (kb.num === null) { return -1; }
      return state.dir * (ka.num - kb.num);
    });
    rows.forEach(function (r) { body.appendChild(r); });
    for (var i = 0; i < headers.length; i++) { headers[i].classList.remove('asc', 'desc'); }
    headers[col].classList.add(state.dir === 1 ? 'asc' : 'desc');
  }
  for (var i = 0; i < headers.length; i++) {
    if (headers[i].getAttribute('data-sortable') === 'no') { continue; }
    headers[i].addEventListener('click', sortBy.bind(null, i));
  }
  var filterBox = document.getElementById('filter');
  var groupBox = document.getElementById('group-filter');
  var counter = document.getElementById('shown');
  function applyFilter() {
    var text = filterBox.value.trim().toLowerCase();
    var group = groupBox.value;
    var shown = 0;
    Array.prototype.forEach.call(body.rows, function (row) {
      var ok = (!text || row.getAttribute('data-search').indexOf(text) >= 0) &&
               (!group || row.getAttribute('data-group') === group);
      row.style.display = ok ? '' : 'none';
      if (ok) { shown += 1; }
    });
    counter.textContent = shown;
  }
  filterBox.addEventListener('input', applyFilter);
  groupBox.addEventListener('change', applyFilter);
  var media = JSON.parse(document.getElementById('media').textContent);
  var detail = document.getElementById('detail');
  function addImages(parent, title, paths) {
    if (!paths || !paths.length) { return; }
    var h = document.createElement('h4'); h.textContent = title; parent.appendChild(h);
    var row = document.createElement('div'); row.className = 'row';
    paths.forEach(function (p) {
      var img = document.createElement('img'); img.src = p; img.alt = title; row.appendChild(img);
    });
    parent.appendChild(row);
  }
  function open(feature) {
    var m = media[feature] || {};
    var box = detail.querySelector('.box');
    box.innerHTML = '';
    var h = document.createElement('h3'); h.textContent = 'Feature ' + feature + ' (click anywhere to close)';
    box.appendChild(h);
    if (m.card) { var c = document.createElement('img'); c.src = m.card; c.alt = 'card'; box.appendChild(c); }
    addImages(box, 'Feature visualisations', m.vis);
    addImages(box, 'Most activating dataset examples', m.examples);
    detail.style.display = 'block';
  }
  body.addEventListener('click', function (ev) {
    var t = ev.target;
    if (t && t.classList && t.classList.contains('thumb')) { open(t.getAttribute('data-feature')); }
  });
  detail.addEventListener('click', function () { detail.style.display = 'none'; });
  applyFilter();
})();
"""


def _empty(s: dict[str, Any], section: str, fallback: str) -> str:
    """The one-line reason an empty section gives."""
    return f'<p class="empty">{_e(s.get("empty_reasons", {}).get(section) or fallback)}</p>'


def _key_numbers(s: dict[str, Any]) -> str:
    imp = s["importance"]
    top, mid = s["groups"]["top"], s["groups"]["middle"]
    items = [
        ("features", _num(s["n_features"])),
        ("mean importance", _num(imp["mean"], 2)),
        ("median importance", _num(imp["median"], 2)),
        (f"top {top['n']}: mean importance", _num(top["importance_mean"], 2)),
        (f"middle {mid['n']}: mean importance", _num(mid["importance_mean"], 2)),
    ]
    for row in s.get("headline", []):
        items.append(
            (
                f"{row['rater']}: ρ with importance ({row['scope']}, scored {row['n_scored']} of "
                f"{row['n_with_importance']})",
                _num(row["spearman"]),
            )
        )
    for name in s["raters"]:
        items.append(
            (f"{name}: I top vs middle", f"{_num(top['I_mean'].get(name), 3)} / {_num(mid['I_mean'].get(name), 3)}")
        )
    return '<div class="cards">' + "".join(f'<div class="key">{_e(k)}<b>{_e(v)}</b></div>' for k, v in items) + "</div>"


def _with_n(entry: dict[str, Any]) -> str:
    return f"{_num(entry.get('spearman'))} (n={entry.get('n', 0)}){_why(entry)}"


def _headline_table(s: dict[str, Any]) -> str:
    """Importance vs each rater over the features it scored, labelled by scope; extreme groups beside."""
    if not s.get("headline"):
        return _empty(s, "correlations", "no raters: nothing to correlate with importance")
    rows = []
    for row in s["headline"]:
        c = s["correlations"][row["rater"]]
        eg = c["extreme_groups"]
        rows.append(
            f'<tr><td class="l">{_e(target_label(s, row["rater"]))}</td>'
            f'<td class="l">{_e(_scale_text(s["raters"][row["rater"]]))}</td>'
            f'<td class="l"><b>{_e(row["scope"])}</b></td><td>{row["n_scored"]} of {row["n_with_importance"]}</td>'
            f"<td>{_num(row['spearman'])}</td><td>{_ci(row['ci95'])}</td><td>{_p(row['p'])}{_why(c)}</td>"
            f"<td>{_with_n(eg)}</td><td>{_with_n(eg['within']['top'])}</td><td>{_with_n(eg['within']['middle'])}"
            "</td></tr>"
        )
    frac = s["settings"].get("layer_wide_fraction", 0.95)
    return (
        f"<p>Spearman ρ of importance with each rater over <b>every feature it scored</b>. A rater that scored at "
        f"least {frac:.0%} of the features with an importance is <b>layer-wide</b>; one that scored only the top "
        "and middle groups is labelled <b>extreme groups</b> (two groups far apart in importance inflate ρ: read "
        "the within-group values beside it); any other coverage is a named <b>subset</b>.</p>"
        '<table><tr><th class="l">rater</th><th class="l">scale</th><th class="l">scope</th><th>scored</th>'
        "<th>Spearman ρ</th><th>95% CI</th><th>p (perm.)</th><th>extreme groups ρ (top + middle)</th>"
        "<th>within top ρ</th><th>within middle ρ</th></tr>" + "".join(rows) + "</table>"
    )


def _scale_text(info: dict[str, Any]) -> str:
    kind = info.get("scale_kind") or "not stated"
    scale = info.get("scale") or {}
    if scale.get("calibrated_to_human") is True and not info.get("human"):
        kind += " (calibrated to human)"
    return kind


def _raters_table(s: dict[str, Any]) -> str:
    if not s["raters"]:
        return _empty(s, "correlations", "no raters")
    rows = []
    for name, info in s["raters"].items():
        kind = "human" if info["human"] else "reference (ground truth)" if info["reference"] else "automatic"
        oof = ", ".join(info.get("out_of_fold", [])) or ("in sample only" if info.get("calibrated") else "—")
        rows.append(
            f'<tr><td class="l">{_e(name)}</td><td class="l">{kind}</td><td class="l">{_e(_scale_text(info))}</td>'
            f'<td class="l">{_e(oof)}</td><td class="l">{"yes" if info["higher_is_better"] else "no (lower)"}</td>'
            f"<td>{info.get('n_scored_with_importance', info['n_scored'])} of {info.get('n_with_importance', '?')}"
            f'</td><td class="l">{_e(info.get("scope", ""))}</td></tr>'
        )
    return (
        '<table><tr><th class="l">rater</th><th class="l">kind</th><th class="l">scale</th>'
        '<th class="l">out-of-fold on the human scale</th><th class="l">higher is better</th>'
        '<th>scored (of features with an importance)</th><th class="l">scope</th></tr>' + "".join(rows) + "</table>"
        "<p>Scale: what a rater's numbers are (from its <code>&lt;rater&gt;.json</code>; “not stated” when "
        "absent). Krippendorff's α and the MAE against human answers are computed only for out-of-fold "
        "predictions on the human scale.</p>"
    )


def _measures_section(s: dict[str, Any]) -> str:
    """Both importance measures, their split-half reliabilities, and raw and corrected correlations."""
    im = s.get("importance_measures")
    if not im:
        return ""
    rel = im["reliability"]
    keys = list(im["measures"])
    parts = []
    if rel["available"]:
        parts.append(
            f"<p>Split-half reliability of importance over images (method {_e(rel.get('method'))}, "
            f"{_e(rel.get('n_images'))} images, {_e(rel.get('n_units'))} units): random halves of the "
            "images, Spearman between the halves' importances over features, Spearman–Brown corrected to "
            "all images.</p>"
        )
        if rel.get("warning"):
            parts.append(f'<p class="reason">{_e(rel["warning"])}</p>')
    else:
        parts.append(f'<p class="empty">{_e(rel["reason"])}</p>')
    rows = []
    for key in keys:
        m = im["measures"][key]
        r = rel["measures"].get(key, {})
        rows.append(
            f'<tr><td class="l">{_e(m["label"])}</td><td class="l"><code>{_e(key)}</code></td>'
            f"<td>{m['n']}</td><td>{_num(m['mean'])}</td><td>{_num(r.get('split_half_spearman_brown'))}</td>"
            f"<td>{_num(r.get('split_half_raw'))}</td><td>{_num(r.get('odd_even'))}</td>"
            f"<td>{_num(r.get('n_splits'))}{_why(r)}</td></tr>"
        )
    parts.append(
        '<table><tr><th class="l">measure</th><th class="l">column</th><th>n</th><th>mean</th>'
        "<th>split-half reliability (Spearman–Brown)</th><th>split-half raw</th><th>odd/even</th>"
        "<th>splits</th></tr>" + "".join(rows) + "</table>"
    )
    if im["correlations"]:
        head = "".join(f"<th>ρ with {_e(k)}</th><th>corrected for unreliability</th>" for k in keys)
        rows = []
        for name, per in im["correlations"].items():
            cells = "".join(
                f"<td>{_num(per[k]['spearman'])} (n={per[k]['n']})</td><td>{_num(per[k]['corrected'])}"
                + (
                    f' <span class="reason">({_e(per[k]["corrected_reason"])})</span>'
                    if per[k].get("corrected_reason") and rel["available"]
                    else ""
                )
                + "</td>"
                for k in keys
            )
            scope = s["raters"].get(name, {}).get("scope", "")
            rows.append(f'<tr><td class="l">{_e(name)}</td><td class="l">{_e(scope)}</td>{cells}</tr>')
        parts.append(
            "<p>Each rater against each measure over every feature both have (its scope as above); "
            "“corrected” divides ρ by the square root of the measure's reliability (the rater's own "
            "reliability is not known and taken as 1).</p>"
            f'<table><tr><th class="l">rater</th><th class="l">scope</th>{head}</tr>' + "".join(rows) + "</table>"
        )
    return "".join(parts)


def _groups_table(s: dict[str, Any]) -> str:
    g = s["groups"]
    if not g["comparison"]:
        return (
            f"<p>{_e(g['definition'])}. Mean importance: top {_num(g['top']['importance_mean'], 2)}, "
            f"middle {_num(g['middle']['importance_mean'], 2)}.</p>"
            + _empty(s, "correlations", "no raters: no interpretability to compare")
        )
    rows = []
    for name, cmp in g["comparison"].items():
        rows.append(
            f'<tr><td class="l">{_e(name)}</td><td>{_num(g["top"]["I_mean"].get(name))} '
            f"(n={g['top']['n_rated'].get(name, 0)})</td><td>{_num(g['middle']['I_mean'].get(name))} "
            f"(n={g['middle']['n_rated'].get(name, 0)})</td><td>{_num(cmp['difference'])}</td><td>{_ci(cmp['ci95'])}"
            f"</td><td>{_num(cmp['mann_whitney_u'], 1)}</td><td>{_p(cmp['p'])}</td><td>{_num(cmp['rank_biserial'])}"
            f"</td><td>{_num(cmp['cohens_d'])}{_why(cmp)}</td></tr>"
        )
    return (
        f"<p>{_e(g['definition'])}. Mean importance: top {_num(g['top']['importance_mean'], 2)}, "
        f"middle {_num(g['middle']['importance_mean'], 2)}.</p>"
        '<table><tr><th class="l">rater</th><th>mean I top</th><th>mean I middle</th><th>difference</th>'
        "<th>95% CI (bootstrap)</th><th>Mann–Whitney U</th><th>p</th><th>rank-biserial r</th><th>Cohen's d</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _correlation_table(s: dict[str, Any]) -> str:
    if not s["correlations"]:
        return _empty(s, "correlations", "no raters: nothing to correlate with importance")
    rows = []
    for name, c in s["correlations"].items():
        cells = [f'<td class="l">{_e(name)}</td><td class="l">{_e(c.get("scope", ""))}</td><td>{c["n"]}</td>']
        for method in ("spearman", "kendall", "pearson"):
            entry = {"value": c["spearman"], "ci95": c["ci95"], "p": c["p"]} if method == "spearman" else c[method]
            cells.append(f"<td>{_num(entry['value'])}</td><td>{_ci(entry['ci95'])}</td><td>{_p(entry['p'])}</td>")
        rows.append("<tr>" + "".join(cells) + f'<td class="l">{_why(c)}</td></tr>')
    head = "".join(f'<th colspan="3">{m}</th>' for m in ("Spearman ρ", "Kendall τ", "Pearson r"))
    sub = "<th>value</th><th>95% CI</th><th>p (perm.)</th>" * 3
    return (
        f'<table><tr><th class="l" rowspan="2">rater</th><th class="l" rowspan="2">scope</th>'
        f'<th rowspan="2">n</th>{head}<th rowspan="2"></th></tr>'
        f"<tr>{sub}</tr>" + "".join(rows) + "</table>"
    )


def target_label(s: dict[str, Any], name: str) -> str:
    """``name`` of a rater automatic raters are compared with, marked ``(ground truth)`` for a reference answer key."""
    return f"{name} (ground truth)" if s["raters"].get(name, {}).get("reference") else name


def _ceiling_cell(s: dict[str, Any], human: str, comp: str) -> str:
    res = s.get("noise_ceiling", {}).get(human)
    if res is None:
        return "—"
    if not res.get("available"):
        return f'<span class="reason">{_e(res.get("reason", ""))}</span>'
    return _num(res.get(comp, {}).get("ceiling"))


def _agreement_table(s: dict[str, Any]) -> str:
    rows = []
    for auto, by_human in s["agreement"].items():
        lower = s["raters"].get(auto, {}).get("higher_is_better") is False
        for human, res in by_human.items():
            for comp in ("q1", "q3", "q4", "I"):
                if comp not in res:
                    continue
                r = res[comp]
                oof = {True: "out-of-fold", False: "in-sample"}.get(r.get("out_of_fold"), "")
                if lower and comp == "I":
                    oof = "; ".join(x for x in (oof, "lower is better: agreement shows as ρ < 0") if x)
                if r.get("alpha_reason"):
                    value_cells = f'<td colspan="2" class="na">{_e(r["alpha_reason"])}</td>'
                else:
                    value_cells = f"<td>{_num(r['krippendorff_alpha'])}</td><td>{_num(r['mae'])}</td>"
                rows.append(
                    f'<tr><td class="l">{_e(auto)}</td><td class="l">{_e(target_label(s, human))}</td>'
                    f'<td class="l">{comp}</td>'
                    f"<td>{r['n']}</td><td>{_num(r['spearman'])}</td><td>{_num(r['kendall'])}</td>"
                    f'{value_cells}<td>{_ceiling_cell(s, human, comp)}</td><td class="l">{_e(oof)}'
                    f"{_why(r)}</td></tr>"
                )
    if not rows:
        return _empty(s, "agreement", "no automatic rater and human (or reference) rater to compare")
    return (
        "<p>Automatic raters against human answers and against reference answer keys (ground truth, e.g. the "
        "demo's concept purity). Spearman and Kendall compare rankings and are given for every pair; "
        "Krippendorff's α and the MAE compare values and are given only where the automatic scale was calibrated "
        "to the human one out of fold (otherwise “n/a (uncalibrated scale)”).</p>"
        '<table><tr><th class="l">automatic</th><th class="l">human / reference</th><th class="l">component</th>'
        "<th>n</th><th>Spearman</th><th>Kendall</th><th>Krippendorff α (interval)</th><th>MAE</th>"
        "<th>noise ceiling ρ</th><th></th></tr>" + "".join(rows) + "</table>"
    )


def _ceiling_table(s: dict[str, Any]) -> str:
    rows = []
    missing = []
    for human, res in s["noise_ceiling"].items():
        if not res.get("available"):
            missing.append(f'<p class="empty">{_e(human)}: {_e(res.get("reason", ""))}</p>')
            continue
        for comp, r in res.items():
            if comp == "available":
                continue
            rows.append(
                f'<tr><td class="l">{_e(human)}</td><td class="l">{comp}</td><td>{r["n_participants"]}</td>'
                f"<td>{r['n_features_shared']}</td><td>{_num(r.get('raters_per_feature'), 1)}</td>"
                f"<td>{_num(r['split_half'])}</td><td>{_num(r['ceiling'])}</td>"
                f"<td>{_num(r['krippendorff_alpha'])}</td>"
                f"<td>{_num(r['individual_lower'])} – {_num(r['individual_upper'])}{_why(r)}</td></tr>"
            )
    if not rows:
        return "".join(missing) or _empty(s, "noise_ceiling", "no human answers, so no noise ceiling")
    return "".join(missing) + (
        "<p>Automatic raters are compared with the <b>mean</b> human answer per feature, so the ceiling is the "
        "reliability of that mean: random halves of each feature's raters, Spearman between the half means, "
        "Spearman–Brown corrected to the full number of raters, averaged over random splits. A rater that knew "
        "each feature's true score would reach about ρ = √reliability with the mean (the “noise ceiling ρ”). "
        "The last column bounds the average correlation with <i>individual</i> raters (Nili et al. 2014), "
        "not with their mean.</p>"
        '<table><tr><th class="l">human rater</th><th class="l">component</th><th>participants</th>'
        "<th>shared features</th><th>raters per feature</th><th>reliability of the mean (split-half, "
        "Spearman–Brown)</th><th>noise ceiling ρ (√reliability)</th><th>α among humans</th>"
        "<th>mean ρ with individual raters: Nili bounds (lower – upper)</th></tr>" + "".join(rows) + "</table>"
    )


#: per-feature columns the gallery shows when the analysis has them
GALLERY_MEASURES = {
    "mean_delta_logprob_true": "mean Δ log p(true)",
    "importance_ci_low": "importance CI low",
    "importance_ci_high": "importance CI high",
}


def _gallery(analysis: Analysis, media: dict[int, FeatureMedia]) -> str:
    if not len(analysis.features):
        return '<p class="empty">No features: the importance table and the ratings are empty.</p>'

    names = list(analysis.scores)
    has_cards = any(m.card for m in media.values())
    extra = {r.name: r for r in analysis.raters if r.is_human}
    imp = analysis.importance
    order = np.argsort(-np.where(np.isfinite(imp), imp, -np.inf), kind="stable")
    rank = np.empty(len(imp), dtype=np.int64)
    rank[order] = np.arange(1, len(imp) + 1)
    extra_cols = {k: GALLERY_MEASURES.get(k, k) for k in analysis.measures if k in GALLERY_MEASURES}
    head = ('<th data-sortable="no">card</th>' if has_cards else "") + (
        "<th>feature</th><th>importance</th><th>rank</th><th>group</th>"
        + "".join(f"<th>{_e(label)}</th>" for label in extra_cols.values())
        + "".join(f"<th>{_e(n)}</th>" for n in names)
        + "".join(f"<th>{_e(n)} raters</th>" for n in extra)
        + '<th class="l">notes</th>'
    )
    rows = []
    for i, feature in enumerate(analysis.features.tolist()):
        m = media.get(feature, FeatureMedia())
        group = analysis.group[i] or "other"
        flags = list(m.flags)
        if not np.isfinite(imp[i]):
            flags.append("no importance")
        for n in names:
            if not np.isfinite(analysis.scores[n][i]):
                flags.append(f"not scored by {n}")
        cells = []
        if has_cards:
            cells.append(
                f'<td><img class="thumb" src="{_e(m.card)}" alt="feature {feature}" loading="lazy" '
                f'data-feature="{feature}"></td>'
                if m.card
                else "<td>—</td>"
            )
        imp_v = imp[i] if np.isfinite(imp[i]) else None
        cells.append(f'<td data-v="{feature}">{feature}</td>')
        cells.append(f'<td data-v="{"" if imp_v is None else imp_v}">{_num(imp_v, 2)}</td>')
        cells.append(
            f'<td data-v="{rank[i] if imp_v is not None else ""}">{rank[i] if imp_v is not None else "—"}</td>'
        )
        cells.append(f'<td class="g" data-v="{group}">{group}</td>')
        for key in extra_cols:
            v = analysis.measures[key][i]
            cells.append(f'<td data-v="{v if np.isfinite(v) else ""}">{_num(v if np.isfinite(v) else None)}</td>')
        for n in names:
            v = analysis.scores[n][i]
            cells.append(f'<td data-v="{v if np.isfinite(v) else ""}">{_num(v if np.isfinite(v) else None)}</td>')
        for rater in extra.values():
            counts = rater.components.get("n_raters")
            pos = np.searchsorted(rater.feature_ind, feature)
            c = (
                int(counts[pos])
                if counts is not None
                and pos < len(rater.feature_ind)
                and rater.feature_ind[pos] == feature
                and np.isfinite(counts[pos])
                else None
            )
            cells.append(f'<td data-v="{"" if c is None else c}">{"—" if c is None else c}</td>')
        cells.append(f'<td class="l">{_e("; ".join(flags))}</td>')
        search = f"{feature} {group} {' '.join(flags)}".lower()
        rows.append(f'<tr class="{group}" data-group="{group}" data-search="{_e(search)}">{"".join(cells)}</tr>')
    return (
        '<div class="controls"><label>filter <input id="filter" type="search" placeholder="feature id, group, note">'
        '</label><label>group <select id="group-filter"><option value="">all</option><option value="top">top'
        '</option><option value="middle">middle</option><option value="other">other</option></select></label>'
        f'<span><span id="shown">{len(rows)}</span> of {len(rows)} features shown; click a header to sort'
        + ("; click a card to enlarge" if has_cards else "")
        + "</span></div>"
        f'<table id="gallery"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def render_page(analysis: Analysis, plots: list[Plot], media: dict[int, FeatureMedia], title: str) -> str:
    """The complete HTML page."""
    s = analysis.summary
    subtitle = " · ".join(x for x in (s.get("model"), s.get("layer")) if x)
    issues = s["issues"]
    issue_html = (
        '<div class="issues"><b>Data notes</b> (one line per cause)<ul>'
        + "".join(f"<li><b>{_e(i['kind'])}</b>: {_e(i['message'])}</li>" for i in issues)
        + "</ul></div>"
        if issues
        else ""
    )
    figures = (
        "".join(
            f'<figure><img src="{_e(p.png)}" alt="{_e(p.title)}"><figcaption><b>{_e(p.title)}.</b> {_e(p.caption)} '
            f'<a href="{_e(p.svg)}">SVG</a></figcaption></figure>'
            for p in plots
        )
        or '<p class="empty">No figures: no feature has an importance.</p>'
    )
    media_json = json.dumps(
        {str(k): {"card": v.card, "vis": v.vis, "examples": v.examples} for k, v in media.items()}
    ).replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><link rel="icon" href="data:,"><style>{STYLE}</style></head>
<body><header><h1>{_e(title)}</h1><p>{_e(subtitle)} · {s["n_features"]} features with an importance ·
raters: {_e(", ".join(s["raters"]) or "none")}</p></header><main>
<h2>Key numbers</h2>{_key_numbers(s)}
{issue_html}
<h2>Importance vs interpretability</h2>{_headline_table(s)}
<p>Confidence intervals: percentile bootstrap over features ({s["settings"]["bootstrap"]} resamples);
p-values: two-sided permutation tests ({s["settings"]["permutations"]} permutations).</p>
<h2>Raters</h2>{_raters_table(s)}
<h2>Importance measures and their reliability</h2>{_measures_section(s)}
<h2>Top vs middle features</h2>{_groups_table(s)}
<h2>All correlation coefficients</h2>{_correlation_table(s)}
<h2>Human vs automatic agreement</h2>{_agreement_table(s)}
<h2>Noise ceiling</h2>{_ceiling_table(s)}
<h2>Figures</h2>{figures}
<h2>Feature gallery</h2>{_gallery(analysis, media)}
<p>Machine-readable results: <a href="{SUMMARY_JSON}">{SUMMARY_JSON}</a> · <a href="{SUMMARY_MD}">{SUMMARY_MD}</a></p>
</main><div id="detail"><div class="box"></div></div>
<script type="application/json" id="media">{media_json}</script>
<script>{SCRIPT}</script></body></html>
"""
