# %% [markdown]
# # Language model: train the SAEs of one layer (every α and Γ variant) from the cached activations
#
# Paper (arXiv 2506.15963, §2.5 / Theorem 5): the weighted SAE minimises E‖Γ(x − x̂)‖² with γ_i = s_i^α, s_i the
# per-dimension **variance** of the layer's activations; α = 0 is the plain SAE (Table 1 uses α ∈ {0, 0.5, 1}).
# On a residual stream a few outlier dimensions carry most of the variance, so at α = 1 γ² ∝ Var² puts almost
# all of the loss on them and an SAE can finish training while barely leaving its initialisation. Comparing such
# an SAE with a trained α = 0 SAE would compare a random dictionary with a trained one. So this report
#
# - trains every SAE of the layer from the **same** cached batches and the **same** seeded initialisation (α and
#   Γ are the only differences);
# - measures whether each SAE trained: loss curve, held-out FVU at several points, mean cosine between each
#   decoder row and its initial value, dead fraction over training, share of γ² in the top 1/5/10 dimensions;
#   an SAE that did not move is flagged **untrained** and never enters a verdict;
# - compares the paper's Γ with the variants a practitioner would try: **mean** (γ / mean γ), **cap** (variance
#   capped at its `cap_quantile` quantile, then mean-one), **standardize** (inputs standardised per dimension,
#   then γ = Var^α / mean on the standardised error: an effective raw-space weight Var^{2α−1}), and the
#   **permuted** control (the downstream variant's γ values on randomly permuted dimensions: same skew, no link
#   to the dimension).
#
# The `downstream_variant` SAEs (with the α = 0 SAE) are exported to `sae_dir/layer{L}/alpha{α}` for the
# interpretability comparison; the others to `variants_dir/{variant}/layer{L}/alpha{α}` (SAELens format).

# %% tags=["parameters"]
out_dir = "results/dev/lm/train/layer4"
device = "auto"
num_threads = 1
acts_dir = "results/lm/acts"
sae_dir = "results/lm/saes"
variants_dir = "results/lm/saes_variants"
layer = 4
alphas = [0.0, 0.5, 1.0]
variants = ["cap", "standardize"]
downstream_variant = "cap"
permuted_control = True
cap_quantile = 0.95
k = 32
expansion = 4
steps = 512
batch_size = 256
lr = 2.0e-3
lr_warmup_steps = 10
lr_decay_frac = 0.2
auxk_alpha = 0.03125
dead_window_tokens = 20000
gamma_inside_norm = True
shuffle_shards = 4
monitor_points = 5
monitor_contexts = 16
untrained_max_cos = 0.9
untrained_max_loss_ratio = 0.9
matmul_dtype = "auto"
seed = 0

# %%
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

from wsae_utils.core.export import save_sae
from wsae_utils.core.train import TrainConfig
from wsae_utils.hardware import resolve_precision
from wsae_utils.lm import saes as S
from wsae_utils.lm.registry import model_facts
from wsae_utils.paths import value_tag
from wsae_utils.run.plots import save_figure, setup_style
from wsae_utils.run.results import conclusion_markdown, write_metrics, write_table
from wsae_utils.run.setup import start_run
from wsae_utils.runlog import log

t_start = time.time()
out, dev = start_run(out_dir, seed, device, num_threads)
setup_style()
alphas = [float(a) for a in alphas]
S.check_alpha_tags(alphas)
if 0.0 not in alphas:
    raise ValueError(f"alphas = {alphas}: must contain 0.0 (the plain SAE baseline)")
meta = S.read_meta(acts_dir)
facts = model_facts(meta["model"])
# bf16 selection GEMM only where this device runs bf16 fast; the values, weights and gradients stay fp32.
precision = resolve_precision(matmul_dtype, dev, "SAE selection GEMM",
                              probe_shape=(batch_size, facts["d_model"], expansion * facts["d_model"]))
settings = {k_: globals()[k_] for k_ in (
    "acts_dir", "sae_dir", "variants_dir", "layer", "alphas", "variants", "downstream_variant", "permuted_control",
    "cap_quantile", "k", "expansion", "steps", "batch_size", "lr", "lr_warmup_steps", "lr_decay_frac",
    "auxk_alpha", "dead_window_tokens", "gamma_inside_norm", "shuffle_shards", "monitor_points",
    "monitor_contexts", "untrained_max_cos", "untrained_max_loss_ratio", "matmul_dtype", "seed", "num_threads",
    "device")}
display(pd.DataFrame([settings]).T.rename(columns={0: "value"}))

# %% [markdown]
# ## Training data and Γ
# The per-dimension mean (b_dec init) and variance (the proxy) come from every non-BOS token of the training
# split; the held-out novel is not used. Each SAE sees `steps × batch_size` tokens.

# %%
stats = S.layer_stats(acts_dir, layer, "train")
specs = S.layer_specs(stats, alphas, variants, downstream_variant, permuted_control, cap_quantile, seed)
epoch_rows = meta["splits"]["train"]["n_tokens_without_bos"]
gamma_rows = [{"sae": s.name, "variant": s.variant, "alpha": s.alpha, "standardized input": s.shift is not None,
               **S.gamma_shares(s.gamma, gamma_inside_norm)} for s in specs]
display(Markdown(
    f"Layer {layer} of {meta['model']} (d_model {facts['d_model']}): {int(stats['n_tokens']):,} training tokens "
    f"in the cache; {len(specs)} SAEs × {steps} steps × {batch_size} tokens = {steps * batch_size:,} tokens each "
    f"({steps * batch_size / epoch_rows:.2f} passes over the cache). Share of the squared-error weight per "
    "SAE (γ² with Γ inside the norm; 1 / 576 = 0.0017 per dimension would be uniform):"))
display(pd.DataFrame(gamma_rows).round(4))

# %% [markdown]
# ## Train every SAE of the layer from one stream of cached batches

# %%
cfg = S.LayerTrainConfig(
    n_latents=expansion * facts["d_model"], k=k,
    train=TrainConfig(steps=steps, batch_size=batch_size, lr=lr, lr_warmup_steps=lr_warmup_steps,
                      lr_decay_frac=lr_decay_frac, auxk_alpha=auxk_alpha, dead_window=dead_window_tokens,
                      gamma_inside_norm=gamma_inside_norm, seed=seed, matmul_dtype=precision.dtype, log_every=5),
    shuffle_shards=shuffle_shards, monitor_points=monitor_points, monitor_contexts=monitor_contexts)
t0 = time.time()
trained = S.train_layer_saes(acts_dir, layer, specs, stats, cfg, dev)
t_train = time.time() - t0
log(f"layer {layer}: trained {len(trained)} SAEs in {t_train:.1f} s")
display(Markdown(f"Trained {len(trained)} SAEs in {t_train:.0f} s "
                 f"({len(trained) * steps * batch_size / t_train:,.0f} SAE-tokens/s); selection GEMM in "
                 f"**{precision.dtype}** ({matmul_dtype}: {precision.reason})."))

# %% [markdown]
# ## Did each SAE train?
# Loss curves are divided by their first value (weighted losses have different scales). Held-out FVU (unweighted,
# on the first `monitor_contexts` held-out contexts) and the mean cosine of each decoder row to its initial value
# are recorded at `monitor_points` points. **Untrained** (did not move from init; never used for a verdict) =
# mean decoder cosine to init ≥ `untrained_max_cos`, or the SAE's own weighted training loss fell by less than
# 1 − `untrained_max_loss_ratio`. A weighted SAE whose *unweighted* held-out FVU got worse than at init but that
# moved and learnt its objective is not "untrained": that is what the weighting does, and it is reported.

# %%
curves = pd.DataFrame([
    {"sae": n, "variant": t.spec.variant, "alpha": t.spec.alpha, "step": s, "loss / first loss": v / t.loss_curve[0][1]}
    for n, t in trained.items() for s, v in t.loss_curve])
mon = pd.DataFrame([{"sae": n, "variant": t.spec.variant, "alpha": t.spec.alpha, **m}
                    for n, t in trained.items() for m in t.monitor])
fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
sns.lineplot(data=curves, x="step", y="loss / first loss", hue="sae", ax=axes[0], legend=False)
axes[0].set(yscale="log", title="training loss (relative)")
sns.lineplot(data=mon, x="step", y="heldout_fvu", hue="sae", marker="o", ax=axes[1], legend=False)
axes[1].set(title="held-out FVU during training", ylabel="FVU")
sns.lineplot(data=mon, x="step", y="dec_cos_to_init", hue="sae", marker="o", ax=axes[2])
axes[2].set(title="mean decoder cosine to init", ylabel="cosine")
axes[2].legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
fig.suptitle(f"layer {layer}")
save_figure(fig, out, "training")
plt.show()

rows = []
for n, t in trained.items():
    diag = t.diagnostics()
    rows.append({"layer": layer, "sae": n, "variant": t.spec.variant, "alpha": t.spec.alpha,
                 "standardized": t.spec.shift is not None, **diag,
                 "untrained": S.untrained_flag(diag, untrained_max_cos, untrained_max_loss_ratio),
                 "final_loss": t.loss_curve[-1][1],
                 **{k_: v for k_, v in S.gamma_shares(t.spec.gamma, gamma_inside_norm).items()}})
diag_table = pd.DataFrame(rows)
display(diag_table[["sae", "dec_cos_to_init", "loss_ratio", "monitor_fvu_init", "monitor_fvu_final",
                    "train_dead_frac", "untrained", "gamma2_top1_share", "gamma2_top10_share"]].round(3))

# %% [markdown]
# ## Export (SAELens format)
# `cfg.json` states what a SAELens / TransformerLens user needs to reproduce the activations: the hub id and the
# exact weights (file, quantisation, sha256), the hook (`blocks.{L}.hook_resid_post` = output of block L), the
# context size with BOS prepended, the positions used (`seqpos_slice` [1, null]: BOS excluded from training and
# every metric), the dataset, and the weight-processing setting (off) for TransformerLens.

# %%
def export_path(name: str) -> Path:
    """Downstream variant and the α = 0 baseline → sae_dir; every other SAE → variants_dir/{variant}."""
    variant, tag = name.split("/")
    base_variant = "standardize" if downstream_variant == "standardize" else "paper"
    if variant == downstream_variant or (tag == "alpha0" and variant == base_variant):
        return Path(sae_dir) / f"layer{layer}" / tag
    return Path(variants_dir) / variant / f"layer{layer}" / tag


weights = meta["weights"]
dataset = (f"{meta['corpus']} (training documents {meta['splits']['train']['documents']}; held out "
           f"{meta['splits']['heldout']['documents']}), tokenised per document, contexts of "
           f"{meta['context_size']} with BOS, seed {meta['seed']}")
dirs = []
for n, t in trained.items():
    path = export_path(n)
    assert value_tag(t.spec.alpha) == path.name[len("alpha"):]
    save_sae(
        t.sae, path, alpha=t.spec.alpha, gamma=t.spec.gamma, proxy=stats["var"], proxy_kind="variance",
        gamma_normalize=t.spec.variant, gamma_inside_norm=gamma_inside_norm, model_name=weights["hub_id"],
        hook_name=f"blocks.{layer}.hook_resid_post", context_size=meta["context_size"], prepend_bos=True,
        metadata={
            "seqpos_slice": [1, None], "dataset_path": dataset,
            "model_from_pretrained_kwargs": {"fold_ln": False, "center_writing_weights": False,
                                             "center_unembed": False, "fold_value_biases": False,
                                             "refactor_factored_attn_matrices": False},
            "exclude_special_tokens": False, "model_weights": weights, "registry_model": meta["model"],
            "activation_cache": str(Path(acts_dir)), "lm_forward_dtype": meta["lm_dtype"],
            "activation_dtype": meta["dtype"],
        },
        extra={"layer": layer, "variant": t.spec.variant, "standardized_input": t.spec.shift is not None,
               "bos_excluded": True, "train_tokens": steps * batch_size, "train_config": S.config_dict(cfg),
               "diagnostics": t.diagnostics(), "monitor": t.monitor,
               "untrained": bool(diag_table.set_index("sae").loc[n, "untrained"])})
    dirs.append(str(path))
diag_table["dir"] = dirs
write_table(diag_table, out / "rows.csv")
_ = write_table(mon.assign(layer=layer), out / "monitor.csv")

# %% [markdown]
# ## Conclusion
# Training-side findings only; the α effect on fidelity is judged on the whole held-out novel in `lm_sae` and
# the LM summary.

# %%
metrics = {"layer": layer, "n_saes": len(trained), "train_tokens_per_sae": steps * batch_size,
           "train_seconds": t_train, "total_seconds": time.time() - t_start,
           "n_untrained": int(diag_table.untrained.sum()), "downstream_variant": downstream_variant}
for r in rows:
    key = r["sae"].replace("/", "_")
    for m in ("dec_cos_to_init", "monitor_fvu_final", "train_dead_frac", "gamma2_top1_share"):
        metrics[f"{key}_{m}"] = r[m]
    metrics[f"{key}_untrained"] = r["untrained"]
untrained = diag_table[diag_table.untrained]
display(Markdown(
    f"Layer {layer}: {len(trained) - len(untrained)} of {len(trained)} SAEs moved from their initialisation"
    + (f"; **untrained**: {', '.join(untrained.sae)} (kept out of every verdict)." if len(untrained) else ".")
    + f" Mean decoder cosine to init ranges from {diag_table.dec_cos_to_init.min():.2f} to "
    f"{diag_table.dec_cos_to_init.max():.2f}; the paper's Γ at the largest α puts "
    f"{diag_table[diag_table.variant == 'paper'].gamma2_top1_share.max():.1%} of γ² on one dimension."))
claims: list = []
display(Markdown(conclusion_markdown(claims)))
metrics["claims"] = claims
_ = write_metrics(out / "metrics.json", metrics, **settings)
