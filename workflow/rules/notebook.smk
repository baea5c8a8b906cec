# Template rule: every notebook runs through it (`use rule _notebook as <name> with: ...`). A rule that uses it
# declares its own outputs, logs (notebook, html, text) and `benchmark:` file under its output folder.
# The executed notebook and its HTML are logs, so they survive a failing cell; metrics.json is the output.


rule _notebook:
    # The template itself must never be chosen to make a file: its wildcard matches nothing real.
    wildcard_constraints:
        out="__template_only__",
    output:
        metrics="{out}/metrics.json",
    log:
        notebook="{out}/report.ipynb",
        html="{out}/report.html",
        text="{out}/run.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/run_notebook.py"
