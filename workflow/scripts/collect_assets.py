"""Snakemake `script:` entry: the pages `snakemake --report` shows, gathered from the finished run.

Snakemake's report shows HTML in a frame, images inline and CSV only as a download, so the claims and every result
table are written here as HTML tables (the index's readable form), the figures are copied with the captions the
notebooks recorded, and every executed report is copied in, so the one report file carries the evidence too.
"""

import html
import shutil
from pathlib import Path

import pandas as pd

from wsae_utils.run.claims_index import figure_captions, table_html

snakemake = globals()["snakemake"]  # injected by Snakemake
claims_dir, tables, figures, pages = (Path(snakemake.output[k]) for k in ("claims", "tables", "figures", "pages"))
for folder in (claims_dir, tables, figures, pages):
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
STYLE = ("<style>body{font-family:system-ui,sans-serif;margin:1em}table{border-collapse:collapse;font-size:0.85em}"
         "td,th{border:1px solid #d0d7de;padding:3px 6px;text-align:left;vertical-align:top}th{background:#f6f8fa}"
         ".scroll{overflow-x:auto}</style>")


def page(title: str, body: str) -> str:
    """A standalone HTML page."""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>{STYLE}</head>"
            f"<body><h2>{html.escape(title)}</h2>{body}</body></html>\n")


claims = pd.read_csv(snakemake.input.claims, keep_default_na=False)
show = claims[["id", "claim", "verdict", "key_number", "paper", "test", "numbers", "why", "decidable"]]
(claims_dir / "claims.html").write_text(page("Claims of the paper: verdict, key number, the paper's number",
                                             table_html(show, "claims", per_page=len(show) or 1)))
shutil.copy(snakemake.input.verdicts, claims_dir / "verdicts.png")
summary_page = Path(snakemake.input.claims).parent / "report.html"
if summary_page.is_file():
    shutil.copy(summary_page, pages / "summary.html")
for csv in snakemake.input.tables:
    df = pd.read_csv(csv)
    (tables / f"{Path(csv).stem}.html").write_text(page(Path(csv).stem, table_html(df, "t", per_page=len(df) or 1)))
for metrics in snakemake.input.metrics:
    unit = Path(metrics).parent
    tag = "_".join(unit.relative_to("results").parts)
    for _caption, fig in figure_captions(unit / "figures"):
        shutil.copy(fig, figures / f"{tag}__{Path(fig).name}")
    if (unit / "report.html").is_file():
        shutil.copy(unit / "report.html", pages / f"{tag}.html")
