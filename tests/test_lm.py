"""LM path: registry and hooks, spliced forwards, corpus split, activation cache, Γ variants, training, evaluation."""

import os
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

from wsae_utils.core.sae import SAEConfig, SparseAutoencoder
from wsae_utils.core.train import TrainConfig
from wsae_utils.lm import fidelity as E
from wsae_utils.lm import model as L
from wsae_utils.lm import saes as S
from wsae_utils.lm import text as T
from wsae_utils.lm.registry import AUSTEN_NOVELS

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return L.LM("tiny-llama", LlamaForCausalLM(cfg).eval().requires_grad_(False), L._ByteTokenizer())


@pytest.fixture(scope="module")
def pythia_random(tmp_path_factory):
    return L.load_lm("pythia-160m-random", tmp_path_factory.mktemp("models"))


def _token_set(n, T_, seed, vocab=300):
    ids = torch.randint(1, vocab, (n, T_), generator=torch.Generator().manual_seed(seed))
    ids[:, 0] = 0
    return T.TokenSet(ids, torch.zeros(n, dtype=torch.long), ["doc"], {"doc": n})


@pytest.fixture(scope="module")
def cache(tiny_llama, tmp_path_factory):
    out = tmp_path_factory.mktemp("acts")
    S.write_activation_cache(tiny_llama, {"train": _token_set(40, 9, 1), "heldout": _token_set(12, 9, 2)}, [1, 2],
                             out, batch_contexts=4, shard_contexts=8, meta_extra={"model_cache": "x", "seed": 0})
    return out


def _hidden_states(lm, ids):
    return lm.model.base_model(input_ids=ids, output_hidden_states=True).hidden_states


def _check_hooks_equal_hidden_states(lm, ids):
    n = lm.n_layers
    acts = L.layer_activations(lm, ids, list(range(n)))
    hs = _hidden_states(lm, ids)
    assert len(hs) == n + 1
    for l in range(n - 1):  # layer l = output of block l = hidden_states[l + 1], exactly
        assert torch.equal(acts[l], hs[l + 1]), l
    norm = lm.model.base_model.norm if hasattr(lm.model.base_model, "norm") else lm.model.base_model.final_layer_norm
    assert torch.allclose(norm(acts[n - 1]), hs[n], atol=1e-5)


def test_pythia_shape_hooks_and_registry(pythia_random):
    lm = pythia_random
    facts = L.model_facts("pythia-160m-random")
    assert (lm.n_layers, lm.d_model, lm.vocab_size) == (facts["n_layers"], facts["d_model"], facts["vocab_size"])
    assert L.model_facts("pythia-160m")["n_layers"] == 12 and L.model_facts("smollm2-135m")["d_model"] == 576
    assert lm.hook_name(5) == "gpt_neox.layers.5"
    ids = torch.randint(0, 50304, (2, 12), generator=torch.Generator().manual_seed(0))
    _check_hooks_equal_hidden_states(lm, ids)
    # the suffix forward from a cached residual equals the full forward (GPT-NeoX: parallel residual, rotary)
    h = L.layer_activations(lm, ids, [4])[4]
    assert torch.allclose(L.logits_from_layer(lm, h, 4), lm.model(input_ids=ids).logits.float(), atol=1e-4)


def test_tiny_llama_hooks_and_suffix_forward(tiny_llama):
    ids = torch.randint(0, 300, (3, 10), generator=torch.Generator().manual_seed(1))
    _check_hooks_equal_hidden_states(tiny_llama, ids)
    full = tiny_llama.model(input_ids=ids).logits.float()
    for layer in range(tiny_llama.n_layers):
        h = L.layer_activations(tiny_llama, ids, [layer])[layer]
        assert torch.allclose(L.logits_from_layer(tiny_llama, h, layer), full, atol=1e-5), layer
        # a modified residual from the cache = the same modification spliced into a full forward
        spliced = L.spliced_logits(tiny_llama, ids, layer, lambda x: 0.5 * x)
        h2 = torch.cat([h[:, :1], 0.5 * h[:, 1:]], 1)
        assert torch.allclose(L.logits_from_layer(tiny_llama, h2, layer), spliced, atol=1e-5)
    assert len(tiny_llama.blocks) == 4  # the block list is restored


def test_forward_stops_after_deepest_layer(pythia_random):
    calls = []
    h = pythia_random.blocks[4].register_forward_hook(lambda *a: calls.append(1))
    try:
        L.layer_activations(pythia_random, torch.zeros(1, 4, dtype=torch.long), [1, 3])
    finally:
        h.remove()
    assert calls == []


def test_layer_beyond_model_and_nan_activations(tiny_llama):
    ids = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"layers \[4\] are beyond tiny-llama \(4 blocks"):
        L.layer_activations(tiny_llama, ids, [1, 4])
    w = tiny_llama.blocks[1].mlp.down_proj.weight
    saved = w.clone()
    try:
        w.fill_(float("nan"))
        with pytest.raises(FloatingPointError, match="layer 1"):
            L.layer_activations(tiny_llama, ids, [0, 1, 2])
    finally:
        w.copy_(saved)


# -- text ------------------------------------------------------------------------------------------------------
def test_training_contexts_come_from_every_training_novel_and_never_the_heldout_one(tiny_llama, tmp_path):
    train, held = T.load_corpus("austen", "persuasion")
    assert sorted(train) == sorted(set(AUSTEN_NOVELS) - {"persuasion"}) and list(held) == ["persuasion"]
    tok = L._ByteTokenizer()
    ts = T.training_contexts(tok, train, 64, 12, seed=3)
    counts = ts.counts()
    assert set(counts) == set(train) and all(c >= 1 for c in counts.values()), counts
    assert ts.doc.tolist() != sorted(ts.doc.tolist())  # shuffled, not in document order
    # every context's text really comes from the novel it is labelled with, and none from Persuasion
    for ids, d in zip(ts.ids, ts.doc, strict=True):
        snippet = tok.decode(ids[1:].tolist())[:40]
        assert snippet in train[ts.doc_names[d]] and snippet not in held["persuasion"]
    hs = T.heldout_contexts(tok, held, 64, max_contexts=5)
    assert hs.counts() == {"persuasion": 5}
    # the cache records the same split; calibration (layer_stats on "train") reads only the training contexts
    meta = S.write_activation_cache(tiny_llama, {"train": ts, "heldout": hs}, [1], tmp_path, batch_contexts=4,
                                    shard_contexts=5)
    assert "persuasion" not in meta["splits"]["train"]["documents"]
    assert meta["splits"]["train"]["contexts_per_document"] == counts
    doc, names = S.load_documents(tmp_path, "train")
    assert {names[i] for i in doc.tolist()} == set(train)
    stats = S.layer_stats(tmp_path, 1, "train")
    x = L.layer_activations(tiny_llama, ts.ids % 300, [1])[1][:, 1:].reshape(-1, 32).double()
    assert int(stats["n_tokens"]) == x.shape[0] and torch.allclose(stats["mean"].double(), x.mean(0), atol=1e-5)


def test_budget_allocation_and_tokenization():
    tok = L._ByteTokenizer()
    ids = T.document_contexts(tok, "hello world", context_size=5, vocab_size=1000)
    assert ids.shape == (3, 5) and (ids[:, 0] == 0).all()  # 12 ids (11 bytes + EOS) → 3 contexts of BOS + 4
    assert ids[0, 1:].tolist() == [b + 1 for b in b"hell"]
    assert T._allocate([100, 10, 1], 12) == [10, 1, 1] or sum(T._allocate([100, 10, 1], 12)) == 12
    assert all(a >= 1 for a in T._allocate([100, 10, 1], 5))
    with pytest.raises(ValueError, match="cannot cover all 3"):
        T._allocate([100, 10, 1], 2)


def test_empty_corpus_and_missing_data(tmp_path):
    (tmp_path / "a.txt").write_text("   \n")
    with pytest.raises(ValueError, match="empty"):
        T.load_corpus(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="make data"):
        T.read_austen(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="make data"):
        T.load_corpus(str(tmp_path / "missing.txt"))


# -- activation cache ----------------------------------------------------------------------------------------
def test_cache_round_trip_and_streaming(tiny_llama, cache):
    meta = S.read_meta(cache)
    assert meta["layers"] == [1, 2] and meta["d_model"] == 32 and meta["context_size"] == 9
    assert meta["splits"]["train"]["n_contexts"] == 40 and len(meta["splits"]["train"]["shards"]) == 5
    tokens = S.load_tokens(cache, "train")
    assert tokens.shape == (40, 9) and (tokens[:, 0] == 0).all()
    parts = list(S.iter_activations(cache, 2, "train", batch_contexts=3))
    assert [s for s, _ in parts][:4] == [0, 3, 6, 8]  # batches never cross a shard of 8
    x = torch.cat([p for _, p in parts])
    assert x.dtype == torch.float32 and x.shape == (40, 9, 32)
    assert torch.allclose(x, L.layer_activations(tiny_llama, tokens, [2])[2], atol=1e-6)
    with pytest.raises(ValueError, match="not in the activation cache"):
        next(S.iter_activations(cache, 3, "train"))
    for f in [cache / "tokens.safetensors", *cache.glob("layer*/*.safetensors")]:
        assert f.stat().st_mode & 0o044 == 0o044, f  # world-readable


def test_cached_batches_are_a_function_of_the_step(cache):
    a = S.CachedBatches(cache, 1, batch_size=16, seed=2, shuffle_shards=2)
    b = S.CachedBatches(cache, 1, batch_size=16, seed=2, shuffle_shards=2)
    steps = [7, 0, 3, 25, 3]
    for s in steps:  # any order, any instance: the same rows
        assert torch.equal(a.batch(s), b.batch(s))
    first_epoch = torch.cat([a.batch(s) for s in range(a.epoch_rows // 16 - 2)])
    rows = torch.cat([x for _, x in S.iter_activations(cache, 1, "train")])[:, 1:].reshape(-1, 32)
    assert torch.cdist(first_epoch, rows).min(1).values.max() < 1e-3  # every row is a cached non-BOS row
    bos = torch.cat([x for _, x in S.iter_activations(cache, 1, "train")])[:, 0]
    assert torch.cdist(first_epoch, bos).min() > 1e-2  # and never a BOS row
    with pytest.raises(ValueError, match="batch_size"):
        S.CachedBatches(cache, 1, batch_size=10_000)


# -- Γ variants ----------------------------------------------------------------------------------------------
def test_gamma_variants():
    var = torch.tensor([100.0, 1.0, 1.0, 0.5, 0.25] + [1.0] * 15)
    assert torch.equal(S.layer_gamma(var, 0.0, "paper"), torch.ones(20))
    assert torch.allclose(S.layer_gamma(var, 1.0, "paper"), var)
    assert torch.allclose(S.layer_gamma(var, 1.0, "mean").mean(), torch.tensor(1.0))
    cap = S.layer_gamma(var, 1.0, "cap", cap_quantile=0.9)
    assert float(cap.max() / cap.min()) <= float(torch.quantile(var, 0.9) / var.min()) + 1e-5
    perm = S.layer_gamma(var, 1.0, "permuted", cap_quantile=0.9, permute_seed=1, permuted_of="cap")
    assert torch.equal(perm.sort().values, cap.sort().values) and not torch.equal(perm, cap)
    sh = S.gamma_shares(S.layer_gamma(var, 1.0, "paper"))
    assert sh["gamma2_top1_share"] == pytest.approx(1e4 / (1e4 + 0.25 + 0.0625 + 17))
    with pytest.raises(ValueError, match="variant"):
        S.layer_gamma(var, 1.0, "bogus")
    stats = {"mean": torch.zeros(20), "var": var, "std": var.sqrt()}
    names = [s.name for s in S.layer_specs(stats, [0.0, 0.5, 1.0], ["mean", "standardize"], "cap")]
    assert names == ["paper/alpha0", "paper/alpha0.5", "paper/alpha1", "cap/alpha0.5", "cap/alpha1",
                     "mean/alpha1", "standardize/alpha0", "standardize/alpha1", "permuted/alpha1"]
    pairs = dict(S.comparisons(names, "cap")[:-1])
    assert pairs["cap/alpha1"] == "paper/alpha0" and pairs["standardize/alpha1"] == "standardize/alpha0"
    assert ("permuted/alpha1", "cap/alpha1") in S.comparisons(names, "cap")


def test_alpha_tags_never_collide():
    S.check_alpha_tags([0.0, 0.5, 0.5000001, 1.0])  # distinct folders: alpha0.5 and alpha0.5000001
    assert S.alpha_tag(0.5000001) != S.alpha_tag(0.5) and S.alpha_tag(1.0) == "1"
    with pytest.raises(ValueError, match="share the folder tag"):
        S.check_alpha_tags([0.5, 0.5 + 1e-12])


def test_fold_standardization_is_exact():
    sae = SparseAutoencoder(SAEConfig(d_in=6, n_latents=24, activation="topk", k=3), seed=0)
    with torch.no_grad():
        sae.b_dec.copy_(torch.randn(6))
    shift, scale = torch.randn(6), torch.rand(6) + 0.5
    x = torch.randn(50, 6) * 3
    folded = S.fold_standardization(sae, shift, scale)
    ref = sae((x - shift) / scale).x_hat * scale + shift
    assert torch.allclose(folded(x).x_hat, ref, atol=1e-5)
    assert torch.equal(folded.encode(x) != 0, sae.encode((x - shift) / scale) != 0)


def _tcfg(**kw):
    """The LM layer jobs' trainer settings (warm-up, decay, AuxK, dead window as in notebooks/lm_train.py)."""
    base = dict(lr_warmup_steps=10, lr_decay_frac=0.2, auxk_alpha=1 / 32, dead_window=20_000, log_every=5)
    return TrainConfig(**{**base, **kw})


# -- training and evaluation ------------------------------------------------------------------------------------
def test_train_layer_is_deterministic_and_flags_untrained(cache):
    stats = S.layer_stats(cache, 1)
    specs = S.layer_specs(stats, [0.0, 1.0], ["standardize"], "cap", permuted_control=False)
    cfg = S.LayerTrainConfig(n_latents=64, k=8, train=_tcfg(steps=60, batch_size=16, lr=3e-3, log_every=1),
                             monitor_contexts=4, shuffle_shards=2)
    a = S.train_layer_saes(cache, 1, specs, stats, cfg)
    b = S.train_layer_saes(cache, 1, specs, stats, cfg)
    for name in a:
        assert torch.equal(a[name].sae.W_dec, b[name].sae.W_dec), name
        assert [m["step"] for m in a[name].monitor] == [0, 15, 30, 45, 60]
        assert [m["tokens"] for m in a[name].monitor] == [0, 240, 480, 720, 960]
    d = a["paper/alpha0"].diagnostics()
    # α = 0: the held-out objective is the unweighted FVU
    assert d["objective_final"] == pytest.approx(d["monitor_fvu_final"], rel=1e-9)
    assert d["objective_ratio"] < 0.9 and d["frac_rows_unmoved"] < 0.5
    assert S.untrained_reason(d) == "" and not S.untrained_flag(d)
    assert "not below" in S.untrained_reason({**d, "objective_ratio": 0.95})
    assert "unmoved" in S.untrained_reason({**d, "frac_rows_unmoved": 0.8})
    frozen = S.train_layer_saes(cache, 1, specs[:1], stats, S.LayerTrainConfig(
        n_latents=64, k=4, train=_tcfg(steps=3, batch_size=16, lr=1e-7), monitor_contexts=4, shuffle_shards=2))
    fd = frozen["paper/alpha0"].diagnostics()
    assert S.untrained_flag(fd) and "not below" in S.untrained_reason(fd) and "unmoved" in S.untrained_reason(fd)


def test_weighted_objective_is_the_sae_own_loss(cache):
    """The held-out objective of a weighted SAE is Σ γ²(x − x̂)² / Σ γ²(x − x̄)² in its input space."""
    from wsae_utils.core.metrics import FVUAccumulator

    x = torch.randn(200, 5) * torch.tensor([10.0, 1, 1, 1, 1])
    x_hat = x + torch.randn(200, 5) * 0.5
    w = torch.tensor([0.0, 1, 1, 1, 1])
    acc = FVUAccumulator(w)
    acc.update(x[:120], x_hat[:120])
    acc.update(x[120:], x_hat[120:])
    ref = float(((x - x_hat)[:, 1:].pow(2).sum()) / (x[:, 1:] - x[:, 1:].mean(0)).pow(2).sum())
    assert acc.compute() == pytest.approx(ref, rel=1e-6)


def test_held_out_convergence_rule():
    mon = [{"step": s, "heldout_objective": v} for s, v in [(0, 1.0), (25, 0.5), (50, 0.4), (75, 0.30), (100, 0.29)]]
    rel, ok = S.held_out_convergence(mon, window=0.25, tol=0.05)
    assert rel == pytest.approx(0.01 / 0.30) and ok
    rel, ok = S.held_out_convergence(mon, window=0.5, tol=0.05)  # 0.4 → 0.29: still falling
    assert rel == pytest.approx(0.11 / 0.4) and not ok
    # only the start and the end: the window reaches back to the start, where the objective was still 1.0
    rel, ok = S.held_out_convergence(mon[:1] + mon[-1:], window=0.25)
    assert rel == pytest.approx(0.71) and not ok
    assert not S.held_out_convergence([mon[0], {"step": 100, "heldout_objective": 0.5}], window=0.0)[1]


def test_activation_normalisation_is_folded_exactly(cache):
    """Normalised specs train on c·x with E‖c·x‖² = d; the exported SAE acts on raw x and equals the trained one."""
    stats = S.layer_stats(cache, 1)
    c = S.activation_scale(stats)
    mean_sq = float((stats["var"] + stats["mean"].pow(2)).sum())
    assert c * c * mean_sq == pytest.approx(stats["var"].numel(), rel=1e-5)
    specs = S.layer_specs(stats, [0.0, 1.0], ["standardize"], "cap", permuted_control=False,
                          normalize_activations=True)
    by = {s.name: s for s in specs}
    assert by["paper/alpha0"].scale is not None and by["paper/alpha0"].shift is None
    assert by["standardize/alpha1"].standardized and not by["cap/alpha1"].standardized
    x = torch.randn(7, stats["var"].numel())
    assert torch.allclose(by["cap/alpha1"].to_input(x), c * x, rtol=1e-5)
    assert torch.allclose(by["cap/alpha1"].to_raw(c * x), x, rtol=1e-5, atol=1e-6)
    cfg = S.LayerTrainConfig(n_latents=64, k=8, train=_tcfg(steps=20, batch_size=16, lr=3e-3),
                             monitor_contexts=4, shuffle_shards=2)
    t = S.train_layer_saes(cache, 1, specs[:1], stats, cfg)["paper/alpha0"]
    xs = next(S.iter_activations(cache, 1, "heldout", batch_contexts=8))[1][:, 1:].reshape(-1, x.shape[-1])
    from wsae_utils.core.metrics import fvu

    assert fvu(xs, t.sae(xs).x_hat) == pytest.approx(t.monitor[-1]["heldout_fvu"], rel=1e-3)


def test_sae_seeds_change_init_batches_and_permutation(cache):
    stats = S.layer_stats(cache, 1)
    cfg = lambda s: S.LayerTrainConfig(n_latents=64, k=8, train=_tcfg(steps=5, batch_size=16, seed=s),  # noqa: E731
                                       monitor_contexts=4, shuffle_shards=2)
    specs = {s: S.layer_specs(stats, [0.0, 1.0], [], "cap", permuted_control=True, seed=s) for s in (0, 1)}
    perm = {s: next(p for p in specs[s] if p.variant == "permuted").gamma for s in (0, 1)}
    assert not torch.equal(perm[0], perm[1])
    a, b = (S.train_layer_saes(cache, 1, specs[s], stats, cfg(s)) for s in (0, 1))
    assert not torch.equal(a["paper/alpha0"].sae.W_dec, b["paper/alpha0"].sae.W_dec)


def _identity_sae(d, scale=1.0):
    sae = SparseAutoencoder(SAEConfig(d_in=d, n_latents=2 * d, activation="topk", k=d, bias=False))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye]))
        sae.W_dec.copy_(torch.cat([eye, -eye]) * scale)
    return sae


def test_evaluate_perfect_and_half_saes_against_independent_ce_kl(tiny_llama, cache):
    layer = 1
    saes = {"paper/alpha0": _identity_sae(32), "paper/alpha1": _identity_sae(32, 0.5)}
    pc = E.evaluate_layer(cache, layer, saes, tiny_llama, ce_contexts=5, batch_contexts=4)
    rows = E.layer_metrics(pc, S.layer_stats(cache, layer)["var"], 3, 200, 0, [("paper/alpha1", "paper/alpha0")])
    v = {(r["sae"], r["metric"], r["kind"]): r for r in rows}
    perfect = {m: v[("paper/alpha0", m, "value")]["value"] for m in ("fvu", "ce_recovered", "kl", "l0")}
    assert perfect["fvu"] < 1e-10 and abs(perfect["ce_recovered"] - 1) < 1e-5 and abs(perfect["kl"]) < 1e-5
    assert perfect["l0"] == pytest.approx(32)
    # x̂ = 0.5 x: CE and KL against a hooked full forward with F.cross_entropy / F.kl_div
    tokens = S.load_tokens(cache, "heldout")[pc.ce_index]

    def logits_with(scale):
        fn = None if scale == 1 else (lambda h: scale * h)
        return L.spliced_logits(tiny_llama, tokens, layer, fn)[:, 1:-1].reshape(-1, 300)

    target = tokens[:, 2:].reshape(-1)
    clean, half, zero = map(logits_with, (1.0, 0.5, 0.0))
    ce = {k: float(F.cross_entropy(x, target)) for k, x in (("clean", clean), ("sae", half), ("zero", zero))}
    kl = float(F.kl_div(half.log_softmax(-1), clean.log_softmax(-1), log_target=True, reduction="sum")) / len(target)
    half_row = {m: v[("paper/alpha1", m, "value")] for m in ("ce_recovered", "kl", "fvu", "ce_sae")}
    assert half_row["ce_sae"]["value"] == pytest.approx(ce["sae"], rel=1e-4)
    assert half_row["ce_recovered"]["value"] == pytest.approx((ce["zero"] - ce["sae"]) / (ce["zero"] - ce["clean"]),
                                                              rel=1e-4)
    assert half_row["kl"]["value"] == pytest.approx(kl, rel=1e-3) and kl > 0
    x = torch.cat([a for _, a in S.iter_activations(cache, layer, "heldout")])[:, 1:].reshape(-1, 32).double()
    assert half_row["fvu"]["value"] == pytest.approx(float((0.5 * x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()),
                                                     rel=1e-6)
    for m in ("fvu", "ce_recovered", "kl"):  # CIs bracket the point value; the paired difference has the right sign
        r = half_row[m]
        assert r["ci_lo"] <= r["value"] + 1e-9 and r["value"] <= r["ci_hi"] + 1e-9
    d = v[("paper/alpha1", "fvu", "diff")]
    assert d["value"] > 0 and d["ci_lo"] > 0 and d["baseline"] == "paper/alpha0"
    base = E.ce_baselines(pc)
    assert base["ce_contexts"] == 5 and base["baseline_gap"] == pytest.approx(ce["zero"] - ce["clean"], rel=1e-4)


def test_faithfulness_rule_guards_degenerate_baseline():
    rule = E.FaithfulnessRule(min_ce_recovered=0.5, min_baseline_gap=0.1)
    assert rule.verdict(0.3, 0.9, 2.0) == "faithful"
    assert rule.verdict(1.26, 0.9, 2.0) == "not faithful"  # worse than the mean: never faithful
    assert rule.verdict(0.3, 0.4, 2.0) == "not faithful"
    assert rule.verdict(0.3, 1.96, 0.01).startswith("undefined")  # the random-model case of the old report
    assert rule.verdict(0.3, 0.9, float("nan")).startswith("undefined")


def test_unknown_model_names_embedded_default():
    with pytest.raises(RuntimeError, match="smollm2-135m"):
        L.load_lm("gpt-17")
    with pytest.raises(RuntimeError, match="smollm2-135m"):
        L.model_facts("gpt-17")


def test_hub_model_offline_fails_fast_naming_default(tmp_path):
    code = ("from wsae_utils.lm.model import load_lm\n"
            "import time; t=time.time()\n"
            "try:\n    load_lm('pythia-160m')\n"
            "except RuntimeError as e:\n    print('ERR', round(time.time()-t, 2), e)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    t = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "ERR" in out.stdout, out.stderr[-2000:]
    seconds = float(out.stdout.split()[1])
    # no 48 s of hub retries (20 s leaves room for a busy machine)
    assert seconds < 20 and "smollm2-135m" in out.stdout and "pythia-160m" in out.stdout
    assert time.time() - t < 60


def test_unreachable_hub_model_fails_fast_naming_the_embedded_default(tmp_path, monkeypatch):
    """No network: a hub model not in the local cache fails at once (no minute of retries) with a clear message."""
    import time

    from wsae_utils.lm.model import load_tokenizer

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    t0 = time.time()
    with pytest.raises(RuntimeError, match="hub cannot be reached.*embedded default 'smollm2-135m'"):
        load_tokenizer("pythia-160m")
    assert time.time() - t0 < 30


def test_massive_tokens_left_out_like_bos(cache, tiny_llama):
    """Tokens above max_token_norm count in no sum and pass through every splice unchanged."""
    layer = 1
    x_all = torch.cat([x[:, 1:].reshape(-1, x.shape[-1]) for _, x in S.iter_activations(cache, layer, "heldout")])
    norms = x_all.float().norm(dim=-1)
    thr = float(norms.median())
    assert S.massive_norm_threshold(cache, layer, 2.0, "heldout") == pytest.approx(2 * thr, rel=1e-6)
    assert S.massive_norm_threshold(cache, layer, 0.0) == float("inf")
    sae = _identity_sae(32, 0.5)
    pc = E.evaluate_layer(cache, layer, {"half": sae}, tiny_llama, ce_contexts=3, batch_contexts=4,
                          max_token_norm=thr)
    keep = norms <= thr
    assert int(pc.n_rows.sum()) == int(keep.sum())
    kept = x_all[keep].double()
    ref = float((0.5 * kept).pow(2).sum() / (kept - kept.mean(0)).pow(2).sum())
    fv = E._fvu_from(torch.ones(1, pc.n_rows.numel(), dtype=torch.float64), pc.sse["half"], pc,
                     torch.ones(32, dtype=torch.bool))
    assert float(fv[0]) == pytest.approx(ref, rel=1e-5)
    st = S.layer_stats(cache, layer, "heldout", thr)
    assert int(st["n_tokens"]) == int(keep.sum())
    assert torch.allclose(st["mean"].double(), kept.mean(0), atol=1e-5)
    # nothing left out when the threshold is above every norm: the plain evaluation
    full = E.evaluate_layer(cache, layer, {"half": sae}, tiny_llama, ce_contexts=3, batch_contexts=4)
    same = E.evaluate_layer(cache, layer, {"half": sae}, tiny_llama, ce_contexts=3, batch_contexts=4,
                            max_token_norm=float(norms.max()) + 1)
    assert torch.equal(full.sse["half"], same.sse["half"]) and torch.equal(full.ce["zero"], same.ce["zero"])
    assert not torch.equal(full.ce["zero"], pc.ce["zero"])
