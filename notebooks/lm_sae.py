# %% [markdown]
# # Language model: held-out evaluation of every SAE of one layer
#
# Question: what does weighting (α > 0) cost in reconstruction, per Γ variant, measured between SAEs that all
# trained? Every SAE of the layer (exported by `lm_train`, read back from its SAELens folder) is evaluated on
# the first `heldout_contexts` contexts of the held-out novel (0 = all of it) from the activation cache, massive-
# activation tokens left out like BOS with the threshold the SAEs were trained with: FVU overall and with the top `n_outlier_dims`
# variance dimensions left out, FVU per dimension against the dimension's variance, L0, and the dead fraction
# over the window. CE-loss recovered (against zero ablation) and KL(clean ‖ spliced) splice each SAE into the LM
# on a seeded subset of `ce_contexts` held-out contexts (the blocks after the layer run from the cached
# residual; clean and zero-ablation losses are computed once and shared by every SAE). All metrics are
# **unweighted**, also for a WSAE: Γ changes training, never the yardstick.
#
# **SAE seeds.** `lm_train` trains every SAE (`variant/alphaX`) for each of its SAE seeds; the α = 0 and α > 0 SAEs
# of one seed share initialisation and batch order. A **cell** is one SAE name over all its seeds: its value is the
# mean over seeds and its 95 % CI comes from a two-level bootstrap (held-out contexts resampled, the same contexts
# for every SAE; in each resample the seeds resampled as clusters). Every α − 0 difference of a cell is **paired by
# seed** (per seed, SAE − baseline on the same contexts, seeds resampled jointly); only where the two cells hold
# different seeds are they resampled independently (`paired_by_seed` False). With one seed a cell's CI is the
# context-only bootstrap. `rows.csv` (and so `results/tables/lm_sae.csv`) holds both kinds of row, told apart by
# the column **`level`**: `cell` (seed = −1, `n_seeds` = the seeds averaged) and `seed` (one SAE seed, CI over
# contexts only, `n_seeds` = 1); `long.csv` likewise, with the differences (`kind` = diff) and `paired_by_seed`.
#
# **Faithfulness rule** (one rule, used by every LM report and the summary): the zero-ablation baseline is
# degenerate when CE_zero − CE_clean < `min_baseline_gap` nats/token, and then no SAE is called faithful (CE
# recovered would divide by ~0); otherwise an SAE is faithful when FVU < 1 and the lower end of its CE-recovered
# CI ≥ `min_ce_recovered`, judged on the cell's CI (over contexts × seeds; each seed row also gets the rule on its
# own context-only CI, as detail). SAEs flagged untrained or not converged in `lm_train` are shown but never enter
# a verdict (a cell is flagged when any of its seeds is).

# %% tags=["parameters"]
out_dir = "results/dev/lm/sae/layer4"
device = "auto"
num_threads = 1
acts_dir = "results/lm/acts"
train_dir = "results/lm/train/layer4"
layer = 4
ce_contexts = 32
ce_seed = 0
heldout_contexts = 256
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
from wsae_utils.run.reportkit import conclusion
from wsae_utils.run.results import write_metrics, write_table
from wsae_utils.run.setup import start_run

t_start = time.time()
out, dev = start_run(out_dir, boot_seed, device, num_threads)
setup_style()
meta = S.read_meta(acts_dir)
trained = pd.read_csv(Path(train_dir) / "rows.csv")
if "seed" not in trained:
    trained["seed"] = 0  # a rows.csv from before several SAE seeds: its one seed
if "converged" not in trained:
    trained["converged"] = True  # no convergence flag then: only `untrained` excludes an SAE
trained["key"] = [E.sae_key(r.sae, r.seed) for r in trained.itertuples()]
loaded = {r.key: load_sae(r.dir, dev) for r in trained.itertuples()}
saes = {k: sae.eval() for k, (sae, _) in loaded.items()}
# The massive-activation threshold the layer's SAEs were trained with (lm_train's max_norm_ratio): the same tokens
# are left out of every metric here, like BOS (an export without it: every token counts).
norms = {(info.get("wsae") or {}).get("max_token_norm") for _, info in loaded.values()}
if len(norms) > 1:
    raise ValueError(f"{train_dir}: the layer's SAEs were trained with different max_token_norm values {norms}")
max_token_norm = float("inf") if norms in (set(), {None}) else float(norms.pop())
members: dict[str, dict[int, str]] = {}
for r in trained.itertuples():
    members.setdefault(r.sae, {})[int(r.seed)] = r.key
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
pc = E.evaluate_layer(acts_dir, layer, saes, lm, ce_contexts, ce_seed, batch_contexts, heldout_contexts,
                      max_token_norm)
t_eval = time.time() - t0
base = E.ce_baselines(pc)
stats = S.layer_stats(acts_dir, layer, "train", max_token_norm)
names = list(members)
rows = E.seed_layer_metrics(pc, stats["var"], members, n_outlier_dims, n_boot, boot_seed,
                            S.comparisons(names, downstream))
long = pd.DataFrame(rows)
seed_sets = sorted({tuple(sorted(m)) for m in members.values()})
n_tokens = int(pc.n_rows.sum())
display(Markdown(
    f"Held-out window: **{pc.n_rows.numel()} contexts, {n_tokens:,} tokens** (BOS and "
    + (f"{int(pc.n_rows.numel() * (meta['context_size'] - 1) - n_tokens)} massive-activation tokens, norm > "
       f"{max_token_norm:.4g}, " if max_token_norm != float("inf") else "") + "left out) of "
    f"{', '.join(meta['splits']['heldout']['documents'])}; CE/KL on a seeded subset of {base['ce_contexts']} "
    f"contexts. Clean CE {base['ce_clean']:.3f}, zero-ablation CE {base['ce_zero']:.3f} nats/token (gap "
    f"{base['baseline_gap']:.3f}: "
    + ("degenerate, CE recovered undefined" if not base["baseline_gap"] >= min_baseline_gap else "usable")
    + f"). Evaluated {len(saes)} SAEs ({len(names)} cells × SAE seeds "
    + " / ".join(", ".join(map(str, ss)) for ss in seed_sets)
    + f") in {t_eval:.0f} s; LM forward in {precision.dtype} (cache pass: {meta['lm_dtype']})."))

# %% [markdown]
# ## Metrics per cell: mean over SAE seeds, 95 % CI over held-out contexts × seeds

# %%
def fmt(v: float, lo: float, hi: float) -> str:
    """value [lo, hi] with 3 decimals."""
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


val = long[long.kind == "value"]
flags = trained.set_index("key")
wide_rows = []
units = [("cell", m, -1) for m in names] + [("seed", m, s_) for m in names for s_ in sorted(members[m])]
for level, n, seed_ in units:
    r = val[(val.level == level) & (val.sae == n) & (val.seed == seed_)].set_index("metric")
    mine = flags.loc[[members[n][s_] for s_ in sorted(members[n]) if level == "cell" or s_ == seed_]]
    fv = float(r.loc["fvu", "value"])
    ce_lo = float(r.loc["ce_recovered", "ci_lo"]) if "ce_recovered" in r.index else float("nan")
    wide_rows.append({
        "layer": layer, "level": level, "sae": n, "seed": seed_, "n_seeds": len(mine),
        "variant": mine.variant.iloc[0], "alpha": float(mine.alpha.iloc[0]),
        **{m: float(r.loc[m, "value"]) for m in r.index},
        **{f"{m}_ci_lo": float(r.loc[m, "ci_lo"]) for m in r.index},
        **{f"{m}_ci_hi": float(r.loc[m, "ci_hi"]) for m in r.index},
        # A cell is flagged when any of its seeds is: a verdict never averages a failed run in.
        "untrained": bool(mine.untrained.astype(bool).any()), "converged": bool(mine.converged.astype(bool).all()),
        "dec_cos_to_init": float(mine.dec_cos_to_init.mean()),
        "faithful": rule.verdict(fv, ce_lo, base["baseline_gap"]),
        "ce_clean": base["ce_clean"], "ce_zero": base["ce_zero"], "ce_contexts": base["ce_contexts"],
        "eval_tokens": n_tokens, "dead_window_tokens": n_tokens, "dir": mine.dir.iloc[0] if level == "seed" else "",
    })
wide = pd.DataFrame(wide_rows)


def shown(w: pd.DataFrame) -> pd.DataFrame:
    """The readable table of wide rows: metrics with their CIs, flags and the faithfulness call."""
    recs = w.to_dict("records")
    return pd.DataFrame({
        "SAE": w.sae, **({"seed": w.seed} if (w.level == "seed").all() else {"seeds": w.n_seeds}),
        "untrained": w.untrained, "converged": w.converged,
        **{m: [fmt(r[m], r[f"{m}_ci_lo"], r[f"{m}_ci_hi"]) for r in recs]
           for m in ("fvu", "fvu_excl_outliers", "ce_recovered", "kl") if m in w},
        "L0": w.l0.round(1), "dead": w.dead_frac.round(3), "faithful": w.faithful}).reset_index(drop=True)


cells = wide[wide.level == "cell"]
display(shown(cells))

# %% [markdown]
# ## α − 0 differences per cell (paired by seed and by context)
# Each α > 0 SAE against its baseline: the plain α = 0 SAE (the standardize variant against its own α = 0);
# the permuted-γ control also against the real γ at the same α (permuted − real). `seeds`: the seeds the CI covers
# (of the thinner side where the cells differ); `paired`: resampled jointly by seed.

# %%
def diff_table(d: pd.DataFrame, index: list[str]) -> pd.DataFrame:
    """Differences with their CIs, one column per metric."""
    d = d.assign(**{"Δ [95 % CI]": [fmt(r.value, r.ci_lo, r.ci_hi) for r in d.itertuples()]})
    return d.pivot(index=index, columns="metric", values="Δ [95 % CI]")


diff = long[long.kind == "diff"].copy()
cell_diff = diff[diff.level == "cell"].rename(columns={"n_seeds": "seeds", "paired_by_seed": "paired"})
display(diff_table(cell_diff, ["sae", "baseline", "seeds", "paired"]))

# %% [markdown]
# ## Per SAE seed (detail): each seed alone, CIs over held-out contexts only

# %%
display(shown(wide[wide.level == "seed"]))
display(diff_table(diff[diff.level == "seed"], ["sae", "baseline", "seed"]))

# %% [markdown]
# ## FVU per dimension against the dimension's variance
# Where the weighted SAEs put their capacity: with γ² ∝ Var²ᵅ the high-variance dimensions are reconstructed
# better and the rest worse. Per cell, the mean over its SAE seeds.

# %%
var = stats["var"].numpy()
show_names = [n for n in names if n.startswith(("paper", "cap", "standardize"))]
fig, ax = plt.subplots(figsize=(7, 4))
for n in show_names:
    per_dim = sum(E.per_dim_fvu(pc, k) for k in members[n].values()) / len(members[n])
    ax.scatter(var, per_dim.numpy(), s=4, alpha=0.5, label=n)
ax.set(xscale="log", yscale="log", xlabel="training variance of the dimension",
       ylabel="held-out FVU of the dimension", title=f"layer {layer}: per-dimension FVU")
ax.axhline(1, color="grey", lw=0.8, ls="--")
ax.legend(fontsize=7, markerscale=3)
save_figure(fig, out, "per_dim_fvu", caption=f"Layer {layer}: held-out FVU of each residual dimension against "
                                              "its training variance, per SAE (mean over its seeds)")
plt.show()

# %%
write_table(wide, out / "rows.csv")
_ = write_table(long.assign(layer=layer), out / "long.csv")

# %%
metrics = {"layer": layer, "eval_tokens": n_tokens,
           "max_token_norm": None if max_token_norm == float("inf") else max_token_norm, "eval_contexts": int(pc.n_rows.numel()),
           "eval_seconds": t_eval, "total_seconds": time.time() - t_start, "n_saes": len(saes), "n_cells": len(names),
           "sae_seeds": sorted({s_ for m in members.values() for s_ in m}), **base}
cell_rows = [r for r in wide_rows if r["level"] == "cell"]
for r in cell_rows:  # the cells (means over seeds), under the names the keys had with one seed
    key = r["sae"].replace("/", "_")
    for m in ("fvu", "fvu_excl_outliers", "l0", "dead_frac", "ce_recovered", "kl"):
        if m in r:
            metrics[f"{key}_{m}"] = r[m]
    metrics[f"{key}_faithful"] = r["faithful"]
    metrics[f"{key}_n_seeds"] = r["n_seeds"]
faithful = [r["sae"] for r in cell_rows if r["faithful"] == "faithful" and not r["untrained"] and r["converged"]]
excluded = [r["sae"] for r in cell_rows if r["untrained"] or not r["converged"]]
claims: list = []
display(Markdown(conclusion(summary=
    "Per-layer numbers; the α effect across layers, per Γ variant, is judged in the LM summary (`lm-fidelity`). "
    f"Layer {layer}: faithful by the rule above (cell CIs over held-out contexts × "
    + " / ".join(str(len(ss)) for ss in seed_sets) + f" SAE seed(s)): {', '.join(faithful) or 'none'}; "
    f"untrained or not converged in some seed (excluded): {', '.join(excluded) or 'none'}.")))
metrics["claims"] = claims
_ = write_metrics(out / "metrics.json", metrics)
