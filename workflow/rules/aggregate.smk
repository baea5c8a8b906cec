# Cross-experiment outputs: summary notebook and results/index.html.


rule index:
    input:
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
