# %% [markdown]
# # Language model: held-out evaluation of every SAE of one layer
#
# Question: what does weighting (α > 0) cost in reconstruction, per Γ variant, measured between SAEs that all
# trained? Every SAE of the layer (exported by `lm_train`, read back from its SAELens folder) is evaluated on
# the **whole held-out novel** from the activation cache: FVU overall and with the top `n_outlier_dims`
# variance dimensions left out, FVU per dimension against the dimension's variance, L0, and the dead fraction
# over the window. CE-loss recovered (against zero ablation) and KL(clean ‖ spliced) splice each SAE into the LM
# on a seeded subset of `ce_contexts` held-out contexts (the blocks after the layer run from the cached
# residual; clean and zero-ablation losses are computed once and shared by every SAE). Every metric carries a
# 95 % bootstrap CI over contexts, and every α − 0 difference a paired one (same resampled contexts).
# All metrics are **unweighted**, also for a WSAE: Γ changes training, never the yardstick.
#
# **Faithfulness rule** (one rule, used by every LM report and the summary): the zero-ablation baseline is
# degenerate when CE_zero − CE_clean < `min_baseline_gap` nats/token, and then no SAE is called faithful (CE
# recovered would divide by ~0); otherwise an SAE is faithful when FVU < 1 and the lower end of its CE-recovered
# CI ≥ `min_ce_recovered`. SAEs flagged untrained in `lm_train` are shown but never enter a verdict.

# %% tags=["parameters"]
out_dir = "results/dev/lm/sae/layer4"
device = "auto"
num_threads = 1
acts_dir = "results/lm/acts"
train_dir = "results/lm/train/layer4"
layer = 4
ce_contexts = 32
ce_seed = 0
heldout_contexts = 0
batch_contexts = 8
n_outlier_dims = 5
n_boot = 1000
boot_seed = 0
min_ce_recovered = 0.5
min_baseline_gap = 0.1

# %%
import json
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from wsae_utils.core.export import load_sae
from wsae_utils.hardware import resolve_precision
from wsae_utils.lm import fidelity as E
from wsae_utils.lm import model as L
from wsae_utils.lm import saes as S
from wsae_utils.run.plots import save_figure, setup_style
from wsae_utils.run.results import conclusion_markdown, write_metrics, write_table
from wsae_utils.run.setup import start_run

t_start = time.time()
out, dev = start_run(out_dir, boot_seed, device, num_threads)
setup_style()
settings = {k: globals()[k] for k in (
    "acts_dir", "train_dir", "layer", "ce_contexts", "ce_seed", "heldout_contexts", "batch_contexts",
    "n_outlier_dims", "n_boot", "boot_seed", "min_ce_recovered", "min_baseline_gap", "num_threads", "device")}
display(pd.DataFrame([settings]).T.rename(columns={0: "value"}))
meta = S.read_meta(acts_dir)
trained = pd.read_csv(Path(train_dir) / "rows.csv")
saes = {r.sae: load_sae(r.dir, dev)[0].eval() for r in trained.itertuples()}
rule = E.FaithfulnessRule(min_ce_recovered=min_ce_recovered, min_baseline_gap=min_baseline_gap)
downstream = json.loads((Path(train_dir) / "metrics.json").read_text())["downstream_variant"]

# %% [markdown]
# ## One pass over the held-out activations (plus the CE/KL subset through the rest of the LM)

# %%
t0 = time.time()
# The cache pass's setting, resolved on this device: 'auto' gives the cache's dtype on the same machine and never
# bf16 on a CPU without fast bf16 (a cache built elsewhere); an explicit dtype is kept.
precision = resolve_precision(meta.get("lm_precision", {}).get("requested", meta["lm_dtype"]), dev,
                              "LM forward (CE/KL splice)")
lm = L.load_lm(meta["model"], meta["model_cache"], dev, seed=meta["seed"], dtype=precision.dtype)
pc = E.evaluate_layer(acts_dir, layer, saes, lm, ce_contexts, ce_seed, batch_contexts, heldout_contexts)
t_eval = time.time() - t0
base = E.ce_baselines(pc)
stats = S.layer_stats(acts_dir, layer, "train")
names = list(saes)
rows = E.layer_metrics(pc, stats["var"], n_outlier_dims, n_boot, boot_seed, S.comparisons(names, downstream))
long = pd.DataFrame(rows)
n_tokens = int(pc.n_rows.sum())
display(Markdown(
    f"Held-out window: **{pc.n_rows.numel()} contexts, {n_tokens:,} tokens** (BOS excluded) of "
    f"{', '.join(meta['splits']['heldout']['documents'])}; CE/KL on a seeded subset of {base['ce_contexts']} "
    f"contexts. Clean CE {base['ce_clean']:.3f}, zero-ablation CE {base['ce_zero']:.3f} nats/token (gap "
    f"{base['baseline_gap']:.3f}: "
    + ("degenerate, CE recovered undefined" if not base["baseline_gap"] >= min_baseline_gap else "usable")
    + f"). Evaluated {len(saes)} SAEs in {t_eval:.0f} s; LM forward in {precision.dtype} (cache pass: "
    f"{meta['lm_dtype']})."))

# %% [markdown]
# ## Metrics with 95 % bootstrap CIs over contexts

# %%
def fmt(v: float, lo: float, hi: float) -> str:
    """value [lo, hi] with 3 decimals."""
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


val = long[long.kind == "value"]
flags = trained.set_index("sae")
wide_rows = []
for n in names:
    r = val[val.sae == n].set_index("metric")
    fv = float(r.loc["fvu", "value"])
    ce_lo = float(r.loc["ce_recovered", "ci_lo"]) if "ce_recovered" in r.index else float("nan")
    wide_rows.append({
        "layer": layer, "sae": n, "variant": flags.loc[n, "variant"], "alpha": float(flags.loc[n, "alpha"]),
        **{m: float(r.loc[m, "value"]) for m in r.index},
        **{f"{m}_ci_lo": float(r.loc[m, "ci_lo"]) for m in r.index},
        **{f"{m}_ci_hi": float(r.loc[m, "ci_hi"]) for m in r.index},
        "untrained": bool(flags.loc[n, "untrained"]), "dec_cos_to_init": float(flags.loc[n, "dec_cos_to_init"]),
        "faithful": rule.verdict(fv, ce_lo, base["baseline_gap"]),
        "ce_clean": base["ce_clean"], "ce_zero": base["ce_zero"], "ce_contexts": base["ce_contexts"],
        "eval_tokens": n_tokens, "dead_window_tokens": n_tokens, "dir": flags.loc[n, "dir"],
    })
wide = pd.DataFrame(wide_rows)
show = pd.DataFrame({
    "SAE": wide.sae, "untrained": wide.untrained,
    **{m: [fmt(r[m], r[f"{m}_ci_lo"], r[f"{m}_ci_hi"]) for r in wide_rows]
       for m in ("fvu", "fvu_excl_outliers", "ce_recovered", "kl") if m in wide},
    "L0": wide.l0.round(1), "dead": wide.dead_frac.round(3), "faithful": wide.faithful})
display(show)

# %% [markdown]
# ## α − 0 differences (paired bootstrap over the same contexts)
# Each α > 0 SAE against its baseline: the plain α = 0 SAE (the standardize variant against its own α = 0);
# the permuted-γ control also against the real γ at the same α (permuted − real).

# %%
diff = long[long.kind == "diff"].copy()
diff["Δ [95 % CI]"] = [fmt(r.value, r.ci_lo, r.ci_hi) for r in diff.itertuples()]
display(diff.pivot(index=["sae", "baseline"], columns="metric", values="Δ [95 % CI]"))

# %% [markdown]
# ## FVU per dimension against the dimension's variance
# Where the weighted SAEs put their capacity: with γ² ∝ Var^{2α} the high-variance dimensions are reconstructed
# better and the rest worse.

# %%
var = stats["var"].numpy()
show_names = [n for n in names if n.startswith(("paper", "cap", "standardize"))]
fig, ax = plt.subplots(figsize=(7, 4))
for n in show_names:
    ax.scatter(var, E.per_dim_fvu(pc, n).numpy(), s=4, alpha=0.5, label=n)
ax.set(xscale="log", yscale="log", xlabel="training variance of the dimension",
       ylabel="held-out FVU of the dimension", title=f"layer {layer}: per-dimension FVU")
ax.axhline(1, color="grey", lw=0.8, ls="--")
ax.legend(fontsize=7, markerscale=3)
save_figure(fig, out, "per_dim_fvu")
plt.show()

# %%
write_table(wide, out / "rows.csv")
_ = write_table(long.assign(layer=layer), out / "long.csv")

# %% [markdown]
# ## Conclusion
# Per-layer numbers; the α effect across layers, per Γ variant, is judged in the LM summary (`lm-fidelity`).

# %%
metrics = {"layer": layer, "eval_tokens": n_tokens, "eval_contexts": int(pc.n_rows.numel()),
           "eval_seconds": t_eval, "total_seconds": time.time() - t_start, **base}
for r in wide_rows:
    key = r["sae"].replace("/", "_")
    for m in ("fvu", "fvu_excl_outliers", "l0", "dead_frac", "ce_recovered", "kl"):
        if m in r:
            metrics[f"{key}_{m}"] = r[m]
    metrics[f"{key}_faithful"] = r["faithful"]
faithful = [r["sae"] for r in wide_rows if r["faithful"] == "faithful" and not r["untrained"]]
display(Markdown(f"Layer {layer}: faithful by the rule above: {', '.join(faithful) or 'none'}; "
                 f"untrained (excluded): {', '.join(wide.sae[wide.untrained]) or 'none'}."))
claims: list = []
display(Markdown(conclusion_markdown(claims)))
metrics["claims"] = claims
_ = write_metrics(out / "metrics.json", metrics, **settings)
