# Helper functions of lm.smk (kept apart so `snakemake --lint` sees no rules mixed with functions).


def lm_alpha_tag(a):
    """Folder tag of an α value (0, 0.5, 1), as wsae_utils.lm.sae_key writes it."""
    return f"{float(a):g}"


def lm_sae_dirs():
    """Exported SAE folders of the configured (layer, α) grid."""
    return [
        f"results/lm/saes/layer{l}/alpha{lm_alpha_tag(a)}"
        for l in config["lm"]["layers"]
        for a in config["lm"]["alphas"]
    ]


def lm_train_params(wildcards):
    return notebook_params(
        "lm",
        "train",
        "results/lm/train",
        layers=config["lm"]["layers"],
        alphas=config["lm"]["alphas"],
        sae_dir="results/lm/saes",
    )


def lm_sae_params(wildcards):
    return notebook_params(
        "lm",
        "sae",
        f"results/lm/sae/layer{wildcards.layer}/alpha{wildcards.alpha}",
        sae_dir=f"results/lm/saes/layer{wildcards.layer}/alpha{wildcards.alpha}",
    )


def lm_summary_params(wildcards):
    return notebook_params("lm", "summary", "results/lm/summary", table="results/tables/lm_sae.csv")
