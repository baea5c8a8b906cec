# See the latents (issue 22): the latent browser (one page per SAE, a side-by-side page per layer, an index) and
# the blind rating page, built from what autointerp_layer stored (no SAE or LM pass); then the human ratings
# exported from that page (`autointerp.human.ratings_dir`/*.json, any number of raters) as the `human` backend of
# Table 1. The ratings folder is read when the DAG is built: a new or changed file reruns the human rows.
import glob as _glob

from wsae_utils.paths import PACKAGE_DIR as _PKG

# The pages' templates: editing one rebuilds them.
LATENT_TEMPLATES = sorted(str(p) for p in (_PKG / "templates" / "latents").iterdir() if p.is_file())


if section_enabled("autointerp") and section_enabled("lm"):
    # Every ratings file in the configured folder (none is fine: the report says so).
    HUMAN_RATINGS = sorted(_glob.glob(os.path.join(config["autointerp"]["human"]["ratings_dir"], "*.json")))

    use rule _notebook as autointerp_latents with:
        input:
            nb=notebook("autointerp_latents"),
            code=code("autointerp_latents"),
            templates=LATENT_TEMPLATES,
            layers=[
                f"{AI_DIR}/layer{l}/{f}"
                for l in lm_layers()
                for f in ("metrics.json", "scores.csv", "explanations.csv", "browse.json", "browse.safetensors")
            ],
            meta=f"{LM_ACTS}/meta.json",
            tokens=f"{LM_ACTS}/tokens.safetensors",
        output:
            metrics=f"{AI_DIR}/latents/metrics.json",
            key=f"{AI_DIR}/latents/rating_key.json",
            pages=f"{AI_DIR}/latents/pages.csv",
            index=f"{LATENTS_DIR}/index.html",
            rate=f"{LATENTS_DIR}/rate.html",
            compare=[f"{LATENTS_DIR}/layer{l}/compare.html" for l in lm_layers()],
        log:
            **nb_logs(f"{AI_DIR}/latents"),
        benchmark:
            f"{AI_DIR}/latents/benchmark.tsv"
        params:
            nb=notebook_params(
                "autointerp",
                "latents",
                f"{AI_DIR}/latents",
                layer_dirs=[f"{AI_DIR}/layer{l}" for l in lm_layers()],
                acts_dir=LM_ACTS,
                pages_dir=LATENTS_DIR,
            ),
        threads: 1

    use rule _notebook as autointerp_human with:
        input:
            nb=notebook("autointerp_human"),
            code=code("autointerp_human"),
            key=f"{AI_DIR}/latents/rating_key.json",
            ratings=HUMAN_RATINGS,
        output:
            metrics=f"{AI_DIR}/human/metrics.json",
            table="results/tables/autointerp_human.csv",
        log:
            **nb_logs(f"{AI_DIR}/human"),
        benchmark:
            f"{AI_DIR}/human/benchmark.tsv"
        params:
            nb=notebook_params(
                "autointerp",
                "human",
                f"{AI_DIR}/human",
                rating_key=f"{AI_DIR}/latents/rating_key.json",
                table="results/tables/autointerp_human.csv",
            ),
        threads: 1

    LINKS.append(("Latent browser", "See the latents: every SAE's page (per layer, α, Γ variant)", f"{LATENTS_DIR}/index.html"))
    for _l in lm_layers():
        LINKS.append(
            (
                "Latent browser",
                f"Layer {_l}: α = 0 latents side by side with their decoder matches (weighted, random SAE)",
                f"{LATENTS_DIR}/layer{_l}/compare.html",
            )
        )
    LINKS.append(("Latent browser", "Blind rating page (SAE hidden; ratings feed Table 1's human backend)", f"{LATENTS_DIR}/rate.html"))
    REPORTS.append(
        (
            "Auto-interpretability",
            "Latent browser: pages built, their size, side-by-side matches",
            f"{AI_DIR}/latents/report.html",
        )
    )
    REPORTS.append(
        (
            "Auto-interpretability",
            "Human ratings from the blind page: Table 1's human backend, rater agreement",
            f"{AI_DIR}/human/report.html",
        )
    )
    TABLES.append(("Auto-interp Table 1, human backend (blind ratings; empty: no ratings yet)", "results/tables/autointerp_human.csv"))
