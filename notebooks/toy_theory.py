# %% [markdown]
# # Toy model: the theory checked where it can fail
#
# The closed-form part of the paper (arXiv 2506.15963, §2), each check built so that a wrong claim shows:
#
# 1. **Example 1**: x = (0.5, 1, 0.8), W_p = [[1,0,0],[0,1,−1]] gives x_m = σ(W_pᵀW_p x) = (0.5, 0.2, 0).
# 2. **Loss-gap identities (Theorems 4, 5)** at W_m = W_pᵀ: L_SAE − L_GT = E[eᵀ(W_pᵀW_p − I)e] and the Γ version,
#    on random W_p, Γ and sparse x (float64, LHS measured with the project's SAE code).
# 3. **Theorem 1 (W_m = W_pᵀ minimises L_SAE for digon/polygon W_p, n_m ≥ n)**, tested three ways, all paired on
#    the same held-out samples with 95 % intervals: local perturbations of the closed form (per block of W_p:
#    monosemantic rows, digons, polygons; random directions; a gradient step); tied ReLU SAEs trained from random
#    init; and SAEs trained *from* the closed form. A trained SAE counts only if it converged by the stated
#    criterion: an under-trained SAE has a high loss and would "confirm" any optimum.
# 4. **Theorem 3 (the optimum is unique when n_m = n, S → 1)**: a search for other global minimisers on the exact
#    construction: SAEs trained from several random inits, and constructed candidates (sign-flipped polygon
#    blocks, rescaled or not). Any candidate with the same L_SAE but a different L_GT contradicts uniqueness.
# 5. **Shrinking and vanishing** grow with the number of interfering features (regular simplices).

# %% tags=["parameters"]
out_dir = "results/dev/toy_theory"
device = "auto"
num_threads = 1
seed = 0
identity_cases = 20
identity_samples = 2000
identity_sparsity_max = 0.95
wp_specs = {
    "exact": {"construction": "constructed", "n": 34, "n_p": 20, "n_mono": 5, "n_digons": 13},
    "constructed": {"construction": "constructed", "n": 200, "n_p": 20, "n_mono": 4, "n_digons": 4},
}
theorem1_wp = ["exact", "constructed"]
trained_wp = ["exact"]
train_sparsities = [0.7, 0.99]
seeds = [0, 1, 2]
steps = 3000
batch_size = 512
lr = 1.0e-2
lr_from_closed_form = 1.0e-3
pool_rows = 16384
eval_samples = 20000
perturbation_eps = [0.01, 0.05]
perturbation_random = 4
closed_form_rtol = 0.01
uniqueness_wp = "exact"
uniqueness_sparsity = 0.999
uniqueness_seeds = [0, 1, 2, 3, 4]
uniqueness_equal_atol = 1.0e-6
uniqueness_gt_atol = 0.01
convergence_window = 0.1
convergence_rtol = 0.02
convergence_atol = 1.0e-9
max_interferers = 8
shrink_sparsities = [0.5, 0.9]
shrink_samples = 20000

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from IPython.display import Markdown, display
from scipy.stats import spearmanr

from wsae_utils.core.power import decidable_summary, verdict_over_settings
from wsae_utils.core.sae import StackedSAEConfig
from wsae_utils.core.train import ConvergenceRule
from wsae_utils.run.plots import save_figure, setup_style
from wsae_utils.run.reportkit import conclusion
from wsae_utils.run.results import claim, combine_verdicts, write_metrics, write_table
from wsae_utils.run.setup import start_run
from wsae_utils.toy import checks as tc
from wsae_utils.toy import data as toy
from wsae_utils.toy import evaluation as te

out, dev = start_run(out_dir, seed, device, num_threads)
setup_style()
rule = ConvergenceRule(convergence_window, convergence_rtol, convergence_atol)
metrics: dict = {}
rows: list[dict] = []
wps = {name: toy.make_wp(spec, seed) for name, spec in wp_specs.items()}
for name, (_W, info) in wps.items():
    metrics.update(toy.flat_wp_stats(name, info))
display(Markdown(f"**Convergence criterion** for every trained SAE below: {rule.describe()}. "
                 "Rows of x are conditioned on at least one active feature (an all-zero row has zero loss and "
                 "zero gradient for a bias-free SAE)."))
wp_table = pd.DataFrame({name: info for name, (_, info) in wps.items()}).T
display(wp_table[["n", "n_p", "frac_positive_pairs", "max_positive_interference", "nonpositive_interference"]].infer_objects().round(3))

# %% [markdown]
# ## 1. Example 1

# %%
ex = toy.example_1()
ex_err = float((ex["x_m"] - torch.tensor([0.5, 0.2, 0.0], dtype=torch.float64)).abs().max())
metrics.update(example1_max_abs_err=ex_err, example1_reproduced=ex_err <= 1e-6)
display(pd.DataFrame({"x": ex["x"].numpy(), "x_m (closed form)": ex["x_m"].numpy(),
                      "paper": [0.5, 0.2, 0.0]}, index=["feature 1", "feature 2", "feature 3"]).round(6))

# %% [markdown]
# ## 2. Loss-gap identities (Theorems 4 and 5) on random cases
# Each case draws n, n_p, a W_p (random Gaussian or an exact digon construction), S, x and Γ > 0.

# %%
gen = torch.Generator().manual_seed(seed + 1)
id_rows = []
for case in range(identity_cases):
    n = int(torch.randint(4, 41, (1,), generator=gen))
    n_p = int(torch.randint(2, n, (1,), generator=gen))
    S = float(torch.rand(1, generator=gen)) * identity_sparsity_max
    if case % 2 == 0 or n > 2 * n_p:
        W, _ = toy.random_wp(n, n_p, gen)
        kind = "random"
    else:
        W, _ = toy.constructed_wp(n, n_p, 2 * n_p - n, n - n_p)
        kind = "constructed"
    x = toy.sample_features(identity_samples, n, S, gen).double()
    gamma = 0.2 + 1.8 * torch.rand(n_p, generator=gen, dtype=torch.float64)
    for label, g in (("plain", None), ("gamma", gamma)):
        lhs, rhs = toy.loss_gap_identity(x, W, g)
        id_rows.append(dict(case=case, kind=kind, n=n, n_p=n_p, sparsity=S, identity=label, lhs=lhs, rhs=rhs,
                            rel_err=abs(lhs - rhs) / max(abs(rhs), 1e-12)))
id_df = pd.DataFrame(id_rows)
max_plain = float(id_df.query("identity == 'plain'").rel_err.max())
max_gamma = float(id_df.query("identity == 'gamma'").rel_err.max())
metrics.update(identity_max_rel_err_plain=max_plain, identity_max_rel_err_gamma=max_gamma,
               identity_reproduced=max(max_plain, max_gamma) <= 1e-5,
               identity_gap_nonpositive_on_constructed=bool((id_df[id_df.kind == "constructed"].rhs <= 1e-12).all()))
rows += [dict(part="identity", **r) for r in id_rows]
display(id_df.groupby(["kind", "identity"]).agg(cases=("case", "count"), max_rel_err=("rel_err", "max"),
                                                 share_gap_nonpositive=("rhs", lambda v: float((v <= 1e-12).mean()))))

# %% [markdown]
# ## 3. Theorem 1: is W_m = W_pᵀ a minimiser of L_SAE?
# ### 3a. Local perturbations of the closed form
# Paired against the closed form on the same `eval_samples` held-out rows: `rel` = ΔL_SAE / L_SAE(closed form),
# [lo, hi] the 95 % interval of the mean difference. A row with hi < 0 lowers L_SAE: the closed form is not a
# minimiser in that direction. The gradient step (and the best block scales below) are fitted on another
# `eval_samples` rows (read on the rows they were fitted to, they would look better than they are). The table shows,
# per block and S, the most favourable perturbation; the second table the check's **resolution** per S: the
# smallest relative L_SAE difference a perturbation resolves (minimum detectable effect, 80 % power, median over the
# perturbations), next to the best block rescaling (fitted out of sample) and its effect.

# %%
pert_rows = []
for name in theorem1_wp:
    W, info = wps[name]
    for S in train_sparsities:
        x_ev = toy.sample_features(eval_samples, W.shape[1], S, torch.Generator().manual_seed(seed + 7),
                                   nonempty=True).double()
        x_dir = toy.sample_features(eval_samples, W.shape[1], S, torch.Generator().manual_seed(seed + 8),
                                    nonempty=True).double()  # rows the data-dependent directions are fitted on
        for r in tc.perturbation_scan(W, x_ev, perturbation_eps, perturbation_random, seed, x_direction=x_dir):
            pert_rows.append(dict(wp=name, sparsity=S, **r))
pert_df = pd.DataFrame(pert_rows)
pert_df["lowers_L_SAE"] = pert_df.hi < 0
where = (pert_df.sort_values("rel").groupby(["wp", "sparsity", "block"], sort=False).head(1)
         .sort_values(["wp", "sparsity", "block"])[["wp", "sparsity", "block", "perturbation", "eps", "rel", "lo", "hi",
                                                    "lowers_L_SAE"]])
rows += [dict(part="perturbation", **r) for r in pert_rows]
display(where.round(5))
res_rows = []
for (name, S), grp in pert_df.groupby(["wp", "sparsity"], sort=False):
    W, _ = wps[name]
    x_fit_s, x_ev_s = (toy.sample_features(eval_samples, W.shape[1], S, torch.Generator().manual_seed(seed + o),
                                           nonempty=True).double() for o in (8, 7))
    gap = tc.block_scale_gap(W, x_fit_s, x_ev_s)
    res_rows.append(dict(wp=name, sparsity=S, resolution=tc.theorem1_resolution(grp.to_dict("records")),
                         best_scale=gap["scale"], best_scale_rel=gap["rel"], best_scale_significant=gap["hi"] < 0))
    metrics[f"theorem1_resolution_{name}_S{S}"] = res_rows[-1]["resolution"]
    metrics[f"theorem1_best_scale_{name}_S{S}"] = gap["scale"]
    metrics[f"theorem1_best_scale_rel_{name}_S{S}"] = gap["rel"]
res_df = pd.DataFrame(res_rows)
display(Markdown("**Resolution of the perturbation check** (`resolution`: the smallest relative L_SAE difference it "
                 "resolves, median over its perturbations; `best_scale`: the L_SAE-optimal factor of the most-moved "
                 "block, fitted on other rows, and `best_scale_rel` its effect on the held-out rows, a diagnostic "
                 "outside the verdict: below `resolution` the check cannot see such a gap, and a pass says "
                 "'holds to within `resolution`')."))
display(res_df.round(5))
sb_rows = []
for name in theorem1_wp:
    W, _ = wps[name]
    n, n_p = W.shape[1], W.shape[0]
    if n < 2 * n_p:
        continue
    W_pm = torch.zeros(n, n_p, dtype=torch.float64)
    W_pm[:n_p], W_pm[n_p:2 * n_p] = torch.eye(n_p), -torch.eye(n_p)
    for S in train_sparsities:
        x_fit, x_ev = te.eval_split(W, S, seed + 9, eval_samples)
        cfg_sb = StackedSAEConfig(n_p, n, "tied_relu")
        for label, W_m in (("closed form W_pᵀ", W.T), ("signed basis [I; −I; 0]", W_pm)):
            m = te.recovery_metrics(te.tied_weights(W_m), cfg_sb, W, x_fit, x_ev)
            sb_rows.append(dict(wp=name, sparsity=S, model=label, L_SAE_rel=m["L_SAE_rel"], L_GT_rel=m["L_GT_rel"],
                                matched_cos=m["matched_cos"], mean_max_cos=m["mean_max_cos"]))
if sb_rows:
    display(Markdown("With n ≥ 2·n_p the signed basis reconstructs every x_p exactly (L_SAE = 0) while recovering "
                     "no feature: the closed form cannot be the global minimiser there. Note the mean max cosine "
                     "of the signed basis against the matched cosine (one latent per feature)."))
    display(pd.DataFrame(sb_rows).round(4))
    rows += [dict(part="signed_basis", **r) for r in sb_rows]

# %% [markdown]
# ### 3b. Tied ReLU SAEs (n_m = n) trained from random init and from the closed form
# On the W_p in `trained_wp`. Same held-out rows; `rel` = (L_SAE(trained) − L_SAE(closed form)) / L_SAE(closed form) with its paired 95 %
# interval. The untrained closed form's own L_GT/E‖x‖² is listed for reference. Loss curves below; only converged runs
# enter the verdict.

# %%
tr_rows, curves = [], []
for name in trained_wp:
    W, info = wps[name]
    n = W.shape[1]
    cfg = StackedSAEConfig(W.shape[0], n, "tied_relu")
    x_evs = {S: toy.sample_features(eval_samples, n, S, torch.Generator().manual_seed(seed + 7), nonempty=True).double()
             for S in train_sparsities}
    for init, lr_run in (("random", lr), ("closed_form", lr_from_closed_form)):
        groups = [dict(wp=name, sparsity=S, seed=s, init_kind=init, init=W.T if init == "closed_form" else None)
                  for S in train_sparsities for s in seeds]
        res, log, sae = te.run_groups(W, cfg, groups, steps, batch_size, lr_run, pool_rows, 2048, dev, rule)
        curves.append(te.curve_frame(log, res, ("wp", "sparsity", "seed", "init_kind")))
        for r in res:
            x_ev = x_evs[r["sparsity"]]
            W_m = sae.W_enc[r["group"]].detach().double().cpu()
            paired = tc.paired_difference(tc.tied_loss_per_sample(W_m, x_ev, W), tc.tied_loss_per_sample(W.T, x_ev, W))
            tr_rows.append({**r, **paired, "init": r["init_kind"],
                            "cos_to_closed_form": float(torch.nn.functional.cosine_similarity(
                                W_m.flatten(), W.T.double().flatten(), dim=0))})
for name in trained_wp:
    W, _ = wps[name]
    for S in train_sparsities:
        x_fit, x_ev = te.eval_split(W, S, seed, 2048)  # the held-out splits run_groups evaluates trained SAEs on
        m = te.recovery_metrics(te.tied_weights(W.T), StackedSAEConfig(W.shape[0], W.shape[1], "tied_relu"), W, x_fit,
                                x_ev)
        tr_rows.append(dict(wp=name, sparsity=S, init="closed form, untrained", seed=np.nan, converged=np.nan,
                            rel=0.0, L_GT_rel=m["L_GT_rel"], matched_cos=m["matched_cos"], cos_to_closed_form=1.0))
tr_df = pd.DataFrame(tr_rows)
curve_df = pd.concat(curves, ignore_index=True)
g = sns.relplot(data=curve_df, x="step", y="objective", hue="init_kind", style="seed", col="sparsity", row="wp",
                kind="line", height=3, aspect=1.4, facet_kws={"sharey": False})
g.set(yscale="log")
save_figure(g.figure, out, "theorem1_loss_curves",
            caption="Training objective of the tied ReLU SAEs, from random init and from the closed form (log scale)")
plt.show()
display(tr_df.sort_values(["wp", "sparsity", "init"])[[
    "wp", "sparsity", "init", "seed", "converged", "rel_change", "base", "rel", "lo", "hi", "cos_to_closed_form",
    "L_GT_rel", "matched_cos"]].rename(
    columns={"base": "L_SAE closed form", "rel_change": "last-window change"}).round(5))

# %% [markdown]
# ### 3c. Verdict per W_p and S
# Rule (`wsae_utils.toy.checks.theorem1_verdict`): *not reproduced* if any perturbation lowers L_SAE (hi < 0) or a
# converged trained SAE is below the closed form by more than `closed_form_rtol` (hi < 0); *holds to within* the
# check's resolution (locally) and `closed_form_rtol` (trained SAEs) only if, in addition, at least one
# trained-from-random SAE converged; otherwise *not decidable*. The theorem assumes digon/polygon structure, which
# only W_p without positive interference have: settings on other W_p are not decidable (outside the assumption).
# Across settings the verdict is decided on the decidable ones only (`wsae_utils.core.power.verdict_over_settings`).

# %%
t1_rows = []
for name in theorem1_wp:
    for S in train_sparsities:
        p = pert_df[(pert_df.wp == name) & (pert_df.sparsity == S)].to_dict("records")
        t = tr_df[(tr_df.wp == name) & (tr_df.sparsity == S) & tr_df.init.isin(["random", "closed_form"])].to_dict("records")
        res_S = float(res_df[(res_df.wp == name) & (res_df.sparsity == S)].resolution.iloc[0])
        verdict, why = tc.theorem1_verdict(p, t, closed_form_rtol, resolution=res_S)
        lowering = sorted({r["block"] for r in p if r["hi"] < 0})
        t1_rows.append(dict(wp=name, nonpositive=bool(wps[name][1]["nonpositive_interference"]), sparsity=S,
                            verdict=verdict, why=why, resolution=res_S,
                            blocks_where_not_minimiser=", ".join(lowering) or "none",
                            converged_random=int(sum(r["converged"] and r["init"] == "random" for r in t)),
                            converged_from_closed=int(sum(r["converged"] and r["init"] == "closed_form" for r in t))))
        metrics[f"theorem1_{name}_S{S}"] = verdict
t1_df = pd.DataFrame(t1_rows)
rows += [dict(part="theorem1_trained", **{k: v for k, v in r.items() if k not in ("group",)}) for r in tr_rows]
display(t1_df)
t1_reasons = {f"{r.wp} S={r.sparsity}": (None if r.nonpositive and r.verdict != "not decidable here" else
                                         "no trained-from-random SAE converged" if r.nonpositive else
                                         "W_p with positive interference, outside the theorem's assumption")
              for r in t1_df.itertuples()}
theorem1 = verdict_over_settings({f"{r.wp} S={r.sparsity}": r.verdict for r in t1_df[t1_df.nonpositive].itertuples()})
t1_decidable = decidable_summary(t1_reasons)
metrics["theorem1_verdict"] = theorem1
metrics["theorem1_decidable"] = t1_decidable
display(Markdown(f"**Theorem 1**: {theorem1}; {t1_decidable}."))

# %% [markdown]
# ## 4. Theorem 3: is the optimum unique when n_m = n?
# On the exact construction (n_m = n): candidates are the closed form, every polygon block sign-flipped (−w_i)
# and rescaled by the factor that reconstructs 1-sparse inputs best (√d for a simplex of d + 1 vectors), the
# flipped block without rescaling and the closed form rescaled by 1.05 (controls that must *not* be minimisers), and
# tied ReLU SAEs trained at S = `uniqueness_sparsity` from several random inits. Evaluated on the S → 1 limit
# (exactly one active feature per row) and at S = `uniqueness_sparsity`. L_GT uses a Hungarian matching fitted on
# one split and read on another; "equal L_SAE" means within `uniqueness_equal_atol`·E‖x_p‖².

# %%
Wu, _ = wps[uniqueness_wp]
n_u = Wu.shape[1]
cfg_u = StackedSAEConfig(Wu.shape[0], n_u, "tied_relu")
groups = [dict(wp=uniqueness_wp, sparsity=uniqueness_sparsity, seed=s) for s in uniqueness_seeds]
res_u, log_u, sae_u = te.run_groups(Wu, cfg_u, groups, steps, batch_size, lr, pool_rows, 2048, dev, rule)
cands = {"closed form": (Wu.T, True), "flipped polygons, rescaled": (tc.flipped_polygon_candidate(Wu), True),
         "flipped polygons, not rescaled": (tc.flipped_polygon_candidate(Wu, rescale=False), True),
         "closed form x 1.05": (1.05 * Wu.T, True)}
for r in res_u:
    cands[f"trained seed {r['seed']}"] = (sae_u.W_enc[r["group"]].detach().double().cpu(), r["converged"])
u_rows = []
for data in ("S -> 1 (1-sparse)", f"S = {uniqueness_sparsity}"):
    if data.startswith("S ->"):
        x_fit = tc.sample_one_sparse(eval_samples, n_u, torch.Generator().manual_seed(seed + 21))
        x_ev = tc.sample_one_sparse(eval_samples, n_u, torch.Generator().manual_seed(seed + 22))
    else:
        x_fit, x_ev = te.eval_split(Wu, uniqueness_sparsity, seed + 23, eval_samples)
    for cname, (W_m, conv) in cands.items():
        m = te.recovery_metrics(te.tied_weights(W_m), cfg_u, Wu, x_fit, x_ev)
        u_rows.append(dict(data=data, name=cname, converged=bool(conv), **{k: m[k] for k in (
            "L_SAE_rel", "L_GT_rel", "matched_cos", "mcc_matchable", "n_eff")}))
u_df = pd.DataFrame(u_rows)
u_verdicts = {}
for data, grp in u_df.groupby("data", sort=False):
    v, others = tc.theorem3_verdict(grp.to_dict("records"), uniqueness_equal_atol, uniqueness_gt_atol)
    u_verdicts[data] = (v, others)
    metrics[f"theorem3_{'limit' if data.startswith('S ->') else 'finite'}"] = v
theorem3, theorem3_others = u_verdicts["S -> 1 (1-sparse)"]
metrics["theorem3_verdict"] = theorem3
metrics["theorem3_other_minimisers"] = ", ".join(theorem3_others)
rows += [dict(part="uniqueness", **r) for r in u_rows]
display(u_df.round(6))
display(Markdown("\n".join(f"- **{d}**: {v}" + (f" — other minimisers with different L_GT: {', '.join(o)}" if o else "")
                            for d, (v, o) in u_verdicts.items())))

# %% [markdown]
# ## 5. Shrinking and vanishing against the number of interfering features
# x_m = σ(W_pᵀW_p x) at the closed form on regular simplices (d negative interferers of −1/d each).
# Shrink rate = P(x_m,i < x_i | x_i > 0); vanish rate = P(x_m,i = 0 | x_i > 0).

# %%
sh_rows = []
for S in shrink_sparsities:
    g = torch.Generator().manual_seed(seed + 11)
    for d in range(max_interferers + 1):
        W = toy.simplex_wp(d)
        x = toy.sample_features(shrink_samples, W.shape[1], S, g)
        r = toy.shrink_vanish_rates(x, toy.closed_form_recovery(x, W))
        sh_rows.append(dict(sparsity=S, interferers=d,
                            **{k: float(np.nanmean(v)) for k, v in r.items() if k != "n_active"}))
sh_df = pd.DataFrame(sh_rows)
fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
for ax, col in zip(axes, ("shrink_rate", "vanish_rate", "relative_change"), strict=True):
    sns.lineplot(data=sh_df, x="interferers", y=col, hue="sparsity", marker="o", ax=ax, palette="viridis")
    ax.set_title(col)
fig.tight_layout()
save_figure(fig, out, "shrink_vanish_simplex",
            caption="Shrink and vanish rates of x_m = σ(W_pᵀW_p x) against the number of interfering features")
plt.show()
mono_ok = True
for S in shrink_sparsities:
    s = sh_df[sh_df.sparsity == S].sort_values("interferers")
    rho = float(spearmanr(s.interferers, s.shrink_rate)[0])
    metrics[f"simplex_shrink_spearman_S{S}"] = rho
    metrics[f"simplex_shrink_rate_d1_S{S}"] = float(s.shrink_rate.iloc[1])
    metrics[f"simplex_shrink_rate_dmax_S{S}"] = float(s.shrink_rate.iloc[-1])
    metrics[f"simplex_vanish_rate_dmax_S{S}"] = float(s.vanish_rate.iloc[-1])
    mono_ok &= rho > 0.9 and float(s.shrink_rate.iloc[0]) == 0.0
metrics["shrinking_grows_with_interference"] = bool(mono_ok)
rows += [dict(part="shrink", **r) for r in sh_rows]
display(sh_df.pivot_table(index="interferers", columns="sparsity", values=["shrink_rate", "vanish_rate"]).round(3))

# %%
parts = {"Example 1": metrics["example1_reproduced"], "identities": metrics["identity_reproduced"],
         "shrinking": metrics["shrinking_grows_with_interference"]}
failed = [k for k, v in parts.items() if not v]
verdicts = {"Theorem 1": theorem1, "Theorem 3": theorem3}
overall = combine_verdicts(["not reproduced"] * len(failed) + list(verdicts.values()))
S_hi = shrink_sparsities[0]
t1_text = "; ".join(f"{r.wp} S={r.sparsity}: " + (f"holds to within {r.resolution:.2%} (perturbation resolution)"
                                                   if r.verdict == "reproduced" else
                                                   f"{r.verdict} (not a minimiser on: {r.blocks_where_not_minimiser})")
                    for r in t1_df.itertuples())
scale_text = "; ".join(f"{r.wp} S={r.sparsity}: best block scale {r.best_scale:.5f} changes L_SAE by "
                       f"{r.best_scale_rel:+.3%} (" + ("above" if abs(r.best_scale_rel) > r.resolution else "below")
                       + f" the resolution {r.resolution:.2%})" for r in res_df.itertuples())
n_conv = int(tr_df.converged.fillna(False).astype(bool).sum())
# The verdict figure's row: per decided Theorem 1 setting, the perturbation that lowers L_SAE most (relative to the
# closed form's L_SAE, with its paired 95 % interval); the theorem says none lowers it (0).
t1_points = []
for r in t1_df[t1_df.nonpositive & (t1_df.verdict != "not decidable here")].itertuples():
    best = pert_df[(pert_df.wp == r.wp) & (pert_df.sparsity == r.sparsity)].sort_values("rel").iloc[0]
    t1_points.append({"label": f"{r.wp} S={r.sparsity}", "value": 100 * best.rel, "lo": 100 * best.lo / best.base,
                      "hi": 100 * best.hi / best.base})
worst = min(t1_points, key=lambda q: q["value"]) if t1_points else None
key_number = ((f"Thm 1: the best perturbation of W_pᵀ changes L_SAE by {worst['value']:+.2f} % [{worst['lo']:+.2f}, "
               f"{worst['hi']:+.2f}] ({worst['label']}); " if worst else "Thm 1: not decided; ")
              + f"Thm 3: {theorem3}; Example 1 and identities hold to {max(ex_err, max_plain, max_gamma):.0e}")
n_trained = int(tr_df.init.isin(["random", "closed_form"]).sum())
claims = [claim(
    "toy-theory",
    test=(f"Example 1 to 1e-6; identities to 1e-5 relative on {identity_cases} random cases; Theorem 1 on W_p without "
          f"positive interference: no local perturbation (ε ∈ {perturbation_eps}, per block, random, gradient) lowers "
          f"L_SAE (paired 95 % CI over {eval_samples} held-out rows) and no converged tied ReLU SAE "
          f"({len(seeds)} seeds from random init, {len(seeds)} from the closed form) is lower by > {closed_form_rtol:.0%}; "
          f"Theorem 3 on '{uniqueness_wp}' (n_m = n): no candidate with equal L_SAE (±{uniqueness_equal_atol:g}·E‖x_p‖²) "
          f"on 1-sparse data has a different L_GT/E‖x‖² (> {uniqueness_gt_atol}); shrink rate rises with the number "
          f"of interferers (Spearman > 0.9). Flips if a perturbation or converged SAE beats the closed form, or another "
          f"minimiser is found."),
    numbers=(f"Example 1 error {ex_err:.1e}; identity error {max(max_plain, max_gamma):.1e}; Theorem 1: {t1_text}; "
             f"{n_conv}/{n_trained} trained SAEs converged; Theorem 3: {theorem3}"
             + (f" (other minimisers: {', '.join(theorem3_others)})" if theorem3_others else "")
             + f"; shrinking Spearman {metrics[f'simplex_shrink_spearman_S{S_hi}']:.2f} at S = {S_hi}; {scale_text}."),
    verdict=overall,
    why=("Parts that fail: " + ", ".join(failed + [k for k, v in verdicts.items() if v != "reproduced"])
         if overall != "reproduced" else "every part holds on the W_p the theorems assume")
    + ". The closed form is also not the global minimiser on W_p with n ≥ 2·n_p (the signed basis [I; −I] has L_SAE = 0). "
    "Do not over-read: the Theorem 1 failures on the exact W_p are small (a few % of L_SAE, in its polygon block), "
    "and the second minimiser of Theorem 3 is exact only in the S → 1 limit.",
    key_number=key_number,
    paper="W_pᵀ is a minimiser (no perturbation lowers L_SAE: 0 %) and the optimum is unique",
    effect={"name": "ΔL_SAE of the best perturbation of W_pᵀ (% of L_SAE), Theorem 1", "points": t1_points,
            "paper": 0.0},
    decidable=(f"Theorem 1: {t1_decidable}; smallest L_SAE difference the perturbation check resolves: "
               + ", ".join(f"{r.wp} S={r.sparsity} {r.resolution:.2%}" for r in res_df.itertuples())
               + f" (trained SAEs: {closed_form_rtol:.0%}); paper: exact minimiser (effect 0), so a pass means "
               "'holds to within' these. Theorem 3: " + ("decided on the S → 1 limit" if theorem3 != "not decidable here"
                                                          else "not decidable (no closed-form candidate)")
               + "; Example 1, identities and shrinking are exact computations (tolerances 1e-6, 1e-5)."),
)]
metrics["claim_reproduced"] = overall == "reproduced"
metrics["claims"] = claims
write_table(pd.DataFrame(rows), out / "rows.csv")
write_metrics(out / "metrics.json", metrics)
display(Markdown(conclusion(claims)))
