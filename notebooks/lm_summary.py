# %% [markdown]
# # Language model: SAE vs WSAE across layers
#
# Collects the held-out metrics of every (layer, α) SAE (`results/tables/lm_sae.csv`) and plots FVU, L0, dead
# fraction, CE-loss recovered and KL against the layer, one line per α. Paper claim in view (Table 1): weighting
# by per-dimension variance (α = 1) makes latents more interpretable (auto-interp 76.4 → 80.2 % on Pythia-160M)
# "in most layers". Auto-interp needs an LLM judge and is not scored here; what this report can decide is
# whether WSAEs pay for it in reconstruction faithfulness (CE recovered within `parity_tolerance` of α = 0).

# %% tags=["parameters"]
out_dir = "results/dev/lm_summary"
device = "auto"
table = "results/tables/lm_sae.csv"
parity_tolerance = 0.1

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from wsae_utils.plots import save_figure, setup_style
from wsae_utils.results import write_metrics

setup_style()
out = Path(out_dir)
df = pd.read_csv(table).sort_values(["layer", "alpha"])
cols = ["layer", "alpha", "fvu", "l0", "dead_frac", "ce_recovered", "kl"]
print(df[cols].to_string(index=False))

# %%
long = df.melt(id_vars=["layer", "alpha"], value_vars=cols[2:], var_name="metric")
g = sns.relplot(data=long, x="layer", y="value", hue="alpha", col="metric", col_wrap=3, kind="line",
                marker="o", height=2.8, facet_kws={"sharey": False}, palette="viridis")
save_figure(g.figure, out, "metrics_by_layer")
plt.show()

# %% [markdown]
# ## Conclusion
# Metrics: `mean_<metric>_a<α>` averaged over layers, `ce_drop_max` (largest CE-recovered loss of any α > 0
# against α = 0 at the same layer), `wsae_reconstruction_parity`, `claim_reproduced` (null: Table 1 is an
# auto-interp score, not measured here).

# %%
metrics = {}
for a, sub in df.groupby("alpha"):
    for m in cols[2:]:
        metrics[f"mean_{m}_a{a:g}"] = float(sub[m].mean())
base = df[df.alpha == 0].set_index("layer")["ce_recovered"]
drops = [float(base[r.layer] - r.ce_recovered) for r in df[df.alpha > 0].itertuples() if r.layer in base.index]
metrics["ce_drop_max"] = max(drops) if drops else float("nan")
metrics["wsae_reconstruction_parity"] = bool(drops) and max(drops) <= parity_tolerance
metrics["claim_reproduced"] = None
metrics["n_saes"] = len(df)
print(f"Over {df.layer.nunique()} layers: mean FVU " + ", ".join(
    f"α={a:g}: {metrics[f'mean_fvu_a{a:g}']:.3f}" for a in sorted(df.alpha.unique())) + "; mean CE recovered "
    + ", ".join(f"α={a:g}: {metrics[f'mean_ce_recovered_a{a:g}']:.3f}" for a in sorted(df.alpha.unique())) + ".")
print(f"Largest CE-recovered drop of a WSAE vs the plain SAE: {metrics['ce_drop_max']:.3f} → "
      + ("WSAEs stay about as faithful as plain SAEs" if metrics["wsae_reconstruction_parity"]
         else "WSAEs lose faithfulness") + f" (tolerance {parity_tolerance}). The paper's Table-1 interpretability"
      " gain is not measured here (no LLM judge offline), so claim_reproduced is null.")
write_metrics(out / "metrics.json", metrics, out_dir=out_dir, device=device, table=table,
              parity_tolerance=parity_tolerance)
