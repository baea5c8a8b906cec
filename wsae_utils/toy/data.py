"""Toy model of superposition for the SAE theory: sparse features x, superposition matrices W_p, oracles.

Notation follows the paper (arXiv 2506.15963): x ∈ R^n ground-truth features (x_i = 0 with probability S,
else positive), x_p = W_p x ∈ R^{n_p} observed polysemantic features, SAE x_m = σ(W_m x_p) with a tied decoder
x̂_p = W_mᵀ x_m. Rows of a batch are samples, so `x_p = x @ W_pᵀ`.

W_p comes three ways (`make_wp`), always with unit-norm columns:
- "constructed": monosemantic rows (one feature each), digons (a row carrying w and −w) and regular
  polygons (k features on a circle in a 2-D subspace of two rows). Digons, triangles and squares have
  non-positive interference; a k-gon with k ≥ 5 has positive interference between neighbours. At most 2·n_p
  vectors in R^{n_p} can have pairwise non-positive inner products, so the exact assumption needs n ≤ 2·n_p
  (e.g. n = 34, n_p = 20: 5 monosemantic rows, 13 digons, one triangle); at n = 200, n_p = 20 the remaining
  features are packed as polygons and many neighbours interfere positively.
- "random": Gaussian entries, columns normalised.
- "elhage": the ReLU-output toy model x̂ = ReLU(WᵀW x + b) of Elhage et al. (2022), trained with feature
  importance I_i = decay^i; its W normalised to unit columns (its hidden basis is not privileged, so
  "monosemantic rows" are not meaningful there).

Oracle monosemanticity of an input dimension (row k of W_p) is the inverse participation ratio of the row's
squared weights, m_k = Σ_i W_ki⁴ / (Σ_i W_ki²)² ∈ [1/n, 1]: 1 for a row carrying one feature, 1/2 for a
digon row, 3/(2k) for a row of a regular k-gon (k ≥ 3). The practical proxy is the variance of x_p,k.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from wsae_utils.core.sae import activate
from wsae_utils.toy.layout import constructed_layout

CONSTRUCTIONS: tuple[str, ...] = ("constructed", "random", "elhage")
DISTRIBUTIONS: tuple[str, ...] = ("uniform", "exponential", "constant")


# -- data ---------------------------------------------------------------------------------------------
def sample_features(
    n_samples: int,
    n: int,
    sparsity: float,
    generator: torch.Generator | None = None,
    dist: str = "uniform",
    nonempty: bool = False,
    max_rounds: int = 10_000,
) -> Tensor:
    """x [n_samples, n]: each x_i is 0 w.p. `sparsity`, else drawn from `dist` (U[0,1] by default).

    `dist`: "uniform" U[0,1], "exponential" Exp(1), "constant" 1. `nonempty=True` samples x conditioned on at
    least one active feature (exact rejection sampling of the all-zero rows), which at S → 1 saves most of
    the data without changing what a bias-free SAE learns (an all-zero row has zero loss and zero gradient).
    """
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity={sparsity} must be in [0, 1]")
    if dist not in DISTRIBUTIONS:
        raise ValueError(f"dist={dist!r} is not one of {DISTRIBUTIONS}")
    if nonempty and sparsity >= 1.0:
        raise ValueError("sparsity = 1 has no non-empty rows to condition on")

    def draw(rows: int) -> Tensor:
        active = torch.rand(rows, n, generator=generator) >= sparsity
        if dist == "uniform":
            vals = torch.rand(rows, n, generator=generator)
        elif dist == "exponential":
            vals = torch.empty(rows, n).exponential_(1.0, generator=generator)
        else:
            vals = torch.ones(rows, n)
        return vals * active

    x = draw(n_samples)
    if nonempty:
        for _ in range(max_rounds):
            empty = (x == 0).all(1).nonzero().squeeze(1)
            if empty.numel() == 0:
                break
            x[empty] = draw(int(empty.numel()))
        else:
            raise RuntimeError(f"could not draw non-empty rows at sparsity={sparsity} in {max_rounds} rounds")
    return x


def sample_k_sparse(n_samples: int, n: int, k: int = 1, generator: torch.Generator | None = None) -> Tensor:
    """x [n_samples, n] with exactly k active features per row (distinct, uniformly chosen), U[0, 1] valued.

    k = 1 is the S → 1 limit of the feature distribution; a fixed k gives the same probe inputs to SAEs trained at
    different S.
    """
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be in [1, n={n}]")
    idx = torch.rand(n_samples, n, generator=generator).argsort(dim=1)[:, :k]
    vals = torch.rand(n_samples, k, generator=generator, dtype=torch.float64)
    return torch.zeros(n_samples, n, dtype=torch.float64).scatter_(1, idx, vals)


def data_pool(
    W_p: Tensor, n_rows: int, sparsity: float, seed: int, dist: str = "uniform", nonempty: bool = True,
    chunk: int = 16384,
) -> Tensor:
    """A fixed pool of observed x_p = W_p x [n_rows, n_p] to draw training batches from (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    out = [sample_features(min(chunk, n_rows - s), W_p.shape[1], sparsity, gen, dist, nonempty) @ W_p.T
           for s in range(0, n_rows, chunk)]
    return torch.cat(out)


# -- superposition matrices ---------------------------------------------------------------------------
def normalize_columns(W: Tensor) -> Tensor:
    """Rescale every column to unit norm (a zero column gets a unit vector along the first row)."""
    W = W.clone().double()
    norms = W.norm(dim=0)
    zero = norms < 1e-12
    if zero.any():
        W[:, zero] = 0.0
        W[0, zero] = 1.0
        norms = W.norm(dim=0)
    return (W / norms).float()


def constructed_wp(
    n: int, n_p: int, n_mono: int, n_digons: int, polygons: list[int] | None = None
) -> tuple[Tensor, dict[str, Any]]:
    """Block W_p [n_p, n]: monosemantic rows, digon rows (+1, −1), then regular polygons in row pairs."""
    polygons = constructed_layout(n, n_p, n_mono, n_digons, polygons)
    W = torch.zeros(n_p, n, dtype=torch.float64)
    row = col = 0
    for _ in range(n_mono):
        W[row, col] = 1.0
        row, col = row + 1, col + 1
    for _ in range(n_digons):
        W[row, col], W[row, col + 1] = 1.0, -1.0
        row, col = row + 1, col + 2
    for k in polygons:
        theta = 2 * math.pi * torch.arange(k, dtype=torch.float64) / k
        W[row, col:col + k], W[row + 1, col:col + k] = theta.cos(), theta.sin()
        row, col = row + 2, col + k
    info = {"construction": "constructed", "n_mono": n_mono, "n_digons": n_digons,
            "polygons": polygons}
    return W.float(), info


def random_wp(n: int, n_p: int, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Any]]:
    """Gaussian W_p [n_p, n] with unit-norm columns."""
    return normalize_columns(torch.randn(n_p, n, generator=generator)), {"construction": "random"}


def elhage_wp(
    n: int, n_p: int, seed: int = 0, sparsity: float = 0.99, importance_decay: float = 0.99,
    steps: int = 1000, batch_size: int = 1024, lr: float = 1e-2,
) -> tuple[Tensor, dict[str, Any]]:
    """Train Elhage's ReLU-output toy x̂ = ReLU(WᵀW x + b) with importance decay^i; return unit-column W."""
    gen = torch.Generator().manual_seed(seed)
    W = (torch.randn(n_p, n, generator=gen) * math.sqrt(2.0 / (n + n_p))).requires_grad_(True)
    b = torch.zeros(n, requires_grad=True)
    importance = importance_decay ** torch.arange(n, dtype=torch.float32)
    opt = torch.optim.Adam([W, b], lr=lr)
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        x = sample_features(batch_size, n, sparsity, gen)
        x_hat = torch.relu(x @ W.T @ W + b)
        loss = (importance * (x - x_hat).pow(2)).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    W, loss = W.detach(), loss.detach()
    norms = W.norm(dim=0)
    info = {"construction": "elhage", "elhage_final_loss": loss.item(),
            "elhage_frac_represented": float((norms > 0.5).float().mean()),
            "elhage_sparsity": sparsity, "elhage_importance_decay": importance_decay, "elhage_steps": steps}
    return normalize_columns(W), info


def make_wp(spec: dict[str, Any], seed: int = 0) -> tuple[Tensor, dict[str, Any]]:
    """Build W_p [n_p, n] from a spec dict {"construction", "n", "n_p", ...}; returns (W_p, info)."""
    kind = spec["construction"]
    n, n_p = int(spec["n"]), int(spec["n_p"])
    if kind == "constructed":
        W, info = constructed_wp(n, n_p, int(spec.get("n_mono", 0)), int(spec.get("n_digons", 0)),
                                 spec.get("polygons"))
    elif kind == "random":
        W, info = random_wp(n, n_p, torch.Generator().manual_seed(seed))
    elif kind == "elhage":
        keys = ("sparsity", "importance_decay", "steps", "batch_size", "lr")
        W, info = elhage_wp(n, n_p, seed=seed, **{k: spec[k] for k in keys if k in spec})
    else:
        raise ValueError(f"construction={kind!r} is not one of {CONSTRUCTIONS}")
    return W, {**info, **interference_stats(W, kind)}


def simplex_wp(d: int) -> Tensor:
    """d + 1 unit vectors in R^d with pairwise inner product −1/d (d = 0: one feature in R^1).

    Each feature interferes (negatively) with exactly d others: a digon for d = 1, a triangle for d = 2.
    """
    if d == 0:
        return torch.ones(1, 1)
    E = torch.eye(d + 1, dtype=torch.float64) - 1.0 / (d + 1)  # centred basis: rank d, Gram ∝ −1/d off-diag
    U, _, _ = torch.linalg.svd(E)
    W = U[:, :d].T @ E  # coordinates in the d-dim span
    return normalize_columns(W.float())


# -- geometry and oracles -----------------------------------------------------------------------------
def interference_stats(W_p: Tensor, construction: str = "unknown", tol: float = 1e-6) -> dict[str, Any]:
    """Off-diagonal Gram statistics of W_p's columns: how much (positive) interference there is."""
    W = W_p.double()
    G = W.T @ W
    n = G.shape[0]
    iu = torch.triu_indices(n, n, offset=1)
    off = G[iu[0], iu[1]]
    pos = off > tol
    norms = W.norm(dim=0)
    return {
        "construction": construction,
        "n": int(W.shape[1]),
        "n_p": int(W.shape[0]),
        "frac_positive_pairs": float(pos.double().mean()) if off.numel() else 0.0,
        "max_positive_interference": float(off[pos].max()) if bool(pos.any()) else 0.0,
        "frac_negative_pairs": float((off < -tol).double().mean()) if off.numel() else 0.0,
        "max_abs_interference": float(off.abs().max()) if off.numel() else 0.0,
        "unit_columns": bool(((norms - 1).abs() < 1e-5).all()),
        "nonpositive_interference": bool(not pos.any()),
    }


def row_monosemanticity(W_p: Tensor) -> Tensor:
    """Oracle per-input-dimension monosemanticity: inverse participation ratio Σ_i W_ki⁴ / (Σ_i W_ki²)²."""
    sq = W_p.double().pow(2)
    mass = sq.sum(1)
    out = sq.pow(2).sum(1) / mass.pow(2).clamp_min(1e-30)
    return torch.where(mass > 1e-30, out, torch.zeros_like(out)).float()


def feature_is_monosemantic(W_p: Tensor, tol: float = 1e-6) -> Tensor:
    """Features whose every nonzero row carries that feature alone (they live on monosemantic rows only)."""
    nz = W_p.abs() > tol
    mono_rows = nz.sum(1) == 1
    return (~nz | mono_rows[:, None]).all(0)


def variance_proxy(x_p: Tensor) -> Tensor:
    """Per-input-dimension variance of observed activations (the paper's practical monosemanticity proxy)."""
    return x_p.double().var(0).float()


def expected_variance(W_p: Tensor, sparsity: float, dist: str = "uniform") -> Tensor:
    """Population Var(x_p,k) = Σ_i W_ki² Var(x_i) for independent features (no sampling noise)."""
    p = 1.0 - sparsity
    m1, m2 = {"uniform": (0.5, 1 / 3), "exponential": (1.0, 2.0), "constant": (1.0, 1.0)}[dist]
    var_x = p * m2 - (p * m1) ** 2
    return (W_p.double().pow(2).sum(1) * var_x).float()


def proxy_monosemanticity_correlation(proxy: Tensor, mono: Tensor) -> dict[str, float]:
    """Pearson and Spearman correlation between a per-dimension proxy and the oracle monosemanticity."""
    from scipy.stats import pearsonr, spearmanr

    a, b = np.asarray(proxy, dtype=float), np.asarray(mono, dtype=float)
    if np.ptp(a) < 1e-12 or np.ptp(b) < 1e-12:
        return {"pearson": float("nan"), "spearman": float("nan")}
    return {"pearson": float(pearsonr(a, b)[0]), "spearman": float(spearmanr(a, b)[0])}


# -- theory -------------------------------------------------------------------------------------------
def closed_form_recovery(x: Tensor, W_p: Tensor, activation: str = "relu", k: int = 1) -> Tensor:
    """x_m = σ(W_pᵀ W_p x): the features the optimal tied SAE W_m = W_pᵀ recovers (rows are samples)."""
    return activate(x @ W_p.T @ W_p, activation, k)


def example_1() -> dict[str, Tensor]:
    """Example 1 of the paper: x = (0.5, 1, 0.8), W_p = [[1,0,0],[0,1,−1]] → x_p = (0.5, 0.2), x_m = (0.5, 0.2, 0)."""
    x = torch.tensor([[0.5, 1.0, 0.8]], dtype=torch.float64)
    W_p = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, -1.0]], dtype=torch.float64)
    return {"x": x[0], "W_p": W_p, "x_p": (x @ W_p.T)[0], "x_m": closed_form_recovery(x, W_p)[0]}


def tied_sae_at(W_m: Tensor, activation: str = "relu", k: int = 1):
    """A float64 tied, bias-free SparseAutoencoder with encoder W_m [n_m, n_p] (the theory's model)."""
    from wsae_utils.core.sae import SAEConfig, SparseAutoencoder

    cfg = SAEConfig(d_in=W_m.shape[1], n_latents=W_m.shape[0], activation=activation, k=k, tied=True,
                    bias=False, normalize_decoder=False)
    sae = SparseAutoencoder(cfg).double()
    with torch.no_grad():
        sae.W_enc.copy_(W_m.double())
    return sae


def loss_gap_identity(x: Tensor, W_p: Tensor, gamma: Tensor | None = None) -> tuple[float, float]:
    """(LHS, RHS) of Theorems 4/5 at W_m = W_pᵀ, in float64.

    LHS = L_(W)SAE − L_GT, both measured with the tied SparseAutoencoder and `reconstruction_loss` (Γ inside
    the norm); RHS = E[eᵀ(W_pᵀΓ²W_p − I)e] with e = x − σ(W_pᵀW_p x). Γ = I (gamma=None) is Theorem 4.
    """
    from wsae_utils.core.sae import reconstruction_loss

    x, W = x.double(), W_p.double()
    sae = tied_sae_at(W.T)
    x_p = x @ W.T
    with torch.no_grad():
        x_m = sae.encode(x_p)
        x_hat = sae.decode(x_m)
        g = None if gamma is None else gamma.double()
        lhs = float(reconstruction_loss(x_p, x_hat, g) - reconstruction_loss(x, x_m))
    e = x - closed_form_recovery(x, W)
    g2 = torch.ones(W.shape[0], dtype=torch.float64) if gamma is None else gamma.double().pow(2)
    M = W.T @ (g2[:, None] * W) - torch.eye(W.shape[1], dtype=torch.float64)
    rhs = float(((e @ M) * e).sum(1).mean())
    return lhs, rhs


def shrink_vanish_rates(x: Tensor, x_m: Tensor, tol: float = 1e-9) -> dict[str, np.ndarray]:
    """Per feature, over samples where it is active: P(shrunk), P(vanished), mean relative change.

    shrunk: x_m,i < x_i − tol; vanished: x_m,i ≤ tol; relative change: E[(x_m,i − x_i) / x_i].
    """
    x, x_m = x.double(), x_m.double()
    active = x > tol
    cnt = active.sum(0).double()
    safe = cnt.clamp_min(1)

    def rate(mask: Tensor) -> np.ndarray:
        r = (mask & active).sum(0).double() / safe
        return torch.where(cnt > 0, r, torch.full_like(r, float("nan"))).numpy()

    rel = torch.where(active, (x_m - x) / x.clamp_min(tol), torch.zeros_like(x)).sum(0) / safe
    rel = torch.where(cnt > 0, rel, torch.full_like(rel, float("nan")))
    return {"n_active": cnt.numpy(), "shrink_rate": rate(x_m < x - tol), "vanish_rate": rate(x_m <= tol),
            "relative_change": rel.numpy()}


def interfering_counts(W_p: Tensor, tol: float = 1e-6) -> dict[str, np.ndarray]:
    """Per feature: number of other features it interferes with (nonzero, negative, positive inner product)."""
    G = W_p.double().T @ W_p.double()
    G.fill_diagonal_(0.0)
    return {"any": (G.abs() > tol).sum(1).numpy(), "negative": (G < -tol).sum(1).numpy(),
            "positive": (G > tol).sum(1).numpy()}


def flat_wp_stats(name: str, info: dict[str, Any]) -> dict[str, Any]:
    """Interference stats / construction info of one W_p as flat metrics keys `wp_<name>_<key>`."""
    return {f"wp_{name}_{k}": (v if not isinstance(v, list) else ",".join(map(str, v))) for k, v in info.items()}
