"""results/index.html: the paper's claims answered in one screen, details one click away.

The first screen holds one row per claim: a verdict badge, one line of the numbers that decide it (with their
CI) and the paper's number beside it; the row links to the report and to the claim's full test, numbers and
reasons further down. Below it, the verdict figure (each claim's effect with its CI against the paper's effect),
the reports by section (a disabled section says "not run", with no dead link), the result tables as readable,
paginated tables with their identifying columns first, every report's figures with captions, and the jobs'
wall time and peak memory. `verdict_figure` draws the figure (the summary notebook saves it).
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from wsae_utils.paths import atomic_write_text

VERDICT_CLASS = {"reproduced": "ok", "not reproduced": "no", "not decidable here": "undecided", "not run": "notrun"}
VERDICT_COLOUR = {"reproduced": "#1a7f37", "not reproduced": "#b42318", "not decidable here": "#9a6700",
                  "not run": "#6e7781"}
KEY_COLUMNS = ("section", "report", "layer", "variant", "gamma_variant", "sae", "alpha", "kind", "wp", "sparsity",
               "latent_ratio", "condition", "proxy", "scorer", "backend", "replicate", "readout", "seed", "metric",
               "comparison", "baseline", "part", "setting")
"""Identifying columns, shown first (in this order) in every table."""
VALUE_COLUMNS = ("verdict", "setting_verdict", "value", "mean", "gain", "ci_lo", "ci_hi", "ci_low", "ci_high",
                 "margin", "margin_lo", "margin_hi", "fvu", "ce_recovered", "kl", "l0", "dead_frac", "wall_s",
                 "peak_rss_mb", "mem_mb")
"""The numbers a reader looks for next."""
HIDDEN_COLUMNS = ("source",)
ROWS_PER_PAGE = 25


def effect_of(value: Any) -> dict[str, Any] | None:
    """The `effect` of a claims-table row (JSON text or dict), or None."""
    if isinstance(value, dict):
        return value
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return json.loads(value)
    except ValueError:
        return None


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def verdict_figure(claims: pd.DataFrame):
    """One panel per claim: its effect points with 95 % CIs, the paper's effect (diamond), 0 and the test's line.

    Each panel has its own x axis (the claims measure different things); a claim without an effect says so.
    """
    import matplotlib.pyplot as plt

    rows = list(claims.itertuples())
    fig, axes = plt.subplots(len(rows), 1, figsize=(11, 0.95 * len(rows) + 0.6), squeeze=False)
    for ax, row in zip(axes[:, 0], rows, strict=True):
        eff = effect_of(getattr(row, "effect", ""))
        colour = VERDICT_COLOUR.get(row.verdict, "#6e7781")
        title = f"{row.id}: {row.verdict}"
        ax.set_yticks([])
        ax.spines[["left", "right", "top"]].set_visible(False)
        points = [p for p in (eff or {}).get("points", []) if _finite(p.get("value"))]
        if not points:
            ax.text(0.0, 0.5, title, color=colour, fontweight="bold", transform=ax.transAxes, va="center")
            note = ("not run" if row.verdict == "not run" else "no decided setting: nothing to plot" if eff
                    else "no effect size recorded")
            ax.text(0.45, 0.5, note, transform=ax.transAxes, va="center", color="#555")
            ax.set_xticks([])
            ax.spines["bottom"].set_visible(False)
            continue
        ys = range(len(points))
        for y, p in zip(ys, points, strict=True):
            lo, hi = p.get("lo"), p.get("hi")
            if _finite(lo) and _finite(hi):
                ax.plot([lo, hi], [y, y], color=colour, lw=2)
            ax.plot(p["value"], y, "o", color=colour, ms=5)
            ax.text(1.005, (y + 0.5) / len(points), p.get("label", ""), transform=ax.transAxes, fontsize=7,
                    va="center", color="#333")
        ax.axvline(0, color="#999", lw=0.8)
        paper = eff.get("paper")
        if _finite(paper):
            ax.plot([paper] * len(points), list(ys), "D", color="#0550ae", ms=6, mfc="none", label="paper")
        threshold = eff.get("threshold")
        if _finite(threshold):
            ax.axvline(threshold, color="#b42318", lw=0.8, ls="--")
        ax.set_ylim(-0.7, len(points) - 0.3)
        ax.set_title(f"{title} — {eff.get('name', '')}", loc="left", fontsize=9, color=colour)
        ax.tick_params(axis="x", labelsize=8)
    fig.text(0.01, 0.005, "dot: this run (line: 95 % CI) · open diamond: the paper's effect · grey line: 0 · red "
             "dashed: the test's threshold", fontsize=7, color="#555")
    fig.tight_layout(rect=(0, 0.02, 0.9, 1))
    return fig


def ordered_columns(columns: Sequence[str]) -> list[str]:
    """Columns in reading order: identifying ones, then the decisive numbers, then the rest; paths dropped."""
    cols = [c for c in columns if c not in HIDDEN_COLUMNS]
    first = [c for c in KEY_COLUMNS if c in cols]
    second = [c for c in VALUE_COLUMNS if c in cols and c not in first]
    return first + second + [c for c in cols if c not in first and c not in second]


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def table_html(df: pd.DataFrame, table_id: str, per_page: int = ROWS_PER_PAGE) -> str:
    """A readable HTML table: reading-order columns, 4 significant digits, scrolling sideways inside the page,
    paginated (`per_page` rows a page) when long."""
    cols = ordered_columns(list(df.columns))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = []
    for i, row in enumerate(df[cols].itertuples(index=False)):
        page = i // per_page
        hidden = " hidden" if page else ""
        body.append(f"<tr data-page='{page}'{hidden}>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>")
    pages = max(1, math.ceil(len(df) / per_page))
    pager = (f"<div class='pager' data-table='{table_id}' data-pages='{pages}'><button type='button' data-step='-1'>"
             f"‹ previous</button> <span>page 1 of {pages}</span> <button type='button' data-step='1'>next ›"
             "</button></div>") if pages > 1 else ""
    return (f"<div class='scroll'><table id='{table_id}' class='data'><thead><tr>{head}</tr></thead><tbody>"
            + "".join(body) + f"</tbody></table></div>{pager}")


_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1340px;margin:1.2em auto;line-height:1.35;padding:0 1em;color:#1f2328}
h1{font-size:1.5em;margin:0.2em 0}h2{font-size:1.2em;margin:1.2em 0 0.4em}p.lead{margin:0.3em 0;color:#444}
nav a{margin-right:1em;font-size:0.9em}
table{border-collapse:collapse;font-size:0.85em}td,th{border:1px solid #d0d7de;padding:3px 6px;vertical-align:top;
text-align:left}th{background:#f6f8fa}
table.claims{width:100%;table-layout:fixed;font-size:0.84em}table.claims td{padding:4px 6px}
table.claims col.c{width:29%}table.claims col.v{width:12%}table.claims col.k{width:34%}table.claims col.p{width:16%}
table.claims col.d{width:9%}
.badge{display:inline-block;border-radius:1em;padding:1px 8px;font-weight:600;font-size:0.92em;white-space:nowrap;
color:#fff}.badge.ok{background:#1a7f37}.badge.no{background:#b42318}.badge.undecided{background:#9a6700}
.badge.notrun{background:#6e7781}.badge.mixed{background:#8250df}
.scroll{overflow-x:auto;max-width:100%;max-height:70vh;overflow-y:auto;border:1px solid #eee}
.scroll table{margin:0}.scroll thead th{position:sticky;top:0}
details{margin:0.3em 0}summary{cursor:pointer}.pager{margin:0.3em 0;font-size:0.85em}
figure{margin:0.6em 0}img{max-width:100%;border:1px solid #eee}figcaption{font-size:0.85em;color:#444}
.full dt{font-weight:600;margin-top:0.3em}.full dd{margin:0 0 0 1em}.muted{color:#6e7781}
"""

_SCRIPT = """<script>
document.querySelectorAll('.pager').forEach(p => {
  const t = document.getElementById(p.dataset.table), pages = +p.dataset.pages; let page = 0;
  p.querySelectorAll('button').forEach(b => b.addEventListener('click', () => {
    page = Math.min(pages - 1, Math.max(0, page + (+b.dataset.step)));
    t.querySelectorAll('tbody tr').forEach(r => { r.hidden = +r.dataset.page !== page; });
    p.querySelector('span').textContent = `page ${page + 1} of ${pages}`;
  }));
});
function openTarget() { const el = document.getElementById(location.hash.slice(1));
  if (el && el.tagName === 'DETAILS') el.open = true; }
window.addEventListener('hashchange', openTarget); openTarget();
</script>"""


def _badge(verdict: str) -> str:
    cls = VERDICT_CLASS.get(verdict, "mixed")
    return f"<span class='badge {cls}'>{html.escape(verdict)}</span>"


def _report_links(row: pd.Series, rel: Any, base: Path) -> list[tuple[str, str]]:
    """(label, href) of the reports that tested a claim; none for a claim that was not run (no dead links)."""
    reports = [r for r in str(row.get("report") or "").split(" | ") if r and r != "nan"]
    labels = [lab for lab in str(row.get("report_label") or "").split(" | ")]
    return [(lab, rel(base / "summary" / r)) for r, lab in zip(reports, labels, strict=False)
            if (base / "summary" / r).exists()]


def write_index(
    path: str | Path,
    title: str,
    claims: pd.DataFrame,
    sections: list[tuple[str, list[tuple[str, str]]]],
    tables: list[tuple[str, str]] | None = None,
    figures: list[tuple[str, list[tuple[str, str]]]] | None = None,
    verdict_png: str | None = None,
    not_run: Sequence[str] = (),
    preamble: str = "",
) -> Path:
    """Write results/index.html (see the module docstring).

    `claims` has the columns of `results.claims_table`; `sections` are (heading, [(label, report path)]);
    `tables` (caption, csv path); `figures` (report label, [(caption, png path)]); `verdict_png` the verdict
    figure; `not_run` the sections this run's config switched off.
    """
    base = Path(path).parent

    def rel(p: str | Path) -> str:
        return html.escape(os.path.relpath(p, base))

    counts = claims["verdict"].value_counts()
    tally = " · ".join(f"{_badge(v)} {int(n)}" for v, n in counts.items())
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='lead'>The paper's {len(claims)} claims, checked by this run: {tally}. Each row: the verdict, "
        "the numbers that decide it (95 % CI) and the paper's number; <i>details</i> opens the test, every number "
        "and the reasons, <i>report</i> the evidence.</p>",
        "<nav><a href='#claims'>Claims</a><a href='#verdict-figure'>Verdict figure</a><a href='#full'>Claims in "
        "full</a><a href='#reports'>Reports</a><a href='#tables'>Tables</a><a href='#figures'>Figures</a>"
        "<a href='summary/report.html'>Summary report</a></nav>",
        preamble,
        "<table class='claims' id='claims'><colgroup><col class='c'><col class='v'><col class='k'><col class='p'>"
        "<col class='d'></colgroup><tr><th>claim of the paper</th><th>verdict</th><th>this run: key number "
        "(95 % CI)</th><th>the paper</th><th>details</th></tr>",
    ]
    for _, row in claims.iterrows():
        cid = html.escape(str(row["id"]))
        links = _report_links(row, rel, base)
        key = str(row.get("key_number") or "")
        if not key or key == "nan":
            key = "section not run in this config" if row["verdict"] == "not run" else str(row.get("numbers") or "")
        paper = str(row.get("paper") or "")
        paper = "" if paper == "nan" else paper
        detail = [f"<a href='#full-{cid}'>details</a>"] + [f"<a href='{href}'>report</a>" for _, href in links[:1]]
        parts.append(
            f"<tr data-claim='{cid}'><td>{html.escape(str(row['claim']))}</td><td>{_badge(str(row['verdict']))}</td>"
            f"<td class='key'>{html.escape(key)}</td><td class='paper'>{html.escape(paper)}</td>"
            f"<td>{' · '.join(detail)}</td></tr>")
    parts.append("</table>")
    if verdict_png and Path(verdict_png).exists():
        parts.append(f"<figure id='verdict-figure'><img src='{rel(verdict_png)}' alt='verdict figure'><figcaption>"
                     "Each claim's effect in this run (dot, 95 % CI as a line) against the paper's effect (open "
                     "diamond) and 0; the red dashed line is the test's threshold where it has one. Units differ "
                     "between rows (see each title).</figcaption></figure>")
    parts.append("<h2 id='full'>Claims in full</h2>")
    for _, row in claims.iterrows():
        cid = html.escape(str(row["id"]))
        items = [(lab, row.get(col)) for lab, col in (("Test", "test"), ("Numbers", "numbers"), ("Why", "why"),
                                                      ("Decidable / detectable", "decidable"))]
        body = "".join(f"<dt>{lab}</dt><dd>{html.escape(str(v))}</dd>" for lab, v in items
                       if isinstance(v, str) and v.strip() and v != "nan")
        links = " · ".join(f"<a href='{href}'>{html.escape(lab)}</a>" for lab, href in _report_links(row, rel, base))
        parts.append(f"<details id='full-{cid}'><summary>{_badge(str(row['verdict']))} "
                     f"{html.escape(str(row['claim']))}</summary><dl class='full'>"
                     + (body or "<dd class='muted'>not run in this config</dd>")
                     + (f"<dt>Reports</dt><dd>{links}</dd>" if links else "") + "</dl></details>")
    parts.append("<h2 id='reports'>Reports</h2>")
    for heading, links in sections:
        parts.append(f"<h3>{html.escape(heading)}</h3><ul>")
        parts += [f"<li><a href='{rel(target)}'>{html.escape(label)}</a></li>" for label, target in links]
        parts.append("</ul>")
    for heading in not_run:
        parts.append(f"<h3>{html.escape(heading)}</h3><p class='muted'>not run: the section is switched off in this "
                     "run's config.</p>")
    parts.append("<h2 id='tables'>Tables</h2>")
    for i, (caption, csv) in enumerate(tables or []):
        df = pd.read_csv(csv)
        parts.append(f"<details><summary>{html.escape(caption)} ({len(df)} rows, {len(df.columns)} columns; "
                     f"<a href='{rel(csv)}'>CSV</a>)</summary>{table_html(df, f'table-{i}')}</details>")
    parts.append("<h2 id='figures'>Figures</h2>")
    for label, figs in figures or []:
        if not figs:
            continue
        parts.append(f"<details><summary>{html.escape(label)} ({len(figs)} figures)</summary>")
        parts += [f"<figure><img src='{rel(f)}' loading='lazy' alt='{html.escape(c)}'><figcaption>{html.escape(c)}"
                  "</figcaption></figure>" for c, f in figs]
        parts.append("</details>")
    parts.append(_SCRIPT + "</body></html>")
    return atomic_write_text(path, "\n".join(parts))


def figure_captions(folder: str | Path) -> list[tuple[str, str]]:
    """(caption, png path) of a report's figures: the captions `plots.save_figure` recorded, else the file name."""
    folder = Path(folder)
    store = folder / "captions.json"
    captions = json.loads(store.read_text()) if store.is_file() else {}
    return [(captions.get(p.stem) or p.stem.replace("_", " "), str(p)) for p in sorted(folder.glob("*.png"))]
