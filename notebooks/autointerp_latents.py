# %% [markdown]
# # Auto-interpretability, part 4: the latent browser (see the latents), side by side, and a blind rating page
#
# The Table-1 scores are proxies for a person's judgement of whether a latent means one thing. This report builds
# the pages that let a reader make that judgement: for every SAE of every layer (each α and Γ variant, and the
# random-weight SAE), a static page with each latent of its Table-1 sample as the field's feature dashboards show
# it (top-activating windows of the held-out novel with tokens shaded by activation, samples from lower
# activation bands, an activation histogram, firing frequency, the tokens its decoder direction promotes and
# suppresses through the unembedding, the proxy scores and rule explanations); per layer, a side-by-side page of
# the plain SAE's latents next to their closest decoder directions in the weighted and random SAEs; and a blind
# rating page whose answers enter Table 1 as the `human` backend (`autointerp_human`).
#
# Everything comes from what `autointerp_layer` stored (`browse.*`, `scores.csv`, `explanations.csv`): no SAE or
# LM pass. Pages are self-contained (inline CSS and JS, data embedded), so they work from `file://` offline.
#
# **Why not SAEDashboard / sae-vis?** Measured for issue 22 (README, "Latent browser"): both build their
# dashboards by running a TransformerLens `HookedTransformer` over a token dataset; the embedded SmolLM2-135M is not
# in TransformerLens's model list, and neither library renders from stored activations. They would mean a second
# LM pass with another model loader, so the pages are rendered here with Jinja2 from the stored data.

# %% tags=["parameters"]
out_dir = "results/dev/autointerp/latents"
device = "cpu"
layer_dirs = ["results/autointerp/layer4"]
acts_dir = "results/lm/acts"
pages_dir = "results/dev/latents"
n_top = 10
n_bands = 4
n_per_band = 2
n_bins = 24
match_min_cos = 0.5
n_compare_top = 5
n_rate_cards = 12
n_rate_top = 8
n_rate_low = 4
max_page_mb = 5.0
seed = 0

# %%
import os
import time
from pathlib import Path

import pandas as pd
from IPython.display import Markdown, display

from wsae_utils.autointerp import latent_pages as LP
from wsae_utils.autointerp import scoring as A
from wsae_utils.lm import model as L
from wsae_utils.lm import saes as S
from wsae_utils.run.results import conclusion_markdown, read_metrics, write_metrics, write_table

t_start = time.time()
out, pages = Path(out_dir), Path(pages_dir)
out.mkdir(parents=True, exist_ok=True)
settings = {k: globals()[k] for k in ("layer_dirs", "acts_dir", "pages_dir", "n_top", "n_bands", "n_per_band",
                                      "n_bins", "match_min_cos", "n_compare_top", "n_rate_cards", "n_rate_top", "n_rate_low",
                                      "max_page_mb", "seed", "device")}
display(pd.DataFrame([settings]).T.rename(columns={0: "value"}))

# %% [markdown]
# ## Inputs: each layer's browser data, proxy scores and explanations

# %%
layers, scores, expl = {}, {}, {}
for d in map(Path, layer_dirs):
    layer = int(read_metrics(d / "metrics.json")["layer"])
    layers[layer] = LP.Browse.load(d / "browse")
    sc = pd.read_csv(d / "scores.csv")
    sc = sc[sc.backend == "offline"] if "backend" in sc else sc
    for (name, lat), g in sc.groupby(["sae", "latent"]):
        scores.setdefault((layer, name), {})[int(lat)] = {p: (None if pd.isna(v) else round(float(v), 3))
                                                           for p, v in zip(g.proxy, g.score, strict=True)}
    ex = pd.read_csv(d / "explanations.csv", keep_default_na=False)
    text_cols = [c for c in ex.columns if c in ("lexical", "context", "llm")]
    for r in ex.to_dict("records"):
        e = {c: str(r[c]) for c in text_cols if str(r.get(c, ""))}
        if e:
            scores_key = (layer, r["sae"])
            expl.setdefault(scores_key, {}).setdefault(int(r["latent"]), {}).update(e)
first = next(iter(layers.values()))
n_ctx = first.windows.n_ctx
tokens = S.load_tokens(acts_dir, "heldout").numpy()[:n_ctx]
meta = S.read_meta(acts_dir)
tokenizer = L.load_tokenizer(meta["model"], cache_dir=meta.get("model_cache", "resources/models"))
token_str = A.token_decoder(tokenizer)
display(pd.DataFrame([{"layer": layer, "sae": n, "page": LP.sae_label(n, b.saes[n]),
                       "stored latents": len(b.acts[n].latents), "Table-1 sample": int(b.sampled[n].sum())}
                      for layer, b in sorted(layers.items()) for n in b.saes]))

# %% [markdown]
# ## The pages

# %%
t0 = time.time()
card_cfg = LP.CardConfig(n_top=n_top, n_bands=n_bands, n_per_band=n_per_band, n_bins=n_bins, seed=seed)
rate_cfg = LP.RateConfig(n_cards=n_rate_cards, n_top=n_rate_top, n_low=n_rate_low, seed=seed)
built = LP.write_pages(layers, tokens.reshape(-1), token_str, pages, out / "rating_key.json", card_cfg, rate_cfg,
                       match_min_cos, scores, expl, n_compare_top)
t_pages = time.time() - t0
stats = pd.DataFrame(LP.page_stats(pages))
stats["MB"] = stats.bytes / 2**20
write_table(stats, out / "pages.csv")
display(Markdown(f"{len(stats)} pages in `{pages}` in {t_pages:.1f} s: the [browser index]"
                 f"({os.path.relpath(pages / 'index.html', out)}) (from `results/index.html`: *Latent browser*)."))
display(stats.round(3))

# %% [markdown]
# ## Side by side: how many of the plain SAE's latents have a counterpart
# A decoder cosine of at least `match_min_cos` counts as a match. The random-weight SAE's best cosines are the
# chance level in this many dimensions.

# %%
cmp_rows = []
for layer, b in sorted(layers.items()):
    for m in b.matches:
        cmp_rows.append({"layer": layer, "other": m["other"], "cos": m["cos"]})
cmp = pd.DataFrame(cmp_rows, columns=["layer", "other", "cos"])
if len(cmp):
    summary = cmp.groupby(["layer", "other"]).cos.agg(
        matched=lambda c: float((c >= match_min_cos).mean()), median_cos="median", max_cos="max").reset_index()
    display(summary.round(3))
else:
    summary = pd.DataFrame()
    display(Markdown("No plain SAE (α = 0) among the main SAEs: no side-by-side matches."))

# %% [markdown]
# ## Conclusion
# No claim of the paper is tested here: this report builds the pages, checks that each stays under the size limit
# and names no network resource, and hands the blind session's key (`rating_key.json`, next to this report, never
# linked from a page) to `autointerp_human`.

# %%
too_big = stats[stats.MB > max_page_mb]
networked = stats[stats.network_refs > 0]
if len(too_big) or len(networked):
    raise RuntimeError(f"pages over {max_page_mb} MB: {too_big.page.tolist()}; pages naming a network resource: "
                       f"{networked.page.tolist()}")
display(Markdown(f"{len(stats)} pages, largest {stats.MB.max():.2f} MB (limit {max_page_mb} MB), none naming a "
                 f"network resource; blind session `{built['key_id']}` with {built['n_rate_cards']} cards."))
claims: list = []
display(Markdown(conclusion_markdown(claims)))
metrics = {"n_pages": len(stats), "max_page_mb": float(stats.MB.max()), "total_mb": float(stats.MB.sum()),
           "key_id": built["key_id"], "n_rate_cards": built["n_rate_cards"], "pages_seconds": t_pages,
           "matched_share": {f"layer{r.layer}/{r.other}": r.matched for r in summary.itertuples()} if len(summary)
           else {}, "total_seconds": time.time() - t_start, "claims": claims}
metrics_path = write_metrics(out / "metrics.json", metrics, **settings)
