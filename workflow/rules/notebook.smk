# Template rule: every notebook runs through it (`use rule _notebook as <name> with: ...`).

rule _notebook:
    # The template itself must never be chosen to make a file: its wildcard matches nothing real.
    wildcard_constraints:
        out="__template_only__",
    output:
        metrics="{out}/metrics.json",
        html="{out}/report.html",
    log:
        notebook="{out}/report.ipynb",
    conda:
        "../../environment.yml"
    script:
        "../scripts/run_notebook.py"
