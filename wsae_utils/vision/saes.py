"""Vision analysis: SAE inputs, consistency weights and their permuted control, latent consistency, SAE grids.

Pipeline (NCL, Wang et al. ICLR 2024, as used by arXiv 2506.15963 §5): backbone (`backbones`) → projector
trained with NT-Xent, NCL or CL (`contrastive`) → SAE input ReLU(projector output), L2-normalised per sample →
per-dimension semantic (class) consistency on the TRAIN split → WSAE weights γ = consistency^α → Top-k SAEs
per (replicate, SAE seed, weighting), trained side by side (`train_sae_grid`) → latent consistency on
held-out images, reported several ways (`latent_consistency_table`), with the small-sample floor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsae_utils.core.metrics import semantic_consistency
from wsae_utils.core.sae import (
    SAEConfig,
    SparseAutoencoder,
    StackedSAE,
    StackedSAEConfig,
    make_gamma,
    permute_gamma,
)
from wsae_utils.core.stats import mean_ci
from wsae_utils.core.train import TrainConfig, stacked_batches, train_stacked

ACTIVE_THRESHOLD = 1e-5
"""An entry counts as active / nonzero when |value| > this (NCL's threshold, after row-wise L2 norm)."""

def training_non_neg(method: str, ncl_non_neg: str) -> str:
    """The `non_neg` of the NT-Xent a method trains with: NCL's map for 'ncl', 'none' (plain SimCLR) for 'cl'."""
    if method == "ncl":
        if ncl_non_neg == "none":
            raise ValueError("NCL needs a non-negative output map ('relu' or 'rep_relu'), got 'none'")
        return ncl_non_neg
    if method == "cl":
        return "none"
    raise ValueError(f"method={method!r} is not one of ('ncl', 'cl')")


# =====================================================================================================
# Feature read-outs and the NCL-vs-CL comparison
# =====================================================================================================
def readouts(z_raw: Tensor, method: str) -> dict[str, Tensor]:
    """The ways a projector output is read for the consistency comparison, each row-wise L2-normalised.

    NCL: ReLU(z). CL: raw z (as NCL's evaluation reads a CL model: dense and signed, so every dimension is
    active on every image and the all-active consistency sits at chance by construction), ReLU(z) (the
    positive tail only) and ±split ([ReLU(z), ReLU(−z)]: both tails as separate non-negative dimensions).
    """
    if method == "ncl":
        return {"ncl": F.normalize(z_raw.relu(), dim=1)}
    return {
        "cl_raw": F.normalize(z_raw, dim=1),
        "cl_relu": F.normalize(z_raw.relu(), dim=1),
        "cl_split": F.normalize(torch.cat([z_raw.relu(), (-z_raw).relu()], 1), dim=1),
    }


def signed_top_m_consistency(z: Tensor, labels: Tensor, top_m: int) -> np.ndarray:
    """Per-dimension top-m consistency ranked by the signed value (largest positive first), not by |z|.

    Ranking by |z| mixes a signed feature's two tails (its most positive and most negative images); ranking
    by value keeps one tail, as a ReLU read-out would. Dimensions with no positive entry are NaN.
    """
    zn = F.normalize(z.float(), dim=1).clamp_min(0)
    return semantic_consistency(zn, labels, ACTIVE_THRESHOLD, top_m, normalize_rows=False)


def feature_sparsity(z: Tensor, threshold: float = ACTIVE_THRESHOLD) -> float:
    """Mean over samples of the fraction of entries with |z| <= threshold (after row-wise L2 norm)."""
    z = F.normalize(z.float(), dim=1)
    return float((z.abs() <= threshold).float().mean())


def linear_probe(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, epochs: int = 100,
                 lr: float = 0.1, weight_decay: float = 1e-4, seed: int = 0) -> float:
    """Test accuracy of a multinomial logistic regression (standardised inputs, full-batch L-BFGS)."""
    torch.manual_seed(seed)
    mu, sd = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    xtr, xte = (x_train - mu) / sd, (x_test - mu) / sd
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    lin = nn.Linear(xtr.shape[1], n_classes)
    opt = torch.optim.LBFGS(lin.parameters(), lr=lr * 10, max_iter=epochs, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(lin(xtr), y_train) + weight_decay * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float((lin(xte).argmax(1) == y_test).float().mean())


def consistency_report(z: Tensor, labels: Tensor, top_m: int | None = None) -> dict[str, float]:
    """Mean semantic consistency over active dims, #active dims, and chance (largest class share)."""
    per = semantic_consistency(z, labels, ACTIVE_THRESHOLD, top_m)
    active = ~np.isnan(per)
    counts = torch.bincount(labels)
    return {
        "consistency": float(np.nanmean(per)) if active.any() else float("nan"),
        "n_active_dims": int(active.sum()),
        "n_dims": int(per.size),
        "chance": float(counts.max() / counts.sum()),
    }


# =====================================================================================================
# Latent consistency, several ways, and its small-sample floor
# =====================================================================================================
def chance_floor(n: np.ndarray | list[int], class_probs: np.ndarray, draws: int = 4000, seed: int = 0
                 ) -> np.ndarray:
    """Expected consistency of a latent that fires on n images drawn at random: E[max class count] / n.

    1.0 for n = 1 (one image is always 'consistent'), falling towards the largest class share as n grows.
    Monte Carlo over `draws` multinomial draws per distinct n (seeded); NaN for n = 0.
    """
    n = np.asarray(n, dtype=np.int64)
    p = np.asarray(class_probs, dtype=float) / np.sum(class_probs)
    rng = np.random.default_rng(seed)
    out = np.full(n.shape, np.nan)
    for v in np.unique(n[n > 0]):
        out[n == v] = rng.multinomial(int(v), p, size=draws).max(1).mean() / v
    return out


def active_mask(acts: Tensor, threshold: float = ACTIVE_THRESHOLD) -> Tensor:
    """Entries that count as firing: |a| > threshold after row-wise L2 norm (the consistency's rule)."""
    a = acts.float()
    return (a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)).abs() > threshold


def latent_consistency_table(acts: Tensor, labels: Tensor, n_match: int | None = None, min_firing: int = 10,
                             floor_draws: int = 2000) -> dict[str, float]:
    """Held-out latent consistency read several ways, with the floor a random latent would score.

    - `all_live`: mean over latents firing on >= 1 image (NCL's definition; a 1-image latent scores 1.0);
    - `matched_top`: mean over the `n_match` most frequently firing latents (compares models with different
      numbers of live latents on equal counts);
    - `freq_weighted`: weighted by firing count (the consistency of a random (image, firing latent) pair);
    - `dead_as_chance`: mean over all latents, a dead one scored at chance (the largest class share);
    - `min_firing`: mean over latents firing on >= `min_firing` images;
    - `*_floor`: the same averages of `chance_floor` (what label-blind latents with these firing counts would
      score); `above_floor_*` = value − floor.
    Also the counts behind them: live, dead, firing once, scoring exactly 1.0.
    """
    y = torch.as_tensor(labels, dtype=torch.long)
    per = semantic_consistency(acts, y, ACTIVE_THRESHOLD)
    counts = active_mask(acts).sum(0).numpy()
    class_probs = torch.bincount(y).numpy() / y.numel()
    chance = float(class_probs.max())
    floor = chance_floor(counts, class_probs, floor_draws)
    live = counts > 0
    n_live = int(live.sum())
    n_match = n_live if n_match is None else min(n_match, n_live)
    top = np.argsort(-counts, kind="stable")[:n_match]
    hi = counts >= min_firing

    def mean(x: np.ndarray, mask: np.ndarray) -> float:
        return float(x[mask].mean()) if mask.any() else float("nan")

    top_mask = np.zeros_like(live)
    top_mask[top] = True
    w = counts.astype(float)
    freq = float((per[live] * w[live]).sum() / w[live].sum()) if n_live else float("nan")
    freq_floor = float((floor[live] * w[live]).sum() / w[live].sum()) if n_live else float("nan")
    out = {
        "all_live": mean(per, live), "all_live_floor": mean(floor, live),
        "matched_top": mean(per, top_mask), "matched_top_floor": mean(floor, top_mask),
        "freq_weighted": freq, "freq_weighted_floor": freq_floor,
        "dead_as_chance": float(np.where(live, per, chance).mean()),
        "dead_as_chance_floor": float(np.where(live, floor, chance).mean()),
        "min_firing": mean(per, hi), "min_firing_floor": mean(floor, hi),
        "n_latents": int(counts.size), "n_live": n_live, "dead_frac": 1 - n_live / counts.size,
        "n_match": int(n_match), "n_min_firing": int(hi.sum()), "min_firing_n": int(min_firing),
        "n_fire_once": int((counts == 1).sum()),
        "frac_live_exactly_one": float((per[live] == 1.0).mean()) if n_live else float("nan"),
        "chance": chance,
    }
    for k in ("all_live", "matched_top", "freq_weighted", "dead_as_chance", "min_firing"):
        out[f"above_floor_{k}"] = out[k] - out[f"{k}_floor"]
    return out


CONSISTENCY_WAYS = ("all_live", "matched_top", "freq_weighted", "dead_as_chance", "min_firing")
"""The averages of `latent_consistency_table`, in the order reports show them."""


# =====================================================================================================
# Weights and the permuted-weight control
# =====================================================================================================
def consistency_weights(per_dim: np.ndarray, alpha: float, never_active: str = "min",
                        normalize: str = "mean") -> Tensor:
    """WSAE weights γ_i = consistency_i^α from per-dimension (train-split) semantic consistency.

    Never-active dimensions (NaN consistency) get the smallest active consistency ('min': still
    reconstructed, as the least trusted dimension) or 0 ('zero': ignored by the loss). α = 0 → all ones.
    """
    c = np.asarray(per_dim, dtype=float).copy()
    nan = np.isnan(c)
    if nan.all():
        raise ValueError("no input dimension is ever active: semantic consistency is undefined")
    if never_active == "min":
        c[nan] = np.nanmin(c)
    elif never_active == "zero":
        c[nan] = 0.0
    else:
        raise ValueError(f"never_active={never_active!r} is not one of ('min', 'zero')")
    return make_gamma(torch.tensor(c, dtype=torch.float32), alpha, normalize)


def permuted_weights(gamma: Tensor, movable: Tensor | np.ndarray, seed: int) -> Tensor:
    """The control (`permute_gamma`): only the `movable` dimensions (active on the train split) exchange γ values;
    never-active dimensions keep theirs, so the control does not spend weight on inputs that are always zero."""
    return permute_gamma(gamma, seed, torch.as_tensor(movable, dtype=torch.bool))


# =====================================================================================================
# Many Top-k SAEs side by side
# =====================================================================================================
@dataclass
class SAEJob:
    """One SAE of a grid: which training rows, which weights, which seed (init and batch order)."""

    data: int
    """Index into the list of training sets (a backbone replicate)."""
    gamma: Tensor
    """Per-input-dimension weights [d_in]."""
    seed: int
    """Seed of the SAE's initialisation and batch draws; jobs that share (data, seed) see the same batches."""


def train_sae_grid(train_sets: list[Tensor], jobs: list[SAEJob], sae_cfg: SAEConfig, cfg: TrainConfig,
                   device: str | torch.device = "cpu", show_progress: bool = True
                   ) -> tuple[list[SparseAutoencoder], list[list[tuple[int, float]]]]:
    """Train every job's untied Top-k SAE (biases, unit-norm decoder, AuxK) at once as one `StackedSAE`.

    Each job gets exactly the model `SparseAutoencoder(sae_cfg, seed)` with b_dec at its data mean and
    `SAETrainer`'s loss, schedule and dead-latent rule, through the one stacked trainer (`core.train.train_stacked`,
    the toy grids' too) on the sparse Top-k path (`kernels.StackedTopKSAE`); `test_vision_controls` checks that the
    grid and `SAETrainer` agree. Returns the trained SAEs and each job's training loss every `cfg.log_every` steps.
    """
    if sae_cfg.activation != "topk" or sae_cfg.tied or not sae_cfg.bias or not sae_cfg.normalize_decoder:
        raise ValueError("train_sae_grid trains untied Top-k SAEs with biases and unit-norm decoder rows")
    device = torch.device(device)
    inits = [SparseAutoencoder(sae_cfg, seed=j.seed) for j in jobs]
    for sae, j in zip(inits, jobs, strict=True):
        sae.init_b_dec_(train_sets[j.data][:4096])
    stack = StackedSAE(StackedSAEConfig(sae_cfg.d_in, sae_cfg.n_latents, "topk_auxk", k=sae_cfg.k, sparse=True),
                       [j.seed for j in jobs], device=device)
    stack.load_(inits)
    gamma = torch.stack([j.gamma.float() for j in jobs]).to(device)
    batch_fn = stacked_batches(train_sets, [j.data for j in jobs], [j.seed for j in jobs], cfg.batch_size, device)
    # fused Adam: one kernel over the stacked tensors (elementwise ops on all parameters dominate a step on CPU)
    log = train_stacked(stack, batch_fn, cfg, gamma, fused_adam=True,
                        desc=f"{len(jobs)} SAEs" if show_progress else None)
    losses = np.stack(log.train_loss)
    if not np.isfinite(losses).all():
        bad = sorted({int(g) for g in np.flatnonzero(~np.isfinite(losses).all(0))})
        raise FloatingPointError(f"SAE grid loss became non-finite for jobs {bad}")
    curves = [[(s, float(v)) for s, v in zip(log.train_steps, losses[:, g], strict=True)] for g in range(len(jobs))]
    out = []
    for g in range(len(jobs)):
        sae = SparseAutoencoder(sae_cfg, device="cpu")
        with torch.no_grad():
            for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
                getattr(sae, name).copy_(getattr(stack, name)[g].detach().cpu())
        out.append(sae)
    return out, curves


@torch.no_grad()
def encode_dense(sae: nn.Module, x: Tensor, batch_size: int = 4096, device: str | torch.device = "cpu"
                 ) -> tuple[Tensor, Tensor]:
    """Dense SAE latents and reconstructions for all rows of `x` (CPU tensors)."""
    acts, recon = [], []
    sae.to(device)
    for s in range(0, x.shape[0], batch_size):
        xb = x[s : s + batch_size].to(device)
        a = sae.encode(xb)
        acts.append(a.cpu())
        recon.append(sae.decode(a).cpu())
    return torch.cat(acts), torch.cat(recon)


def top_activating(acts: Tensor, latents: list[int], n: int) -> list[list[int]]:
    """For each latent, the indices of the ≤ n rows with the largest positive activation."""
    out = []
    for j in latents:
        col = acts[:, j]
        k = min(n, int((col > 0).sum()))
        out.append(col.topk(k).indices.tolist() if k else [])
    return out


# =====================================================================================================
# Paired effects
# =====================================================================================================
def paired_effect(values: dict[float, list[float]], baseline: float = 0.0) -> dict[float, dict[str, float]]:
    """Mean and 95 % t-interval of paired differences value(α, seed) − value(baseline, seed) per α."""
    base = np.asarray(values[baseline], dtype=float)
    return {a: mean_ci(np.asarray(v, dtype=float) - base) for a, v in values.items() if a != baseline}


def gain_beyond_control(treated: list[float], control: list[float], baseline: list[float]) -> dict[str, float]:
    """The WSAE gain that counts: treated − control (paired), next to treated − baseline and control − baseline.

    `reproduced` only when the treated-minus-control interval lies above 0 (the weighting's semantic signal,
    not its skew, made the difference) and treated − baseline is above 0 too.
    """
    t, c, b = (np.asarray(v, dtype=float) for v in (treated, control, baseline))
    vs_control, vs_base, control_vs_base = mean_ci(t - c), mean_ci(t - b), mean_ci(c - b)
    return {
        **{f"vs_control_{k}": v for k, v in vs_control.items()},
        **{f"vs_base_{k}": v for k, v in vs_base.items()},
        **{f"control_vs_base_{k}": v for k, v in control_vs_base.items()},
        "beyond_control": bool(vs_control["ci_low"] > 0 and vs_base["ci_low"] > 0),
    }


def ncl_verdict(effects: list[dict[str, float]], n_replicates: int) -> str:
    """The NCL-vs-CL claim from its NCL − CL effects (`mean_ci` dicts, one per fair comparison): with ≥ 2
    replicates reproduced iff every CI lies above 0, otherwise not reproduced; with one replicate only the signs
    are known: reproduced if every mean is positive, not reproduced if one is negative, else not decidable."""
    if n_replicates >= 2:
        return "reproduced" if all(e["ci_low"] > 0 for e in effects) else "not reproduced"
    if all(e["mean"] > 0 for e in effects):
        return "reproduced"
    return "not reproduced" if any(e["mean"] < 0 for e in effects) else "not decidable here"


PAPER_WSAE_GAIN = 0.020
"""The paper's vision WSAE effect: latent semantic consistency 40.2 → 42.2 % at α = 1 (ImageNet-100, ResNet-18)."""
PAPER_NCL_GAIN = 0.32
"""The NCL paper's consistency gain on a 10-class set: CIFAR-10, CL ≈ 14.7 % → NCL ≈ 46.7 % (Fig. 4, read off)."""


def wsae_verdict(treated: list[float], control: list[float], baseline: list[float],
                 paper_effect: float = PAPER_WSAE_GAIN) -> dict[str, object]:
    """The vision-wsae verdict with what it could detect, from per-unit (replicate) values of the verdict metric.

    Rule (`gain_beyond_control`): reproduced iff treated − control and treated − baseline both have 95 % intervals
    above 0; not decidable with fewer than 2 units. `mde`: the smallest uniform gain the rule detects with 80 %
    power at the measured spread of both differences (`power.joint_mde`); when it exceeds `paper_effect` the verdict
    is gated (`power.power_gated_verdict`). `injected`: the rule's verdict on this run's own numbers with
    `paper_effect` added to every treated unit (what this run would have said had the weighting gained the paper's
    effect on top of what it did); `units_needed`: how many units make the paper's effect detectable at this spread.
    """
    from wsae_utils.core.power import joint_mde, power_gated_verdict, replicates_needed

    t, c, b = (np.asarray(v, dtype=float) for v in (treated, control, baseline))
    n = len(t)
    res = gain_beyond_control(t, c, b)
    if n < 2:
        return {**res, "verdict": "not decidable here", "why_power": "fewer than 2 units: no interval", "mde": math.nan,
                "injected": "not decidable here", "units_needed": None, "n": n}
    raw = "reproduced" if res["beyond_control"] else "not reproduced"
    mde = joint_mde([t - c, t - b])
    verdict, why = power_gated_verdict(raw, 100 * mde, 100 * paper_effect, 100 * res["vs_base_ci_high"], " pt")
    injected = "reproduced" if gain_beyond_control(t + paper_effect, c, b)["beyond_control"] else "not reproduced"
    sd = max(float(np.std(t - c, ddof=1)), float(np.std(t - b, ddof=1)))
    return {**res, "verdict": verdict, "rule_verdict": raw, "why_power": why, "mde": mde, "injected": injected,
            "units_needed": replicates_needed(sd, paper_effect, power=0.8 ** 0.5), "n": n}
