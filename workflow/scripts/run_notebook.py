"""Snakemake `script:` entry: execute one notebook through wsae_utils.nbrun (parameters as Python objects)."""

from wsae_utils.nbrun import execute_notebook

snakemake = globals()["snakemake"]  # injected by Snakemake
execute_notebook(
    snakemake.input.nb,
    snakemake.log.notebook,
    parameters=dict(snakemake.params.nb),
    output_html=snakemake.output.html,
    log_output=True,
)
