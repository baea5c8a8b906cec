# Helper functions of lm.smk (kept apart so `snakemake --lint` sees no rules mixed with functions).
from wsae_utils.lm.cache import declared_shards

LM_ACTS = "results/lm/acts"


def lm_acts_shards(layer=None):
    """Shards of the cache on disk (per its meta.json, when written with the current settings), of one layer or all.

    Not inputs of the per-layer rules: their number is known only after the first lm_acts ran, so listing them
    would change the jobs' input set between the first run and the next and rerun every layer. The per-layer rules
    depend on meta.json (rewritten by every LM pass), and every reader verifies each shard's size and sha256 against
    it and names a changed one (wsae_utils.lm.cache).
    """
    shards = declared_shards(LM_ACTS, config["lm"]["acts"], lm_layers())
    return [s for s in shards if layer is None or f"/layer{layer}/" in s]


def lm_acts_missing_shards(layer=None):
    """Recorded shards that are gone (of one layer or all): outputs of lm_acts and inputs of the per-layer rules, so
    `snakemake -n` reruns the LM pass (Snakemake reruns a job for a missing output only when a job requests it).

    Only the missing ones are declared: shards present were not outputs when lm_acts wrote them (their number
    depends on the text), and declaring them afterwards would leave Snakemake without their provenance. Normally
    the list is empty, before the first run and after it alike, so the per-layer jobs' input set stays the same.
    """
    return [s for s in lm_acts_shards(layer) if not os.path.exists(s)]


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
        seeds_dir="results/lm/saes_seeds",
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
