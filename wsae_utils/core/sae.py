"""Sparse autoencoder model, the (weighted) reconstruction loss, γ and AuxK: the SAE maths every experiment uses.

One module, one model: encoder rows and decoder rows are both stored as [n_latents, d_in] tensors
(`W_enc`, `W_dec`; SAELens stores `W_enc` transposed, see `wsae_utils.core.export`). The theory's SAE is the
special case `tied=True, bias=False`: x_m = σ(W_m x_p), x̂_p = W_mᵀ x_m with W_m = `W_enc`.

Top-k runs a sparse path (the kernels are in `wsae_utils.core.kernels`): the encoder's backward and the decoder
touch only the k selected latents per row, so a step costs one dense GEMM instead of three (the sparsify trick).
`topk_loss_and_grads` is that step written out by hand (no autograd graph), which the trainer uses; with
`matmul_dtype=bfloat16` only the selection GEMM runs in bf16: the selected values, the weights and every gradient
stay fp32.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsae_utils.core.kernels import (
    StackedTopKSAE,
    TopKSAEFunction,
    bag_scatter,
    topk_backward,
    topk_forward,
    topk_indices,
)

Activation = Literal["none", "relu", "jumprelu", "topk"]
ACTIVATIONS: tuple[str, ...] = ("none", "relu", "jumprelu", "topk")


@dataclass
class SAEConfig:
    """Architecture of one SAE."""

    d_in: int
    """Input width (n_p in the theory, d_model for a language model)."""
    n_latents: int
    """Number of latents (n_m)."""
    activation: Activation = "topk"
    """'none' (linear), 'relu', 'jumprelu' (fixed threshold) or 'topk'."""
    k: int = 32
    """Active latents per input for 'topk'."""
    threshold: float = 0.0
    """JumpReLU threshold θ: a latent passes its pre-activation when it exceeds θ, else 0."""
    tied: bool = False
    """Decoder is the encoder's transpose (the theory's model). Untied keeps a separate W_dec."""
    bias: bool = True
    """Encoder bias b_enc and decoder bias b_dec (b_dec is also subtracted from the input)."""
    normalize_decoder: bool = True
    """Keep decoder rows at unit norm (renormalised after every step, parallel gradient removed)."""

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation={self.activation!r} is not one of {ACTIVATIONS}")
        if self.d_in < 1 or self.n_latents < 1:
            raise ValueError(f"d_in={self.d_in} and n_latents={self.n_latents} must be >= 1")
        if self.activation == "topk" and not 1 <= self.k <= self.n_latents:
            raise ValueError(f"k={self.k} must be in [1, n_latents={self.n_latents}]")

    def to_dict(self) -> dict:
        """Plain dict for JSON."""
        return asdict(self)


@dataclass
class SAEOutput:
    """Result of a forward pass; top-k keeps its latents sparse (values + indices)."""

    x_hat: Tensor
    acts: Tensor | None = None
    top_vals: Tensor | None = None
    top_idx: Tensor | None = None

    def dense_acts(self) -> Tensor:
        """Latent activations as a dense [B, n_latents] tensor."""
        if self.acts is not None:
            return self.acts
        raise ValueError("top-k output holds sparse latents; use SparseAutoencoder.encode for dense ones")


def activate(pre: Tensor, activation: str, k: int = 1, threshold: float | Tensor = 0.0, fast_topk: bool = False
             ) -> Tensor:
    """σ of every SAE here, on pre-activations [..., n_latents]: 'none', 'relu', 'jumprelu' (passes pre where
    pre > θ; θ a number or per-latent tensor) or 'topk' (the k largest, then ReLU; `fast_topk` selects them with
    `kernels.topk_indices`, which may order near-ties differently, for training speed). The sparse training paths
    (`kernels.TopKSAEFunction`, `kernels.StackedTopKSAE`) compute the same function without a dense tensor."""
    if activation == "none":
        return pre
    if activation == "relu":
        return pre.relu()
    if activation == "jumprelu":
        return pre * (pre > threshold)
    if activation == "topk":
        if fast_topk:
            idx = topk_indices(pre, k)
            vals = pre.gather(-1, idx)
        else:
            vals, idx = pre.topk(k, dim=-1)
        return torch.zeros_like(pre).scatter_(-1, idx, vals.relu())
    raise ValueError(f"activation={activation!r} is not one of {ACTIVATIONS}")


@torch.no_grad()
def normalize_rows_(W: Tensor) -> None:
    """Rescale rows (last dimension) of a decoder [n, d] or stacked decoders [G, n, d] to unit norm, in place."""
    W.div_(W.norm(dim=-1, keepdim=True).clamp_min(1e-12))


@torch.no_grad()
def remove_parallel_grad_(W: Tensor) -> None:
    """Project out of W.grad the component along each row of W ([n, d] or [G, n, d]), so the step followed by
    `normalize_rows_` moves along the unit sphere exactly."""
    if W.grad is None:
        return
    # (g·Ŵ)Ŵ = (g·W) W / ‖W‖², written so that no [n, d] temporary is formed
    G = W.grad
    if W.dim() == 2:
        dots = torch.bmm(G.unsqueeze(1), W.unsqueeze(2)).view(-1)  # row dots; einsum's dispatch costs 2x more
    else:
        dots = (G * W).sum(-1)
    coef = dots / torch.linalg.vector_norm(W, dim=-1).pow(2).clamp_min(1e-24)
    G.addcmul_(W, coef.unsqueeze(-1), value=-1.0)


class SparseAutoencoder(nn.Module):
    """An SAE with a ReLU, JumpReLU, Top-k or no activation, tied or untied decoder."""

    chunk_rows: int = 0
    """Top-k: rows per encoder GEMM + top-k chunk (0: the whole batch at once; set > 0 to cap peak memory)."""

    def __init__(self, cfg: SAEConfig, seed: int | None = None, device: str | torch.device = "cpu"):
        super().__init__()
        self.cfg = cfg
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        bound = 1.0 / math.sqrt(cfg.d_in)
        W = (torch.rand(cfg.n_latents, cfg.d_in, generator=gen) * 2 - 1) * bound
        if cfg.normalize_decoder:
            W = W / W.norm(dim=1, keepdim=True).clamp_min(1e-12)
        self.W_enc = nn.Parameter(W.clone().to(device))
        # Tied: the decoder is the very same tensor, so there is nothing to keep in sync.
        self.W_dec = self.W_enc if cfg.tied else nn.Parameter(W.clone().to(device))
        self.b_enc = nn.Parameter(torch.zeros(cfg.n_latents, device=device), requires_grad=cfg.bias)
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in, device=device), requires_grad=cfg.bias)

    # -- encoding / decoding -------------------------------------------------------------------------
    def _centered(self, x: Tensor) -> Tensor:
        return x - self.b_dec if self.cfg.bias else x

    def pre_activations(self, x: Tensor) -> Tensor:
        """Encoder pre-activations (x − b_dec) W_encᵀ + b_enc, dense [B, n_latents]."""
        return F.linear(self._centered(x), self.W_enc, self.b_enc)

    def encode(self, x: Tensor) -> Tensor:
        """Dense latent activations [B, n_latents]."""
        return activate(self.pre_activations(x), self.cfg.activation, self.cfg.k, self.cfg.threshold)

    def decode(self, acts: Tensor) -> Tensor:
        """Reconstruction from dense latents."""
        out = acts @ self.W_dec
        return out + self.b_dec if self.cfg.bias else out

    def decode_sparse(self, vals: Tensor, idx: Tensor) -> Tensor:
        """Reconstruction from top-k (values, indices) without forming a dense latent tensor."""
        out = F.embedding_bag(idx, self.W_dec, per_sample_weights=vals, mode="sum")
        return out + self.b_dec if self.cfg.bias else out

    def forward(self, x: Tensor, matmul_dtype: torch.dtype = torch.float32) -> SAEOutput:
        """Encode and decode; top-k stays sparse. `matmul_dtype=bfloat16` runs the encoder GEMM in bf16.

        For top-k, bf16 only picks the k latents (the values are recomputed in fp32, weights stay fp32).
        """
        if self.cfg.activation == "topk":
            x_hat, vals, idx = TopKSAEFunction.apply(self._centered(x), self.W_enc, self.b_enc, self.W_dec, self.cfg.k,
                                              matmul_dtype, self.chunk_rows)
            return SAEOutput(x_hat=x_hat + self.b_dec if self.cfg.bias else x_hat, top_vals=vals, top_idx=idx)
        with torch.autocast(x.device.type, dtype=matmul_dtype, enabled=matmul_dtype != torch.float32):
            acts = activate(self.pre_activations(x), self.cfg.activation, self.cfg.k, self.cfg.threshold)
        acts = acts.float()
        return SAEOutput(x_hat=self.decode(acts), acts=acts)

    # -- constraints ---------------------------------------------------------------------------------
    def normalize_decoder_(self) -> None:
        """Rescale decoder rows to unit norm."""
        normalize_rows_(self.W_dec)

    def remove_parallel_decoder_grad_(self) -> None:
        """Project out the gradient component along each decoder row (keeps the unit-norm step exact)."""
        remove_parallel_grad_(self.W_dec)

    @torch.no_grad()
    def init_b_dec_(self, x: Tensor) -> None:
        """Initialise the decoder bias at the per-dimension mean of a data sample (sparsify's choice)."""
        if self.cfg.bias:
            self.b_dec.copy_(x.mean(0).to(self.b_dec))


@torch.no_grad()
def topk_loss_and_grads(sae: SparseAutoencoder, x: Tensor, gamma: Tensor | None = None,
                        gamma_inside_norm: bool = True, matmul_dtype: torch.dtype = torch.float32
                        ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One Top-k training forward + backward without autograd: sets `.grad` of every trainable parameter.

    Same numbers as `reconstruction_loss(x, sae(x).x_hat, gamma).backward()` (up to float summation order), at
    less overhead: the loss gradient 2·w·(x̂ − x)/B is formed directly (the Γ weighting is one extra multiply
    of a [B, d_in] tensor), and the encoder/decoder backward is the sparse one of `TopKSAEFunction`.
    Returns (loss, x̂, values [B, k], indices [B, k]).
    """
    cfg = sae.cfg
    if cfg.activation != "topk":
        raise ValueError(f"topk_loss_and_grads needs a top-k SAE, not activation={cfg.activation!r}")
    B = x.shape[0]
    x_c = sae._centered(x)
    x_hat, vals, idx, flat, offsets, offset2bag, bag = topk_forward(
        x_c, sae.W_enc, sae.b_enc, sae.W_dec, cfg.k, matmul_dtype, sae.chunk_rows)
    if cfg.bias:
        x_hat += sae.b_dec
    r = x_hat - x
    w = error_weights(gamma, gamma_inside_norm)
    wr = r if w is None else r * w
    # `weighted_sq_error` as one dot product: its value, and its gradient 2·w·(x̂ − x)/B formed directly
    loss = torch.dot(wr.view(-1), r.view(-1)) / B
    g_xhat = wr.mul_(2.0 / B)
    tied = sae.W_dec is sae.W_enc
    need = (cfg.bias, True, cfg.bias, not tied)
    grad_x, grad_We, grad_be, grad_Wd = topk_backward(x_c, sae.W_enc, sae.W_dec, vals, flat, offsets, offset2bag,
                                                       bag, g_xhat, None, need)
    if tied:
        grad_We += bag_scatter(g_xhat, flat, offsets, bag, cfg.n_latents, vals)
    else:
        sae.W_dec.grad = grad_Wd
    sae.W_enc.grad = grad_We
    if cfg.bias:
        sae.b_enc.grad = grad_be
        sae.b_dec.grad = (g_xhat - grad_x).sum(0)  # x̂ adds b_dec, x_c = x − b_dec subtracts it
    return loss, x_hat, vals.view(idx.shape), idx


def error_weights(gamma: Tensor | None, gamma_inside_norm: bool = True) -> Tensor | None:
    """What multiplies the squared error per dimension: γ² with Γ inside the norm (the paper's ‖Γ(x − x̂)‖²),
    else γ; None (the plain SAE) stays None."""
    if gamma is None:
        return None
    return gamma.pow(2) if gamma_inside_norm else gamma


def weighted_sq_error(x: Tensor, x_hat: Tensor, weights: Tensor | None = None) -> Tensor:
    """Σ_i w_i (x_i − x̂_i)², averaged over rows: a scalar for [B, d], one value per SAE [G] for stacked
    [G, B, d] (weights broadcast, e.g. [G, 1, d]). The one weighted error; `error_weights` makes w from γ."""
    sq = (x - x_hat).pow(2)
    if weights is not None:
        sq = sq * weights
    return sq.sum(-1).mean(-1)


def reconstruction_loss(
    x: Tensor, x_hat: Tensor, gamma: Tensor | None = None, gamma_inside_norm: bool = True
) -> Tensor:
    """Weighted squared error of one SAE, E‖Γ(x − x̂)‖² (or E Σ_i γ_i (x_i − x̂_i)²); `gamma=None` is the plain loss."""
    return weighted_sq_error(x, x_hat, error_weights(gamma, gamma_inside_norm))


def make_gamma(proxy: Tensor, alpha: float, normalize: Literal["none", "mean"] = "none", min_proxy: float = 0.0
               ) -> Tensor:
    """Per-input-dimension weights γ = s^α from a non-negative proxy s; α = 0 gives all ones. The one γ function:
    every Γ variant is a transform of the proxy (`cap_proxy`, semantic consistency, the variance) or of γ
    (`permute_gamma`) around it.

    `normalize="mean"` rescales γ to mean one (a global rescale only changes the loss scale); `min_proxy` > 0
    floors the proxy first, so a dimension of zero variance keeps a tiny weight instead of none.
    """
    if alpha < 0:
        raise ValueError(f"alpha={alpha} must be >= 0")
    proxy = torch.as_tensor(proxy, dtype=torch.float32)
    if not torch.isfinite(proxy).all() or (proxy < 0).any():
        raise ValueError("weight proxy must be finite and non-negative")
    if alpha == 0:
        gamma = torch.ones_like(proxy)
    else:
        gamma = (proxy.clamp_min(min_proxy) if min_proxy > 0 else proxy).pow(alpha)
    if normalize == "mean":
        mean = gamma.mean()
        if mean <= 0:
            raise ValueError("cannot normalise γ to mean one: all weights are zero")
        gamma = gamma / mean
    elif normalize != "none":
        raise ValueError(f"normalize={normalize!r} is not one of ('none', 'mean')")
    return gamma


def cap_proxy(proxy: Tensor, quantile: float) -> Tensor:
    """The capped Γ's transform: the proxy clipped at its `quantile` (outlier dimensions stop dominating γ)."""
    proxy = torch.as_tensor(proxy, dtype=torch.float32)
    return proxy.clamp(max=float(torch.quantile(proxy.double(), quantile)))


def permute_gamma(gamma: Tensor, seed: int, movable: Tensor | None = None) -> Tensor:
    """The permuted-Γ control: the same γ values on randomly permuted dimensions (same skew, no meaning).

    Only the `movable` dimensions (all when None) exchange values; the others keep theirs.
    """
    g = torch.Generator().manual_seed(seed)
    if movable is None:
        return gamma[torch.randperm(gamma.numel(), generator=g)]
    idx = torch.as_tensor(movable, dtype=torch.bool).nonzero().squeeze(1)
    out = gamma.clone()
    out[idx] = gamma[idx[torch.randperm(idx.numel(), generator=g)]]
    return out


DENSE_AUXK_MIN_K = 64
"""AuxK keeping more than this many dead latents per row reconstructs with a dense batched product instead of
embedding_bag (same sum, other rounding). The toy's k_aux (10) and the LM SAEs' usual few dead latents stay below."""


def _topk_relu(pre: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(indices, relu(values)) of the k largest entries per row; -inf (padding) entries give 0."""
    vals, idx = pre.topk(k, dim=-1, sorted=False)
    return idx, torch.where(torch.isfinite(vals), vals, torch.zeros_like(vals)).relu()


def stacked_auxk_loss(xc: Tensor, residual: Tensor, W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, dead: Tensor,
                      k_aux: int) -> Tensor:
    """AuxK (OpenAI / sparsify recipe) of G stacked SAEs, one value per SAE [G]: reconstruct the detached residual
    from the top-`k_aux` dead latents.

    xc: centred inputs [G, B, d]; residual [G, B, d]; W_enc, W_dec [G, n, d]; b_enc [G, n]; dead [G, n] bool.
    Only the dead encoder rows are multiplied (padded to the most dead of any SAE), the decoder bias is not added
    again (the residual already contains it), and each loss is scaled by min(#dead / k_aux, 1) and normalised by
    its residual's variance; an SAE without dead latents gets 0.
    """
    G, n = dead.shape
    n_dead = dead.sum(1)
    m = int(n_dead.max())
    if m == 0:
        return xc.new_zeros(G)
    order = torch.sort(dead.to(torch.int8), dim=1, descending=True, stable=True).indices[:, :m]  # dead ones first
    valid = torch.arange(m, device=dead.device)[None, :] < n_dead[:, None]  # [G, m]
    d = W_enc.shape[-1]
    W_d = torch.gather(W_enc, 1, order[..., None].expand(G, m, d))
    b_d = torch.gather(b_enc, 1, order)
    pre = torch.baddbmm(b_d[:, None, :], xc, W_d.transpose(1, 2))
    if not bool(valid.all()):
        pre = pre.masked_fill(~valid[:, None, :], float("-inf"))
    kk = min(k_aux, m)
    D = torch.gather(W_dec, 1, order[..., None].expand(G, m, d))
    if kk > DENSE_AUXK_MIN_K:
        # wide bags (the vision SAEs: ~120 of 128 kept): a batched dense product over the m dead latents is the same
        # sum at a fraction of the cost of embedding_bag's per-entry gather and sorted backward (measured 230 ms of a
        # 310 ms step at the vision shape, 1 thread, AVX2); with every dead latent kept no selection is needed
        z = pre.relu() if kk == m else torch.zeros_like(pre).scatter(-1, *_topk_relu(pre, kk))
        recon = torch.bmm(z, D)
    else:
        idx, vals = _topk_relu(pre, kk)
        B = idx.shape[1]
        flat = (idx + (torch.arange(G, device=idx.device) * m)[:, None, None]).reshape(G * B, kk)
        recon = F.embedding_bag(flat, D.reshape(G * m, d), per_sample_weights=vals.reshape(G * B, kk),
                                mode="sum").view(G, B, d)
    resid = residual.detach()
    denom = (resid - resid.mean(1, keepdim=True)).pow(2).sum((1, 2)).clamp_min(1e-12)
    scale = (n_dead.to(resid.dtype) / k_aux).clamp(max=1.0)
    return scale * (recon - resid).pow(2).sum((1, 2)) / denom


def auxk_loss(
    sae: SparseAutoencoder, x: Tensor, residual: Tensor, dead: Tensor, k_aux: int | None = None
) -> Tensor:
    """AuxK of one SAE (`stacked_auxk_loss` with G = 1); k_aux defaults to d_in / 2."""
    if not bool(dead.any()):
        return x.new_zeros(())
    k_aux = k_aux or max(1, x.shape[-1] // 2)
    return stacked_auxk_loss(sae._centered(x)[None], residual[None], sae.W_enc[None], sae.b_enc[None],
                             sae.W_dec[None], dead[None], k_aux)[0]


# =====================================================================================================
# Many SAEs of one shape at once: the toy grids and the vision grid
# =====================================================================================================
STACKED_KINDS: dict[str, dict] = {
    "tied_linear": {"activation": "none", "tied": True, "bias": False},
    "tied_relu": {"activation": "relu", "tied": True, "bias": False},
    "tied_jumprelu": {"activation": "jumprelu", "tied": True, "bias": False},
    "tied_topk": {"activation": "topk", "tied": True, "bias": False},
    "topk_auxk": {"activation": "topk", "tied": False, "bias": True, "normalize_decoder": True, "auxk": True},
    "jumprelu": {"activation": "jumprelu", "tied": False, "bias": True, "learn_threshold": True},
}
"""SAE kinds of a stack:
- `tied_relu`, `tied_topk`, `tied_linear`, `tied_jumprelu`: the theory's SAE, x_m = σ(W_m x_p), x̂_p = W_mᵀ x_m,
  no biases (`tied_jumprelu` uses a fixed threshold θ);
- `topk_auxk`: the SAE practice uses (`SparseAutoencoder`'s default, the LM and vision SAEs): untied,
  encoder/decoder biases, unit-norm decoder rows, Top-k plus the AuxK loss on dead latents;
- `jumprelu`: untied with biases and a *learned* per-latent threshold trained with straight-through
  pseudo-derivatives and an L0 penalty (Rajamanoharan et al. 2024, Gemma Scope's recipe)."""
THEORY_KINDS: tuple[str, ...] = ("tied_linear", "tied_relu", "tied_jumprelu", "tied_topk")


@dataclass
class StackedSAEConfig:
    """Architecture shared by every SAE of one stack (all have the same shape and kind)."""

    n_p: int
    """Input dimensions (the theory's n_p; d_in of `SAEConfig`)."""
    n_m: int
    """Latents per SAE (n_latents of `SAEConfig`)."""
    kind: str = "tied_relu"
    """One of `STACKED_KINDS`."""
    k: int = 2
    """Active latents per row (Top-k kinds)."""
    threshold: float = 0.1
    """JumpReLU θ: fixed for `tied_jumprelu`, the initial value for the learned `jumprelu`."""
    l0_coeff: float = 0.01
    """Weight of the L0 penalty of the learned JumpReLU."""
    bandwidth: float = 0.05
    """Width ε of the rectangle kernel of JumpReLU's pseudo-derivative."""
    sparse: bool = False
    """Untied Top-k only: run the step through `kernels.StackedTopKSAE` (decoder and backward touch the k selected
    latents per row) instead of dense batched products. Same function; it pays off once rows are wide (the vision
    SAEs' 256 inputs), not at the toy's 20."""

    def __post_init__(self) -> None:
        if self.kind not in STACKED_KINDS:
            raise ValueError(f"kind={self.kind!r} is not one of {tuple(STACKED_KINDS)}")
        if self.activation == "topk" and not 1 <= self.k <= self.n_m:
            raise ValueError(f"k={self.k} must be in [1, n_m={self.n_m}]")
        if self.sparse and (self.activation != "topk" or self.spec["tied"]):
            raise ValueError(f"sparse=True needs an untied Top-k kind, not kind={self.kind!r}")

    @property
    def spec(self) -> dict:
        """The kind's architecture flags."""
        return STACKED_KINDS[self.kind]

    @property
    def activation(self) -> str:
        """none, relu, jumprelu or topk."""
        return self.spec["activation"]

    def to_dict(self) -> dict:
        """Plain dict for JSON."""
        return asdict(self)


class _Step(torch.autograd.Function):
    """Heaviside H(pre − θ) with a straight-through pseudo-derivative for θ only (rectangle kernel of width ε)."""

    @staticmethod
    def forward(ctx, pre: Tensor, theta: Tensor, eps: float) -> Tensor:  # noqa: D102
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: D102
        pre, theta = ctx.saved_tensors
        kernel = ((pre - theta).abs() < ctx.eps / 2).to(grad.dtype) / ctx.eps
        g_theta = -(grad * kernel).sum(1, keepdim=True)  # theta is [G, 1, m]: sum over the batch
        return None, g_theta, None


def encoder_affine(x: Tensor, W_enc: Tensor, b_enc: Tensor | None = None, b_dec: Tensor | None = None) -> Tensor:
    """(x − b_dec) W_encᵀ + b_enc of one SAE (x [N, d], W_enc [n, d]) or a stack (x [G, B, d], W_enc [G, n, d]);
    a bias that is None is left out (the theory's bias-free SAE)."""
    if b_dec is not None:
        x = x - b_dec.unsqueeze(-2)
    pre = x @ W_enc.transpose(-1, -2)
    return pre if b_enc is None else pre + b_enc.unsqueeze(-2)


class StackedSAE(nn.Module):
    """G SAEs of one kind and shape, stacked: weights [G, n_m, n_p]; inputs [G, B, n_p].

    Each SAE's initialisation depends on its seed only, so equal seeds start from equal weights (paired runs);
    `load_` replaces them (e.g. with `SparseAutoencoder` inits, so a stacked SAE is exactly that model).
    """

    def __init__(self, cfg: StackedSAEConfig, seeds: list[int], device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        self.cfg, self.seeds = cfg, list(seeds)
        G, m, d = len(seeds), cfg.n_m, cfg.n_p
        bound = 1.0 / math.sqrt(d)
        W = torch.stack([(torch.rand(m, d, generator=torch.Generator().manual_seed(s), dtype=torch.float64) * 2 - 1)
                         * bound for s in seeds]).to(dtype)
        if cfg.spec.get("normalize_decoder"):
            W = W / W.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        self.W_enc = nn.Parameter(W.clone().to(device))
        self.W_dec = self.W_enc if cfg.spec["tied"] else nn.Parameter(W.clone().to(device))
        bias = bool(cfg.spec["bias"])
        self.b_enc = nn.Parameter(torch.zeros(G, m, dtype=dtype, device=device), requires_grad=bias)
        self.b_dec = nn.Parameter(torch.zeros(G, d, dtype=dtype, device=device), requires_grad=bias)
        learn = bool(cfg.spec.get("learn_threshold"))
        self.log_theta = nn.Parameter(torch.full((G, m), math.log(max(cfg.threshold, 1e-6)), dtype=dtype,
                                                 device=device), requires_grad=learn)

    @property
    def groups(self) -> int:
        """Number of stacked SAEs."""
        return self.W_enc.shape[0]

    @torch.no_grad()
    def set_encoder(self, W: Tensor) -> None:
        """Start every group (or group g of a [G, n_m, n_p] tensor) from given encoder rows, e.g. W_pᵀ."""
        W = W.to(self.W_enc).expand_as(self.W_enc)
        self.W_enc.copy_(W)
        if not self.cfg.spec["tied"]:
            self.W_dec.copy_(W)

    @torch.no_grad()
    def load_(self, saes: list[SparseAutoencoder]) -> None:
        """Take every group's weights from one `SparseAutoencoder` each (same shape; untied with biases)."""
        for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
            getattr(self, name).copy_(torch.stack([getattr(s, name).detach() for s in saes]))

    @torch.no_grad()
    def init_b_dec_(self, x_p: Tensor) -> None:
        """Decoder bias at each group's data mean (sparsify's choice; no-op without biases)."""
        if self.cfg.spec["bias"]:
            self.b_dec.copy_(x_p.mean(1).to(self.b_dec))

    def theta(self) -> Tensor:
        """JumpReLU thresholds [G, n_m]."""
        return self.log_theta.exp()

    def pre_activations(self, x_p: Tensor) -> Tensor:
        """(x_p − b_dec) W_encᵀ + b_enc, [G, B, n_m]."""
        bias = self.cfg.spec["bias"]
        return encoder_affine(x_p, self.W_enc, self.b_enc if bias else None, self.b_dec if bias else None)

    def activate(self, pre: Tensor) -> tuple[Tensor, Tensor | None]:
        """(latents, H) where H is the learned JumpReLU's step (for its L0 penalty), else None."""
        if self.cfg.spec.get("learn_threshold"):
            H = _Step.apply(pre.detach(), self.theta()[:, None, :], self.cfg.bandwidth)
            return pre * H, H
        # torch's CPU top-k is 5-10x slower at k <= 8 of a few hundred latents: the fast selection
        theta = self.theta()[:, None, :] if self.cfg.activation == "jumprelu" else 0.0
        return activate(pre, self.cfg.activation, self.cfg.k, theta, fast_topk=True), None

    def encode(self, x_p: Tensor) -> Tensor:
        """Latents x_m [G, B, n_m] (dense)."""
        return self.activate(self.pre_activations(x_p))[0]

    def decode(self, z: Tensor) -> Tensor:
        """Reconstruction x̂_p [G, B, n_p]."""
        out = torch.bmm(z, self.W_dec)
        return out + self.b_dec[:, None, :] if self.cfg.spec["bias"] else out

    def forward(self, x_p: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """(x̂, fired [G, n_m]: latents that fired on some row, JumpReLU step H or None).

        The sparse path (`cfg.sparse`) never forms the dense latents; the dense one returns the same x̂ and fired.
        """
        if self.cfg.sparse:
            xc = x_p - self.b_dec[:, None, :]
            x_hat, vals, flat = StackedTopKSAE.apply(xc, self.W_enc, self.b_enc, self.W_dec, self.cfg.k)
            with torch.no_grad():
                fired = torch.zeros(self.W_enc.shape[0] * self.cfg.n_m, dtype=torch.bool, device=xc.device)
                fired[flat.reshape(-1)[vals.reshape(-1) > 0]] = True
            return x_hat + self.b_dec[:, None, :], fired.view(-1, self.cfg.n_m), None
        z, H = self.activate(self.pre_activations(x_p))
        with torch.no_grad():
            fired = z.amax(1) > 0  # = (z > 0).any(1); a max over the batch axis is vectorised, `any` is not (10x)
        return self.decode(z), fired, H

    def group_weights(self, g: int) -> dict[str, Tensor]:
        """Detached float64 weights of group g (W_enc, W_dec, b_enc, b_dec, theta)."""
        return {"W_enc": self.W_enc[g].detach().double().cpu(), "W_dec": self.W_dec[g].detach().double().cpu(),
                "b_enc": self.b_enc[g].detach().double().cpu(), "b_dec": self.b_dec[g].detach().double().cpu(),
                "theta": self.theta()[g].detach().double().cpu()}

    def normalize_decoder_(self) -> None:
        """Unit-norm decoder rows (untied kinds that ask for it)."""
        normalize_rows_(self.W_dec)

    def remove_parallel_decoder_grad_(self) -> None:
        """Project out the gradient along each decoder row so the renormalised step is exact."""
        remove_parallel_grad_(self.W_dec)
