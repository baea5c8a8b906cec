# Vision experiment: backbone + NCL/CL projectors → SAE input features (vision_backbone), then the Top-k
# SAE / WSAE sweep over alpha x seeds (vision_sae) and its table. Notebook parameters are plain dicts built at
# parse time from config["vision"][<unit>] (no helper functions, so `snakemake --lint` stays clean).


if section_enabled("vision"):

    use rule _notebook as vision_backbone with:
        input:
            nb=notebook("vision_backbone"),
            code=code("vision", "images"),
        output:
            metrics="results/vision/backbone/metrics.json",
            html="results/vision/backbone/report.html",
            features="results/vision/backbone/features.pt",
            consistency="results/vision/backbone/consistency.csv",
        log:
            notebook="results/vision/backbone/report.ipynb",
        params:
            nb=notebook_params("vision", "backbone", "results/vision/backbone"),
        threads: 2
        resources:
            mem_mb=6000,
            gpu=gpu_jobs(),

    use rule _notebook as vision_sae with:
        input:
            nb=notebook("vision_sae"),
            code=code("vision", "images"),
            features="results/vision/backbone/features.pt",
        output:
            metrics="results/vision/sae/metrics.json",
            html="results/vision/sae/report.html",
            rows="results/vision/sae/rows.csv",
        log:
            notebook="results/vision/sae/report.ipynb",
        params:
            nb=notebook_params(
                "vision", "sae", "results/vision/sae", features_path="results/vision/backbone/features.pt"
            ),
        threads: 2
        resources:
            mem_mb=6000,
            gpu=gpu_jobs(),

    rule vision_table:
        input:
            "results/vision/sae/rows.csv",
        output:
            "results/tables/vision_sae.csv",
        log:
            "logs/vision_table.log",
        params:
            mode="rows",
            labels=None,
        conda:
            "../../environment.yml"
        script:
            "../scripts/collect_table.py"

    REPORTS.append(
        ("Vision", "Backbone: NCL vs CL features, linear probe, semantic consistency", "results/vision/backbone/report.html")
    )
    REPORTS.append(("Vision", "Top-k SAE vs consistency-weighted SAE (alpha x seeds)", "results/vision/sae/report.html"))
    TABLES.append(("Vision: SAE / WSAE per (alpha, seed) on held-out images", "results/tables/vision_sae.csv"))
