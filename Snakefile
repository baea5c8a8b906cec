# wsae: SAE vs weighted SAE (arXiv 2506.15963). Wiring only: rules live in workflow/rules/*.smk.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/notebook.smk"
include: "workflow/rules/toy.smk"
include: "workflow/rules/lm.smk"
include: "workflow/rules/vision.smk"
include: "workflow/rules/aggregate.smk"


rule all:
    default_target: True
    input:
        "results/index.html",
