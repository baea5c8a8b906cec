"""Snakemake `script:` entry: results/index.html linking every report and table."""

import pandas as pd

from wsae_utils.results import write_index_html

snakemake = globals()["snakemake"]  # injected by Snakemake
sections: dict[str, list] = {}
for section, label, path in snakemake.params.reports:
    sections.setdefault(section, []).append((label, path))
tables = [(caption, pd.read_csv(path)) for caption, path in snakemake.params.tables]
links = [(f"{caption} (CSV)", path) for caption, path in snakemake.params.tables]
write_index_html(
    snakemake.output[0],
    snakemake.params.title,
    list(sections.items()) + [("Tables", links)],
    tables=tables,
)
