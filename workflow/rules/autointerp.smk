# Auto-interpretability of the LM SAEs (the paper's Table 1): one job fixes the protocol, embeds every held-out
# window (MiniLM) and checks each offline proxy on planted latents; one job per layer scores every SAE of that
# layer and a random-weight SAE; the summary picks the proxy by its trained-vs-random margin and builds Table 1.
# Needs the lm section (activation cache, trained SAEs); scoring reruns need no LM pass.

AI_DIR = "results/autointerp"
LATENTS_DIR = "results/latents"  # the latent browser's pages (workflow/rules/latents.smk)


if section_enabled("autointerp") and section_enabled("lm") and config["autointerp"].get("backend") == "openai":

    # An unreachable LLM server stops the run before any job starts (the checks notebook pings again).
    onstart:
        from wsae_utils.autointerp.llm_client import OpenAIChat

        OpenAIChat(
            config["autointerp"].get("base_url", ""), "ping", config["autointerp"].get("api_key_env") or None
        ).check()


if section_enabled("autointerp") and section_enabled("lm"):

    use rule _notebook as autointerp_checks with:
        input:
            nb=notebook("autointerp_checks"),
            code=code("autointerp_checks"),
            meta=f"{LM_ACTS}/meta.json",
            tokens=f"{LM_ACTS}/tokens.safetensors",
        output:
            metrics=f"{AI_DIR}/checks/metrics.json",
            protocol=f"{AI_DIR}/checks/protocol.json",
            vecs=f"{AI_DIR}/checks/window_vecs.safetensors",
            types=f"{AI_DIR}/checks/type_vecs.safetensors",
            rows=f"{AI_DIR}/checks/rows.csv",
        log:
            **nb_logs(f"{AI_DIR}/checks"),
        benchmark:
            f"{AI_DIR}/checks/benchmark.tsv"
        params:
            nb=notebook_params("autointerp", "checks", f"{AI_DIR}/checks", acts_dir=LM_ACTS),
        threads: 2
        resources:
            mem_mb=3000,
            gpu=gpu_jobs(),

    use rule _notebook as autointerp_layer with:
        input:
            nb=notebook("autointerp_layer"),
            code=code("autointerp_layer"),
            protocol=f"{AI_DIR}/checks/protocol.json",
            vecs=f"{AI_DIR}/checks/window_vecs.safetensors",
            types=f"{AI_DIR}/checks/type_vecs.safetensors",
            train="results/lm/train/layer{layer}/rows.csv",
            missing_shards=lambda w: lm_acts_missing_shards(w.layer),
            saes=[f"results/lm/saes/layer{{layer}}/alpha{t}/cfg.json" for t in lm_alpha_tags()],
        output:
            metrics=f"{AI_DIR}/layer{{layer}}/metrics.json",
            rows=f"{AI_DIR}/layer{{layer}}/rows.csv",
            scores=f"{AI_DIR}/layer{{layer}}/scores.csv",
            explanations=f"{AI_DIR}/layer{{layer}}/explanations.csv",
            browse=f"{AI_DIR}/layer{{layer}}/browse.json",
            browse_tensors=f"{AI_DIR}/layer{{layer}}/browse.safetensors",
        log:
            **nb_logs(f"{AI_DIR}/layer{{layer}}"),
        benchmark:
            f"{AI_DIR}/layer{{layer}}/benchmark.tsv"
        params:
            nb=lambda w: notebook_params(
                "autointerp",
                "layer",
                f"{AI_DIR}/layer{w.layer}",
                layer=int(w.layer),
                acts_dir=LM_ACTS,
                checks_dir=f"{AI_DIR}/checks",
                train_rows=f"results/lm/train/layer{w.layer}/rows.csv",
                sae_root="results/lm/saes",
                latents_dir=LATENTS_DIR,
            ),
        threads: 1
        resources:
            mem_mb=3000,
            gpu=gpu_jobs(),

    use rule _notebook as autointerp_summary with:
        input:
            nb=notebook("autointerp_summary"),
            code=code("autointerp_summary"),
            checks=f"{AI_DIR}/checks/metrics.json",
            layers=[f"{AI_DIR}/layer{l}/{f}" for l in lm_layers() for f in ("rows.csv", "scores.csv", "metrics.json")],
            human="results/tables/autointerp_human.csv",
        output:
            metrics=f"{AI_DIR}/summary/metrics.json",
            table="results/tables/autointerp.csv",
            table1="results/tables/autointerp_table1.csv",
        log:
            **nb_logs(f"{AI_DIR}/summary"),
        benchmark:
            f"{AI_DIR}/summary/benchmark.tsv"
        params:
            nb=notebook_params(
                "autointerp",
                "summary",
                f"{AI_DIR}/summary",
                checks_dir=f"{AI_DIR}/checks",
                layer_dirs=[f"{AI_DIR}/layer{l}" for l in lm_layers()],
                table="results/tables/autointerp.csv",
                table1_csv="results/tables/autointerp_table1.csv",
                human_table="results/tables/autointerp_human.csv",
                latents_dir=LATENTS_DIR,
            ),
        threads: 1

    REPORTS.append(
        (
            "Auto-interpretability",
            "Protocol and validity of the offline proxies (planted latents, shuffled explanations)",
            f"{AI_DIR}/checks/report.html",
        )
    )
    for _l in lm_layers():
        REPORTS.append(
            (
                "Auto-interpretability",
                f"Layer {_l}: every SAE vs a random-weight SAE, per proxy (and LLM backend)",
                f"{AI_DIR}/layer{_l}/report.html",
            )
        )
    REPORTS.append(
        (
            "Auto-interpretability",
            "Table 1 (layers × α), proxy choice, lm-table1 verdict per backend",
            f"{AI_DIR}/summary/report.html",
        )
    )
    TABLES.append(
        (
            "Auto-interp per (layer, α, Γ variant, scorer, backend): mean, CI, shuffled, random-SAE floor, margin",
            "results/tables/autointerp.csv",
        )
    )
    TABLES.append(("Auto-interp Table 1 (layers × α, gain over α = 0 with CIs)", "results/tables/autointerp_table1.csv"))
