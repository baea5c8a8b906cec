# Cross-experiment outputs: the summary notebook (verdicts, all figures) and results/index.html.


use rule _notebook as summary with:
    input:
        nb=notebook("summary"),
        code=code(),
        metrics=[r[2] for r in summary_reports()],
    output:
        metrics="results/summary/metrics.json",
        html="results/summary/report.html",
        claims="results/summary/claims.csv",
    log:
        notebook="results/summary/report.ipynb",
    params:
        nb={"reports": summary_reports(), "out_dir": "results/summary", "device": config["device"]},


rule index:
    input:
        summary="results/summary/claims.csv",
        reports=[r[2] for r in REPORTS],
        tables=[t[1] for t in TABLES],
    output:
        "results/index.html",
    log:
        "logs/index.log",
    params:
        reports=REPORTS,
        tables=TABLES,
        title=config["title"],
    conda:
        "../../environment.yml"
    script:
        "../scripts/write_index.py"
