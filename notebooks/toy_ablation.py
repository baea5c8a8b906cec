# %% [markdown]
# # Toy model: which of the three recovery conditions are necessary?
#
# The paper (arXiv 2506.15963, v1 abstract; Theorems 2–3) states that full recovery of the ground-truth features
# needs (1) **extreme sparsity** S → 1, (2) a **sparse activation** and (3) **enough latents**, n_m ≥ n. This report
# trains the theory's tied, bias-free SAE with each activation (linear, ReLU, JumpReLU with a fixed threshold, Top-k)
# for every n_m / n in `latent_ratios` and S in `sparsities`, on the exact (non-positive interference) W_p, with
# `len(seeds)` seeds.
#
# **Metric**: MCC over *matchable* features (Hungarian matching fitted on one held-out split, correlations read on
# another, averaged over the min(n, n_m) matched pairs). The classic MCC averages over all n features and scores
# unmatched ones 0, so with n_m = n/2 it is at most 0.5 by construction: that version cannot test the latent
# condition and is shown only for comparison. A condition counts as **necessary** when violating it (the other two
# met) lowers the matchable MCC against the all-conditions cell, with the per-seed difference's 95 % t-interval above
# 0 (same seed = same data and init stream), from converged runs only (at least 3 converged pairs, else not
# decidable).

# %% tags=["parameters"]
out_dir = "results/dev/toy_ablation"
device = "auto"
num_threads = 1
seeds = [0, 1, 2]
wp_specs = {
    "exact": {"construction": "constructed", "n": 34, "n_p": 20, "n_mono": 5, "n_digons": 13},
}
wp_names = ["exact"]
sae_kinds = ["tied_linear", "tied_relu", "tied_jumprelu", "tied_topk"]
jumprelu_threshold = 0.1
k = 2
latent_ratios = [0.5, 1.0, 2.0]
sparsities = [0.5, 0.99]
steps = 3000
batch_size = 512
lr = 1.0e-2
pool_rows = 16384
eval_samples = 8192
cos_threshold = 0.99
convergence_window = 0.1
convergence_rtol = 0.02
convergence_atol = 1.0e-9

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

from wsae_utils.core.power import decidable_summary, mde_of_sample, verdict_over_settings
from wsae_utils.core.sae import StackedSAEConfig
from wsae_utils.core.stats import t_interval
from wsae_utils.core.train import ConvergenceRule
from wsae_utils.run.plots import save_figure, setup_style
from wsae_utils.run.reportkit import conclusion
from wsae_utils.run.results import claim, write_metrics, write_table
from wsae_utils.run.setup import start_run
from wsae_utils.toy import checks as tc
from wsae_utils.toy import data as toy
from wsae_utils.toy import evaluation as te

out, dev = start_run(out_dir, seeds[0], device, num_threads)
setup_style()
rule = ConvergenceRule(convergence_window, convergence_rtol, convergence_atol)
metrics: dict = {}
wps = {name: toy.make_wp(wp_specs[name], seeds[0]) for name in wp_names}
for name, (_W, info) in wps.items():
    metrics.update(toy.flat_wp_stats(name, info))
display(Markdown(f"**Convergence criterion**: {rule.describe()}."))
display(pd.DataFrame({name: info for name, (_, info) in wps.items()}).T[
    ["n", "n_p", "frac_positive_pairs", "nonpositive_interference"]].infer_objects().round(3))

# %%
rows, curves = [], []
for name in wp_names:
    W, _info = wps[name]
    n = W.shape[1]
    for kind in sae_kinds:
        for ratio in latent_ratios:
            n_m = max(1, round(ratio * n))
            cfg = StackedSAEConfig(W.shape[0], n_m, kind, k=k, threshold=jumprelu_threshold)
            groups = [dict(wp=name, latent_ratio=ratio, sparsity=S, seed=s) for S in sparsities for s in seeds]
            res, log, _ = te.run_groups(W, cfg, groups, steps, batch_size, lr, pool_rows, eval_samples, dev, rule,
                                        dict(cos_threshold=cos_threshold))
            rows += res
            curves.append(te.curve_frame(log, res, ("wp", "kind", "latent_ratio", "sparsity", "seed")))
df = pd.DataFrame(rows)
curve_df = pd.concat(curves, ignore_index=True)
g = sns.relplot(data=curve_df[curve_df.seed == seeds[0]], x="step", y="objective", hue="latent_ratio",
                style="sparsity", col="kind", kind="line", height=2.8, aspect=1.2, facet_kws={"sharey": False})
g.set(yscale="log")
save_figure(g.figure, out, "loss_curves",
            caption="Training objective per latent ratio and sparsity (first seed, log scale)")
plt.show()
table = df.groupby(["wp", "kind", "latent_ratio", "sparsity"]).agg(
    converged=("converged", "sum"), mcc_matchable=("mcc_matchable", "mean"), mcc_all=("mcc_all", "mean"),
    matched_cos=("matched_cos", "mean"), L_GT_rel=("L_GT_rel", "mean"), L_SAE_rel=("L_SAE_rel", "mean"))
display(table.round(3))

# %%
g = sns.catplot(data=df[df.converged], x="latent_ratio", y="mcc_matchable", hue="kind", col="sparsity", row="wp",
                kind="bar", height=3.2, aspect=1.3, errorbar=("ci", 95))
save_figure(g.figure, out, "ablation_mcc",
            caption="Matchable MCC per latent ratio, SAE kind and sparsity (converged runs, 95 % CI)")
plt.show()

# %% [markdown]
# ## Necessity of each condition (paired over seeds, converged runs)

# %%
hi, lo = max(sparsities), min(sparsities)
small = min(latent_ratios)
sparse_kinds = [k for k in sae_kinds if k != "tied_linear"]


def cell(wp, kind, ratio, S):
    """Per-seed matchable MCC of one cell, converged runs only."""
    c = df[(df.wp == wp) & (df.kind == kind) & (df.latent_ratio == ratio) & (df.sparsity == S) & df.converged]
    return c.set_index("seed").mcc_matchable


nec_rows = []
for wp in wp_names:
    for kind in sparse_kinds:
        full = cell(wp, kind, 1.0, hi)
        violations = {"sparsity": cell(wp, kind, 1.0, lo) if lo < hi else None,
                      "latents": cell(wp, kind, small, hi) if small < 1.0 else None,
                      "activation": cell(wp, "tied_linear", 1.0, hi) if "tied_linear" in sae_kinds else None}
        for cond, viol in violations.items():
            if viol is None:
                continue
            both = full.index.intersection(viol.index)
            m, a, b, n_pairs = t_interval((full[both] - viol[both]).values)
            verdict = tc.necessity_verdict(a, n_pairs)
            nec_rows.append(dict(wp=wp, kind=kind, condition=cond, mcc_all_conditions=float(full.mean()),
                                 mcc_violated=float(viol.mean()), drop=m, ci=f"[{a:.3f}, {b:.3f}]", seeds=n_pairs,
                                 verdict=verdict, mde=mde_of_sample((full[both] - viol[both]).values)))
            metrics[f"necessary_{cond}_{wp}_{kind}"] = verdict
nec_df = pd.DataFrame(nec_rows)
display(nec_df.round(3))

# %%
# Decided on the decidable cells only (each condition × activation is one setting of the same rule).
overall = verdict_over_settings({f"{r.condition} ({r.kind})": r.verdict for r in nec_df.itertuples()},
                                passing="necessary")
cond_decidable = decidable_summary({f"{r.condition} ({r.kind})": (None if r.verdict != "not decidable here" else
                                                                   f"fewer than {tc.MIN_SEEDS} converged pairs")
                                    for r in nec_df.itertuples()}, noun="(condition, activation) cells")
mdes = nec_df.mde.dropna()
# The verdict figure's row: the MCC drop of every decided (condition, activation) cell with its interval; the
# paper gives no number (full recovery only with all three conditions).
cells = nec_df[nec_df.verdict != "not decidable here"]
cond_points = [{"label": f"{r.condition} ({r.kind})", "value": r.drop,
                "lo": float(r.ci.strip("[]").split(",")[0]), "hi": float(r.ci.strip("[]").split(",")[1])}
               for r in cells.itertuples()]
weakest = min(cond_points, key=lambda q: q["lo"]) if cond_points else None
key_number = (f"{len(cells)} decided cells; smallest MCC drop {weakest['value']:.3f} [{weakest['lo']:.3f}, "
              f"{weakest['hi']:.3f}] ({weakest['label']})" if weakest else "no cell decidable")
not_shown = ", ".join(f"{r.condition} ({r.kind})" for r in nec_df.itertuples() if r.verdict != "necessary") or "none"
claims = [claim(
    "toy-conditions",
    test=(f"On W_p {', '.join(wp_names)} (n = {wps[wp_names[0]][0].shape[1]}), per sparse activation "
          f"({', '.join(sparse_kinds)}): matchable MCC with all conditions (S = {hi}, n_m = n) minus with one violated "
          f"(S = {lo}; n_m = {small}·n; linear activation), per-seed 95 % t-interval above 0 ⇒ necessary; converged "
          f"runs of {len(seeds)} seeds. Flips when a violation does not lower the matchable MCC."),
    numbers="; ".join(f"{r.kind}/{r.condition}: {r.mcc_all_conditions:.3f} vs {r.mcc_violated:.3f}, drop {r.drop:.3f} "
                      f"{r.ci} (n = {r.seeds})" for r in nec_df.itertuples()),
    verdict=overall,
    why=(f"conditions not shown necessary: {not_shown}. The all-features MCC would cap n_m = {small}·n at {small} "
         "by construction, so it is not used. Do not over-read: one W_p (no positive interference), "
         f"{len(seeds)} seeds, and JumpReLU's fixed θ = {jumprelu_threshold} is one choice."),
    key_number=key_number,
    paper="full recovery only with all three conditions (no number)",
    effect={"name": "matchable MCC drop when one condition is violated", "points": cond_points, "paper": None},
    decidable=(f"{cond_decidable}; smallest detectable MCC drop at {len(seeds)} seeds (80 % power): "
               + (f"{mdes.min():.3f}–{mdes.max():.3f}" if len(mdes) else "unknown")
               + "; paper's effect not quantified (full recovery only with all three conditions)."),
)]
metrics["claim_reproduced"] = overall == "reproduced"
metrics["claims"] = claims
write_table(df, out / "rows.csv")
write_metrics(out / "metrics.json", metrics)
display(Markdown(conclusion(claims)))
