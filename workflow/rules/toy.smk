# Toy-model experiment: one rule per notebook (theory, sparsity, ablation, wsae) and the result tables.
# Notebook parameters are plain dicts built at parse time from config["toy"][<unit>] (no helper functions,
# so `snakemake --lint` stays clean).

TOY_UNITS = {
    "theory": "Theory checks (Example 1, loss-gap identities, closed form, shrinking/vanishing)",
    "sparsity": "Features per latent and recovery against sparsity S (paper Fig. 2)",
    "ablation": "Necessity of extreme sparsity, sparse activation and n_m >= n",
    "wsae": "Weighted SAE vs SAE at low sparsity; variance proxy vs monosemanticity",
}


if section_enabled("toy"):

    use rule _notebook as toy_theory with:
        input:
            nb=notebook("toy_theory"),
            code=code("toy"),
        output:
            metrics="results/toy/theory/metrics.json",
            html="results/toy/theory/report.html",
            rows="results/toy/theory/rows.csv",
        log:
            notebook="results/toy/theory/report.ipynb",
        params:
            nb=notebook_params("toy", "theory", "results/toy/theory"),
        threads: 1
        resources:
            mem_mb=2000,

    use rule _notebook as toy_sparsity with:
        input:
            nb=notebook("toy_sparsity"),
            code=code("toy"),
        output:
            metrics="results/toy/sparsity/metrics.json",
            html="results/toy/sparsity/report.html",
            rows="results/toy/sparsity/rows.csv",
        log:
            notebook="results/toy/sparsity/report.ipynb",
        params:
            nb=notebook_params("toy", "sparsity", "results/toy/sparsity"),
        threads: 1
        resources:
            mem_mb=2000,

    use rule _notebook as toy_ablation with:
        input:
            nb=notebook("toy_ablation"),
            code=code("toy"),
        output:
            metrics="results/toy/ablation/metrics.json",
            html="results/toy/ablation/report.html",
            rows="results/toy/ablation/rows.csv",
        log:
            notebook="results/toy/ablation/report.ipynb",
        params:
            nb=notebook_params("toy", "ablation", "results/toy/ablation"),
        threads: 1
        resources:
            mem_mb=2000,

    use rule _notebook as toy_wsae with:
        input:
            nb=notebook("toy_wsae"),
            code=code("toy"),
        output:
            metrics="results/toy/wsae/metrics.json",
            html="results/toy/wsae/report.html",
            rows="results/toy/wsae/rows.csv",
        log:
            notebook="results/toy/wsae/report.ipynb",
        params:
            nb=notebook_params("toy", "wsae", "results/toy/wsae"),
        threads: 1
        resources:
            mem_mb=2000,

    rule toy_table:
        input:
            "results/toy/{unit}/rows.csv",
        output:
            "results/tables/toy_{unit}.csv",
        wildcard_constraints:
            unit="theory|sparsity|ablation|wsae",
        log:
            "logs/toy_table_{unit}.log",
        params:
            mode="rows",
            labels=None,
        conda:
            "../../environment.yml"
        script:
            "../scripts/collect_table.py"

    for _unit, _label in TOY_UNITS.items():
        REPORTS.append(("Toy model", _label, f"results/toy/{_unit}/report.html"))
        TABLES.append((f"Toy model: {_label}", f"results/tables/toy_{_unit}.csv"))
