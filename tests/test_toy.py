"""Unit tests of wsae_utils.toy.data: Example 1, loss-gap identities, W_p constructions, oracles, data."""

import math

import pytest
import torch

from wsae_utils.core.sae import SAEConfig, SparseAutoencoder, make_gamma, reconstruction_loss
from wsae_utils.toy import data as toy

torch.set_num_threads(1)


def test_example_1():
    ex = toy.example_1()
    assert torch.allclose(ex["x_p"], torch.tensor([0.5, 0.2], dtype=torch.float64), atol=1e-6)
    assert torch.allclose(ex["x_m"], torch.tensor([0.5, 0.2, 0.0], dtype=torch.float64), atol=1e-6)


@pytest.mark.parametrize("case", range(6))
@pytest.mark.parametrize("weighted", [False, True])
def test_loss_gap_identities(case, weighted):
    gen = torch.Generator().manual_seed(case)
    n, n_p = 6 + 5 * case, 3 + case
    W, _ = toy.random_wp(n, n_p, gen)
    x = toy.sample_features(500, n, 0.1 * case, gen).double()
    gamma = 0.2 + 1.8 * torch.rand(n_p, generator=gen, dtype=torch.float64) if weighted else None
    lhs, rhs = toy.loss_gap_identity(x, W, gamma)
    assert abs(lhs - rhs) <= 1e-5 * max(abs(rhs), 1e-12)
    # an independent float64 computation of the left-hand side
    Wd = W.double()
    x_p = x @ Wd.T
    x_m = (x_p @ Wd).relu()
    g2 = torch.ones(n_p, dtype=torch.float64) if gamma is None else gamma.pow(2)
    l_sae = ((x_p - x_m @ Wd.T).pow(2) * g2).sum(1).mean()
    l_gt = (x - x_m).pow(2).sum(1).mean()
    assert math.isclose(float(l_sae - l_gt), lhs, rel_tol=1e-9, abs_tol=1e-12)


def test_gap_nonpositive_under_nonpositive_interference():
    W, _ = toy.constructed_wp(34, 20, 5, 13)
    x = toy.sample_features(2000, 34, 0.5, torch.Generator().manual_seed(0)).double()
    _, rhs = toy.loss_gap_identity(x, W)
    assert rhs <= 1e-12


@pytest.mark.parametrize("n,n_p,n_mono,n_digons", [(34, 20, 5, 13), (40, 20, 0, 20), (34, 20, 6, 14), (7, 4, 1, 1)])
def test_constructed_exact_unit_columns_nonpositive(n, n_p, n_mono, n_digons):
    assert n <= 2 * n_p
    W, info = toy.constructed_wp(n, n_p, n_mono, n_digons)
    assert W.shape == (n_p, n)
    assert torch.allclose(W.norm(dim=0), torch.ones(n), atol=1e-6)
    G = W.T @ W - torch.eye(n)
    assert (G <= 1e-6).all()
    stats = toy.interference_stats(W, "constructed")
    assert stats["frac_positive_pairs"] == 0.0 and stats["max_positive_interference"] == 0.0
    assert stats["nonpositive_interference"] and stats["unit_columns"]


def test_constructed_paper_size_has_positive_interference():
    W, info = toy.make_wp({"construction": "constructed", "n": 200, "n_p": 20, "n_mono": 4, "n_digons": 4})
    assert W.shape == (20, 200) and torch.allclose(W.norm(dim=0), torch.ones(200), atol=1e-6)
    assert info["polygons"] == [31, 31, 31, 31, 32, 32]
    assert info["frac_positive_pairs"] > 0 and not info["nonpositive_interference"]


def test_random_and_elhage_unit_columns():
    for spec in ({"construction": "random", "n": 30, "n_p": 5},
                 {"construction": "elhage", "n": 30, "n_p": 5, "steps": 20, "batch_size": 64}):
        W, info = toy.make_wp(spec, seed=1)
        assert W.shape == (5, 30)
        assert torch.allclose(W.norm(dim=0), torch.ones(30), atol=1e-5)
        assert info["construction"] == spec["construction"]


def test_constructed_layout_errors():
    with pytest.raises(ValueError, match="polygon"):
        toy.constructed_layout(10, 5, 1, 1, [2, 4])
    with pytest.raises(ValueError, match="even"):
        toy.constructed_layout(10, 5, 1, 1)
    with pytest.raises(ValueError, match="more than"):
        toy.constructed_layout(10, 5, 4, 4)


def test_interference_stats_hand_case():
    # columns e1, (−1, 0), (1, 1)/√2: pairs (0,1) = −1, (0,2) = 1/√2, (1,2) = −1/√2
    s = 1 / math.sqrt(2)
    W = torch.tensor([[1.0, -1.0, s], [0.0, 0.0, s]])
    st = toy.interference_stats(W, "hand")
    assert st["n"] == 3 and st["n_p"] == 2 and st["construction"] == "hand"
    assert math.isclose(st["frac_positive_pairs"], 1 / 3)
    assert math.isclose(st["max_positive_interference"], s, rel_tol=1e-6)
    assert math.isclose(st["frac_negative_pairs"], 2 / 3)


def test_simplex_interference():
    for d in range(1, 6):
        W = toy.simplex_wp(d)
        G = W.double().T @ W.double()
        off = G[~torch.eye(d + 1, dtype=torch.bool)]
        assert torch.allclose(off, torch.full_like(off, -1.0 / d), atol=1e-5)
        assert (toy.interfering_counts(W)["negative"] == d).all()


def test_row_monosemanticity_and_feature_mask():
    W, _ = toy.constructed_wp(8, 4, 1, 1, [5])  # mono row, digon row, a pentagon on two rows
    m = toy.row_monosemanticity(W)
    assert math.isclose(float(m[0]), 1.0) and math.isclose(float(m[1]), 0.5)
    assert torch.allclose(m[2:], torch.full((2,), 3 / (2 * 5)), atol=1e-5)
    mono = toy.feature_is_monosemantic(W)
    assert mono.tolist() == [True] + [False] * 7


def test_variance_proxy_matches_population_and_is_anticorrelated_for_digons():
    W, _ = toy.constructed_wp(34, 20, 5, 13)
    x = toy.sample_features(200_000, 34, 0.5, torch.Generator().manual_seed(0))
    var = toy.variance_proxy(x @ W.T)
    assert torch.allclose(var, toy.expected_variance(W, 0.5), rtol=0.03)
    c = toy.proxy_monosemanticity_correlation(var, toy.row_monosemanticity(W))
    assert c["pearson"] < 0  # a digon row has twice a monosemantic row's variance


def test_sample_features():
    g = torch.Generator().manual_seed(0)
    x = toy.sample_features(20_000, 10, 0.8, g)
    assert x.min() >= 0 and x.max() <= 1
    assert abs(float((x > 0).float().mean()) - 0.2) < 0.01
    x = toy.sample_features(2000, 50, 0.999, g, nonempty=True)
    assert not (x == 0).all(1).any()
    with pytest.raises(ValueError):
        toy.sample_features(10, 5, 1.5, g)


def test_shrink_vanish_rates_example():
    ex = toy.example_1()
    r = toy.shrink_vanish_rates(ex["x"][None], ex["x_m"][None])
    assert r["shrink_rate"].tolist() == [0.0, 1.0, 1.0]
    assert r["vanish_rate"].tolist() == [0.0, 0.0, 1.0]


def test_alpha_zero_is_plain_mse():
    gen = torch.Generator().manual_seed(0)
    x, x_hat = torch.rand(64, 7, generator=gen), torch.rand(64, 7, generator=gen)
    gamma = make_gamma(torch.rand(7, generator=gen) + 0.1, 0.0)
    plain = (x - x_hat).pow(2).sum(1).mean()
    assert torch.allclose(reconstruction_loss(x, x_hat, gamma), plain)
    assert torch.allclose(reconstruction_loss(x, x_hat, None), plain)


def test_topk_keeps_exactly_k():
    sae = SparseAutoencoder(SAEConfig(d_in=8, n_latents=30, activation="topk", k=3, bias=False), seed=0)
    x = torch.rand(50, 8, generator=torch.Generator().manual_seed(1)) + 0.5
    with torch.no_grad():
        sae.W_enc.abs_()  # all pre-activations positive, so the ReLU after top-k zeroes nothing
        acts = sae.encode(x)
    assert ((acts != 0).sum(1) == 3).all()


def test_tied_decoder_is_encoder_transpose():
    sae = SparseAutoencoder(SAEConfig(d_in=6, n_latents=10, activation="relu", tied=True, bias=False,
                                      normalize_decoder=False), seed=0)
    assert sae.W_dec is sae.W_enc
    x = torch.randn(20, 6, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = sae.decode(sae.encode(x))
    expected = (x @ sae.W_enc.T).relu() @ sae.W_enc  # W_encᵀ relu(W_enc x) per row
    assert torch.allclose(out, expected, atol=1e-6)


def test_closed_form_sae_recovers_one_sparse_inputs():
    W, _ = toy.constructed_wp(34, 20, 5, 13)
    x = 0.7 * torch.eye(34)
    sae = toy.tied_sae_at(W.T).float()
    with torch.no_grad():
        assert torch.allclose(sae.encode(x @ W.T), x, atol=1e-6)


def test_schema_catches_bad_values():
    from wsae_utils.run.config import ConfigError, validate_config

    for bad, needle in (
        ({"wp_specs": {"a": {"construction": "constructed", "n": 34, "n_p": 0}}}, "n_p"),
        ({"sparsities": [0.5, 1.5]}, "sparsities"),
        ({"steps": 0}, "steps"),
        ({"typo_key": 1}, "typo_key"),
    ):
        with pytest.raises(ConfigError, match=needle):
            validate_config({"toy": {"sparsity": bad}})


def test_sample_k_sparse():
    x = toy.sample_k_sparse(500, 7, 3, torch.Generator().manual_seed(0))
    assert ((x > 0).sum(1) == 3).all() and x.max() <= 1
    with pytest.raises(ValueError):
        toy.sample_k_sparse(5, 4, 5)
