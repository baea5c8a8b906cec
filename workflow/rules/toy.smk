# Toy-model experiment: one wildcard rule runs notebooks/toy_<unit>.py for every unit, and one collects its table.
# Parameters are the resolved notebook parameters (notebook defaults overlaid with config["toy"][<unit>]).

TOY_UNITS = {
    "theory": "Theory checks (Example 1, loss-gap identities, Theorems 1 and 3, shrinking/vanishing)",
    "sparsity": "Features per latent and recovery against sparsity S (paper Fig. 2)",
    "ablation": "Necessity of extreme sparsity, sparse activation and n_m >= n",
    "wsae": "Weighted SAE vs SAE: oracle and variance proxies, paired over seeds",
}


if section_enabled("toy"):

    use rule _notebook as toy with:
        input:
            nb=lambda w: notebook(f"toy_{w.unit}"),
            code=lambda w: code(f"toy_{w.unit}"),
        output:
            metrics="results/toy/{unit}/metrics.json",
            rows="results/toy/{unit}/rows.csv",
        log:
            **nb_logs("results/toy/{unit}"),
        benchmark:
            "results/toy/{unit}/benchmark.tsv"
        params:
            nb=lambda w: notebook_params("toy", w.unit, f"results/toy/{w.unit}"),
        wildcard_constraints:
            unit="|".join(TOY_UNITS),
        threads: 1
        resources:
            mem_mb=2000,

    rule toy_table:
        input:
            "results/toy/{unit}/rows.csv",
        output:
            "results/tables/toy_{unit}.csv",
        wildcard_constraints:
            unit="|".join(TOY_UNITS),
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
    FIGURES.append(("Toy: effective features per latent and recovery vs S",
                    "results/toy/sparsity/figures/recovery_vs_sparsity.png"))
    FIGURES.append(("Toy: WSAE − SAE paired ΔL_GT", "results/toy/wsae/figures/wsae_paired_lgt.png"))
