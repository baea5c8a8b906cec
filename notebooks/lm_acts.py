# %% [markdown]
# # Language model: the cached activation pass
#
# Every later LM stage (SAE training for every α and Γ variant, held-out evaluation, auto-interpretability)
# reads the residual-stream activations written here, so the language model runs **once** and changing α, k or
# any SAE setting reruns no LM pass. This report states what was run: which model and weights (file and hash),
# which layers, which text (training contexts drawn from **every** training document, shuffled with a seed; the
# held-out document never seen by calibration or training), how many tokens, how fast, and how the per-dimension
# variance (the WSAE proxy s_i, γ = s^α) is spread — a few outlier dimensions dominate it.
#
# Layout of the cache (`acts_dir`): `tokens.safetensors` (int32 `train`, `heldout` [contexts, ctx], position 0 =
# BOS), `meta.json`, `layer{L}/{split}-{i:05d}.safetensors` with `acts` [contexts, ctx, d_model] (BOS included).

# %% tags=["parameters"]
out_dir = "results/dev/lm/acts"
device = "auto"
num_threads = 2
model = "smollm2-135m"
model_cache = "resources/models"
corpus = "austen"
data_dir = "resources/data/janeaustenr"
eval_doc = "persuasion"
layers = [4, 12, 20]
context_size = 128
train_tokens = 98304
heldout_tokens = 0
batch_contexts = 16
shard_contexts = 64
acts_dtype = "float32"
lm_dtype = "auto"
seed = 0

# %%
import time

import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import Markdown, display

from wsae_utils.hardware import machine_summary, resolve_precision
from wsae_utils.lm import cache as C
from wsae_utils.lm import model as L
from wsae_utils.lm import text as T
from wsae_utils.run.plots import save_figure, setup_style
from wsae_utils.run.results import conclusion_markdown, write_metrics, write_table
from wsae_utils.run.setup import start_run

t_start = time.time()
out, dev = start_run(out_dir, seed, device, num_threads)
setup_style()
layers = sorted({int(x) for x in layers})
settings = {k: globals()[k] for k in (
    "model", "model_cache", "corpus", "data_dir", "eval_doc", "layers", "context_size", "train_tokens",
    "heldout_tokens", "batch_contexts", "shard_contexts", "acts_dtype", "lm_dtype", "seed", "num_threads",
    "device")}
display(pd.DataFrame([settings]).T.rename(columns={0: "value"}))

# %% [markdown]
# ## Model and weights

# %%
facts = L.model_facts(model)
# bf16 only where this device runs it fast (66x slower than fp32 on an AVX2-only CPU); probed at the pass's
# largest GEMM (contexts per forward x d_model -> MLP width) when the CPU's report is ambiguous.
precision = resolve_precision(lm_dtype, dev, "LM forward", probe_shape=(
    batch_contexts * context_size, facts["d_model"], facts["d_mlp"]))
t0 = time.time()
lm = L.load_lm(model, model_cache, dev, seed=seed, dtype=precision.dtype)
L.check_layers(lm, layers)
weights = L.weights_info(model, model_cache)
t_load = time.time() - t0
display(pd.DataFrame([{**{k: v for k, v in weights.items() if k != "transformerlens"}, "n_layers": lm.n_layers,
                       "d_model": lm.d_model, "forward dtype": f"{precision.dtype} ({lm_dtype}: {precision.reason})",
                       "machine": machine_summary()}]).T.rename(columns={0: ""}))

# %% [markdown]
# ## Text: training contexts from every training document, the held-out document apart
# Each document is tokenised on its own and cut into contexts of `context_size − 1` tokens with BOS in front.
# Training contexts are allocated to documents in proportion to their length (at least one each), drawn with
# the seed, then shuffled; `train_tokens` is the budget (BOS included). Held-out contexts keep document order
# (`heldout_tokens = 0`: the whole held-out document).

# %%
train_docs, held_docs = T.load_corpus(corpus, eval_doc, data_dir)
overlap = set(train_docs) & set(held_docs)
assert not overlap, f"documents {overlap} are both training and held-out"
n_train_ctx = max(1, train_tokens // context_size)
train_set = T.training_contexts(lm.tokenizer, train_docs, context_size, n_train_ctx, seed, lm.vocab_size)
held_set = T.heldout_contexts(lm.tokenizer, held_docs, context_size,
                              heldout_tokens // context_size if heldout_tokens > 0 else 0, lm.vocab_size)
doc_rows = [{"split": split, "document": n, "contexts available": ts.doc_contexts[n], "contexts used": c,
             "tokens used": c * context_size}
            for split, ts in (("train", train_set), ("heldout", held_set)) for n, c in ts.counts().items()]
docs_table = pd.DataFrame(doc_rows)
write_table(docs_table, out / "documents.csv")
display(docs_table)

# %% [markdown]
# ## One LM pass over both splits (the forward stops after the deepest requested block)

# %%
meta = C.write_activation_cache(
    lm, {"train": train_set, "heldout": held_set}, layers, out, batch_contexts=batch_contexts,
    shard_contexts=shard_contexts, acts_dtype=acts_dtype,
    meta_extra={"hub_id": weights["hub_id"], "weights": weights, "corpus": corpus, "data_dir": data_dir,
                "eval_doc": eval_doc, "seed": seed, "model_cache": model_cache,
                "tokenizer": f"load_tokenizer({model!r}, cache_dir={model_cache!r})",
                "torch_threads": torch.get_num_threads(), "lm_precision": precision.as_dict(),
                "settings": settings})
pass_table = pd.DataFrame([{
    "split": s, "contexts": m["n_contexts"], "tokens (BOS incl.)": m["n_tokens"],
    "tokens without BOS": m["n_tokens_without_bos"], "shards per layer": len(m["shards"])}
    for s, m in meta["splits"].items()])
display(pass_table)
display(Markdown(f"LM pass: **{meta['lm_tokens']:,} tokens in {meta['lm_seconds']:.0f} s = "
                 f"{meta['lm_tokens_per_second']:.0f} tokens/s** ({precision.dtype} forward, {torch.get_num_threads()} "
                 f"threads, {batch_contexts} contexts per forward, stopping after block {max(layers)} of "
                 f"{lm.n_layers}); shards stored as {acts_dtype}."))

# %% [markdown]
# ## Per-dimension variance on the training split (the WSAE proxy) and how concentrated γ² = Var^{2α} is

# %%
stats, var_rows = {}, []
for l in layers:
    stats[l] = C.layer_stats(out, l, "train")
    var = stats[l]["var"]
    row = {"layer": l, "tokens": int(stats[l]["n_tokens"]), "var max / median": float(var.max() / var.median())}
    for a in (0.5, 1.0):
        w = var.double().pow(2 * a).sort(descending=True).values  # γ² = Var^(2α): weight on the squared error
        row.update({f"α={a:g} top-1 share of γ²": float(w[0] / w.sum()),
                    f"α={a:g} top-10 share of γ²": float(w[:10].sum() / w.sum())})
    var_rows.append(row)
var_table = pd.DataFrame(var_rows)
display(var_table.round(3))
fig, ax = plt.subplots(figsize=(6, 3.5))
for l in layers:
    ax.plot(stats[l]["var"].sort(descending=True).values.numpy(), label=f"layer {l}")
ax.set(yscale="log", xscale="log", xlabel="dimension (sorted by variance)", ylabel="variance s_i",
       title=f"{model}: per-dimension variance of the residual stream")
ax.legend()
save_figure(fig, out, "variance_spectrum")
plt.show()

# %% [markdown]
# ## What this produced
# No paper claim is judged here; the cache feeds `lm_train` (SAEs), `lm_sae` (evaluation) and the
# auto-interpretability stage.

# %%
metrics = {
    "lm_tokens": meta["lm_tokens"], "lm_seconds": meta["lm_seconds"],
    "lm_tokens_per_second": meta["lm_tokens_per_second"], "load_seconds": t_load,
    "train_contexts": meta["splits"]["train"]["n_contexts"], "train_tokens": meta["splits"]["train"]["n_tokens"],
    "heldout_contexts": meta["splits"]["heldout"]["n_contexts"],
    "heldout_tokens": meta["splits"]["heldout"]["n_tokens"],
    "train_documents": len(train_docs), "weights_sha256": weights.get("weights_sha256"),
    "total_seconds": time.time() - t_start,
}
for r in var_rows:
    metrics[f"top1_gamma2_share_alpha1_l{r['layer']}"] = r["α=1 top-1 share of γ²"]
claims: list = []
display(Markdown(
    f"Cached {len(layers)} layers of **{model}** ({weights['hub_id']}; {weights['quantisation']}): "
    f"{metrics['train_tokens']:,} training tokens from all {len(train_docs)} training documents and "
    f"{metrics['heldout_tokens']:,} held-out tokens of {', '.join(held_docs)}, at "
    f"{metrics['lm_tokens_per_second']:.0f} LM tokens/s. At α = 1 the largest single dimension carries "
    f"{max(r['α=1 top-1 share of γ²'] for r in var_rows):.1%} of γ² (see `lm_train` for what that does to "
    "training)."))
display(Markdown(conclusion_markdown(claims)))
metrics["claims"] = claims
_ = write_metrics(out / "metrics.json", metrics, **settings)
