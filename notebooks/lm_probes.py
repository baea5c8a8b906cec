# %% [markdown]
# # Language model: probing tasks for the SAEBench-style metrics, built offline from the corpus
#
# The field's interpretability metrics for SAEs (SAEBench: k-sparse probing, first-letter absorption, targeted
# probe perturbation, spurious-correlation removal) need labelled text. SAEBench downloads it from the hub; here
# every task is built from the embedded corpus with a rule a reader can check (`wsae_utils.lm.probe_tasks` states each
# one), and the LM runs once over it, for every layer:
#
# - **document**: which training novel a passage comes from, on contexts the activation cache did **not** hold
#   (so no SAE trained on them) and never from the held-out novel (so none was evaluated on them);
# - **dialogue vs narration**: share of the passage's tokens inside double quotation marks;
# - **proper name vs other capitalised word**: sentence-initial capitalised words, by whether their lower-case form
#   ever occurs in the corpus (a token-level task, read at the word's last token);
# - **first letter** of alphabetic vocabulary tokens, read in SAEBench's in-context prompt (absorption).
#
# Outputs (`out_dir`): `tasks.safetensors` + `tasks.json` (ids, labels, splits, rules, counts), `layer{L}.safetensors`
# (passage activations [passages, tokens, d] and word activations [words, d]), `examples.csv` (what the labels look
# like). The metrics themselves run per layer in `lm_saebench`.

# %% tags=["parameters"]
out_dir = "results/dev/lm/probes"
device = "cpu"
num_threads = 2
acts_dir = "results/lm/acts"
layers = [4, 12, 20]
passage_tokens = 64
passages_per_doc = 240
max_docs = 5
test_frac = 0.33
dialogue_min = 0.6
name_min_mid = 2
other_min_lower = 5
n_words = 5000
word_test_frac = 0.2
icl_examples = 10
n_prefixes = 16
batch_contexts = 16
word_batch = 256
store_dtype = "bfloat16"
seed = 0

# %%
import json
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display
from safetensors.torch import save_file

from wsae_utils.hardware import machine_summary
from wsae_utils.lm import cache as C
from wsae_utils.lm import model as L
from wsae_utils.lm import probe_tasks as P
from wsae_utils.lm import text as T
from wsae_utils.paths import atomic_write_text
from wsae_utils.run.reportkit import conclusion, run_parameters
from wsae_utils.run.results import write_metrics, write_table
from wsae_utils.runlog import log, progress

t_start = time.time()
torch.set_num_threads(num_threads)
torch.manual_seed(seed)
out, dev = Path(out_dir), torch.device(device)
(out / "figures").mkdir(parents=True, exist_ok=True)
layers = sorted({int(x) for x in layers})
if store_dtype not in ("float32", "bfloat16"):
    raise ValueError(f"store_dtype = {store_dtype!r}: must be 'float32' or 'bfloat16'")
settings = run_parameters()

# %% [markdown]
# ## The model, the text and what the activation cache already holds
# Model, dtype of the forward, corpus and context size are those of the activation cache (its `meta.json`), so the
# SAEs see activations of the same kind they were trained on.

# %%
meta = C.read_meta(acts_dir)
missing = [l for l in layers if l not in meta["layers"]]
if missing:
    raise ValueError(f"layers = {layers}: {missing} are not in the activation cache {acts_dir} ({meta['layers']})")
ctx = int(meta["context_size"])
passage_len = min(passage_tokens, ctx)  # a passage is cut from one cache-sized context: never longer than it
lm = L.load_lm(meta["model"], meta.get("model_cache", "resources/models"), dev, seed=int(meta.get("seed", 0)),
               dtype=meta.get("lm_dtype", "float32"))
seen = C.load_tokens(acts_dir, "train")
train_docs, held_docs = T.load_corpus(meta["corpus"], meta.get("eval_doc", "persuasion"),
                                      meta.get("data_dir", "resources/data/janeaustenr"))
lower, mid_cap = P.word_statistics(list(train_docs.values()) + list(held_docs.values()))
display(pd.DataFrame([{"model": meta["model"], "forward dtype": str(lm.dtype).replace("torch.", ""),
                       "corpus": meta["corpus"], "held out (never used here)": ", ".join(held_docs),
                       "cached training contexts (skipped)": seen.shape[0], "machine": machine_summary()}]).T
        .rename(columns={0: ""}))

# %% [markdown]
# ## Passages from text no SAE saw, and their labels
# Each training document is cut like the cache cuts it; contexts equal to a cached training context are skipped;
# `passages_per_doc` of the rest are drawn per document (seeded), each passage = BOS + the first
# `passage_tokens − 1` tokens of its context (at most the cache's context size). The `max_docs` documents with the
# most unseen contexts are the classes of the document task (SAEBench uses at most 5 classes per data set).

# %%
t0 = time.time()
ps, record = P.unseen_passages(lm.tokenizer, train_docs, seen, ctx, passage_len, passages_per_doc, seed,
                               lm.vocab_size, lower, mid_cap, name_min_mid, other_min_lower)
doc_order = sorted(range(len(ps.doc_names)), key=lambda d: -record[ps.doc_names[d]]["unseen"])[:max_docs]
keep = np.isin(ps.doc, doc_order)
doc_label = np.where(keep, ps.doc, -1)
test = P.split_train_test(np.where(keep, ps.doc, len(ps.doc_names)), test_frac, seed)
dialogue = np.where(keep, ps.dialogue_labels(dialogue_min), -1)
tok_keep = keep[ps.token_passage]
tok_test = test[ps.token_passage]  # a word is tested when its passage is: no passage feeds both splits
display(pd.DataFrame([{"document": n, **r} for n, r in record.items()]))
counts = pd.DataFrame([
    {"task": "document", "label": ps.doc_names[d], "train": int(((doc_label == d) & ~test).sum()),
     "test": int(((doc_label == d) & test).sum())} for d in doc_order]
    + [{"task": "dialogue", "label": lab, "train": int(((dialogue == v) & ~test).sum()),
        "test": int(((dialogue == v) & test).sum())} for v, lab in ((1, "dialogue"), (0, "narration"))]
    + [{"task": "name", "label": lab, "train": int(((ps.token_label == v) & tok_keep & ~tok_test).sum()),
        "test": int(((ps.token_label == v) & tok_keep & tok_test).sum())}
       for v, lab in ((1, "proper name"), (0, "other capitalised word"))])
display(counts)
log(f"passages: {len(ps.doc)} in {time.time() - t0:.1f} s")

# %% [markdown]
# What the labels look like (a reader can check them against the rules): two passages of each dialogue class, and the
# most frequent words of each class of the name task.

# %%
rng = np.random.default_rng(seed)
ex_rows = []
for v, lab in ((1, "dialogue"), (0, "narration")):
    for i in rng.choice(np.flatnonzero(dialogue == v), size=min(2, int((dialogue == v).sum())), replace=False):
        ex_rows.append({"task": "dialogue", "label": lab, "document": ps.doc_names[ps.doc[i]],
                        "quoted share": round(float(ps.quote_frac[i]), 2), "text": ps.texts[i][:220]})
names = Counter(w for w, lab, k in zip(ps.token_word, ps.token_label, tok_keep, strict=True) if lab == 1 and k)
others = Counter(w for w, lab, k in zip(ps.token_word, ps.token_label, tok_keep, strict=True) if lab == 0 and k)
for lab, cnt in (("proper name", names), ("other capitalised word", others)):
    ex_rows.append({"task": "name", "label": lab, "document": "", "quoted share": np.nan,
                    "text": ", ".join(f"{w} ({n})" for w, n in cnt.most_common(25))})
examples = pd.DataFrame(ex_rows)
write_table(examples, out / "examples.csv")
with pd.option_context("display.max_colwidth", 240):
    display(examples)

# %% [markdown]
# ## First-letter words and their in-context prompts
# `n_words` alphabetic vocabulary tokens (seeded, uniform); `word_test_frac` of them, stratified by letter, test
# the probes. Each word is read after one of `n_prefixes` prefixes of `icl_examples` SAEBench-style examples drawn
# from its own split (never the word itself); the prefix's key/value cache is shared, so each word costs one token.

# %%
v_ids, v_strs, v_letters = P.alpha_vocab(lm.tokenizer)
pick = np.sort(rng.choice(len(v_ids), size=min(n_words, len(v_ids)), replace=False))
w_ids, w_strs, w_letter = v_ids[pick], [v_strs[i] for i in pick], v_letters[pick]
w_test = P.split_train_test(w_letter, word_test_frac, seed + 1)
w_prefix = np.zeros(len(w_ids), np.int64)
prefixes: list[dict] = []
for split_test in (False, True):
    pool = np.flatnonzero(w_test == split_test)
    n_pre = max(1, n_prefixes // 2)
    for _ in range(n_pre):
        ex = rng.choice(pool, size=min(icl_examples, len(pool)), replace=False)
        prefixes.append({"test": split_test, "examples": [int(e) for e in ex],
                         "ids": P.icl_prefix(lm.tokenizer, [w_strs[e] for e in ex])})
    mine = [j for j, p in enumerate(prefixes) if p["test"] == split_test]
    for n_, i in enumerate(pool):
        for t in range(len(mine)):  # round-robin, skipping a prefix that shows the word itself
            j = mine[(n_ + t) % len(mine)]
            if i not in prefixes[j]["examples"]:
                w_prefix[i] = j
                break
letter_counts = pd.Series(w_letter).map(lambda c: P.LETTERS[c]).value_counts().sort_index()
display(Markdown(f"{len(w_ids):,} of {len(v_ids):,} alphabetic tokens; {int(w_test.sum())} test words. First "
                 f"prefix as text: `{lm.tokenizer.decode(prefixes[0]['ids'])!r}` + the word."))
display(pd.DataFrame([letter_counts]).rename(index={"count": "words"}))

# %% [markdown]
# ## One LM pass: passages (every token) and words (one token each after a cached prefix), every layer

# %%
t0 = time.time()
dtype = getattr(torch, store_dtype)
n, Tn, d = ps.ids.shape[0], ps.ids.shape[1], lm.d_model
pas = {l: torch.empty((n, Tn, d), dtype=dtype) for l in layers}
for s in progress(range(0, n, batch_contexts), desc="passages"):
    for l, a in L.layer_activations(lm, ps.ids[s:s + batch_contexts], layers).items():
        pas[l][s:s + batch_contexts] = a.to(dtype).cpu()
t_pass = time.time() - t0
t0 = time.time()
words = {l: torch.empty((len(w_ids), d)) for l in layers}
for j, p in enumerate(progress(prefixes, desc="word prefixes")):
    idx = np.flatnonzero(w_prefix == j)
    if len(idx) == 0:
        continue
    got = P.prefix_word_activations(lm, p["ids"], torch.as_tensor(w_ids[idx]), layers, word_batch)
    for l in layers:
        words[l][idx] = got[l]
t_words = time.time() - t0
lm_tokens = int(ps.ids.numel()) + len(w_ids) + sum(len(p["ids"]) for p in prefixes)
for l in layers:
    bad = int((~torch.isfinite(pas[l].float())).sum() + (~torch.isfinite(words[l])).sum())
    if bad:
        raise FloatingPointError(f"layer {l}: {bad} non-finite activations in the probing pass")
    path = out / f"layer{l}.safetensors"
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    save_file({"passages": pas[l].contiguous(), "words": words[l].contiguous()}, tmp)
    os.replace(tmp, path)
tensors = {
    "passage_ids": ps.ids.to(torch.int32).contiguous(), "passage_doc": torch.as_tensor(doc_label),
    "passage_test": torch.as_tensor(test.astype(np.uint8)), "passage_dialogue": torch.as_tensor(dialogue),
    "passage_inside": torch.as_tensor(ps.inside.astype(np.uint8)),
    "passage_start": torch.as_tensor(ps.start_token), "passage_source_doc": torch.as_tensor(ps.doc),
    "token_passage": torch.as_tensor(ps.token_passage), "token_pos": torch.as_tensor(ps.token_pos),
    "token_label": torch.as_tensor(np.where(tok_keep, ps.token_label, -1)),
    "token_test": torch.as_tensor(tok_test.astype(np.uint8)), "word_ids": torch.as_tensor(w_ids),
    "word_letter": torch.as_tensor(w_letter), "word_test": torch.as_tensor(w_test.astype(np.uint8)),
    "word_prefix": torch.as_tensor(w_prefix)}
tmp = out / f".tasks.safetensors.tmp{os.getpid()}"
save_file({k: v.contiguous() for k, v in tensors.items()}, tmp)
os.replace(tmp, out / "tasks.safetensors")
info = {"doc_names": ps.doc_names, "document_classes": [ps.doc_names[d] for d in doc_order],
        "layers": layers, "d_model": d, "passage_tokens": passage_len, "model": meta["model"],
        "lm_dtype": str(lm.dtype).replace("torch.", ""), "store_dtype": store_dtype, "record": record,
        "token_words": ps.token_word, "word_strings": w_strs, "prefixes": prefixes,
        "rules": P.__doc__, "settings": settings}
atomic_write_text(out / "tasks.json", json.dumps(info, indent=1) + "\n")
display(Markdown(f"LM pass: {n:,} passages × {Tn} tokens in {t_pass:.0f} s and {len(w_ids):,} words after "
                 f"{len(prefixes)} prefixes in {t_words:.0f} s ({lm_tokens:,} LM tokens, "
                 f"{str(lm.dtype).replace('torch.', '')} forward, {torch.get_num_threads()} threads); stored as "
                 f"{store_dtype} (words float32)."))

# %% [markdown]
# ## What this produced
# No claim is judged here: the tasks feed `lm_saebench` (one job per layer) and its summary.

# %%
metrics = {"n_passages": int(n), "passage_tokens": int(Tn), "n_words": int(len(w_ids)), "lm_tokens": lm_tokens,
           "passage_seconds": t_pass, "word_seconds": t_words, "total_seconds": time.time() - t_start,
           "n_name_examples": int((tok_keep & (ps.token_label >= 0)).sum()),
           "n_dialogue": int((dialogue == 1).sum()), "n_narration": int((dialogue == 0).sum())}
claims: list = []
display(Markdown(conclusion(claims, summary=(
    f"Probing tasks built: {metrics['n_passages']:,} passages of {metrics['passage_tokens']} tokens "
    f"({metrics['n_dialogue']:,} dialogue, {metrics['n_narration']:,} narration, {metrics['n_name_examples']:,} "
    f"name/capitalised-word examples) and {metrics['n_words']:,} first-letter words. No claim is judged here: "
    "the tasks feed `lm_saebench` and its summary."))))
metrics["claims"] = claims
_ = write_metrics(out / "metrics.json", metrics)
