"""Snakemake `script:` entry: execute one notebook through wsae_utils.run.nbrun (parameters as Python objects).

The rule's `threads:` is the one thread setting: it reaches the notebook as `num_threads`. A failing cell prints
a short message (the cell's error) and leaves the partial report as the rule's `html` log.
"""

import sys

from wsae_utils.run.nbrun import NotebookError, execute_notebook
from wsae_utils.run.sources import notebook_defaults

snakemake = globals()["snakemake"]  # injected by Snakemake
params = dict(snakemake.params.nb)
if params.get("device") == "cuda":
    import torch

    if not torch.cuda.is_available():  # the DAG was built elsewhere (device_check=false on a cluster login node)
        sys.exit(f"{snakemake.rule}: device 'cuda' requested but this node has no CUDA device")
if "num_threads" in notebook_defaults(snakemake.input.nb):
    params["num_threads"] = snakemake.threads
# The HTML is a log (kept when a cell fails) in the project's rules; accept it as an output too.
html = getattr(snakemake.log, "html", None) or getattr(snakemake.output, "html", None)
text_log = getattr(snakemake.log, "text", None)
try:
    execute_notebook(
        snakemake.input.nb,
        snakemake.log.notebook,
        parameters=params,
        output_html=html,
        log_path=text_log,
        threads=snakemake.threads,
    )
except NotebookError as err:
    print(err, file=sys.stderr)
    sys.exit(1)
