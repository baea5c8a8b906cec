# Vision experiment: vision_backbone computes the backbone's view features once, trains the NCL and CL projectors
# per replicate and writes the per-replicate SAE inputs (features.pt, a file output: changing an SAE setting reruns
# no backbone); vision_sae trains every (replicate, SAE seed, weighting) SAE from it, permuted control included.
# Parameters are the resolved notebook parameters (notebook defaults overlaid with config["vision"][<unit>]).

VISION_BACKBONE = "results/vision/backbone"
VISION_SAE = "results/vision/sae"


if section_enabled("vision"):

    use rule _notebook as vision_backbone with:
        # the vision chain (backbone, then SAEs) is the run's second-longest: start it beside the LM chain, not after
        priority: 5
        input:
            nb=notebook("vision_backbone"),
            code=code("vision_backbone"),
        output:
            metrics=f"{VISION_BACKBONE}/metrics.json",
            features=f"{VISION_BACKBONE}/features.pt",
            consistency=f"{VISION_BACKBONE}/consistency.csv",
            readouts=f"{VISION_BACKBONE}/readouts.csv",
        log:
            **nb_logs(VISION_BACKBONE),
        benchmark:
            f"{VISION_BACKBONE}/benchmark.tsv"
        params:
            **nb_params(notebook_params("vision", "backbone", VISION_BACKBONE)),
        # one thread: it then runs beside the one-thread LM jobs instead of waiting for both cores to be free (with
        # two it ran last, alone, in the AVX2 default run of benchmarks/RESULTS_cpu_classes.md)
        threads: 1
        resources:
            mem_mb=6000,
            gpu=gpu_jobs(),

    use rule _notebook as vision_sae with:
        priority: 5
        input:
            nb=notebook("vision_sae"),
            code=code("vision_sae"),
            features=f"{VISION_BACKBONE}/features.pt",
        output:
            metrics=f"{VISION_SAE}/metrics.json",
            rows=f"{VISION_SAE}/rows.csv",
            effects=f"{VISION_SAE}/effects.csv",
        log:
            **nb_logs(VISION_SAE),
        benchmark:
            f"{VISION_SAE}/benchmark.tsv"
        params:
            **nb_params(notebook_params("vision", "sae", VISION_SAE, features_path=f"{VISION_BACKBONE}/features.pt")),
        # one thread: the stacked step scales 1.5x on 2 threads (10.5 vs 7.0 s, benchmarks/RESULTS_cpu_classes.md),
        # so the second core does more running another job beside it
        threads: 1
        resources:
            mem_mb=6000,
            gpu=gpu_jobs(),

    rule vision_tables:
        input:
            readouts=f"{VISION_BACKBONE}/readouts.csv",
            rows=f"{VISION_SAE}/rows.csv",
            effects=f"{VISION_SAE}/effects.csv",
        output:
            readouts="results/tables/vision_readouts.csv",
            rows="results/tables/vision_sae.csv",
            effects="results/tables/vision_effects.csv",
        log:
            "logs/vision_tables.log",
        conda:
            "../../environment.yml"
        shell:
            "(cp {input.readouts} {output.readouts} && cp {input.rows} {output.rows}"
            " && cp {input.effects} {output.effects}) > {log} 2>&1"

    REPORTS.append(
        (
            "Vision",
            "Backbone: NCL vs fair CL read-outs (CL + ReLU, ±split, signed top-m) over replicates (vision-ncl)",
            f"{VISION_BACKBONE}/report.html",
        )
    )
    REPORTS.append(
        (
            "Vision",
            "SAE vs WSAE vs permuted-weight control, consistency read five ways (vision-wsae)",
            f"{VISION_SAE}/report.html",
        )
    )
    TABLES.append(("Vision: NCL and CL read-outs per replicate (held-out)", "results/tables/vision_readouts.csv"))
    TABLES.append(("Vision: SAEs per (replicate, seed, weighting) on held-out images", "results/tables/vision_sae.csv"))
    TABLES.append(("Vision: paired effects with 95 % CIs over replicates", "results/tables/vision_effects.csv"))
    FIGURES.append(("Vision: NCL vs CL read-outs", f"{VISION_BACKBONE}/figures/consistency_ncl_vs_cl.png"))
    FIGURES.append(("Vision: WSAE vs plain vs permuted control", f"{VISION_SAE}/figures/alpha_effect.png"))
