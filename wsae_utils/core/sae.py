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

from wsae_utils.core.kernels import TopKSAEFunction, bag_scatter, topk_backward, topk_forward, topk_indices

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
    (`kernels.TopKSAEFunction`, `kernels.StackedTopK`) compute the same function without a dense tensor."""
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
    vals, idx = pre.topk(min(k_aux, m), dim=-1, sorted=False)
    vals = torch.where(torch.isfinite(vals), vals, torch.zeros_like(vals)).relu()
    B, kk = idx.shape[1], idx.shape[2]
    flat = (idx + (torch.arange(G, device=idx.device) * m)[:, None, None]).reshape(G * B, kk)
    D = torch.gather(W_dec, 1, order[..., None].expand(G, m, d)).reshape(G * m, d)
    recon = F.embedding_bag(flat, D, per_sample_weights=vals.reshape(G * B, kk), mode="sum").view(G, B, d)
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
