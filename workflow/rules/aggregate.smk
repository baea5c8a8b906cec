# Cross-experiment outputs: the summary notebook (one row per claim), results/index.html, and the assets that
# `snakemake --report` shows (claims, tables, figures).


use rule _notebook as summary with:
    input:
        nb=notebook("summary"),
        code=code("summary"),
        metrics=[r[2] for r in summary_reports()],
    output:
        metrics="results/summary/metrics.json",
        claims="results/summary/claims.csv",
        verdicts="results/summary/figures/verdicts.png",
    log:
        **nb_logs("results/summary"),
    benchmark:
        "results/summary/benchmark.tsv"
    params:
        **nb_params({"reports": summary_reports(), "out_dir": "results/summary", "device": config["device"]}),


rule report_assets:
    input:
        claims="results/summary/claims.csv",
        verdicts="results/summary/figures/verdicts.png",
        tables=[t[1] for t in TABLES],
        metrics=[r[2] for r in summary_reports()],
    output:
        claims=report(
            directory("results/summary/report_claims"),
            patterns=["{name}.html", "{name}.png"],
            caption="../report/claims.rst",
            category="1. Claims",
        ),
        tables=report(
            directory("results/summary/report_tables"),
            patterns=["{name}.html"],
            caption="../report/tables.rst",
            category="2. Tables",
        ),
        figures=report(
            directory("results/summary/report_figures"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="3. Figures",
        ),
        pages=report(
            directory("results/summary/report_pages"),
            patterns=["{name}.html"],
            caption="../report/pages.rst",
            category="4. Reports",
        ),
    log:
        "logs/report_assets.log",
    params:
        table_captions={Path(t[1]).stem: t[0] for t in TABLES},
        page_labels={"summary": "Summary: one row per claim"}
        | {"_".join(Path(r[2]).parent.parts[1:]): f"{r[0]}: {r[1]}" for r in REPORTS},
        # Read when the report is built (a function of the inputs: Snakemake does not record it, so a caption
        # edit reruns nothing).
        figure_captions=lambda wildcards, input: figure_caption_map(input.metrics),
    conda:
        "../../environment.yml"
    script:
        "../scripts/collect_assets.py"


rule index:
    input:
        claims="results/summary/claims.csv",
        verdicts="results/summary/figures/verdicts.png",
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
        not_run=sections_not_run(),
    conda:
        "../../environment.yml"
    script:
        "../scripts/write_index.py"
