# Helper functions of lm.smk (kept apart so `snakemake --lint` sees no rules mixed with functions).

LM_ACTS = "results/lm/acts"
LM_ACTS_MODULES = ["__init__", "config", "lm", "text", "lm_cache", "results", "hardware", "runlog", "plots", "nbrun"]


def lm_layers():
    """Configured layers (resolved: the notebooks' default unless the config sets lm.layers)."""
    return [int(l) for l in config["lm"]["layers"]]


def lm_alpha_tags():
    """Folder tags of the configured α values (collision-free: wsae_utils.paths.value_tag, checked at start)."""
    return [value_tag(a) for a in config["lm"]["alphas"]]


def lm_train_params(wildcards):
    out = f"results/lm/train/layer{wildcards.layer}"
    return notebook_params(
        "lm",
        "train",
        out,
        layer=int(wildcards.layer),
        acts_dir=LM_ACTS,
        sae_dir="results/lm/saes",
        variants_dir="results/lm/saes_variants",
    )


def lm_sae_params(wildcards):
    return notebook_params(
        "lm",
        "sae",
        f"results/lm/sae/layer{wildcards.layer}",
        layer=int(wildcards.layer),
        acts_dir=LM_ACTS,
        train_dir=f"results/lm/train/layer{wildcards.layer}",
    )
