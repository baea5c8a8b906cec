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
    """Streaming FVU over many batches: sums kept separately in float64, mean taken over the whole set."""

    def __init__(self) -> None:
        self.sse = 0.0
        self.n = 0
        self.sum: Tensor | None = None
        self.sumsq: Tensor | None = None

    def update(self, x: Tensor, x_hat: Tensor) -> None:
        """Add one batch [B, d] and its reconstruction."""
        x64, xh64 = x.detach().double().cpu(), x_hat.detach().double().cpu()
        self.sse += float((x64 - xh64).pow(2).sum())
        s, sq = x64.sum(0), x64.pow(2).sum(0)
        self.sum = s if self.sum is None else self.sum + s
        self.sumsq = sq if self.sumsq is None else self.sumsq + sq
        self.n += x64.shape[0]

    def total_variance(self) -> float:
        """Σ over rows and dims of (x − x̄)²."""
        if self.n == 0:
            raise ValueError("no data accumulated")
        return float((self.sumsq - self.sum.pow(2) / self.n).sum())

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
    x64, z64 = x.double(), z.double()
    xc, zc = x64 - x64.mean(0), z64 - z64.mean(0)
    xs, zs = xc.norm(dim=0), zc.norm(dim=0)
    corr = (xc.T @ zc) / (xs[:, None] * zs[None, :]).clamp_min(1e-30)
    corr[:, zs < 1e-12] = 0
    corr[xs < 1e-12, :] = 0
    a = corr.abs().numpy()
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
