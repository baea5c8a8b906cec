# wsae: SAE vs weighted SAE (arXiv 2506.15963). Wiring only: rules live in workflow/rules/*.smk.
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")


report: "workflow/report/workflow.rst"


# The embedded default, unless --configfile names another: each config file is complete on its own (keys it
# leaves out take the notebooks' defaults, never the values of config.yaml).
if not workflow.overwrite_configfiles:

    configfile: Path(workflow.basedir) / "config" / "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/notebook.smk"
include: "workflow/rules/toy.smk"
include: "workflow/rules/lm.smk"
include: "workflow/rules/autointerp.smk"
include: "workflow/rules/saebench.smk"
include: "workflow/rules/latents.smk"
include: "workflow/rules/vision.smk"
include: "workflow/rules/aggregate.smk"


rule all:
    default_target: True
    input:
        "results/index.html",
        # Snakemake rebuilds a missing intermediate only when a target asks for it (an up-to-date summary does not):
        # the default target names every file the summary and index read, so deleting one reruns its rule and them.
        "results/summary/claims.csv",
        # The pages of `snakemake --report` (directories: named here rather than as an input of a job, so a copy of
        # the checkout that resets modification times reruns nothing for them).
        rules.report_assets.output,
        [r[2] for r in summary_reports()],
        [t[1] for t in TABLES],
