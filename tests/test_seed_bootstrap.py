"""CIs over examples × SAE seeds: the seed-cluster helpers of core.stats, the LM fidelity cells, Table 1."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from wsae_utils.autointerp import latent_pages as LP
from wsae_utils.autointerp import scoring as A
from wsae_utils.core.stats import cluster_diff_draws, cluster_mean_draws
from wsae_utils.lm import fidelity as E

N, M, D, LAT = 40, 12, 6, 8


def _pc(saes: dict[str, float], seed: int = 0) -> E.PerContext:
    """Synthetic per-context sums: SAE key → error scale (its sse and CE grow with it), shared x and baselines."""
    g = torch.Generator().manual_seed(seed)
    n_rows = torch.full((N,), 16.0, dtype=torch.float64)
    x_sum = torch.randn(N, D, generator=g, dtype=torch.float64)
    x_sumsq = 16 * (1 + torch.rand(N, D, generator=g, dtype=torch.float64)) + x_sum.pow(2) / 16
    noise = torch.rand(N, D, generator=g, dtype=torch.float64)
    ce_noise = torch.rand(M, generator=g, dtype=torch.float64)
    pc = E.PerContext(n_rows, x_sum, x_sumsq, ce_index=torch.arange(M), n_pred=torch.full((M,), 15.0,
                                                                                           dtype=torch.float64))
    pc.ce = {"clean": 15 * (3 + 0.1 * ce_noise), "zero": 15 * (6 + 0.1 * ce_noise)}
    for k, scale in saes.items():
        pc.sse[k] = scale * (4 + noise)
        pc.l0[k] = torch.full((N,), 16.0 * 4, dtype=torch.float64)
        pc.fired[k] = torch.rand(N, LAT, generator=torch.Generator().manual_seed(1)) > 0.5
        pc.ce[k] = 15 * (3 + scale + 0.2 * ce_noise)
        pc.kl[k] = 15 * scale * (0.5 + ce_noise)
    return pc


VAR = torch.arange(1.0, D + 1)


def _index(rows, level=None):
    return {(r["sae"], r.get("seed", 0), r["metric"], r["kind"], r["baseline"]): r for r in rows
            if level is None or r["level"] == level}


def test_cluster_helpers():
    d = np.random.default_rng(0).normal(size=(1, 50))
    assert np.array_equal(cluster_mean_draws(d, 3), d[0])  # one cluster: the draws as they are
    a = {s: np.random.default_rng(s).normal(size=50) for s in range(3)}
    diff, paired = cluster_diff_draws(a, a)
    assert paired and np.array_equal(diff, np.zeros(50))
    _, paired = cluster_diff_draws(a, {0: a[0], 1: a[1]})
    assert not paired
    # the same seed draws the same clusters for every cell with as many clusters (as contexts are shared)
    b = {s: v + 1 for s, v in a.items()}
    assert np.allclose(cluster_mean_draws(np.stack(list(b.values())), 7),
                       cluster_mean_draws(np.stack(list(a.values())), 7) + 1)


def test_one_seed_equals_the_context_only_bootstrap():
    pc = _pc({"paper/alpha0": 1.0, "paper/alpha1": 1.3})
    comps = [("paper/alpha1", "paper/alpha0")]
    old = E.layer_metrics(pc, VAR, 2, 300, 5, comps)
    new = E.seed_layer_metrics(pc, VAR, {n: {0: n} for n in pc.sse}, 2, 300, 5, comps)
    for level in ("seed", "cell"):
        got = {(r["sae"], r["metric"], r["kind"], r["baseline"]): r for r in new if r["level"] == level}
        assert len(got) == len(old)
        for r in old:
            g = got[(r["sae"], r["metric"], r["kind"], r["baseline"])]
            for f in ("value", "ci_lo", "ci_hi"):
                assert g[f] == r[f] or (np.isnan(g[f]) and np.isnan(r[f])), (level, r["sae"], r["metric"], f)
            assert g["n_seeds"] == 1
    cell_diff = [r for r in new if r["level"] == "cell" and r["kind"] == "diff"]
    assert cell_diff and all(r["paired_by_seed"] for r in cell_diff)


def test_paired_diff_of_identical_seeds_is_zero_with_zero_width():
    scales = {0: 0.8, 1: 1.1, 2: 1.5}  # the seeds differ a lot; α = 0 and α = 1 of one seed are identical
    saes = {E.sae_key(n, s): v for s, v in scales.items() for n in ("paper/alpha0", "paper/alpha1")}
    members = {n: {s: E.sae_key(n, s) for s in scales} for n in ("paper/alpha0", "paper/alpha1")}
    rows = E.seed_layer_metrics(_pc(saes), VAR, members, 2, 300, 0, [("paper/alpha1", "paper/alpha0")])
    diffs = [r for r in rows if r["kind"] == "diff" and r["level"] == "cell" and r["metric"] != "dead_frac"]
    assert {r["metric"] for r in diffs} >= {"fvu", "ce_recovered", "kl"}
    for r in diffs:
        assert r["paired_by_seed"] and r["n_seeds"] == 3
        assert r["value"] == pytest.approx(0, abs=1e-12)
        assert r["ci_lo"] == pytest.approx(0, abs=1e-12) and r["ci_hi"] == pytest.approx(0, abs=1e-12)
    # Unpaired (the baseline lacks seed 2): the seed spread stays in the CI.
    members["paper/alpha0"] = {s: members["paper/alpha0"][s] for s in (0, 1)}
    rows = E.seed_layer_metrics(_pc(saes), VAR, members, 2, 300, 0, [("paper/alpha1", "paper/alpha0")])
    fvu = _index(rows, "cell")[("paper/alpha1", -1, "fvu", "diff", "paper/alpha0")]
    assert not fvu["paired_by_seed"] and fvu["n_seeds"] == 2 and fvu["ci_hi"] - fvu["ci_lo"] > 0.05


def test_cell_ci_covers_seed_spread_and_narrows_with_more_seeds():
    def width(n_seeds):
        scales = dict(enumerate(np.linspace(0.8, 1.2, n_seeds)))
        members = {"paper/alpha0": {s: E.sae_key("paper/alpha0", s) for s in scales}}
        pc = _pc({E.sae_key("paper/alpha0", s): v for s, v in scales.items()})
        rows = _index(E.seed_layer_metrics(pc, VAR, members, 2, 500, 0))
        cell = rows[("paper/alpha0", -1, "fvu", "value", "")]
        one = rows[("paper/alpha0", 0, "fvu", "value", "")]
        assert cell["n_seeds"] == n_seeds and one["n_seeds"] == 1
        return cell["ci_hi"] - cell["ci_lo"], one["ci_hi"] - one["ci_lo"]

    w3, ctx_only = width(3)
    w12, _ = width(12)
    assert w3 > 3 * ctx_only  # the seeds' spread is in the cell CI, not in a seed's context-only CI
    assert w12 < 0.75 * w3


def _latent_scores(seeds_by_alpha: dict[float, list[int]], shift: float = 0.0, n: int = 30) -> pd.DataFrame:
    """Per-latent scores of one layer: a large seed effect shared by every α of a seed, α adds `shift`."""
    rng = np.random.default_rng(0)
    rows = []
    for a, seeds in seeds_by_alpha.items():
        for s in seeds:
            for j, v in enumerate(0.5 + 0.2 * s + shift * a + 0.05 * rng.normal(size=n)):
                rows.append({"layer": 3, "alpha": a, "seed": s, "latent": j, "score": v})
    return pd.DataFrame(rows)


def test_table1_with_one_seed_is_the_latent_bootstrap_and_pairs_seeds_otherwise():
    one = _latent_scores({0.0: [0], 1.0: [0]}, shift=0.1)
    piv_a, gains_a = A.table1(one, 300, 0)
    piv_b, gains_b = A.table1(one.drop(columns="seed"), 300, 0)
    pd.testing.assert_frame_equal(piv_a, piv_b)
    pd.testing.assert_frame_equal(gains_a, gains_b)
    paired = _latent_scores({0.0: [0, 1, 2], 1.0: [0, 1, 2]}, shift=0.1)
    piv, gains = A.table1(paired, 300, 0)
    assert piv.loc[3, 1.0] == pytest.approx(paired[paired.alpha == 1].groupby("seed").score.mean().mean())
    g = gains.set_index("layer").loc[3]
    assert g.n_seeds == 3 and g.paired_by_seed and g.gain == pytest.approx(0.1, abs=0.03)
    assert g.ci_lo > 0.05 and g.ci_hi < 0.15  # the shared seed effect cancels
    _, gains = A.table1(_latent_scores({0.0: [0, 1], 1.0: [0, 1, 2]}, shift=0.1), 300, 0)
    g = gains.set_index("layer").loc[3]
    assert not g.paired_by_seed and g.n_seeds == 2 and g.ci_hi - g.ci_lo > 0.15  # unpaired: the seed spread stays


def test_rating_session_keeps_to_the_first_seed():
    saes = {"paper/alpha0": {"main": True, "alpha": 0.0}, "cap/alpha1": {"main": True, "alpha": 1.0},
            "paper/alpha0@seed1": {"main": True, "alpha": 0.0}, "cap/alpha1@seed1": {"main": True, "alpha": 1.0},
            "random": {"main": False, "alpha": None}}
    assert LP.rating_saes(SimpleNamespace(saes=saes)) == ["paper/alpha0", "cap/alpha1", "random"]
