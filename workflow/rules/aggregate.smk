# Cross-experiment outputs: the summary notebook (one row per claim), results/index.html, and the assets that
# `snakemake --report` shows (claims, tables, figures).


use rule _notebook as summary with:
    input:
        nb=notebook("summary"),
        code=code("summary"),
        metrics=[r[2] for r in summary_reports()],
    output:
        metrics="results/summary/metrics.json",
        claims=report("results/summary/claims.csv", caption="../report/claims.rst", category="1. Claims"),
    log:
        **nb_logs("results/summary"),
    benchmark:
        "results/summary/benchmark.tsv"
    params:
        nb={"reports": summary_reports(), "out_dir": "results/summary", "device": config["device"]},


rule report_assets:
    input:
        tables=[t[1] for t in TABLES],
        metrics=[r[2] for r in summary_reports()],
    output:
        tables=report(
            directory("results/summary/tables"),
            patterns=["{name}.csv"],
            caption="../report/tables.rst",
            category="2. Tables",
        ),
        figures=report(
            directory("results/summary/figures"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="3. Figures",
        ),
    log:
        "logs/report_assets.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/collect_assets.py"


rule index:
    input:
        claims="results/summary/claims.csv",
        assets="results/summary/tables",
        reports=[r[2] for r in summary_reports()],
        tables=[t[1] for t in TABLES],
        links=[l[2] for l in LINKS],
    output:
        index="results/index.html",
        benchmarks="results/tables/benchmarks.csv",
    log:
        "logs/index.log",
    params:
        reports=REPORTS,
        tables=TABLES,
        links=LINKS,
        title=config["title"],
    conda:
        "../../environment.yml"
    script:
        "../scripts/write_index.py"
