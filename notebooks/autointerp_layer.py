# %% [markdown]
# # Auto-interpretability, part 2: the SAEs of one layer, every α, against a random-weight SAE
#
# For each SAE of this layer (the plain SAE α = 0 and the weighted SAEs, plus the extra SAEs named in
# `extra_saes`, e.g. the paper's raw Γ at α = 1, which can barely move from its initialisation) and for a
# **random-weight SAE of the same shape and k** (the floor), one pass over the cached held-out activations
# gives every latent's sparse activations. `n_latents` latents are then sampled (seeded, the same procedure for
# every SAE) among those active in at least `min_windows` windows; each gets explanation windows across
# activation quantiles and disjoint activating + silent test windows (protocol of `autointerp_checks`, stored
# with the records). `lm_train` trains every SAE for several SAE seeds; only those of `sae_seeds` are scored here
# (the proxies are costly and never decide a claim). The first of them keeps the SAE's name (`cap/alpha1`); with
# more than one, the others are keyed `cap/alpha1@seed1` and so on, and every row carries its `seed` (−1 for the
# random-weight SAE). Every latent is scored by every offline proxy, also with a **shuffled explanation**
# (another latent's), and, when `backend` is an LLM, by the LLM explainer and its detection / fuzzing
# judgements (`wsae_utils.autointerp.llm_judge`): answers asked for as JSON, constrained by the server where it
# allows it, an unreadable answer asked again at most `parse_retries` times and otherwise counted as unjudged
# (never as "no"), and, where the server returns logprobs, an AUC of P("1") next to balanced accuracy. The same
# pass stores what the latent browser shows (`browse.*`, see `wsae_utils.latent_pages`).
#
# The offline proxies are **not** the paper's LLM metric. Their validity (planted latents) is in
# `autointerp_checks`; their ability to tell a trained SAE from a random one is measured here (margin over
# the random SAE with a 95 % bootstrap CI over latents); `autointerp_summary` picks the proxy and builds Table 1.

# %% tags=["parameters"]
out_dir = "results/dev/autointerp/layer4"
device = "auto"
num_threads = 1
layer = 4
acts_dir = "results/lm/acts"
checks_dir = "results/autointerp/checks"
train_rows = "results/lm/train/layer4/rows.csv"
sae_root = "results/lm/saes"
extra_saes = ["paper/alpha1"]
sae_seeds = [0]
n_latents = 100
min_windows = 60
random_sae_seed = 1234
backend = "offline"
llm_model = ""
base_url = ""
api_key_env = ""
allow_plain_http_key = False
concurrency = 4
max_retries = 4
timeout_s = 60.0
temperature = 0.0
max_tokens = 256
per_prompt = 5
n_llm_latents = 50
constrain = "auto"
parse_retries = 2
top_logprobs = 10
server_info = ""
n_cards = 2
n_logit_tokens = 10
latents_dir = ""
seed = 0

# %%
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from IPython.display import HTML, Markdown, display
from safetensors.numpy import load_file

from wsae_utils.autointerp import latent_pages as LP
from wsae_utils.autointerp import llm_judge as J
from wsae_utils.autointerp import proxies as P
from wsae_utils.autointerp import scoring as A
from wsae_utils.core.export import load_sae
from wsae_utils.lm import model as L
from wsae_utils.lm import saes as S
from wsae_utils.run.plots import save_figure, setup_style
from wsae_utils.run.reportkit import conclusion
from wsae_utils.run.results import write_metrics, write_table
from wsae_utils.run.setup import start_run
from wsae_utils.runlog import log, progress

t_start = time.time()
out, dev = start_run(out_dir, seed, device, num_threads)
setup_style()
llm, judge_model = None, llm_model
if backend != "offline":  # an LLM backend fails here, within seconds, before any SAE pass
    from wsae_utils.autointerp import llm_client as C

    llm = C.make_backend(backend, llm_model, base_url=base_url, api_key_env=api_key_env or None,
                         allow_plain_http_key=allow_plain_http_key,
                         cache_dir=out / "llm_cache", device=str(dev), concurrency=concurrency,
                         max_retries=max_retries, timeout_s=timeout_s, temperature=temperature, max_tokens=max_tokens,
                         seed=seed, constrain=constrain, top_logprobs=top_logprobs)
    if backend == "openai":
        ids = llm.check()
        if ids and llm_model not in ids:  # llama.cpp answers with its one model whatever the name; say which
            judge_model = f"{ids[0]} (asked for {llm_model})"
            display(Markdown(f"**The server at {base_url} serves {', '.join(ids)}, not `{llm_model}`**: its answers "
                             f"are labelled {judge_model!r}."))

# %% [markdown]
# ## Inputs: the protocol, the held-out windows, the SAEs of this layer

# %%
protocol = json.loads((Path(checks_dir) / "protocol.json").read_text())
tokens = S.load_tokens(acts_dir, "heldout").numpy()[: protocol["n_contexts"]]
windows = A.Windows(tokens.shape[0], tokens.shape[1], protocol["window"])
vecs = load_file(str(Path(checks_dir) / "window_vecs.safetensors"))["vecs"]
vecs = vecs if len(vecs) == windows.n else None
type_vecs = load_file(str(Path(checks_dir) / "type_vecs.safetensors"))["vecs"]
type_vecs = type_vecs if len(type_vecs) else None
meta = S.read_meta(acts_dir)
tokenizer = L.load_tokenizer(meta["model"], cache_dir=meta.get("model_cache", "resources/models"))
token_str = A.token_decoder(tokenizer)
encode_text = None
if vecs is not None:
    from wsae_utils.autointerp.llm_client import SentenceEncoder

    encode_text = SentenceEncoder(device=str(dev)).encode
record_cfg = A.RecordConfig(**{**protocol["record"], "n_latents": n_latents, "min_windows": min_windows,
                               "seed": seed})
lexical_cfg = P.ExplainerConfig(**{**protocol["lexical"], "families": tuple(protocol["lexical"]["families"])})
context_cfg = P.ExplainerConfig(**{**protocol["context"], "families": tuple(protocol["context"]["families"])})

trained = pd.read_csv(train_rows)
if "seed" not in trained:
    trained["seed"] = 0  # a rows.csv from before several SAE seeds: its one seed
root = Path(sae_root).resolve()
trained["main"] = [Path(d).resolve().is_relative_to(root) for d in trained["dir"]]
chosen = trained[(trained.main | trained.sae.isin(extra_saes)) & trained.seed.isin(sae_seeds)].copy()
# The first chosen seed's SAEs first (the browser's anchor is the first plain SAE), then the others in order.
chosen = chosen.assign(order=chosen.seed.map(list(sae_seeds).index)).sort_values("order", kind="stable")
missing = sorted(set(extra_saes) - set(trained.sae))
if missing:
    display(Markdown(f"Extra SAEs not trained in this run (skipped): {', '.join(missing)}."))
if no_seed := sorted(set(sae_seeds) - set(trained.seed)):
    display(Markdown(f"SAE seeds not trained in this run (skipped): {', '.join(map(str, no_seed))}."))
saes, info = {}, {}
for r in chosen.itertuples():
    sae, side = load_sae(r.dir, dev)
    w = side.get("wsae", {})
    key = r.sae if int(r.seed) == sae_seeds[0] else f"{r.sae}@seed{int(r.seed)}"
    saes[key] = sae.eval()
    info[key] = {"alpha": float(w.get("alpha", r.alpha)), "variant": w.get("variant", r.variant),
                 "untrained": bool(w.get("untrained", r.untrained)), "dir": r.dir, "main": bool(r.main),
                 "seed": int(r.seed)}
first = next(iter(saes.values()))
display(pd.DataFrame([{"sae": n, **i} for n, i in info.items()]))

# %% [markdown]
# ## One pass over the held-out activations: top-k of every SAE, and the random-weight floor
# The random SAE has the training initialisation's weights (same n_latents, d_in, k) and its decoder bias at the
# held-out mean, so its latents are random directions of the centred residual stream. Records already on disk
# with the same fingerprint (SAE weights, activation cache, sampling settings) are reused: a rerun that changes
# only the scoring (e.g. the LLM backend) makes no SAE pass.

# %%
t0 = time.time()
n_ctx, ctx_len = tokens.shape
info["random"] = {"alpha": float("nan"), "variant": "random", "untrained": True, "dir": "", "main": False,
                  "seed": -1}
base_fp = A.fingerprint(Path(acts_dir) / "meta.json", protocol, asdict(record_cfg))
fps = {n: A.fingerprint(Path(info[n]["dir"]) / "sae_weights.safetensors", base_fp) for n in saes}
fps["random"] = A.fingerprint(Path(next(iter(info.values()))["dir"]) / "cfg.json", base_fp, random_sae_seed)
browse_fp = A.fingerprint(fps, n_logit_tokens, meta.get("model"), Path(LP.__file__))  # an edit of its code rebuilds it
browse_ok = LP.browse_fresh(out / "browse", browse_fp)
# Stale browser data needs every SAE's activations, so then every SAE is encoded again (one pass, cheap).
records = {n: r for n in fps if browse_ok and (r := A.load_records_if(out / "records" / n.replace("/", "_"), fps[n]))}


def batches():
    """Held-out activation batches of the first n_ctx contexts."""
    for c0, x in S.iter_activations(acts_dir, layer, "heldout", batch_contexts=16):
        if c0 >= n_ctx:
            break
        yield c0, x[: n_ctx - c0]


topk, total, count = {}, 0.0, 0
with torch.no_grad():
    for name, sae in saes.items():
        if name not in records:
            topk[name] = A.encode_topk(sae, progress(batches(), desc=f"encode {name}"), n_ctx, ctx_len, str(dev))
    if "random" not in records:
        for _, x in batches():
            total = total + x[:, 1:].reshape(-1, x.shape[-1]).double().sum(0)
            count += x[:, 1:].shape[0] * x[:, 1:].shape[1]
        rand = A.random_sae_like(first, (total / count).float(), seed=random_sae_seed).to(dev)
        topk["random"] = A.encode_topk(rand, batches(), n_ctx, ctx_len, str(dev))
for name, (idx, val) in topk.items():
    rec = A.build_records(A.topk_to_sparse(idx, val, first.cfg.n_latents), windows, record_cfg)
    rec.meta.update({"sae": name, "layer": layer, "fingerprint": fps[name],
                     **{k: v for k, v in info[name].items() if k != "dir"}})
    rec.save(out / "records" / name.replace("/", "_"))
    records[name] = rec
records = {n: records[n] for n in fps}  # SAE order: trained ones, then the random floor
t_encode = time.time() - t0
log(f"records of {len(records)} SAEs in {t_encode:.1f} s ({len(topk)} encoded, {len(records) - len(topk)} reused)")

# %% [markdown]
# ## What the latent browser shows, from this pass
# Every sampled latent's complete held-out activations, those of its best decoder-cosine match in each other main
# SAE and in the random one (for the side-by-side page), and each one's decoder direction through the LM's
# unembedding (the tokens whose logits it raises and lowers most). Pages are built from this by
# `autointerp_latents`, with no SAE or LM pass.

# %%
t0 = time.time()
if not browse_ok:
    w_u, logit_note = LP.unembedding(meta["model"], meta.get("model_cache", "resources/models"), first.cfg.d_in)
    dec = {n: s.W_dec.detach().float().cpu().numpy() for n, s in saes.items()} | {
        "random": rand.W_dec.detach().float().cpu().numpy()}
    full = {n: A.topk_to_sparse(idx, val, first.cfg.n_latents) for n, (idx, val) in topk.items()}
    anchor = next((n for n in saes if info[n]["main"] and info[n]["alpha"] == 0), None)
    # side by side: the anchor's seed only (another seed's SAE is a different dictionary, not a different α)
    compare = [n for n in saes if info[n]["main"] and n != anchor and info[n]["seed"] == sae_seeds[0]] + ["random"]
    browse = LP.build_browse(full, {n: r.acts.latents for n, r in records.items()}, dec,
                             {n: {k: v for k, v in info[n].items() if k != "dir"} | {"n_latents": first.cfg.n_latents}
                              for n in records}, windows, anchor, compare, w_u, n_logit_tokens,
                             {"fingerprint": browse_fp, "layer": layer, "logit_note": logit_note})
    browse.save(out / "browse")
    del full, dec, w_u
browse = LP.Browse.load(out / "browse")
t_browse = time.time() - t0
display(Markdown(f"Browser data: {sum(len(a.latents) for a in browse.acts.values())} latents over "
                 f"{len(browse.saes)} SAEs ({len(browse.matches)} decoder matches), logit effects: "
                 f"{browse.meta.get('logit_note') or 'none'}; {t_browse:.1f} s."
                 + (f" Pages: [latent browser of this layer]({Path(os.path.relpath(Path(latents_dir), out)) / LP.compare_path(layer)})."
                    if latents_dir else "")))

# %% [markdown]
# ## Offline scores (with the shuffled-explanation control)

# %%
t0 = time.time()
all_scores, all_expl = [], []
for name, rec in progress(records.items(), desc="score"):
    rows, expl = P.score_offline(rec, tokens, token_str, vecs, encode_text, lexical_cfg, context_cfg, seed,
                                 type_vecs)
    all_scores += [{"sae": name, **r} for r in rows]
    all_expl += [{"sae": name, **e} for e in expl]
scores = pd.DataFrame(all_scores)
scores["backend"] = "offline"
t_score = time.time() - t0
eligible = pd.DataFrame([{"sae": n, "eligible latents": r.meta["n_eligible"], "sampled": len(r),
                          "of latents": r.meta["n_stored"]} for n, r in records.items()])
display(eligible)

# %% [markdown]
# ## LLM explainer and scorer (only when `backend` is an LLM)
# Per latent: one explanation from its highlighted explanation windows, then detection and fuzzing prompts of
# `per_prompt` test examples each, with its own explanation and with another latent's (the shuffled control).
# Every answer is asked for as JSON; the table after this cell counts, per SAE, what was asked, read at once,
# read only after a retry, never read (unjudged: left out of the score, never counted as "no"), and judged with
# a probability of "1" from logprobs. Prompts, answer schemas, the server's answer format and the chat template
# are in `llm_prompts.json` next to the scores.

# %%
t0 = time.time()
llm_rows, parse_rows = [], []
if llm is not None:
    cfg = J.JudgeConfig(n_explain_shown=protocol["record"]["n_explain"], per_prompt=per_prompt,
                        parse_retries=parse_retries, seed=seed)
    n_test = protocol["record"]["n_test_act"] + protocol["record"]["n_test_non"]
    n_judged_latents = sum(min(n_llm_latents, len(r)) for r in records.values())
    display(Markdown(f"At most **{J.expected_requests(1, n_judged_latents, n_test, per_prompt)} requests** for "
                     f"{n_judged_latents} latents of {len(records)} SAEs (1 explanation + 2 × 2 × ⌈{n_test} / "
                     f"{per_prompt}⌉ judgements each, before retries; answers already in `llm_cache/` cost none)."))
    for name, rec in progress(records.items(), desc="LLM judge"):
        rows_i = list(range(min(n_llm_latents, len(rec))))
        expl, tries = J.llm_explain(llm, rec, rows_i, token_str, tokens, cfg)
        perm = A.derangement(len(rows_i), np.random.default_rng(seed))
        real = J.llm_score(llm, rec, rows_i, expl, token_str, tokens, cfg)
        shuf = J.llm_score(llm, rec, rows_i, [expl[j] for j in perm], token_str, tokens, cfg)
        for i, e, t, a, b in zip(rows_i, expl, tries, real, shuf, strict=True):
            lat = int(rec.acts.latents[i])
            all_expl.append({"sae": name, "row": i, "latent": lat, "llm": e})
            parse_rows.append({"sae": name, "row": i, "explained": bool(e), "explain_tries": t})
            for kind in J.KINDS:
                counts = {c: a[f"{kind}_{c}"] for c in J.COUNTS}
                llm_rows.append({"sae": name, "row": i, "latent": lat, "proxy": f"llm-{kind}", "score": a[kind],
                                 "shuffled": b[kind], "backend": backend, "explained": bool(e), **counts})
                llm_rows.append({"sae": name, "row": i, "latent": lat, "proxy": f"llm-{kind}-auc",
                                 "score": a[f"{kind}_auc"], "shuffled": b[f"{kind}_auc"], "backend": backend,
                                 "explained": bool(e), **counts})
    scores = pd.concat([scores, pd.DataFrame(llm_rows)], ignore_index=True)
    st = llm.settings()
    template = json.loads(Path(server_info).read_text()) if server_info and Path(server_info).is_file() else None
    (out / "llm_prompts.json").write_text(json.dumps({
        "settings": st, "server": template or "not known: the server was not started by the workflow (its chat "
                                               "template is the one its model ships with)",
        "protocol": protocol, "judge_config": vars(cfg), "answer_schemas": {
            "explanation": J.EXPLANATION_SCHEMA, "labels(n)": J.labels_schema(5)},
        "explain": J.explain_messages(["<excerpt with <<highlighted>> tokens>"] * 2),
        "detection": J.detection_messages("<explanation>", ["<excerpt>"] * 2),
        "fuzzing": J.fuzz_messages("<explanation>", ["<excerpt with <<highlighted>> tokens>"] * 2),
        "retry": J.retry_messages([], "<unreadable answer>", J.labels_reply(2))}, indent=1))
    llm_df = pd.DataFrame(llm_rows)
    parse = (llm_df[llm_df.proxy.isin(["llm-detection", "llm-fuzzing"])].groupby("sae")[list(J.COUNTS)].sum()
             .join(pd.DataFrame(parse_rows).groupby("sae").agg(latents=("row", "size"), explained=("explained", "sum"))))
    display(parse)
    fmt = st.get("format_used") if backend == "openai" else "none (local generate)"
    lp = st.get("logprobs_returned")
    display(Markdown(
        f"Answer format: **{fmt}**" + (f" ({'; '.join(st['negotiation'])})" if st.get("negotiation") else "")
        + ". Logprobs: " + ("returned: AUC of P(\"1\") is reported next to balanced accuracy." if lp else
                            "**not returned by this server**: no AUC, balanced accuracy only." if lp is False else
                            "not asked (every answer came from the cache or logprobs are off).")
        + f" Chat template: {'from ' + template['file'] if template else 'not known to this notebook'}."))
t_llm = time.time() - t0
write_table(scores, out / "scores.csv")
explanations = pd.DataFrame(all_expl)
explanations_path = write_table(explanations, out / "explanations.csv")

# %% [markdown]
# ## Per SAE and proxy: mean with a 95 % CI, shuffled control, random-SAE floor, margin over it
# `margin` = mean − random-SAE mean, CI from resampling latents of both SAEs. `chance` is the score of a proxy
# that knows nothing (0.5 balanced accuracy / AUC, 0.2 intruder, 0 coherence).

# %%
model_of = {backend: judge_model, "offline": "rules + all-MiniLM-L6-v2 (non-LLM proxy)"}
summary = []
for name in records:
    for p in scores.proxy.unique():
        mine = scores[(scores.sae == name) & (scores.proxy == p)]
        floor = scores[(scores.sae == "random") & (scores.proxy == p)]
        s = P.summarize(mine.to_dict("records"), floor.to_dict("records") if name != "random" else None,
                        n_boot=protocol["n_boot"], seed=seed)
        if not s:
            continue
        be = mine.backend.iloc[0]
        summary.append({"layer": layer, "alpha": info[name]["alpha"], "gamma_variant": info[name]["variant"],
                        "sae": name, "seed": info[name]["seed"], "main": info[name]["main"],
                        "untrained": info[name]["untrained"],
                        "scorer": p, "backend": be, "model": model_of.get(be, be), **s[0]})
table = pd.DataFrame(summary).drop(columns=["proxy"])
write_table(table, out / "rows.csv")
show = ["sae", "scorer", "n_latents", "mean", "ci_lo", "ci_hi", "shuffled_mean", "random_sae_mean", "margin",
        "margin_lo", "margin_hi"]
display(table[show].round(3))

# %%
fig, ax = plt.subplots(figsize=(10, 3.8))
plot = scores[scores.proxy.isin([p for p in scores.proxy.unique() if p not in P.EXPLANATION_FREE])]
sns.boxplot(data=plot, x="proxy", y="score", hue="sae", ax=ax, fliersize=1.5, linewidth=0.8)
ax.axhline(0.5, color="k", lw=0.8, ls="--")
ax.set(title=f"Layer {layer}: per-latent scores (dashed: chance); random = random-weight SAE", xlabel="")
ax.legend(fontsize=7, ncols=3)
save_figure(fig, out, "scores", caption=f"Layer {layer}: per-latent proxy scores of every SAE and of a "
                                         "random-weight SAE (dashed: chance)")
plt.show()

# %% [markdown]
# ## Shuffled-explanation control: score − shuffled score per latent
# A proxy that ignores the explanation shows zero here.

# %%
sh = scores[scores.shuffled.notna()].assign(signal=lambda d: d.score - d.shuffled)
display(sh.groupby(["sae", "proxy"]).signal.mean().unstack().round(3))

# %% [markdown]
# ## Latent cards: a few latents per SAE (explanations, scores, highlighted top windows)

# %%
def card(name: str, i: int) -> str:
    """HTML card of record i of SAE `name`."""
    rec = records[name]
    lat = int(rec.acts.latents[i])
    ex = explanations[(explanations.sae == name) & (explanations.row == i)].iloc[0]
    sc = scores[(scores.sae == name) & (scores.row == i)].set_index("proxy").score.round(2).to_dict()
    wins = [int(w) for w in rec.test_act[i] if w >= 0]
    best = sorted(wins, key=lambda w: -rec.window_acts(i, w).max())[:3]
    flat = tokens.reshape(-1)
    lines = []
    for w in best:
        a = rec.window_acts(i, w)
        txt = "".join((f"<b style='background:#fd8'>{t}</b>" if a[j] > 0.3 * a.max() else t)
                      for j, t in enumerate(token_str(int(x)).replace("<", "&lt;")
                                            for x in flat[rec.windows.positions(w)]))
        lines.append(f"<li>{txt}</li>")
    return (f"<div style='border:1px solid #ccc;padding:4px;margin:4px'><b>{name}, latent {lat}</b> — lexical: "
            f"<code>{ex['lexical']}</code>; context: <code>{ex['context']}</code><br>scores: {sc}<ul>"
            + "".join(lines) + "</ul></div>")


rng = np.random.default_rng(seed)
html = []
for name, rec in records.items():
    if len(rec):
        html += [card(name, int(i)) for i in rng.choice(len(rec), size=min(n_cards, len(rec)), replace=False)]
display(HTML("".join(html)))

# %%
main = table[(table.sae != "random")]
clear = main[main.margin_lo > 0].groupby("sae").scorer.apply(lambda s: ", ".join(s)).to_dict()
metrics = {"layer": layer, "n_saes": len(saes), "n_encoded": len(topk), "encode_seconds": t_encode, "score_seconds": t_score, "browse_seconds": t_browse,
           "llm_seconds": t_llm, "total_seconds": time.time() - t_start, "backend": backend,
           "llm_requests": getattr(llm, "n_requests", None), "llm_model": judge_model if llm is not None else None,
           "llm_settings": llm.settings() if llm is not None else None,
           "llm_parse": parse.reset_index().to_dict("records") if llm is not None else None}
for r in table.itertuples():
    metrics[f"{r.sae.replace('/', '_')}_{r.scorer}_mean"] = r.mean
    metrics[f"{r.sae.replace('/', '_')}_{r.scorer}_margin"] = r.margin
claims: list = []
display(Markdown(conclusion(summary=
    "Numbers for `autointerp_summary` (Table 1 and the claim verdict): `rows.csv` here. Per SAE, which proxies "
    "clear the random-weight floor:\n\n" + "\n".join(
        f"- **{n}**{' (flagged untrained)' if info[n]['untrained'] else ''}: "
        f"{clear.get(n, 'no proxy')} above the random SAE (margin CI > 0)" for n in records if n != "random"))))
metrics["claims"] = claims
metrics_path = write_metrics(out / "metrics.json", metrics)
