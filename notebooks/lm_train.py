# %% [markdown]
# # Language model: train the SAEs of one layer (every α and Γ variant) from the cached activations
#
# Paper (arXiv 2506.15963, §2.5 / Theorem 5): the weighted SAE minimises E‖Γ(x − x̂)‖² with γᵢ = sᵢᵅ, sᵢ the
# per-dimension **variance** of the layer's activations; α = 0 is the plain SAE (Table 1 uses α ∈ {0, 0.5, 1}).
# On a residual stream a few outlier dimensions carry most of the variance, so at α = 1 γ² ∝ Var² puts almost
# all of the loss on them and an SAE can finish training while barely leaving its initialisation. Comparing such
# an SAE with a trained α = 0 SAE would compare a random dictionary with a trained one. So this report
#
# - trains every SAE of the layer from the **same** cached batches and the **same** seeded initialisation (α and
#   Γ are the only differences);
# - trains each SAE from `len(sae_seeds)` seeds (initialisation, batch order and the permuted control's
#   permutation); the α = 0 and α > 0 SAEs of one seed share the initialisation and batches, so later reports
#   compare them **paired by seed**, with CIs over seeds;
# - leaves out **massive activations** like BOS: tokens whose residual norm exceeds `max_norm_ratio` × the
#   median token norm (attention-sink-like tokens ~100× the median; at layer 12 of SmolLM2 eight of 32k held-out
#   tokens carry most of the variance, so without this FVU measures those eight tokens and training oscillates);
#   the threshold is stored with each SAE and `lm_sae` applies the same rule (0 = keep every token);
# - feeds every non-standardised SAE the activations scaled by one constant so that E‖c·x‖² = d_model
#   (`normalize_activations`, SAELens' `expected_average_only_in`) and starts b_dec at the training mean;
#   the scale is folded back into the exported weights, which act on raw activations;
# - measures whether each SAE trained and converged: loss curve; the **held-out objective** (the SAE's own
#   Γ-weighted FVU, on the first `monitor_contexts` held-out contexts) and the unweighted held-out FVU at
#   `monitor_points` points, i.e. a tokens-vs-FVU curve; decoder movement; dead fraction; share of γ² in the top
#   1/5/10 dimensions. **Converged** = the held-out objective fell by less than `converge_tol` (relative) over the
#   last `converge_window` of the training tokens. **Untrained** = the held-out objective is not below
#   `untrained_max_objective_ratio` × its initialisation's, or more than `untrained_max_unmoved_frac` of the
#   decoder rows have not moved (cosine ≥ 0.99 to their initial value); untrained or unconverged SAEs never enter
#   a verdict;
# - compares the paper's Γ with the variants a practitioner would try: **mean** (γ / mean γ), **cap** (variance
#   capped at its `cap_quantile` quantile, then mean-one), **standardize** (inputs standardised per dimension,
#   then γ = Varᵅ / mean on the standardised error: an effective raw-space weight Var²ᵅ⁻¹), and the
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
monitor_points = 9
monitor_contexts = 16
max_norm_ratio = 10.0
normalize_activations = True
converge_window = 0.25
converge_tol = 0.05
untrained_max_objective_ratio = 0.9
untrained_max_unmoved_frac = 0.5
matmul_dtype = "auto"
sae_seeds = [0, 1, 2]
seeds_dir = "results/lm/saes_seeds"

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
from wsae_utils.run.reportkit import conclusion
from wsae_utils.run.results import write_metrics, write_table
from wsae_utils.run.setup import start_run
from wsae_utils.runlog import log

t_start = time.time()
sae_seeds = [int(s) for s in sae_seeds]
if not sae_seeds or len(set(sae_seeds)) != len(sae_seeds):
    raise ValueError(f"sae_seeds = {sae_seeds}: must be a non-empty list of distinct seeds")
out, dev = start_run(out_dir, sae_seeds[0], device, num_threads)
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

# %% [markdown]
# ## Training data and Γ
# The per-dimension mean (b_dec init) and variance (the proxy) come from every non-BOS token of the training
# split; the held-out novel is not used. Each SAE sees `steps × batch_size` tokens.

# %%
max_token_norm = S.massive_norm_threshold(acts_dir, layer, max_norm_ratio)
stats_all = S.layer_stats(acts_dir, layer, "train")
stats = S.layer_stats(acts_dir, layer, "train", max_token_norm)
n_massive = int(stats_all["n_tokens"] - stats["n_tokens"])
specs_by_seed = {s: S.layer_specs(stats, alphas, variants, downstream_variant, permuted_control, cap_quantile, s,
                                  normalize_activations) for s in sae_seeds}
specs = specs_by_seed[sae_seeds[0]]
epoch_rows = meta["splits"]["train"]["n_tokens_without_bos"]
gamma_rows = [{"sae": s.name, "variant": s.variant, "alpha": s.alpha, "standardized input": s.standardized,
               **S.gamma_shares(s.gamma, gamma_inside_norm)} for s in specs]
display(Markdown(
    f"Layer {layer} of {meta['model']} (d_model {facts['d_model']}): {int(stats['n_tokens']):,} training tokens "
    f"in the cache, {n_massive} of them massive (norm > {max_token_norm:.4g} = {max_norm_ratio:g} × the median) "
    f"and left out, carrying {1 - float(stats['var'].sum() * stats['n_tokens']) / float(stats_all['var'].sum() * stats_all['n_tokens']):.0%} "
    f"of the training variance; {len(specs)} SAEs × {len(sae_seeds)} seeds × {steps} steps × {batch_size} tokens = "
    f"{steps * batch_size:,} tokens each ({steps * batch_size / epoch_rows:.2f} passes over the cache). Inputs "
    + (f"scaled by c = {S.activation_scale(stats):.4g} (E‖c·x‖² = d_model)" if normalize_activations else
       "not normalised") + ". Share of the squared-error weight per SAE (γ² with Γ inside the norm; "
    f"1 / {facts['d_model']} = {1 / facts['d_model']:.4f} per dimension would be uniform; seed "
    f"{sae_seeds[0]}'s permutation for the permuted control):"))
display(pd.DataFrame(gamma_rows).round(4))

# %% [markdown]
# ## Train every SAE of the layer from one stream of cached batches

# %%
def layer_config(sae_seed: int) -> S.LayerTrainConfig:
    """The layer's SAE settings for one SAE seed (everything else shared)."""
    return S.LayerTrainConfig(
        n_latents=expansion * facts["d_model"], k=k,
        train=TrainConfig(steps=steps, batch_size=batch_size, lr=lr, lr_warmup_steps=lr_warmup_steps,
                          lr_decay_frac=lr_decay_frac, auxk_alpha=auxk_alpha, dead_window=dead_window_tokens,
                          gamma_inside_norm=gamma_inside_norm, seed=sae_seed, matmul_dtype=precision.dtype,
                          log_every=5),
        shuffle_shards=shuffle_shards, monitor_points=monitor_points, monitor_contexts=monitor_contexts,
        max_token_norm=max_token_norm)


t0 = time.time()
trained = {(name, s): t for s in sae_seeds
           for name, t in S.train_layer_saes(acts_dir, layer, specs_by_seed[s], stats, layer_config(s), dev).items()}
t_train = time.time() - t0
log(f"layer {layer}: trained {len(trained)} SAEs in {t_train:.1f} s")
display(Markdown(f"Trained {len(trained)} SAEs ({len(specs)} per seed × {len(sae_seeds)} seeds) in {t_train:.0f} s "
                 f"({len(trained) * steps * batch_size / t_train:,.0f} SAE-tokens/s); selection GEMM in "
                 f"**{precision.dtype}** ({matmul_dtype}: {precision.reason})."))

# %% [markdown]
# ## Did each SAE train, and where does the budget sit on its held-out curve?
# Loss curves are divided by their first value (weighted losses have different scales). The held-out objective
# (the SAE's own Γ-weighted FVU) and the unweighted held-out FVU against training tokens show where the default
# budget sits: a curve still falling at its end is a budget too small (**converged** = fell by less than
# `converge_tol` over the last `converge_window` of the tokens). **Untrained** = held-out objective not below
# `untrained_max_objective_ratio` × its initialisation's, or more than `untrained_max_unmoved_frac` of the decoder
# rows unmoved. A weighted SAE that learnt its objective but reconstructs the *unweighted* activations worse than
# its initialisation trained: that is a fidelity finding (reported here, `fvu_worse_than_init`, and seen by the
# fidelity verdict), not an SAE to leave out.

# %%
curves = pd.DataFrame([
    {"sae": n, "seed": sd, "variant": t.spec.variant, "alpha": t.spec.alpha, "step": s_,
     "loss / first loss": v / t.loss_curve[0][1]}
    for (n, sd), t in trained.items() for s_, v in t.loss_curve])
mon = pd.DataFrame([{"sae": n, "seed": sd, "variant": t.spec.variant, "alpha": t.spec.alpha, **m}
                    for (n, sd), t in trained.items() for m in t.monitor])
fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
sns.lineplot(data=curves, x="step", y="loss / first loss", hue="sae", ax=axes[0], legend=False, errorbar=None)
axes[0].set(yscale="log", title="training loss (relative, mean over seeds)")
sns.lineplot(data=mon, x="tokens", y="heldout_objective", hue="sae", marker="o", ax=axes[1], legend=False,
             errorbar=("pi", 100))
axes[1].set(yscale="log", title="held-out objective (own Γ) vs tokens", ylabel="Γ-weighted FVU")
sns.lineplot(data=mon, x="tokens", y="heldout_fvu", hue="sae", marker="o", ax=axes[2], errorbar=("pi", 100))
axes[2].set(yscale="log", title="held-out FVU (unweighted) vs tokens", ylabel="FVU")
axes[2].legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
fig.suptitle(f"layer {layer}: lines = mean over {len(sae_seeds)} seed(s), bands = range")
save_figure(fig, out, "training", caption=f"Layer {layer}: relative training loss, held-out objective and "
                                           "unweighted held-out FVU against training tokens, every SAE and seed")
plt.show()

rows = []
for (n, sd), t in trained.items():
    diag = t.diagnostics(converge_window, converge_tol)
    rows.append({"layer": layer, "sae": n, "seed": sd, "variant": t.spec.variant, "alpha": t.spec.alpha,
                 "standardized": t.spec.standardized, "normalized": normalize_activations and not t.spec.standardized,
                 **diag, "fvu_worse_than_init": diag["monitor_fvu_final"] >= diag["monitor_fvu_init"],
                 "untrained": S.untrained_flag(diag, untrained_max_objective_ratio, untrained_max_unmoved_frac),
                 "untrained_reason": S.untrained_reason(diag, untrained_max_objective_ratio,
                                                        untrained_max_unmoved_frac),
                 "final_loss": t.loss_curve[-1][1], **S.gamma_shares(t.spec.gamma, gamma_inside_norm)})
diag_table = pd.DataFrame(rows)
display(diag_table[["sae", "seed", "objective_init", "objective_final", "objective_gain_last_window", "converged",
                    "monitor_fvu_init", "monitor_fvu_final", "frac_rows_unmoved", "train_dead_frac", "untrained",
                    "gamma2_top1_share"]].round(3))

# %% [markdown]
# ## Export (SAELens format)
# `cfg.json` states what a SAELens / TransformerLens user needs to reproduce the activations: the hub id and the
# exact weights (file, quantisation, sha256), the hook (`blocks.{L}.hook_resid_post` = output of block L), the
# context size with BOS prepended, the positions used (`seqpos_slice` [1, null]: BOS excluded from training and
# every metric), the dataset, and the weight-processing setting (off) for TransformerLens. The first seed's SAEs
# go to `sae_dir` / `variants_dir`; the other seeds' to `seeds_dir/seed{s}/…` in the same layout.

# %%
def export_path(name: str, sae_seed: int) -> Path:
    """Downstream variant and the α = 0 baseline → sae_dir; every other SAE → variants_dir/{variant}; seeds after
    the first under seeds_dir/seed{s}/ with the same sub-paths."""
    variant, tag = name.split("/")
    base_variant = "standardize" if downstream_variant == "standardize" else "paper"
    main = variant == downstream_variant or (tag == "alpha0" and variant == base_variant)
    if sae_seed == sae_seeds[0]:
        return (Path(sae_dir) / f"layer{layer}" / tag if main
                else Path(variants_dir) / variant / f"layer{layer}" / tag)
    root = Path(seeds_dir) / f"seed{sae_seed}"
    return root / "main" / f"layer{layer}" / tag if main else root / variant / f"layer{layer}" / tag


weights = meta["weights"]
dataset = (f"{meta['corpus']} (training documents {meta['splits']['train']['documents']}; held out "
           f"{meta['splits']['heldout']['documents']}), tokenised per document, contexts of "
           f"{meta['context_size']} with BOS, seed {meta['seed']}")
untrained_of = diag_table.set_index(["sae", "seed"])["untrained"]
dirs = []
for (n, sd), t in trained.items():
    path = export_path(n, sd)
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
        extra={"layer": layer, "variant": t.spec.variant, "standardized_input": t.spec.standardized,
               "activation_scale_folded": (S.activation_scale(stats)
                                           if normalize_activations and not t.spec.standardized else None),
               "sae_seed": sd, "bos_excluded": True,
               "max_token_norm": None if max_token_norm == float("inf") else max_token_norm, "train_tokens": steps * batch_size,
               "train_config": S.config_dict(layer_config(sd)), "diagnostics": t.diagnostics(converge_window,
                                                                                            converge_tol),
               "monitor": t.monitor, "untrained": bool(untrained_of.loc[(n, sd)])})
    dirs.append(str(path))
diag_table["dir"] = dirs
write_table(diag_table, out / "rows.csv")
_ = write_table(mon.assign(layer=layer), out / "monitor.csv")

# %%
metrics = {"layer": layer, "n_saes": len(trained), "sae_seeds": sae_seeds, "train_tokens_per_sae": steps * batch_size,
           "train_seconds": t_train, "total_seconds": time.time() - t_start,
           "n_untrained": int(diag_table.untrained.sum()), "n_not_converged": int((~diag_table.converged).sum()),
           "normalize_activations": normalize_activations, "downstream_variant": downstream_variant,
           "max_token_norm": None if max_token_norm == float("inf") else max_token_norm,
           "n_massive_train_tokens": n_massive}
for r in rows:
    key = f"{r['sae'].replace('/', '_')}_seed{r['seed']}"
    for m in ("objective_final", "monitor_fvu_final", "frac_rows_unmoved", "train_dead_frac", "gamma2_top1_share"):
        metrics[f"{key}_{m}"] = r[m]
    metrics[f"{key}_untrained"] = r["untrained"]
    metrics[f"{key}_converged"] = r["converged"]
untrained = diag_table[diag_table.untrained]
unconverged = diag_table[~diag_table.converged & ~diag_table.untrained]


def listing(t: pd.DataFrame) -> str:
    """'name (seed s)' of each row."""
    return ", ".join(f"{r.sae} (seed {r.seed})" for r in t.itertuples())


claims: list = []
display(Markdown(conclusion(summary=
    "Training-side findings only; the α effect on fidelity is judged on the held-out novel in `lm_sae` and the LM "
    f"summary. Layer {layer}, {len(sae_seeds)} seed(s): {len(trained) - len(untrained)} of {len(trained)} SAEs "
    "learnt their objective"
    + (f"; **untrained**: {listing(untrained)} (kept out of every verdict)." if len(untrained) else ".")
    + f" {len(trained) - len(untrained) - len(unconverged)} converged by the stated criterion (held-out objective "
    f"fell < {converge_tol:.0%} over the last {converge_window:.0%} of {steps * batch_size:,} tokens)"
    + (f"; **not converged** (kept out of every verdict; a larger `steps` is needed): {listing(unconverged)}."
       if len(unconverged) else ".")
    + f" Held-out objective at the end / at initialisation ranges from {diag_table.objective_ratio.min():.2f} to "
    f"{diag_table.objective_ratio.max():.2f}; the unweighted held-out FVU ends worse than at initialisation for "
    f"{int(diag_table.fvu_worse_than_init.sum())} SAE(s); the paper's Γ at the largest α puts "
    f"{diag_table[diag_table.variant == 'paper'].gamma2_top1_share.max():.1%} of γ² on one dimension.")))
metrics["claims"] = claims
_ = write_metrics(out / "metrics.json", metrics)
