"""Snakemake `script:` entry: copy the result tables and every report's figures into two folders that
`snakemake --report` shows (tables and figures are made inside notebooks, so they are gathered here)."""

import shutil
from pathlib import Path

snakemake = globals()["snakemake"]  # injected by Snakemake
tables, figures = Path(snakemake.output.tables), Path(snakemake.output.figures)
for folder in (tables, figures):
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
for csv in snakemake.input.tables:
    shutil.copy(csv, tables / Path(csv).name)
for metrics in snakemake.input.metrics:
    unit = Path(metrics).parent
    tag = "_".join(unit.relative_to("results").parts)
    for fig in sorted((unit / "figures").glob("*.png")):
        shutil.copy(fig, figures / f"{tag}__{fig.name}")
