"""Pure metric functions: reconstruction (FVU, L0, dead), ground-truth recovery, semantic consistency.

Every function takes tensors/arrays and returns numbers or arrays; nothing here trains or reads files.
All reconstruction metrics are unweighted, also for a WSAE: Γ changes training, never the yardstick.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor


# -- reconstruction -----------------------------------------------------------------------------------
def fvu(x: Tensor, x_hat: Tensor) -> float:
    """Fraction of variance unexplained Σ‖x − x̂‖² / Σ‖x − x̄‖², x̄ the per-dimension mean of `x`."""
    acc = FVUAccumulator()
    acc.update(x, x_hat)
    return acc.compute()


class FVUAccumulator:
    """Streaming FVU over many batches: sums kept separately in float64, mean taken over the whole set.

    With per-dimension `weights` w it is the weighted FVU Σ w (x − x̂)² / Σ w (x − x̄)²: a weighted SAE's own
    objective (w = `error_weights(γ)`) on held-out data, as a fraction of predicting the mean.
    """

    def __init__(self, weights: Tensor | None = None) -> None:
        self.sse = 0.0
        self.n = 0
        self.sum: Tensor | None = None
        self.sumsq: Tensor | None = None
        self.weights = None if weights is None else weights.detach().double().cpu()

    def update(self, x: Tensor, x_hat: Tensor) -> None:
        """Add one batch [B, d] and its reconstruction."""
        x64, xh64 = x.detach().double().cpu(), x_hat.detach().double().cpu()
        sq_err = (x64 - xh64).pow(2)
        self.sse += float(sq_err.sum() if self.weights is None else (sq_err * self.weights).sum())
        s, sq = x64.sum(0), x64.pow(2).sum(0)
        self.sum = s if self.sum is None else self.sum + s
        self.sumsq = sq if self.sumsq is None else self.sumsq + sq
        self.n += x64.shape[0]

    def total_variance(self) -> float:
        """Σ over rows and dims of (x − x̄)² (weighted per dimension when the accumulator has weights)."""
        if self.n == 0:
            raise ValueError("no data accumulated")
        per_dim = self.sumsq - self.sum.pow(2) / self.n
        return float(per_dim.sum() if self.weights is None else (per_dim * self.weights).sum())

    def compute(self) -> float:
        """FVU; 0 for a perfect reconstruction, 1 for predicting the mean."""
        tv = self.total_variance()
        if tv <= 1e-30:
            raise ValueError("evaluation data has zero variance: FVU is undefined")
        return self.sse / tv


def l0(acts: Tensor) -> float:
    """Mean number of nonzero latents per row."""
    return float((acts != 0).sum(-1).float().mean())


def firing_counts(acts: Tensor) -> Tensor:
    """Number of rows on which each latent is nonzero."""
    return (acts != 0).sum(0)


def dead_fraction(counts: Tensor | np.ndarray) -> float:
    """Fraction of latents that never fired over the window the counts were taken on."""
    counts = torch.as_tensor(counts)
    return float((counts == 0).float().mean())


# -- ground-truth recovery (toy models) --------------------------------------------------------------
def _padded_square(cost: np.ndarray, row_pad: np.ndarray, col_pad: np.ndarray) -> np.ndarray:
    """Pad an [n, m] cost matrix to square with the cost of leaving a row/column unmatched."""
    n, m = cost.shape
    size = max(n, m)
    out = np.zeros((size, size))
    out[:n, :m] = cost
    if m < size:
        out[:n, m:] = row_pad[:, None]
    if n < size:
        out[n:, :m] = col_pad[None, :]
    return out


def matched_ground_truth_loss(x: Tensor, z: Tensor) -> tuple[float, np.ndarray]:
    """L_GT = min over latent↔feature assignments of E‖x − P z‖² (Hungarian, exact).

    Unmatched latents are compared with 0 (the theory's zero padding) and unmatched features with 0.
    Returns (L_GT, match) with match[i] = latent assigned to feature i, or −1.
    """
    x64, z64 = x.double(), z.double()
    N = x64.shape[0]
    ex2, ez2 = x64.pow(2).mean(0), z64.pow(2).mean(0)
    cross = x64.T @ z64 / N
    cost = (ex2[:, None] + ez2[None, :] - 2 * cross).numpy()
    full = _padded_square(cost, ex2.numpy(), ez2.numpy())
    rows, cols = linear_sum_assignment(full)
    n, m = cost.shape
    match = np.full(n, -1)
    for r, c in zip(rows, cols, strict=True):
        if r < n and c < m:
            match[r] = c
    return float(full[rows, cols].sum()), match


def per_feature_ground_truth_loss(x: Tensor, z: Tensor, match: np.ndarray) -> np.ndarray:
    """E(x_i − z_match(i))² per feature (E x_i² for an unmatched feature)."""
    x64, z64 = x.double(), z.double()
    out = np.empty(x64.shape[1])
    for i, j in enumerate(match):
        zi = z64[:, j] if j >= 0 else torch.zeros_like(x64[:, i])
        out[i] = float((x64[:, i] - zi).pow(2).mean())
    return out


def mean_correlation_coefficient(x: Tensor, z: Tensor) -> tuple[float, np.ndarray]:
    """MCC: mean |Pearson r| over the Hungarian matching that maximises it (constant columns count 0)."""
    a = _abs_corr(x, z)
    rows, cols = linear_sum_assignment(-a)
    matched = np.zeros(a.shape[0])
    matched[rows] = a[rows, cols]
    return float(matched.mean()), matched


def max_cosine_per_feature(features: Tensor, directions: Tensor) -> np.ndarray:
    """For each ground-truth direction (row of `features`), the best cosine with any row of `directions`."""
    f = features / features.norm(dim=1, keepdim=True).clamp_min(1e-12)
    d = directions / directions.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (f.double() @ d.double().T).max(dim=1).values.numpy()


def features_per_latent(probe_acts: Tensor, tau: float = 0.0, alive: Tensor | None = None) -> float:
    """Average number of ground-truth features that activate each alive latent.

    `probe_acts[i, j]` is latent j's response to an input with only feature i on. A latent is alive when it
    responds to at least one feature (or as given by `alive`); the mean is over alive latents.
    """
    active = probe_acts > tau
    alive = active.any(0) if alive is None else alive
    if not bool(alive.any()):
        return float("nan")
    return float(active[:, alive].sum(0).float().mean())


def recovered_features(max_cos: np.ndarray, threshold: float = 0.99) -> int:
    """Number of ground-truth features whose best-matching direction has cosine ≥ `threshold`."""
    return int((np.asarray(max_cos) >= threshold).sum())


# -- semantic (class) consistency (vision) ----------------------------------------------------------
def semantic_consistency(
    acts: Tensor | np.ndarray,
    labels: Tensor | np.ndarray,
    threshold: float = 1e-5,
    top_m: int | None = None,
    normalize_rows: bool = True,
) -> np.ndarray:
    """Per-dimension class consistency, as NCL's code defines it; NaN for a dimension never active.

    For dimension j, S_j = samples with |a_j| > `threshold` (after row-wise L2 normalisation when
    `normalize_rows`), consistency_j = (count of S_j's most frequent class) / |S_j|. With `top_m`, S_j is
    instead the m samples with the largest a_j among the active ones.
    """
    a = torch.as_tensor(acts, dtype=torch.float32)
    y = torch.as_tensor(labels, dtype=torch.long)
    if a.ndim != 2 or y.shape != (a.shape[0],):
        raise ValueError(f"acts must be [N, D] and labels [N]; got {tuple(a.shape)} and {tuple(y.shape)}")
    if normalize_rows:
        a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)
    active = a.abs() > threshold
    n_classes = int(y.max()) + 1 if y.numel() else 0
    onehot = torch.nn.functional.one_hot(y, n_classes).float()
    if top_m is not None:
        masked = torch.where(active, a.abs(), torch.full_like(a, -1.0))
        m = min(top_m, a.shape[0])
        vals, idx = masked.topk(m, dim=0)
        sel = torch.zeros_like(active)
        sel.scatter_(0, idx, vals > 0)
        active = sel
    counts = active.float().T @ onehot  # [D, C]
    n = counts.sum(1)
    out = (counts.max(1).values / n.clamp_min(1)).numpy().astype(float)
    out[n.numpy() == 0] = np.nan
    return out


def consistency_summary(per_dim: np.ndarray) -> dict:
    """Mean over active dimensions, plus how many dimensions were active (never silently dropped)."""
    per_dim = np.asarray(per_dim, dtype=float)
    active = ~np.isnan(per_dim)
    return {
        "consistency_mean": float(per_dim[active].mean()) if active.any() else float("nan"),
        "n_active_dims": int(active.sum()),
        "n_dims": int(per_dim.size),
    }


# -- ground-truth recovery that cannot be inflated (toy models) --------------------------------------
def matched_cosine(features: Tensor, directions: Tensor) -> tuple[float, np.ndarray, np.ndarray]:
    """Hungarian-matched cosine: one latent direction per feature (one-to-one), maximising the summed cosine.

    Unlike the mean max cosine, a latent cannot serve several features, so a basis that covers only a few
    directions (e.g. the signed basis on a crowded polygon) scores low. Returns (mean over all features, with 0
    for a feature left unmatched when there are fewer directions than features; per-feature cosine;
    match[i] = direction assigned to feature i or −1).
    """
    f = features.double() / features.double().norm(dim=1, keepdim=True).clamp_min(1e-12)
    d = directions.double() / directions.double().norm(dim=1, keepdim=True).clamp_min(1e-12)
    cos = (f @ d.T).numpy()
    rows, cols = linear_sum_assignment(-cos)
    per = np.zeros(cos.shape[0])
    match = np.full(cos.shape[0], -1)
    per[rows], match[rows] = cos[rows, cols], cols
    return float(per.mean()), per, match


def _abs_corr(x: Tensor, z: Tensor) -> np.ndarray:
    """|Pearson r| between every column of x [N, n] and of z [N, m]; constant columns give 0."""
    x64, z64 = x.double(), z.double()
    xc, zc = x64 - x64.mean(0), z64 - z64.mean(0)
    xs, zs = xc.norm(dim=0), zc.norm(dim=0)
    corr = (xc.T @ zc) / (xs[:, None] * zs[None, :]).clamp_min(1e-30)
    corr[:, zs < 1e-12] = 0
    corr[xs < 1e-12, :] = 0
    return corr.abs().numpy()


def mcc_split(x_fit: Tensor, z_fit: Tensor, x_eval: Tensor, z_eval: Tensor) -> dict[str, float | np.ndarray]:
    """MCC with the feature↔latent matching fitted on one split and the correlations read on another.

    `mcc_matchable` averages over the min(n, n_m) matched pairs only, so an SAE with fewer latents than
    features is not capped at n_m / n by construction; `mcc_all` divides the same sum by n (unmatched
    features count 0), the classic definition. `per_feature` holds each feature's held-out |r| (0 unmatched).
    """
    a_fit = _abs_corr(x_fit, z_fit)
    rows, cols = linear_sum_assignment(-a_fit)
    a_eval = _abs_corr(x_eval, z_eval)
    per = np.zeros(a_fit.shape[0])
    per[rows] = a_eval[rows, cols]
    return {"mcc_matchable": float(a_eval[rows, cols].mean()) if len(rows) else float("nan"),
            "mcc_all": float(per.mean()), "per_feature": per}


def ground_truth_loss_split(x_fit: Tensor, z_fit: Tensor, x_eval: Tensor, z_eval: Tensor) -> tuple[float, np.ndarray]:
    """L_GT = E‖x − P z‖² with the assignment P fitted (Hungarian) on one split and the loss read on another.

    Unmatched features are compared with 0 and unmatched latents' energy counts (the theory's zero padding), as
    in `matched_ground_truth_loss`. The all-zero latent vector scores E‖x‖², the "better than nothing" line.
    """
    _, match = matched_ground_truth_loss(x_fit, z_fit)
    x64, z64 = x_eval.double(), z_eval.double()
    loss = float(per_feature_ground_truth_loss(x64, z64, match).sum())
    used = set(int(j) for j in match if j >= 0)
    spare = [j for j in range(z64.shape[1]) if j not in used]
    if spare:
        loss += float(z64[:, spare].pow(2).mean(0).sum())
    return loss, match


def activation_feature_shares(x: Tensor, acts: Tensor, effective: Tensor, min_fires: int = 1) -> dict[str, np.ndarray]:
    """Which ground-truth features drive each latent *when it fires on data* (Top-k aware, no threshold).

    `effective[j, i]` is feature i's weight in latent j's pre-activation (W_enc W_p for a toy SAE; biases are
    not features). Over the rows where latent j fires, feature i contributes A_ij = Σ_rows x_i · max(E_ji, 0).
    Per latent: `top_share` = max_i A_ij / Σ_i A_ij (1 for a monosemantic latent) and `n_eff` = (Σ_i A_ij)² /
    Σ_i A_ij² (the participation ratio: the effective number of features per latent). Latents firing on fewer
    than `min_fires` rows get NaN. Because only rows on which the latent actually fires count, a Top-k latent
    that wins only for its own feature scores 1 even if its encoder row overlaps many features.
    """
    fired = (acts != 0).double()
    A = (x.double().T @ fired) * effective.double().clamp_min(0).T  # [n, m]
    total = A.sum(0)
    ok = (fired.sum(0) >= min_fires) & (total > 0)
    share = torch.where(ok, A.max(0).values / total.clamp_min(1e-30), torch.full_like(total, float("nan")))
    n_eff = torch.where(ok, total.pow(2) / A.pow(2).sum(0).clamp_min(1e-30), torch.full_like(total, float("nan")))
    return {"top_share": share.numpy(), "n_eff": n_eff.numpy(), "fires": fired.sum(0).numpy()}


def features_per_latent_relative(probe_acts: Tensor, tau_rel: float) -> float:
    """Features per latent where feature i counts for latent j if its probe response exceeds τ_rel · max_i of j.

    A relative threshold does not depend on the activation scale; only latents with a positive response count.
    """
    peak = probe_acts.max(0).values
    alive = peak > 0
    if not bool(alive.any()):
        return float("nan")
    active = probe_acts[:, alive] > tau_rel * peak[alive]
    return float(active.sum(0).float().mean())
