"""Snakemake `script:` entry: results/index.html (claims first, reports, tables folded, figures once) and the
per-job benchmark table (wall time and peak memory of every notebook job)."""

from pathlib import Path

import pandas as pd

from wsae_utils.run.results import write_index_html, write_table

snakemake = globals()["snakemake"]  # injected by Snakemake
sections: dict[str, list] = {"Summary": [("Summary: one row per claim, with tests and numbers",
                                          "results/summary/report.html")]}
figures, bench = [], []
for section, label, path in getattr(snakemake.params, "links", []):  # the latent browser, right after the summary
    sections.setdefault(section, []).append((label, path))
for section, label, path in snakemake.params.reports:
    sections.setdefault(section, []).append((label, path))
    folder = Path(path).parent
    figs = [(fig.stem.replace("_", " "), str(fig)) for fig in sorted((folder / "figures").glob("*.png"))]
    figures.append((f"{section}: {label}", figs))
    if (folder / "benchmark.tsv").is_file():
        b = pd.read_csv(folder / "benchmark.tsv", sep="\t")
        bench.append({"report": f"{section}: {label}", "wall_s": b["s"].iloc[-1], "peak_rss_mb": b["max_rss"].iloc[-1]})
bench_df = pd.DataFrame(bench, columns=["report", "wall_s", "peak_rss_mb"])
write_table(bench_df, snakemake.output.benchmarks)
tables = list(snakemake.params.tables) + [("Wall time and peak memory per notebook job", snakemake.output.benchmarks)]
write_index_html(
    snakemake.output.index,
    snakemake.params.title,
    pd.read_csv(snakemake.input.claims),
    list(sections.items()),
    tables=tables,
    figures=figures,
)
