"""Snakemake `script:` entry: build one results/tables/*.csv from notebook outputs.

mode "metrics": one row per metrics.json (its scalar keys); mode "rows": concatenate the rows.csv files.
`params.labels` (a list of dicts, one per input) adds identifying columns to each input's rows.
"""

import pandas as pd

from wsae_utils.run.results import metrics_table, write_table

snakemake = globals()["snakemake"]  # injected by Snakemake
files = list(snakemake.input)
labels = snakemake.params.get("labels") or [{} for _ in files]
if snakemake.params.mode == "metrics":
    frames = [metrics_table([f]) for f in files]
else:
    frames = [pd.read_csv(f) for f in files]
for frame, lab in zip(frames, labels, strict=True):
    for k, v in lab.items():
        frame.insert(0, k, v)
write_table(pd.concat(frames, ignore_index=True), snakemake.output[0])
