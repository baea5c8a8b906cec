# Language-model SAEs: one LM pass writes the activation cache; per layer, one job trains every (α, Γ variant)
# SAE from the cache and one evaluates them on the held-out novel; a table and a summary across layers.
# Changing α or any SAE setting reruns no LM pass: only lm_acts runs the LM over the token ids.


include: "lm_common.smk"


if section_enabled("lm"):

    use rule _notebook as lm_acts with:
        # the LM chain is the run's critical path: start it before the toy and vision jobs that can fill in
        priority: 10
        input:
            nb=notebook("lm_acts"),
            # Its import closure holds no SAE module: a trainer edit reruns no LM pass (tested).
            code=code("lm_acts"),
        output:
            metrics=f"{LM_ACTS}/metrics.json",
            meta=f"{LM_ACTS}/meta.json",
            tokens=f"{LM_ACTS}/tokens.safetensors",
            documents=f"{LM_ACTS}/documents.csv",
            missing_shards=lm_acts_missing_shards(),
        log:
            **nb_logs(LM_ACTS),
        benchmark:
            f"{LM_ACTS}/benchmark.tsv"
        params:
            **nb_params(notebook_params("lm", "acts", LM_ACTS)),
        threads: 2
        resources:
            mem_mb=4000,
            gpu=gpu_jobs(),

    use rule _notebook as lm_train with:
        # the LM chain is the run's critical path: start it before the toy and vision jobs that can fill in
        priority: 10
        input:
            nb=notebook("lm_train"),
            missing_shards=lambda w: lm_acts_missing_shards(w.layer),
            code=code("lm_train"),
            meta=f"{LM_ACTS}/meta.json",
        output:
            metrics="results/lm/train/layer{layer}/metrics.json",
            rows="results/lm/train/layer{layer}/rows.csv",
            saes=[f"results/lm/saes/layer{{layer}}/alpha{t}/cfg.json" for t in lm_alpha_tags()],
        log:
            **nb_logs("results/lm/train/layer{layer}"),
        benchmark:
            "results/lm/train/layer{layer}/benchmark.tsv"
        params:
            **nb_params(lm_train_params, wildcard_examples(layer=lm_layers())),
        threads: 1
        resources:
            mem_mb=3000,
            gpu=gpu_jobs(),

    use rule _notebook as lm_sae with:
        # the LM chain is the run's critical path: start it before the toy and vision jobs that can fill in
        priority: 10
        input:
            nb=notebook("lm_sae"),
            missing_shards=lambda w: lm_acts_missing_shards(w.layer),
            code=code("lm_sae"),
            meta=f"{LM_ACTS}/meta.json",
            train="results/lm/train/layer{layer}/rows.csv",
        output:
            metrics="results/lm/sae/layer{layer}/metrics.json",
            rows="results/lm/sae/layer{layer}/rows.csv",
            long="results/lm/sae/layer{layer}/long.csv",
        log:
            **nb_logs("results/lm/sae/layer{layer}"),
        benchmark:
            "results/lm/sae/layer{layer}/benchmark.tsv"
        params:
            **nb_params(lm_sae_params, wildcard_examples(layer=lm_layers())),
        threads: 1
        resources:
            # Measured peak 4.0 GB on an AVX2 CPU (fp32 LM splices; 2.0 GB with bf16): benchmarks/peak_memory.csv.
            mem_mb=6000,
            gpu=gpu_jobs(),

    rule lm_table:
        input:
            [f"results/lm/sae/layer{l}/rows.csv" for l in lm_layers()],
        output:
            "results/tables/lm_sae.csv",
        log:
            "logs/lm_table.log",
        params:
            mode="rows",
            labels=None,
        conda:
            "../../environment.yml"
        script:
            "../scripts/collect_table.py"

    use rule _notebook as lm_summary with:
        input:
            nb=notebook("lm_summary"),
            code=code("lm_summary"),
            table="results/tables/lm_sae.csv",
            long=[f"results/lm/sae/layer{l}/long.csv" for l in lm_layers()],
        output:
            metrics="results/lm/summary/metrics.json",
        log:
            **nb_logs("results/lm/summary"),
        benchmark:
            "results/lm/summary/benchmark.tsv"
        params:
            **nb_params(
                notebook_params(
                    "lm",
                    "summary",
                    "results/lm/summary",
                    table="results/tables/lm_sae.csv",
                    long_tables=[f"results/lm/sae/layer{l}/long.csv" for l in lm_layers()],
                )
            ),
        threads: 1

    REPORTS.append(
        (
            "Language model",
            "Activation cache: model, weights, tokens per document, LM throughput, variance spectrum",
            f"{LM_ACTS}/report.html",
        )
    )
    for _l in lm_layers():
        REPORTS.append(
            (
                "Language model",
                f"Layer {_l}: training of every α / Γ variant (did it train?)",
                f"results/lm/train/layer{_l}/report.html",
            )
        )
        REPORTS.append(
            (
                "Language model",
                f"Layer {_l}: held-out FVU, L0, dead, CE recovered, KL with CIs",
                f"results/lm/sae/layer{_l}/report.html",
            )
        )
    REPORTS.append(("Language model", "Summary: α effect per Γ variant (lm-fidelity)", "results/lm/summary/report.html"))
    TABLES.append(
        (
            "LM SAEs per (layer, Γ variant, α): held-out metrics with 95 % CIs, per cell over SAE seeds and per seed "
            "(column level)",
            "results/tables/lm_sae.csv",
        )
    )
