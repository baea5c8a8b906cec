# Auto-interpretability of the LM SAEs (the paper's Table 1): one job fixes the protocol, embeds every held-out
# window (MiniLM) and checks each offline proxy on planted latents; one job per layer scores every SAE of that
# layer and a random-weight SAE; the summary picks the proxy by its trained-vs-random margin and builds Table 1.
# Needs the lm section (activation cache, trained SAEs); scoring reruns need no LM pass.

AI_DIR = "results/autointerp"
LATENTS_DIR = "results/latents"  # the latent browser's pages (workflow/rules/latents.smk)
AI_ON = section_enabled("autointerp") and section_enabled("lm")
# autointerp.serve: the workflow runs a local llama.cpp server for the auto-interp jobs (config/local_llm.yaml).
AI_SERVE = config["autointerp"].get("serve") if AI_ON else None
AI_SERVER_INFO = f"{AI_DIR}/llm_server.json" if AI_SERVE is not None else ""


if AI_ON and config["autointerp"].get("backend") == "openai":

    # An unreachable LLM server stops the run before any job starts (the checks notebook pings again). With serve,
    # the server lives in Snakemake's own process for the run: started here, before the first job, stopped by
    # onsuccess / onerror, at interpreter exit (Ctrl-C) and by a parent-death signal (Snakemake killed). Not a
    # service job: Snakemake runs a service and all its consumers at once as one pipe group, which needs cores for
    # every consumer together (5 of 2 here) and starts the layer jobs alongside the checks job they depend on.
    onstart:
        from snakemake.logging import logger

        from wsae_utils.autointerp.llm_client import OpenAIChat

        # only when this run executes a job that talks to the server (checks pings it, the layers use it)
        if any(j.rule.name in ("autointerp_checks", "autointerp_layer") for j in workflow.dag.needrun_jobs()):
            if AI_SERVE is not None:
                from wsae_utils.autointerp.llm_server import start_for_workflow

                if not workflow.local_exec:
                    raise WorkflowError(
                        "autointerp.serve starts a loopback server on this machine; jobs on other nodes cannot "
                        "reach it: run locally or start a server the nodes can reach and drop serve"
                    )
                srv = start_for_workflow(
                    config["autointerp"]["base_url"],
                    config["autointerp"]["llm_model"],
                    AI_SERVE,
                    AI_SERVER_INFO,
                    f"{AI_DIR}/llm_server.log",
                )
                logger.info(
                    f"llama.cpp server for the auto-interp jobs: {srv.base_url} serving {srv.model_id} "
                    f"(up in {srv.startup_s:.1f} s; log {srv.log_path})"
                )
            OpenAIChat(
                config["autointerp"].get("base_url", ""), "ping", config["autointerp"].get("api_key_env") or None
            ).check()

    if AI_SERVE is not None:

        onsuccess:
            from wsae_utils.autointerp.llm_server import stop_workflow_server

            stop_workflow_server()

        onerror:
            from wsae_utils.autointerp.llm_server import stop_workflow_server

            stop_workflow_server()


if AI_ON:

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
            **nb_params(notebook_params("autointerp", "checks", f"{AI_DIR}/checks", acts_dir=LM_ACTS)),
        # one thread: with two it kept them at ~33 % load (35 s wall, 12 s CPU in the default run's benchmark.tsv)
        threads: 1
        resources:
            mem_mb=3000,
            gpu=gpu_jobs(),

    use rule _notebook as autointerp_layer with:
        # the LM chain is the run's critical path: start it before the toy and vision jobs that can fill in
        priority: 5
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
            **nb_params(
                lambda w: notebook_params(
                    "autointerp",
                    "layer",
                    f"{AI_DIR}/layer{w.layer}",
                    layer=int(w.layer),
                    acts_dir=LM_ACTS,
                    checks_dir=f"{AI_DIR}/checks",
                    train_rows=f"results/lm/train/layer{w.layer}/rows.csv",
                    sae_root="results/lm/saes",
                    latents_dir=LATENTS_DIR,
                    server_info=AI_SERVER_INFO,
                ),
                wildcard_examples(layer=lm_layers()),
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
            **nb_params(
                notebook_params(
                    "autointerp",
                    "summary",
                    f"{AI_DIR}/summary",
                    checks_dir=f"{AI_DIR}/checks",
                    layer_dirs=[f"{AI_DIR}/layer{l}" for l in lm_layers()],
                    table="results/tables/autointerp.csv",
                    table1_csv="results/tables/autointerp_table1.csv",
                    human_table="results/tables/autointerp_human.csv",
                    latents_dir=LATENTS_DIR,
                )
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
