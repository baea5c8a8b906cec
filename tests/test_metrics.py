import numpy as np
import pytest
import torch

from wsae_utils.core import metrics as M


def test_fvu_perfect_and_mean():
    x = torch.randn(100, 5) * torch.arange(1, 6) + 3
    assert M.fvu(x, x) == 0.0
    assert M.fvu(x, x.mean(0).expand_as(x)) == pytest.approx(1.0, abs=1e-12)
    # hand case: x = [[0],[2]], x̂ = [[1],[1]] → sse 2, variance about mean 1 → 2
    assert M.fvu(torch.tensor([[0.0], [2.0]]), torch.ones(2, 1)) == pytest.approx(1.0)


def test_fvu_accumulator_uses_global_mean_not_batch_means():
    x = torch.cat([torch.zeros(50, 3), torch.ones(50, 3) * 4])
    xh = x + 0.5
    acc = M.FVUAccumulator()
    acc.update(x[:50], xh[:50])
    acc.update(x[50:], xh[50:])  # each batch alone has zero variance
    assert acc.compute() == pytest.approx(M.fvu(x, xh))
    assert acc.compute() == pytest.approx(100 * 3 * 0.25 / (100 * 3 * 4))
    with pytest.raises(ValueError, match="zero variance"):
        M.fvu(torch.ones(4, 2), torch.ones(4, 2))


def test_l0_and_dead():
    acts = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 3.0]])
    assert M.l0(acts) == 1.5
    assert M.dead_fraction(M.firing_counts(acts)) == pytest.approx(1 / 3)


def test_matched_ground_truth_loss_recovers_permutation():
    torch.manual_seed(0)
    x = torch.rand(500, 4)
    perm = torch.tensor([2, 0, 3, 1])
    z = torch.zeros(500, 6)
    z[:, perm] = x  # latent perm[i] carries feature i, two extra latents stay zero
    loss, match = M.matched_ground_truth_loss(x, z)
    assert loss == pytest.approx(0.0, abs=1e-10)
    assert list(match) == perm.tolist()
    # an extra active latent costs either its energy (zero padding of x) or a worse match: never free
    z[:, 4] = 1.0
    loss2, _ = M.matched_ground_truth_loss(x, z)
    assert 0.5 < loss2 <= 1.0 + 1e-9


def test_matched_loss_with_fewer_latents_counts_unmatched_features():
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0]])
    z = x[:, 1:]  # only feature 1 is represented
    loss, match = M.matched_ground_truth_loss(x, z)
    assert loss == pytest.approx(1.0) and list(match) == [-1, 0]
    assert M.per_feature_ground_truth_loss(x, z, match).tolist() == [1.0, 0.0]


def test_mcc_and_max_cosine():
    torch.manual_seed(1)
    x = torch.rand(300, 3)
    mcc, per = M.mean_correlation_coefficient(x, torch.stack([2 * x[:, 1], x[:, 0] + 1, -x[:, 2]], 1))
    assert mcc == pytest.approx(1.0) and np.allclose(per, 1)
    feats = torch.eye(3)
    dirs = torch.tensor([[0.0, 2.0, 0.0], [1.0, 1.0, 0.0]])
    mc = M.max_cosine_per_feature(feats, dirs)
    assert mc == pytest.approx([1 / np.sqrt(2), 1.0, 0.0])
    assert M.recovered_features(mc, 0.99) == 1


def test_features_per_latent():
    probe = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.5, 0.0], [0.0, 0.2, 0.0]])
    # latent 0 ← 2 features, latent 1 ← 2 features, latent 2 dead
    assert M.features_per_latent(probe) == 2.0
    assert np.isnan(M.features_per_latent(torch.zeros(3, 3)))


def test_semantic_consistency_hand_cases():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    acts = torch.zeros(6, 4)
    acts[:2, 0] = 1.0  # only class 0 → 1.0
    acts[:, 1] = 1.0  # everywhere, balanced → 1/3
    acts[[0, 1, 2], 2] = 1.0  # 2 of class 0, 1 of class 1 → 2/3
    per = M.semantic_consistency(acts, labels)
    assert per[:3] == pytest.approx([1.0, 1 / 3, 2 / 3])
    assert np.isnan(per[3])  # never active: reported as NaN, not dropped
    s = M.consistency_summary(per)
    assert s["n_active_dims"] == 3 and s["n_dims"] == 4
    assert s["consistency_mean"] == pytest.approx((1 + 1 / 3 + 2 / 3) / 3)


def test_semantic_consistency_top_m():
    labels = torch.tensor([0, 1, 1, 2])
    acts = torch.tensor([[0.1], [0.9], [0.8], [0.05]])
    assert M.semantic_consistency(acts, labels, normalize_rows=False)[0] == pytest.approx(0.5)
    assert M.semantic_consistency(acts, labels, top_m=2, normalize_rows=False)[0] == pytest.approx(1.0)


# -- toy recovery metrics that cannot be inflated -----------------------------------------------------
def test_matched_cosine_is_one_latent_per_feature():
    # a crowded polygon: 8 unit vectors in a plane; the signed basis ±e1, ±e2 covers every direction within 22.5°
    theta = 2 * np.pi * np.arange(8) / 8
    feats = torch.tensor(np.stack([np.cos(theta), np.sin(theta)], 1))
    signed = torch.tensor([[1.0, 0], [-1, 0], [0, 1], [0, -1], [0, 0], [0, 0], [0, 0], [0, 0]])
    mean_max = float(np.mean(M.max_cosine_per_feature(feats, signed)))
    matched, per, match = M.matched_cosine(feats, signed)
    assert mean_max == pytest.approx((4 * 1.0 + 4 * np.cos(np.pi / 4)) / 8)
    assert matched == pytest.approx(0.5)  # four features matched exactly, four to zero rows
    assert sorted(match[per > 0.99].tolist()) == [0, 1, 2, 3]
    # fewer directions than features: the unmatched ones count 0
    assert M.matched_cosine(torch.eye(3), torch.eye(3)[:2])[0] == pytest.approx(2 / 3)


def test_mcc_split_matchable_vs_all():
    g = torch.Generator().manual_seed(0)
    x_fit, x_ev = torch.rand(400, 4, generator=g), torch.rand(400, 4, generator=g)
    # two latents that copy features 2 and 0 exactly
    mcc = M.mcc_split(x_fit, x_fit[:, [2, 0]], x_ev, x_ev[:, [2, 0]])
    assert mcc["mcc_matchable"] == pytest.approx(1.0)
    assert mcc["mcc_all"] == pytest.approx(0.5)  # capped at n_m / n by construction
    # the matching is fitted on one split only: latents that match on the fit split but are noise on the other
    noise = torch.rand(400, 2, generator=g)
    assert M.mcc_split(x_fit, x_fit[:, [2, 0]], x_ev, noise)["mcc_matchable"] < 0.2


def test_ground_truth_loss_split_and_zero_baseline():
    g = torch.Generator().manual_seed(1)
    x_fit, x_ev = torch.rand(300, 3, generator=g), torch.rand(300, 3, generator=g)
    perm = [2, 0, 1]
    loss, match = M.ground_truth_loss_split(x_fit, x_fit[:, perm], x_ev, x_ev[:, perm])
    assert loss == pytest.approx(0.0, abs=1e-12) and match.tolist() == [1, 2, 0]
    zero, _ = M.ground_truth_loss_split(x_fit, torch.zeros(300, 3), x_ev, torch.zeros(300, 3))
    assert zero == pytest.approx(float(x_ev.double().pow(2).sum(1).mean()))  # the "better than nothing" line
    # an extra latent left unmatched still costs its energy on the evaluation split
    z_ev = torch.cat([x_ev[:, perm], torch.full((300, 1), 0.5)], 1)
    z_fit = torch.cat([x_fit[:, perm], torch.zeros(300, 1)], 1)
    assert M.ground_truth_loss_split(x_fit, z_fit, x_ev, z_ev)[0] == pytest.approx(0.25)


def test_activation_feature_shares_hand_case():
    x = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.5, 0.0]])
    effective = torch.tensor([[1.0, 1.0, -1.0], [0.0, 0.0, 1.0]])  # latent 0 ← features 0, 1; latent 1 ← 2
    acts = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    s = M.activation_feature_shares(x, acts, effective)
    assert s["n_eff"].tolist() == pytest.approx([2.0, 1.0])
    assert s["top_share"].tolist() == pytest.approx([0.5, 1.0])
    # a Top-k latent whose encoder row overlaps feature 1 but that never fires on it counts one feature
    acts_topk = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    assert M.activation_feature_shares(x, acts_topk, effective)["n_eff"][0] == pytest.approx(1.0)
    # a latent that never fires is NaN, not counted
    assert np.isnan(M.activation_feature_shares(x, torch.zeros(4, 2), effective)["n_eff"]).all()


def test_features_per_latent_relative_threshold():
    probe = torch.tensor([[1.0, 0.0], [0.05, 0.0], [0.5, 0.0]])
    assert M.features_per_latent(probe, tau=0.0) == 3.0
    assert M.features_per_latent_relative(probe, 0.1) == 2.0  # 0.05 < 0.1·max
    assert np.isnan(M.features_per_latent_relative(torch.zeros(2, 2), 0.1))
