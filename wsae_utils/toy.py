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
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

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


def data_pool(
    W_p: Tensor, n_rows: int, sparsity: float, seed: int, dist: str = "uniform", nonempty: bool = True,
    chunk: int = 16384,
) -> Tensor:
    """A fixed pool of observed x_p = W_p x [n_rows, n_p] to draw training batches from (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    out = [sample_features(min(chunk, n_rows - s), W_p.shape[1], sparsity, gen, dist, nonempty) @ W_p.T
           for s in range(0, n_rows, chunk)]
    return torch.cat(out)


def pool_batch_fn(pool: Tensor, batch_size: int, seed: int):
    """batch_fn(step) for `train_sae`: rows of `pool` drawn with a generator seeded by (seed, step)."""
    from .train import batch_generator

    def batch_fn(step: int) -> Tensor:
        idx = torch.randint(0, pool.shape[0], (batch_size,), generator=batch_generator(seed, step))
        return pool[idx]

    return batch_fn


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


def constructed_layout(
    n: int, n_p: int, n_mono: int, n_digons: int, polygons: list[int] | None = None
) -> list[int]:
    """Polygon sizes that fill the rows left after monosemantic rows and digons; raises if impossible.

    With `polygons=None` the remaining features are spread as evenly as possible over the remaining row
    pairs (each a 2-D plane holding one regular polygon of ≥ 3 vertices).
    """
    rows_left = n_p - n_mono - n_digons
    feats_left = n - n_mono - 2 * n_digons
    if n_mono < 0 or n_digons < 0:
        raise ValueError(f"n_mono={n_mono} and n_digons={n_digons} must be >= 0")
    if rows_left < 0 or feats_left < 0:
        raise ValueError(
            f"n_mono={n_mono} + n_digons={n_digons} need {n_mono + n_digons} rows and "
            f"{n_mono + 2 * n_digons} features, more than n_p={n_p} / n={n}"
        )
    if polygons is None:
        if rows_left % 2:
            raise ValueError(f"{rows_left} rows are left for polygons: must be even (2 rows per polygon)")
        planes = rows_left // 2
        if planes == 0:
            if feats_left:
                raise ValueError(f"{feats_left} features are left but no rows for polygons")
            return []
        base, extra = divmod(feats_left, planes)
        polygons = [base + (1 if i >= planes - extra else 0) for i in range(planes)]
    if any(k < 3 for k in polygons):
        raise ValueError(f"polygon sizes {polygons} must all be >= 3")
    if 2 * len(polygons) != rows_left or sum(polygons) != feats_left:
        raise ValueError(
            f"polygons {polygons} use {2 * len(polygons)} rows and {sum(polygons)} features; "
            f"{rows_left} rows and {feats_left} features are left"
        )
    return list(polygons)


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
def activate(pre: Tensor, activation: str = "relu", k: int = 1, threshold: float = 0.0) -> Tensor:
    """σ of the theory: 'none', 'relu', 'jumprelu' (threshold) or 'topk' (k largest, then ReLU)."""
    if activation == "none":
        return pre
    if activation == "relu":
        return pre.relu()
    if activation == "jumprelu":
        return pre * (pre > threshold)
    if activation == "topk":
        vals, idx = pre.topk(k, dim=-1)
        return torch.zeros_like(pre).scatter_(-1, idx, vals.relu())
    raise ValueError(f"activation={activation!r} is not one of none, relu, jumprelu, topk")


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
    from .sae import SAEConfig, SparseAutoencoder

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
    from .sae import reconstruction_loss

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


# -- SAE evaluation against the ground truth ----------------------------------------------------------
def probe_responses(sae, W_p: Tensor, value: float = 1.0) -> Tensor:
    """Latent activations [n, n_m] for the one-hot probes x = value·e_i (row i = feature i)."""
    n = W_p.shape[1]
    x = value * torch.eye(n, device=W_p.device)
    with torch.no_grad():
        return sae.encode((x @ W_p.T).to(sae.W_enc.device)).cpu()


def recovery_metrics(
    sae, W_p: Tensor, x: Tensor, probe_value: float = 1.0, probe_tau: float = 0.0, cos_threshold: float = 0.99,
    polysemantic_features: Tensor | None = None,
) -> dict[str, float]:
    """Ground-truth recovery of one trained SAE on evaluation features x [N, n] (unweighted metrics)."""
    from .metrics import (
        features_per_latent,
        matched_ground_truth_loss,
        max_cosine_per_feature,
        mean_correlation_coefficient,
        per_feature_ground_truth_loss,
        recovered_features,
    )
    from .sae import reconstruction_loss

    device = sae.W_enc.device
    x_p = (x @ W_p.T).to(device)
    with torch.no_grad():
        z = sae.encode(x_p)
        x_hat = sae.decode(z)
        l_sae = float(reconstruction_loss(x_p, x_hat))
    z = z.cpu()
    l_gt, match = matched_ground_truth_loss(x, z)
    mcc, _ = mean_correlation_coefficient(x, z)
    probe = probe_responses(sae, W_p, probe_value)
    alive_probe = (probe > probe_tau).any(0)
    fired = (z != 0).any(0)
    with torch.no_grad():
        effective = (sae.W_enc.detach().cpu().double() @ W_p.double()).T  # [n, n_m]: (W_m W_p)ᵀ
    max_cos = max_cosine_per_feature(W_p.T.double(), sae.W_dec.detach().cpu().double())
    out = {
        "L_SAE": l_sae,
        "L_GT": l_gt,
        "L_GT_rel": l_gt / max(float(x.double().pow(2).sum(1).mean()), 1e-30),
        "mcc": mcc,
        "features_per_latent": features_per_latent(probe, tau=probe_tau),
        "features_per_latent_wmwp": features_per_latent(effective, tau=0.0, alive=fired),
        "mean_max_cos": float(np.mean(max_cos)),
        "recovered_features": recovered_features(max_cos, cos_threshold),
        "recovered_frac": recovered_features(max_cos, cos_threshold) / W_p.shape[1],
        "alive_latents_probe": int(alive_probe.sum()),
        "alive_latents_data": int(fired.sum()),
        "l0": float((z != 0).sum(1).float().mean()),
        "latent_variance_mean": float(z.double().var(0).mean()),
    }
    if polysemantic_features is not None:
        per = per_feature_ground_truth_loss(x, z, match)
        poly = np.asarray(polysemantic_features, dtype=bool)
        out["L_GT_poly"] = float(per[poly].sum())
        out["L_GT_mono"] = float(per[~poly].sum())
        out["n_poly_features"] = int(poly.sum())
    return out


def sae_config(n_p: int, n_m: int, activation: str = "relu", k: int = 2, threshold: float = 0.0,
               tied: bool = True, bias: bool = False, normalize_decoder: bool = False):
    """SAEConfig of the toy experiments (default: the theory's tied, bias-free SAE)."""
    from .sae import SAEConfig

    return SAEConfig(d_in=n_p, n_latents=n_m, activation=activation, k=k, threshold=threshold, tied=tied,
                     bias=bias, normalize_decoder=normalize_decoder)


def train_toy_sae(
    W_p: Tensor, sparsity: float, sae_cfg, steps: int, batch_size: int, lr: float, seed: int,
    pool_rows: int = 65536, gamma: Tensor | None = None, gamma_inside_norm: bool = True,
    device: str | torch.device = "cpu", dist: str = "uniform", pool: Tensor | None = None, desc: str = "SAE",
):
    """Train one SAE on x_p = W_p x drawn from a seeded pool (rows conditioned on ≥ 1 active feature)."""
    from .train import TrainConfig, train_sae

    if pool is None:
        pool = data_pool(W_p, pool_rows, sparsity, seed, dist, nonempty=True)
    tcfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, log_every=max(1, steps // 50),
                       gamma_inside_norm=gamma_inside_norm, dead_window=10 * batch_size)
    return train_sae(sae_cfg, tcfg, pool_batch_fn(pool, batch_size, seed), gamma=gamma, device=device,
                     desc=desc, progress=False)


def flat_wp_stats(name: str, info: dict[str, Any]) -> dict[str, Any]:
    """Interference stats / construction info of one W_p as flat metrics keys `wp_<name>_<key>`."""
    return {f"wp_{name}_{k}": (v if not isinstance(v, list) else ",".join(map(str, v))) for k, v in info.items()}


# -- config checks ------------------------------------------------------------------------------------
def _spec_errors(path: str, spec: dict[str, Any]) -> list[str]:
    out = []
    if spec.get("construction") == "constructed":
        try:
            constructed_layout(int(spec["n"]), int(spec["n_p"]), int(spec.get("n_mono", 0)),
                               int(spec.get("n_digons", 0)), spec.get("polygons"))
        except ValueError as err:
            out.append(f"{path} = {spec!r}: {err}")
    if int(spec.get("n_p", 1)) >= int(spec.get("n", 2)):
        out.append(f"{path}.n_p = {spec.get('n_p')}: must be < n ({spec.get('n')}) for superposition")
    return out


def _notebook_defaults(unit: str) -> dict[str, Any]:
    """Parameter defaults of notebooks/toy_<unit>.py: what a run uses for keys the config leaves out."""
    from .nbrun import notebook_parameters

    path = Path(__file__).resolve().parent.parent / "notebooks" / f"toy_{unit}.py"
    return notebook_parameters(path) if path.exists() else {}


def config_errors(section: dict[str, Any]) -> list[str]:
    """Cross-key checks of the `toy` config section, on the parameters a run will really use.

    Keys the config leaves out take the notebook's defaults, so e.g. `topk_k` is checked against the n_m of the
    notebook's default W_p constructions too. The schema checks types and ranges.
    """
    errors: list[str] = []
    for unit in ("theory", "sparsity", "ablation", "wsae"):
        block = {**_notebook_defaults(unit), **(section.get(unit) or {})}
        specs = block.get("wp_specs") or {}
        for name, spec in specs.items():
            errors += _spec_errors(f"{unit}.wp_specs.{name}", spec)
        for key in ("wp_names", "train_wp"):
            for name in block.get(key, []) or []:
                if specs and name not in specs:
                    errors.append(f"{unit}.{key} = {name!r}: must be one of wp_specs ({', '.join(specs)})")
        ratios = block.get("latent_ratios") or [block.get("latent_ratio", 1.0)]
        sizes = [int(round(r * int(s["n"]))) for s in specs.values() for r in ratios]
        k = block.get("topk_k")
        if k is not None and sizes and k > min(sizes):
            errors.append(f"{unit}.topk_k = {k}: must be <= n_m ({min(sizes)}, the smallest SAE)")
        for s in block.get("sparsities", []) or []:
            if not 0.0 <= s < 1.0:
                errors.append(f"{unit}.sparsities = {s}: must be in [0, 1)")
    return errors
