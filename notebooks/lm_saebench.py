# %% [markdown]
# # Language model: SAEBench-style interpretability metrics of one layer's SAEs, with their validity checks
#
# The paper's Table 1 says WSAE latents are more interpretable. Offline there is no LLM judge, but the field has
# metrics that need none (SAEBench, Karvonen et al. 2025), measuring monosemanticity directly:
#
# - **k-sparse probing** (k = 1, 2, 5): can k latents, picked by their mean difference between the classes, tell a
#   task's classes apart? Ceiling: the same logistic probe on every dimension of the LM's activations;
# - **first-letter absorption** (Chanin et al. 2024): when the latents that carry "starts with S" stay short on a word
#   that starts with S, how much of the probe's direction do other latents carry (mean absorption fraction), and how
#   often does one other latent take it entirely (full-absorption rate)? Lower is better;
# - **TPP**: ablating the latents chosen for one class should break that class's probe and no other;
# - **SCR**: ablating the latents of a spurious attribute should let a biased probe recover the other attribute.
#
# Tasks, labels and activations come from `lm_probes` (text no SAE saw). Every SAE of the layer (all α, Γ variants
# and seeds) is scored on the **same** test examples, next to a **random-weight SAE** of the same shape and k (the
# floor) and **planted dictionaries** built from the probe directions (the best case), plus a label permutation
# (sparse probing must fall to chance) and a planted absorbing dictionary (absorption must find what was planted).
# A metric whose planted cases or random-SAE margin fail is reported and not used by the summary's verdict.

# %% tags=["parameters"]
out_dir = "results/dev/lm/saebench/layer12"
device = "cpu"
num_threads = 1
layer = 12
probes_dir = "results/lm/probes"
train_rows = ["results/lm/train/layer12/rows.csv"]
sae_root = "results/lm/saes"
ks = [1, 2, 5]
probe_C = 1.0
max_k = 10
min_letter_f1 = 0.6
min_letters = 10
letter_epochs = 50
l1_epochs = 50
letter_batch = 64
l1_batch = 512
tpp_ns = [2, 5, 10, 20, 50]
scr_ns = [2, 5, 10, 20, 50]
headline_n = 20
max_scr_pairs = 10
planted_absorbed_share = 0.5
n_permutations = 5
random_sae_seed = 1234
batch_passages = 32
matmul_dtype = "auto"
n_boot = 1000
seed = 0

# %%
import json
import os
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display
from safetensors.torch import load_file

from wsae_utils.autointerp import saebench as B
from wsae_utils.autointerp.scoring import random_sae_like
from wsae_utils.core.export import load_sae
from wsae_utils.hardware import resolve_precision
from wsae_utils.run.plots import save_figure, setup_style
from wsae_utils.run.reportkit import conclusion
from wsae_utils.run.results import write_metrics, write_table
from wsae_utils.run.setup import start_run
from wsae_utils.runlog import log, progress

t_start = time.time()
out, dev = start_run(out_dir, seed, device, num_threads)
setup_style()
for name, vals in (("tpp_ns", tpp_ns), ("scr_ns", scr_ns)):
    if headline_n not in vals:
        raise ValueError(f"headline_n = {headline_n}: must be one of {name} = {vals}")

# %% [markdown]
# ## Tasks and the layer's activations

# %%
info = json.loads((Path(probes_dir) / "tasks.json").read_text())
tk = load_file(str(Path(probes_dir) / "tasks.safetensors"))
acts = load_file(str(Path(probes_dir) / f"layer{layer}.safetensors"))
pas, words = acts["passages"], acts["words"].float()
n_pas, T_len, d = pas.shape
test = tk["passage_test"].numpy().astype(bool)
doc = tk["passage_doc"].numpy()
dialogue = tk["passage_dialogue"].numpy()
tok_p, tok_pos = tk["token_passage"].numpy(), tk["token_pos"].numpy()
tok_label, tok_test = tk["token_label"].numpy(), tk["token_test"].numpy().astype(bool)
tok_keep = tok_label >= 0
tok_p, tok_pos, tok_label, tok_test = tok_p[tok_keep], tok_pos[tok_keep], tok_label[tok_keep], tok_test[tok_keep]
w_letter, w_test = tk["word_letter"].numpy(), tk["word_test"].numpy().astype(bool)
x_mean = pas[:, 1:].float().mean(1)  # mean over the passage's tokens, BOS left out (SAEBench masks it)
x_tok = pas[tok_p, tok_pos].float()
doc_names = info["doc_names"]
display(Markdown(f"Layer {layer}: {n_pas} passages × {T_len - 1} tokens (BOS left out), {len(tok_p)} name-task "
                 f"tokens, {len(w_letter)} first-letter words; d_model {d}."))

# %% [markdown]
# ## Probing units, the LM's own probes (ceiling) and the first-letter probe
# Balanced one-vs-rest sets per class (SAEBench's sampling), the same for every SAE. The dense probe (all LM
# dimensions) is the ceiling of k-sparse probing; the document probes also drive TPP, and per pair of documents
# the novel × dialogue probes drive SCR (the biased probe sees novel X only in dialogue and Y only in narration).

# %%
units = B.probe_units("document", doc, test, doc_names, seed)
units += B.probe_units("dialogue", dialogue, test, ["narration", "dialogue"], seed)
units += B.probe_units("name", tok_label, tok_test, ["other", "proper name"], seed)
missing = [t for t in ("document", "dialogue", "name") if not any(u.task == t for u in units)]
if missing:
    display(Markdown(f"**Left out** (too few examples of a class in a split): task(s) {', '.join(missing)}."))
features_lm = {"document": x_mean, "dialogue": x_mean, "name": x_tok}
dense = {(u.task, u.cls): B.sparse_probe_correct(features_lm[u.task], u, [0], probe_C)[0] for u in units}
unit_rows = [{"task": u.task, "class": u.cls, "train": len(u.train_y), "test": len(u.test_y),
              "dense LM probe accuracy": dense[(u.task, u.cls)].mean()} for u in units]
display(pd.DataFrame(unit_rows).round(3))
tpp_probes = [B.fit_probe(x_mean, u, probe_C) for u in units if u.task == "document"]
if len(tpp_probes) < 2:
    tpp_probes = []  # TPP compares a class with the others: it needs two document classes
    display(Markdown("**TPP left out**: fewer than two document classes with examples in both splits."))
classes = [c for c in np.unique(doc) if c >= 0]
pairs = [(a, b) for i, a in enumerate(classes) for b in classes[i + 1:]][:max_scr_pairs]
scr_cases = []
for a, b in pairs:
    attr_a = np.where(doc == a, 1, np.where(doc == b, 0, -1))
    sets = B.scr_sets(f"{doc_names[a]} vs {doc_names[b]}", attr_a, np.where(attr_a >= 0, dialogue, -1), test, seed)
    if sets is not None:
        scr_cases.append(B.scr_probes(x_mean, sets, probe_C))
display(pd.DataFrame([{"case": c.sets.name, "per side (train / test)": f"{len(c.sets.a.train_y) // 2} / "
                       f"{len(c.sets.a.test_y) // 2}", "direction": "ablate dialogue, read novel" if c.direction == 1
                       else "ablate novel, read dialogue", "biased probe before": c.orig,
                       "target probe (ceiling)": c.clean} for c in scr_cases]).round(3))
t0 = time.time()
letter = B.letter_probe(words[~w_test], w_letter[~w_test], words[w_test], w_letter[w_test], min_letter_f1,
                        seed=seed, epochs=letter_epochs, batch_size=letter_batch)
absorption_ok = int(letter.used.sum()) >= min_letters
display(Markdown(f"First-letter probe (LM): test F1 per letter median {np.median(letter.f1):.2f}; "
                 f"**{int(letter.used.sum())} letters** above {min_letter_f1} "
                 + ("(absorption evaluated on them)." if absorption_ok else
                    f"(fewer than {min_letters}: absorption is not evaluated at this layer).")))
log(f"LM probes in {time.time() - t0:.1f} s")

# %% [markdown]
# ## The SAEs: every trained SAE of the layer, a random-weight SAE, planted dictionaries

# %%
rows_in = pd.concat([pd.read_csv(p) for p in train_rows], ignore_index=True)
if "seed" not in rows_in:
    rows_in["seed"] = 0  # one SAE seed per cell so far (the lm_train seed); several seeds give several rows
root = Path(sae_root).resolve()
saes, meta_sae = {}, {}
for r in rows_in.itertuples():
    key = f"{r.sae}@seed{int(r.seed)}"
    sae, side = load_sae(r.dir, dev)
    w = side.get("wsae", {})
    saes[key] = sae.eval()
    meta_sae[key] = {"sae": r.sae, "variant": w.get("variant", r.variant), "alpha": float(w.get("alpha", r.alpha)),
                     # an SAE that did not converge is left out of every verdict as an untrained one is
                     "seed": int(r.seed), "untrained": bool(w.get("untrained", r.untrained))
                     or not bool(getattr(r, "converged", True)), "kind": "trained",
                     "main": Path(r.dir).resolve().is_relative_to(root)}
first = next(iter(saes.values()))
# bf16 only for the latent selection, only where this device runs it fast (as lm_train's matmul_dtype)
precision = resolve_precision(matmul_dtype, dev, "SAE latent selection",
                              probe_shape=(batch_passages * (T_len - 1), d, first.cfg.n_latents))
center = pas[:, 1:].float().reshape(-1, d).mean(0)
saes["random"] = random_sae_like(first, center, seed=random_sae_seed).to(dev)
meta_sae["random"] = {"sae": "random", "variant": "random", "alpha": float("nan"), "seed": random_sae_seed,
                      "untrained": True, "kind": "random", "main": False}
# planted: latents built from the LM's probe directions (wsae_utils.autointerp.saebench: projection and logit dictionaries)
if units:
    task_dirs = torch.stack([B.fit_probe(features_lm[u.task], u, probe_C).w for u in units])
    unit_dirs = task_dirs / task_dirs.norm(dim=1, keepdim=True)
    offsets = -(pas[:, 1:].float().reshape(-1, d) @ unit_dirs.T).min(0).values + 1.0  # never clips on any token
    saes["planted-tasks"] = B.projection_dictionary(task_dirs, offsets)
saes["planted-letters"] = B.projection_dictionary(letter.weight)
if tpp_probes:
    saes["planted-tpp"] = B.logit_dictionary(torch.stack([p.w for p in tpp_probes]),
                                             torch.stack([p.b for p in tpp_probes]))
if scr_cases:
    scr_pl = [p for c in scr_cases for p in (c.a, c.b)]
    saes["planted-scr"] = B.logit_dictionary(torch.stack([p.w for p in scr_pl]), torch.stack([p.b for p in scr_pl]))
PLANTED_FOR = {"planted-tasks": {"sparse_probing"}, "planted-letters": {"absorption"}, "planted-tpp": {"tpp"},
               "planted-scr": {"scr"}}
for k_ in PLANTED_FOR:
    if k_ in saes:
        meta_sae[k_] = {"sae": k_, "variant": "planted", "alpha": float("nan"), "seed": 0, "untrained": False,
                        "kind": "planted", "main": False}
tpp_all, scr_all = sorted(set(tpp_ns) | {1}), sorted(set(scr_ns) | {1})  # N = 1: the planted dictionaries' case
display(pd.DataFrame([{"key": k_, **m, "latents": saes[k_].cfg.n_latents, "k": saes[k_].cfg.k}
                      for k_, m in meta_sae.items()]))

# %% [markdown]
# ## Every metric for every SAE (one encoding pass over the passages and words per SAE)

# %%
contrib: dict[tuple[str, str], dict[str, np.ndarray]] = {}
groups: dict[tuple[str, str], np.ndarray] = {}
extra: dict[str, dict] = {}


def put(metric: str, param: str, key: str, c: np.ndarray, g: np.ndarray) -> None:
    """Store one SAE's contributions for (metric, param); the strata must be those of every other SAE."""
    contrib.setdefault((metric, param), {})[key] = np.asarray(c, float)
    if (metric, param) in groups and not np.array_equal(groups[(metric, param)], g):
        raise AssertionError(f"{metric} {param}: examples differ between SAEs")
    groups[(metric, param)] = np.asarray(g)


@torch.no_grad()
def encode(sae: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Dense latents [n, F]: the selection GEMM in `precision.dtype`, the selected values recomputed in fp32
    (SparseAutoencoder.forward, as in training); SAEs of other kinds encode in fp32."""
    if sae.cfg.activation != "topk":
        return sae.encode(x)
    out_ = sae(x, matmul_dtype=getattr(torch, precision.dtype))
    return torch.zeros(x.shape[0], sae.cfg.n_latents).scatter_(1, out_.top_idx.long(), out_.top_vals.float().relu())


@torch.no_grad()
def encode_all(sae: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean latents per passage [n, F], latents of the name-task tokens, latents of the words)."""
    F_ = sae.cfg.n_latents
    mean = torch.empty(n_pas, F_)
    tok = torch.empty(len(tok_p), F_)
    for s in range(0, n_pas, batch_passages):
        xb = pas[s:s + batch_passages, 1:].float().to(dev)
        c = encode(sae, xb.reshape(-1, d)).reshape(xb.shape[0], T_len - 1, F_).cpu()
        mean[s:s + xb.shape[0]] = c.mean(1)
        sel = np.flatnonzero((tok_p >= s) & (tok_p < s + xb.shape[0]))
        if len(sel):
            tok[sel] = c[tok_p[sel] - s, tok_pos[sel] - 1]
    return mean, tok, encode(sae, words.to(dev)).cpu()


t_sae = {}
plain_key = next((k_ for k_, m in meta_sae.items() if m["kind"] == "trained" and m["alpha"] == 0.0
                  and m["variant"] == "paper"), next(iter(saes)))
for key, sae in progress(saes.items(), desc=f"layer {layer} SAEs"):
    t0 = time.time()
    c_mean, c_tok, c_words = encode_all(sae)
    W_dec = sae.W_dec.detach().float().cpu()
    stage = {"encode": time.time() - t0}
    kind = meta_sae[key]["kind"]
    feats = {"document": c_mean, "dialogue": c_mean, "name": c_tok}
    wants = PLANTED_FOR.get(key, {"sparse_probing", "tpp", "scr", "absorption"})
    if "sparse_probing" in wants and units:
        corr = {(u.task, u.cls): B.sparse_probe_correct(feats[u.task], u, ks, probe_C) for u in units}
        for k_ in ks:
            put("sparse_probing", str(k_), key, *B.sparse_probing_contrib({u: v[k_] for u, v in corr.items()}))
        if key == plain_key:  # label permutation: the same probes on shuffled training labels, n_permutations draws
            rng_p = np.random.default_rng(seed + 99)
            draws = [{(u.task, u.cls): B.sparse_probe_correct(feats[u.task], u, ks, probe_C, rng_p) for u in units}
                     for _ in range(n_permutations)]
            for k_ in ks:
                cg = [B.sparse_probing_contrib({u: v[k_] for u, v in dr.items()}) for dr in draws]
                put("sparse_probing", str(k_), "permuted-labels", np.mean([c for c, _ in cg], axis=0), cg[0][1])
    stage["sparse probing"] = time.time() - t0 - sum(stage.values())
    if "tpp" in wants and tpp_probes:
        res = B.tpp(x_mean, c_mean, W_dec, tpp_probes, tpp_all)
        for n_ in tpp_all:
            put("tpp", str(n_), key, res[n_]["contrib"], res[n_]["group"])
    stage["tpp"] = time.time() - t0 - sum(stage.values())
    if scr_cases and "scr" in wants:
        for n_ in scr_all:
            cs, gs = [], []
            for j, case in enumerate(scr_cases):
                r_ = B.scr(x_mean, c_mean, W_dec, case, [n_])[n_]
                cs.append(r_["contrib"] / len(scr_cases))
                gs.append(np.full(len(r_["contrib"]), j))
            put("scr", str(n_), key, np.concatenate(cs), np.concatenate(gs))
    stage["scr"] = time.time() - t0 - sum(stage.values())
    if absorption_ok and "absorption" in wants:
        ksl = B.k_sparse_letter_probes(c_words[~w_test], w_letter[~w_test], c_words[w_test], w_letter[w_test],
                                       max_k=max_k, seed=seed, epochs=l1_epochs, batch_size=l1_batch)
        ab = B.absorption(words[w_test], c_words[w_test], W_dec, letter, w_letter[w_test], ksl.split)
        put("absorption", "", key, ab.fraction_contrib, ab.group)
        put("full_absorption", "", key, ab.full_contrib, ab.group)
        extra[key] = {"split_sizes": [len(ksl.split[c]) for c in np.flatnonzero(letter.used)],
                      "per_letter": ab.per_letter, "k1_f1": float(ksl.f1[letter.used, 0].mean())}
    stage["absorption"] = time.time() - t0 - sum(stage.values())
    t_sae[key] = time.time() - t0
    log(f"layer {layer}: {key} in {t_sae[key]:.1f} s (" + ", ".join(f"{k_} {v:.1f}" for k_, v in stage.items()) + ")")

# %% [markdown]
# ### Planted absorption: latent codes where a known share of each letter's words is absorbed
# From the planted letter dictionary's codes on the test words: for a seeded `planted_absorbed_share` of each
# letter's true positives, the letter latent's activation moves to a new word-specific latent whose decoder row
# keeps cos 0.9 with the probe (and carries the same projection). The metric must report about that share.

# %%
if absorption_ok:
    sae_l = saes["planted-letters"]
    with torch.no_grad():
        codes = sae_l.encode(words[w_test]).cpu()
    tps = B.true_positive_words(letter, words[w_test], w_letter[w_test])
    rng_a = np.random.default_rng(seed + 7)
    extra_rows, new_codes = [], []
    absorbed_idx = {c: rng_a.choice(i, size=int(round(planted_absorbed_share * len(i))), replace=False)
                    for c, i in tps.items()}
    n_new = sum(len(v) for v in absorbed_idx.values())
    W_pl = torch.cat([sae_l.W_dec.detach().float(), torch.zeros(n_new, d)])
    codes_pl = torch.cat([codes, torch.zeros(len(codes), n_new)], 1)
    j = sae_l.cfg.n_latents
    gen = torch.Generator().manual_seed(seed + 7)
    for c, idx in absorbed_idx.items():
        u = letter.weight[c] / letter.weight[c].norm()
        for i in idx:
            r = torch.randn(d, generator=gen)
            r = r - (r @ u) * u
            W_pl[j] = 0.9 * u + np.sqrt(1 - 0.81) * r / r.norm()
            codes_pl[i, j] = codes_pl[i, c] / 0.9
            codes_pl[i, c] = 0.0
            j += 1
    split_pl = {c: np.array([c]) for c in range(26)}
    ab_pl = B.absorption(words[w_test], codes_pl, W_pl, letter, w_letter[w_test], split_pl)
    put("absorption", "", "planted-absorbing", ab_pl.fraction_contrib, ab_pl.group)
    put("full_absorption", "", "planted-absorbing", ab_pl.full_contrib, ab_pl.group)
    meta_sae["planted-absorbing"] = {"sae": "planted-absorbing", "variant": "planted", "alpha": float("nan"),
                                     "seed": 0, "untrained": False, "kind": "planted", "main": False}
meta_sae["permuted-labels"] = {"sae": f"{meta_sae[plain_key]['sae']} (training labels permuted)",
                               "variant": "control", "alpha": float("nan"), "seed": meta_sae[plain_key]["seed"],
                               "untrained": False, "kind": "control", "main": False}

# %% [markdown]
# ## Per SAE and metric: value with a 95 % CI, the random-SAE floor and the margin over it
# CIs resample the test examples within their strata (task class, letter, SCR case); the margin over the random
# SAE is paired by example. Direction: "more interpretable" is lower absorption, higher probing accuracy, TPP, SCR.

# %%
direction = {m: s.direction for m, s in B.METRICS.items()}
rows = []
for (metric, param), per in contrib.items():
    g = groups[(metric, param)]
    rnd = per.get("random")
    rnd_val = float(rnd.sum()) if rnd is not None else np.nan
    for key, c in per.items():
        m = meta_sae[key]
        lo, hi = B.interval(B.bootstrap_draws(c, g, n_boot, seed))
        mg = (B.interval(B.bootstrap_draws(c, g, n_boot, seed, minus=rnd))
              if rnd is not None and key != "random" else (np.nan, np.nan))
        rows.append({"layer": layer, "metric": metric, "param": param, "sae": m["sae"], "variant": m["variant"],
                     "alpha": m["alpha"], "seed": m["seed"], "kind": m["kind"], "main": m["main"],
                     "untrained": m["untrained"], "value": float(c.sum()), "ci_lo": lo, "ci_hi": hi,
                     "random_floor": rnd_val, "margin": float(c.sum()) - rnd_val if key != "random" else np.nan,
                     "margin_lo": mg[0], "margin_hi": mg[1], "direction": direction[metric], "n_examples": len(c)})
# the dense ceiling: the LM's own probe on every dimension, averaged like the sparse probes
dense_c, dense_g = B.sparse_probing_contrib(dense) if dense else (np.zeros(0), np.zeros(0, int))
lo, hi = B.interval(B.bootstrap_draws(dense_c, dense_g, n_boot, seed)) if dense else (np.nan, np.nan)
rows.append({"layer": layer, "metric": "sparse_probing", "param": "dense", "sae": "LM (all dimensions)",
             "variant": "ceiling", "alpha": np.nan, "seed": 0, "kind": "ceiling", "main": False, "untrained": False,
             "value": float(dense_c.sum()), "ci_lo": lo, "ci_hi": hi, "random_floor": np.nan, "margin": np.nan,
             "margin_lo": np.nan, "margin_hi": np.nan, "direction": 1, "n_examples": len(dense_c)})
table = pd.DataFrame(rows)
write_table(table, out / "rows.csv")
headline = table[((table.metric == "sparse_probing") & (table.param.isin(["1", "dense"])))
                 | table.metric.isin(["absorption", "full_absorption"])
                 | (table.metric.isin(["tpp", "scr"]) & (table.param == str(headline_n)))]
show = ["metric", "param", "sae", "seed", "value", "ci_lo", "ci_hi", "margin", "margin_lo", "margin_hi"]
display(headline[show].round(3))

# %%
fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
for ax, metric in zip(axes, ["sparse_probing", "absorption", "tpp", "scr"], strict=True):
    t_ = table[(table.metric == metric) & (table.kind.isin(["trained", "random"]))]
    if metric == "sparse_probing":
        t_ = t_[t_.param != "dense"]
    if t_.empty:
        ax.set_axis_off()
        continue
    for key_, g_ in t_.groupby("sae"):
        xs = g_.param.astype(float) if metric != "absorption" else np.zeros(len(g_))
        ax.errorbar(xs, g_.value, yerr=[g_.value - g_.ci_lo, g_.ci_hi - g_.value], marker="o", ms=3, capsize=2,
                    label=key_, ls="-" if metric != "absorption" else "none")
    ax.set(title=f"{B.METRICS[metric].label}", xlabel={"sparse_probing": "k", "tpp": "N ablated",
                                                        "scr": "N ablated", "absorption": ""}[metric])
    if metric in ("tpp", "scr"):
        ax.set_xscale("log")
axes[-1].legend(fontsize=6, bbox_to_anchor=(1.02, 1), loc="upper left")
fig.suptitle(f"layer {layer}: every SAE (error bars: 95 % CI over test examples)")
save_figure(fig, out, "metrics")
plt.show()

# %% [markdown]
# ## Validity: planted cases and the random-SAE floor
# A metric is **usable** at this layer when (a) its planted case comes out as designed and (b) the plain SAE (α = 0)
# beats the random-weight SAE in the metric's direction (margin CI excluding 0). Planted cases: sparse probing — the
# probe-direction dictionary's 1-sparse accuracy within 0.03 of the dense ceiling, and permuted training labels
# within 0.05 of chance (0.5); absorption — the letter-probe dictionary at most 0.02, and the planted absorbing codes
# within 0.1 of the planted share; TPP and SCR — one latent per concept (the positive part of each probe's logit)
# above the random SAE with N = 1 latent ablated, margin CI excluding 0 (with N ≥ its number of latents every
# latent goes). Label permutation: mean of `n_permutations` draws of the training labels.

# %%
def val(metric: str, param: str, key: str) -> float:
    """Metric value of one SAE key (NaN when not computed)."""
    per = contrib.get((metric, param), {})
    return float(per[key].sum()) if key in per else float("nan")


plain = plain_key
hn = str(headline_n)
checks = []


def margin_ok(metric: str, param: str) -> tuple[bool, str]:
    """Plain SAE better than the random SAE in the metric's direction (CI of the oriented margin above 0)."""
    per = contrib.get((metric, param), {})
    if plain not in per or "random" not in per:
        return False, "not computed"
    lo_, hi_ = B.interval(direction[metric] * B.bootstrap_draws(per[plain], groups[(metric, param)], n_boot, seed,
                                                                minus=per["random"]))
    return bool(lo_ > 0), f"oriented margin CI [{lo_:+.3f}, {hi_:+.3f}]"


ceiling = float(dense_c.sum()) if dense else float("nan")
sp_planted, sp_perm = val("sparse_probing", "1", "planted-tasks"), val("sparse_probing", "1", "permuted-labels")
ok_m, why_m = margin_ok("sparse_probing", "1")
checks.append({"metric": "sparse_probing", "planted": f"1-sparse {sp_planted:.3f} vs ceiling {ceiling:.3f}; "
               f"permuted labels {sp_perm:.3f}", "planted_ok": bool(sp_planted >= ceiling - 0.03
                                                                    and abs(sp_perm - 0.5) <= 0.05),
               "random_margin": why_m, "margin_ok": ok_m})
for metric in ("absorption", "full_absorption"):
    if not absorption_ok:
        checks.append({"metric": metric, "planted": "not evaluated (too few letters the LM probe reads)",
                       "planted_ok": False, "random_margin": "not computed", "margin_ok": False})
        continue
    best, plant = val(metric, "", "planted-letters"), val(metric, "", "planted-absorbing")
    ok_m, why_m = margin_ok(metric, "")
    checks.append({"metric": metric, "planted": f"probe dictionary {best:.3f}; absorbing codes {plant:.3f} "
                   f"(planted share {planted_absorbed_share})",
                   "planted_ok": bool(best <= 0.02 and abs(plant - planted_absorbed_share) <= 0.1),
                   "random_margin": why_m, "margin_ok": ok_m})
for metric, key_ in (("tpp", "planted-tpp"), ("scr", "planted-scr")):
    per1 = contrib.get((metric, "1"), {})
    if (metric, hn) not in contrib or key_ not in per1:
        checks.append({"metric": metric, "planted": "not computed (no case)", "planted_ok": False,
                       "random_margin": "not computed", "margin_ok": False})
        continue
    lo_p, hi_p = B.interval(B.bootstrap_draws(per1[key_], groups[(metric, "1")], n_boot, seed, minus=per1["random"]))
    ok_m, why_m = margin_ok(metric, hn)
    checks.append({"metric": metric, "planted": f"one latent per concept {val(metric, '1', key_):.3f} vs random "
                   f"{val(metric, '1', 'random'):.3f} (N = 1; margin CI [{lo_p:+.3f}, {hi_p:+.3f}])",
                   "planted_ok": bool(lo_p > 0), "random_margin": why_m, "margin_ok": ok_m})
validity = pd.DataFrame(checks)
validity["usable"] = validity.planted_ok & validity.margin_ok
display(validity)

# %%
np_path = out / "contrib.npz"
arrays = {f"{m}|{p}|{k_}": v for (m, p), per in contrib.items() for k_, v in per.items()}
arrays.update({f"group|{m}|{p}": g for (m, p), g in groups.items()})
with tempfile.NamedTemporaryFile(dir=out, suffix=".npz", delete=False) as fh:
    np.savez(fh, **arrays)
os.replace(fh.name, np_path)
_ = write_table(pd.DataFrame([{"key": k_, **m} for k_, m in meta_sae.items()]), out / "saes.csv")

# %% [markdown]
# ## What this layer gives
# Numbers for the summary (tables across layers, the α − 0 gains with the permuted-γ control, and the verdict).

# %%
metrics = {"layer": layer, "n_saes": len(saes), "seconds_per_sae": float(np.mean(list(t_sae.values()))),
           "total_seconds": time.time() - t_start, "letters_evaluated": int(letter.used.sum()),
           "dense_ceiling": ceiling, "plain_sae": plain, "scr_cases": len(scr_cases), "headline_n": headline_n,
           "headline_k": min(ks)}
for r in validity.itertuples():
    metrics[f"usable_{r.metric}"] = bool(r.usable)
    metrics[f"planted_ok_{r.metric}"] = bool(r.planted_ok)
    metrics[f"margin_ok_{r.metric}"] = bool(r.margin_ok)
metrics["validity"] = validity.to_dict("records")
metrics["absorption_detail"] = extra
display(Markdown(f"Layer {layer}: usable metrics — "
                 + ", ".join(f"{r.metric}: {'yes' if r.usable else 'no'}" for r in validity.itertuples())
                 + f". {len(saes)} SAEs scored in {sum(t_sae.values()):.0f} s."))
claims: list = []
display(Markdown(conclusion(claims, summary=(
    f"Layer {layer}: metrics usable for a verdict — "
    + ", ".join(f"{r.metric}: {'yes' if r.usable else 'no'}" for r in validity.itertuples())
    + ". No claim is judged per layer: `lm_saebench_summary` decides over layers and seeds."))))
metrics["claims"] = claims
_ = write_metrics(out / "metrics.json", metrics)
