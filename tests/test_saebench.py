"""SAEBench-style metrics (autointerp.saebench) and offline probing tasks (lm.probe_tasks) on planted cases.

Synthetic activations with known class and letter directions: a dictionary built from the probe directions must
score as the best case (absorption 0, 1-sparse probing at the dense ceiling), a random-weight SAE at the floor,
permuted labels at chance, planted absorption at its planted share; every verdict branch is reached.
"""

import numpy as np
import pytest
import torch

from wsae_utils.autointerp import saebench as B
from wsae_utils.core.sae import SAEConfig, SparseAutoencoder
from wsae_utils.lm import probe_tasks as P

D = 48


def _passages(n_per: int = 120, n_cls: int = 4, T: int = 12, seed: int = 0):
    """Token activations [n, T, D] whose passage mean carries a class direction; labels and a test split."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.linalg.qr(torch.randn(D, D, generator=g))[0][:, :n_cls].T  # orthonormal class directions
    labels = np.repeat(np.arange(n_cls), n_per)
    x = torch.randn(len(labels), T, D, generator=g)
    x += 1.5 * dirs[torch.as_tensor(labels)][:, None, :]
    test = np.zeros(len(labels), bool)
    test[np.random.default_rng(seed).permutation(len(labels))[: len(labels) // 3]] = True
    return x, labels, test, dirs


def _codes(sae: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return sae.encode(x.reshape(-1, D)).reshape(x.shape[0], x.shape[1], -1).mean(1)


def _random_sae(n_latents: int = 192, k: int = 8, seed: int = 3) -> SparseAutoencoder:
    return SparseAutoencoder(SAEConfig(d_in=D, n_latents=n_latents, activation="topk", k=k), seed=seed).eval()


def test_fit_logistic_is_sklearns_optimum():
    """Newton reaches the stationary point of ½‖w‖² + C Σ s·logloss (intercept free); batched = one by one."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(3, 200, 5, generator=g)
    y = (X[..., 0] + 0.5 * torch.randn(3, 200, generator=g) > 0.3).double()
    for balanced in (False, True):
        w, b = B.fit_logistic(X, y, C=0.7, balanced=balanced)
        for p in range(3):
            s = torch.ones(200, dtype=torch.float64)
            if balanced:
                s = torch.where(y[p] > 0, 200 / (2 * y[p].sum()), 200 / (2 * (200 - y[p].sum())))
            r = s * (y[p] - torch.sigmoid(X[p].double() @ w[p].double() + b[p].double()))
            assert torch.allclose(w[p].double(), 0.7 * X[p].double().T @ r, atol=1e-4)
            assert abs(float(r.sum())) < 1e-4
            w1, b1 = B.fit_logistic(X[p], y[p], C=0.7, balanced=balanced)
            assert torch.allclose(w1, w[p], atol=1e-5) and abs(float(b1 - b[p])) < 1e-5


def test_sparse_probing_planted_best_random_floor_permutation_chance():
    x, labels, test, _ = _passages()
    x_mean = x.mean(1)
    units = B.probe_units("cls", labels, test, ["a", "b", "c", "d"], seed=0)
    dense = {(u.task, u.cls): B.sparse_probe_correct(x_mean, u, [0])[0] for u in units}
    ceiling = B.sparse_probing_contrib(dense)[0].sum()
    w = torch.stack([B.fit_probe(x_mean, u).w for u in units])
    unit = w / w.norm(dim=1, keepdim=True)
    planted = B.projection_dictionary(w, -(x.reshape(-1, D) @ unit.T).min(0).values + 1)
    res = {}
    for name, sae in (("planted", planted), ("random", _random_sae())):
        c = _codes(sae, x)
        corr = {(u.task, u.cls): B.sparse_probe_correct(c, u, [1]) for u in units}
        res[name] = B.sparse_probing_contrib({k: v[1] for k, v in corr.items()})[0].sum()
        if name == "planted":
            perm = {(u.task, u.cls): B.sparse_probe_correct(c, u, [1], permute_labels=np.random.default_rng(1))
                    for u in units}
            res["permuted"] = B.sparse_probing_contrib({k: v[1] for k, v in perm.items()})[0].sum()
    assert ceiling > 0.95
    assert res["planted"] >= ceiling - 0.02  # the probe directions: as good as the dense probe
    assert res["random"] < res["planted"] - 0.2  # random latents: far below
    assert abs(res["permuted"] - 0.5) < 0.1  # permuted training labels: chance


def _letter_words(n_per: int = 60, n_letters: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    dirs = torch.linalg.qr(torch.randn(D, D, generator=g))[0][:, :n_letters].T
    y = np.repeat(np.arange(n_letters), n_per)
    x = 0.5 * torch.randn(len(y), D, generator=g) + 2.0 * dirs[torch.as_tensor(y)]
    test = np.zeros(len(y), bool)
    test[np.random.default_rng(seed).permutation(len(y))[: len(y) // 3]] = True
    return x, y, test


def test_absorption_planted_dictionary_zero_planted_absorbing_share_random_weak():
    x, y, test = _letter_words()
    probe = B.letter_probe(x[~test], y[~test], x[test], y[test], n_classes=6, epochs=50, batch_size=32)
    assert probe.used.all()
    planted = B.projection_dictionary(probe.weight)
    results = {}
    for name, sae in (("planted", planted), ("random", _random_sae(k=4))):
        with torch.no_grad():
            c = sae.encode(x)
        ks = B.k_sparse_letter_probes(c[~test], y[~test], c[test], y[test], max_k=3, n_classes=6, epochs=50,
                                      batch_size=32)
        results[name] = (B.absorption(x[test], c[test], sae.W_dec.detach(), probe, y[test], ks.split),
                         ks.f1[:, 0].mean())
    ab, f1 = results["planted"]
    assert ab.mean_fraction <= 1e-6 and ab.full_rate == 0.0 and f1 > 0.9
    assert results["random"][1] < f1 - 0.3  # random latents do not carry the letters
    # planted absorption: half of every letter's words moved to an aligned word-specific latent
    with torch.no_grad():
        c = planted.encode(x[test])
    tps = B.true_positive_words(probe, x[test], y[test])
    absorbed = {l: i[: len(i) // 2] for l, i in tps.items()}
    n_new = sum(len(v) for v in absorbed.values())
    W = torch.cat([planted.W_dec.detach(), torch.zeros(n_new, D)])
    codes = torch.cat([c, torch.zeros(len(c), n_new)], 1)
    j = 6
    for l, idx in absorbed.items():
        u = probe.weight[l] / probe.weight[l].norm()
        for i in idx:
            r = torch.randn(D)
            r -= (r @ u) * u
            W[j] = 0.9 * u + 0.4359 * r / r.norm()
            codes[i, j], codes[i, l] = codes[i, l] / 0.9, 0.0
            j += 1
    ab = B.absorption(x[test], codes, W, probe, y[test], {l: np.array([l]) for l in range(6)})
    expected = np.mean([len(absorbed[l]) / len(tps[l]) for l in tps])
    assert abs(ab.mean_fraction - expected) < 0.02 and abs(ab.full_rate - expected) < 0.02


def test_tpp_and_scr_planted_positive_random_near_zero():
    x, labels, test, _ = _passages()
    x_mean = x.mean(1)
    units = B.probe_units("cls", labels, test, ["a", "b", "c", "d"], seed=0)
    probes = [B.fit_probe(x_mean, u) for u in units]
    planted = B.logit_dictionary(torch.stack([p.w for p in probes]), torch.stack([p.b for p in probes]))
    t_pl = B.tpp(x_mean, _codes(planted, x), planted.W_dec.detach(), probes, [1])[1]
    rnd = _random_sae()
    t_rn = B.tpp(x_mean, _codes(rnd, x), rnd.W_dec.detach(), probes, [1])[1]
    assert t_pl["value"] > 0.2 and abs(t_rn["value"]) < 0.05
    assert abs(t_pl["contrib"].sum() - t_pl["value"]) < 1e-9
    # SCR: attribute A = class 0 vs 1, attribute B = class-independent direction, biased set couples them
    g = torch.Generator().manual_seed(5)
    b_dir = torch.randn(D, generator=g)
    b_dir /= b_dir.norm()
    attr_b = np.random.default_rng(2).integers(0, 2, len(labels))
    xs = x + 1.5 * torch.as_tensor(attr_b, dtype=torch.float32)[:, None, None] * b_dir
    attr_a = np.where(labels == 0, 1, np.where(labels == 1, 0, -1))
    sets = B.scr_sets("0 vs 1", attr_a, np.where(attr_a >= 0, attr_b, -1), test)
    probes_scr = B.scr_probes(xs.mean(1), sets)
    pl = B.logit_dictionary(torch.stack([probes_scr.a.w, probes_scr.b.w]),
                            torch.stack([probes_scr.a.b, probes_scr.b.b]))
    s_pl = B.scr(xs.mean(1), _codes(pl, xs), pl.W_dec.detach(), probes_scr, [1])[1]["value"]
    s_rn = B.scr(xs.mean(1), _codes(rnd, xs), rnd.W_dec.detach(), probes_scr, [1])[1]["value"]
    assert s_pl > 0.3 and abs(s_rn) < 0.15


def test_bootstrap_pairs_by_example_and_seed():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 200)) / 200
    group = np.repeat([0, 1], 100)
    d = B.bootstrap_draws(a, group, 500, 0, minus=a)
    assert np.all(d == 0)  # identical SAEs differ by exactly 0 on every resample
    shifted = a + 0.5 / 200
    lo, hi = B.interval(B.bootstrap_draws(shifted, group, 500, 0, minus=a))
    assert lo == pytest.approx(0.5) and hi == pytest.approx(0.5)  # paired: the common noise cancels
    lo, hi = B.interval(B.bootstrap_draws(shifted[:2], group, 500, 0, minus=a))  # unpaired seeds: noise remains
    assert lo < 0.5 < hi


@pytest.mark.parametrize("gain,control,usable,verdict", [
    ((0.02, 0.05), (0.01, 0.03), True, "reproduced"),
    ((-0.03, 0.005), (0.0, 0.1), True, "not reproduced"),
    ((0.02, 0.05), (-0.02, 0.004), True, "not reproduced"),
    ((0.02, 0.05), (-0.02, 0.04), True, "not decidable here"),
    ((0.02, 0.05), None, True, "not decidable here"),
    ((-0.01, 0.05), (0.01, 0.03), True, "not decidable here"),
    ((0.02, 0.05), (0.01, 0.03), False, "not decidable here"),
])
def test_metric_verdict_branches(gain, control, usable, verdict):
    assert B.metric_verdict(gain, control, 0.01, usable)[0] == verdict


def test_label_rules_are_the_stated_ones():
    text = 'He said, "Come in.\n\n"Not yet," she said. Mr. Darcy smiled. Elinor ran.\n\nThe end.'
    q = P.inside_quotes(text)
    assert q[text.index("Come")] and not q[text.index("He")] and q[text.index("Not")]
    assert not q[text.index(" she")]  # closed before "she"; the unclosed quote ended with its paragraph
    assert P._sentence_initial(text, text.index("Elinor")) and P._sentence_initial(text, text.index("The end"))
    assert not P._sentence_initial(text, text.index("Darcy"))  # after "Mr.", not a sentence end
    lower, mid = P.word_statistics(["the Elinor and Elinor; a the the the the", "Then the Bath. The"])
    assert P.name_label("Elinor", lower, mid) == 1 and P.name_label("The", lower, mid) == 0
    assert P.name_label("Mr", lower, mid) == -1 and P.name_label("Bath", lower, mid) == -1  # title; once only


def test_unseen_passages_skip_cached_contexts_and_prefix_cache_is_exact():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from wsae_utils.lm.model import LM, _ByteTokenizer, layer_activations

    tok = _ByteTokenizer()
    rng = np.random.default_rng(0)
    words = ["Elinor", "ran", "the", "cat", '"Yes,"', "said", "she.", "The", "sat."]
    docs = {n: " ".join(rng.choice(words, 150)) for n in ("a", "b")}
    ctx = 17
    from wsae_utils.lm.text import document_contexts

    seen = document_contexts(tok, docs["a"], ctx)[::2]  # every other context of "a" is "cached"
    ps, rec = P.unseen_passages(tok, docs, seen, ctx, 9, per_doc=1000)
    assert rec["a"]["cached (skipped)"] == len(seen) and rec["b"]["cached (skipped)"] == 0
    assert ((ps.start_token[ps.doc == 0] // (ctx - 1)) % 2 == 1).all()  # only the odd (uncached) contexts of "a"
    assert ps.ids.shape[1] == 9 and (ps.ids[:, 0] == 0).all()
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=260, hidden_size=32, num_hidden_layers=3,
                                             num_attention_heads=4, intermediate_size=64)).eval()
    lm = LM("tiny", model, tok)
    prefix = P.icl_prefix(tok, ["cat", " Dog"])
    words = torch.tensor([67, 69, 101])
    got = P.prefix_word_activations(lm, prefix, words, [0, 2], batch=2)
    ref = layer_activations(lm, torch.tensor([prefix + [int(w)] for w in words]), [0, 2])
    for l in (0, 2):
        assert torch.allclose(got[l], ref[l][:, -1], atol=1e-5)
    ids, strs, letters = P.alpha_vocab(tok)
    assert len(ids) == 52 and "".join(P.LETTERS[c] for c in letters[:26]) == P.LETTERS


def test_claims_precedence_llm_over_offline_metrics_over_proxy():
    from wsae_utils.run.results import claim, claims_table

    proxy = claim("lm-table1", "proxy", "", "not decidable here")
    metrics = claim("lm-table1", "saebench", "", "not reproduced", precedence=1)
    row = claims_table([proxy, metrics]).set_index("id").loc["lm-table1"]
    assert row.verdict == "not reproduced" and row.test.startswith("saebench")  # the deciding row first
    llm = claim("lm-table1", "llm", "", "reproduced", precedence=2)
    assert claims_table([proxy, metrics, llm]).set_index("id").loc["lm-table1"].verdict == "reproduced"
    assert claims_table([proxy]).set_index("id").loc["lm-table1"].verdict == "not decidable here"
