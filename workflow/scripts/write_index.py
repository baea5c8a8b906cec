"""Snakemake `script:` entry: results/index.html linking every report and table, with verdicts and figures inline."""

from pathlib import Path

import pandas as pd

from wsae_utils.results import write_index_html

snakemake = globals()["snakemake"]  # injected by Snakemake
sections: dict[str, list] = {"Summary": [("Summary: verdicts and all figures", "results/summary/report.html")]}
figures = []
for section, label, path in snakemake.params.reports:
    sections.setdefault(section, []).append((label, path))
    for fig in sorted((Path(path).parent / "figures").glob("*.png")):
        figures.append((f"{section}: {label} — {fig.stem}", str(fig)))
claims = pd.read_csv(snakemake.input.summary)
verdicts = {True: "reproduced", False: "NOT reproduced"}
claims["verdict"] = claims["claim_reproduced"].map(verdicts).fillna("not decidable here")
tables = [("Did the paper's claims reproduce?", claims[["section", "report", "verdict"]])]
tables += [(caption, pd.read_csv(path)) for caption, path in snakemake.params.tables]
links = [(f"{caption} (CSV)", path) for caption, path in snakemake.params.tables]
write_index_html(
    snakemake.output[0],
    snakemake.params.title,
    list(sections.items()) + [("Tables", links)],
    figures=figures,
    tables=tables,
)
