# Language-model SAEs: one training job for all (layer, α), one evaluation notebook per (layer, α), a table and a
# summary across layers.


include: "lm_common.smk"


if section_enabled("lm"):

    use rule _notebook as lm_train with:
        input:
            nb=notebook("lm_train"),
            code=code("lm", "export"),
        output:
            metrics="results/lm/train/metrics.json",
            html="results/lm/train/report.html",
            rows="results/lm/train/rows.csv",
            saes=[f"{d}/cfg.json" for d in lm_sae_dirs()],
        log:
            notebook="results/lm/train/report.ipynb",
        params:
            nb=lm_train_params,
        threads: 2
        resources:
            mem_mb=6000,
            gpu=gpu_jobs(),

    use rule _notebook as lm_sae with:
        input:
            nb=notebook("lm_sae"),
            code=code("lm", "export"),
            sae="results/lm/saes/layer{layer}/alpha{alpha}/cfg.json",
        output:
            metrics="results/lm/sae/layer{layer}/alpha{alpha}/metrics.json",
            html="results/lm/sae/layer{layer}/alpha{alpha}/report.html",
            rows="results/lm/sae/layer{layer}/alpha{alpha}/rows.csv",
        log:
            notebook="results/lm/sae/layer{layer}/alpha{alpha}/report.ipynb",
        params:
            nb=lm_sae_params,
        threads: 1
        resources:
            mem_mb=4000,
            gpu=gpu_jobs(),

    rule lm_table:
        input:
            [
                f"results/lm/sae/layer{l}/alpha{lm_alpha_tag(a)}/metrics.json"
                for l in config["lm"]["layers"]
                for a in config["lm"]["alphas"]
            ],
        output:
            "results/tables/lm_sae.csv",
        log:
            "logs/lm_table.log",
        params:
            mode="metrics",
            labels=None,
        conda:
            "../../environment.yml"
        script:
            "../scripts/collect_table.py"

    use rule _notebook as lm_summary with:
        input:
            nb=notebook("lm_summary"),
            code=code("lm"),
            table="results/tables/lm_sae.csv",
        output:
            metrics="results/lm/summary/metrics.json",
            html="results/lm/summary/report.html",
        log:
            notebook="results/lm/summary/report.ipynb",
        params:
            nb=lm_summary_params,
        threads: 1

    REPORTS.append(("Language model", "Training: calibration, Γ, loss curves (all layers, α)", "results/lm/train/report.html"))
    for _l in config["lm"]["layers"]:
        for _a in config["lm"]["alphas"]:
            REPORTS.append(
                (
                    "Language model",
                    f"SAE layer {_l}, α = {lm_alpha_tag(_a)}: FVU, L0, CE/KL, densities, top contexts",
                    f"results/lm/sae/layer{_l}/alpha{lm_alpha_tag(_a)}/report.html",
                )
            )
    REPORTS.append(("Language model", "Summary across layers and α", "results/lm/summary/report.html"))
    TABLES.append(("LM SAEs per (layer, α): FVU, L0, dead, CE recovered, KL (held-out)", "results/tables/lm_sae.csv"))
