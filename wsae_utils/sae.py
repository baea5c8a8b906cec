"""Sparse autoencoder model and the (weighted) reconstruction loss.

One module, one model: encoder rows and decoder rows are both stored as [n_latents, d_in] tensors
(`W_enc`, `W_dec`; SAELens stores `W_enc` transposed, see `wsae_utils.export`). The theory's SAE is the
special case `tied=True, bias=False`: x_m = σ(W_m x_p), x̂_p = W_mᵀ x_m with W_m = `W_enc`.

Top-k runs a sparse path: the encoder's backward and the decoder touch only the k selected latents per row
(embedding_bag's kernels), so a step costs one dense GEMM instead of three (the sparsify trick), and no dense
[batch, n_latents] gradient is ever formed. `topk_loss_and_grads` is that step written out by hand (no autograd
graph), which the trainer uses; with `matmul_dtype=bfloat16` only the selection GEMM runs in bf16 (AVX512-BF16
CPUs, GPUs): the selected values, the weights and every gradient stay fp32.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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


_EB = torch.ops.aten  # embedding_bag's own kernels: its forward, weight-grad and per-sample-weight-grad
_SUM = 0  # embedding_bag mode "sum"


def _bag_dot(rows: Tensor, W: Tensor, flat_idx: Tensor, offsets: Tensor, offset2bag: Tensor) -> Tensor:
    """d[b·k + j] = rows[b] · W[idx[b, j]] without gathering a [B, k, d] tensor (embedding_bag's psw-grad kernel)."""
    return _EB._embedding_bag_per_sample_weights_backward(rows, W, flat_idx, offsets, offset2bag, _SUM)


def _bag_scatter(rows: Tensor, flat_idx: Tensor, offsets: Tensor, bag: tuple[Tensor, Tensor, Tensor], n: int,
                 w: Tensor) -> Tensor:
    """G[m] = Σ_{(b, j): idx[b, j] = m} w[b·k + j] rows[b], dense [n, d] (embedding_bag's weight-grad kernel)."""
    if rows.shape[1] <= 64:
        # narrow rows (the toy model's d = 20): the [B·k, d] product is tiny and one index_add beats the
        # sort inside embedding_bag's kernel (measured 0.24 vs 0.89 ms at B = 4096, k = 4); index_select of
        # the cached row map then an in-place scale is 2x faster than a broadcast [B, 1, d] x [B, k, 1] product
        B, d = rows.shape
        row_of = _bag_layout(B, flat_idx.numel() // B, rows.device)[1]
        contrib = rows.index_select(0, row_of).mul_(w.unsqueeze(1))
        return torch.zeros(n, d, dtype=rows.dtype, device=rows.device).index_add_(0, flat_idx, contrib)
    offset2bag, bag_size, max_idx = bag
    return _EB._embedding_bag_backward(rows, flat_idx, offsets, offset2bag, bag_size, max_idx, n, False, _SUM, False, w)


PACKED_MAX_LATENTS = 512
"""Widest layer whose CPU top-k (k <= 8) packs the latent index into the pre-activation's low mantissa bits."""


def _packed_topk_idx(pre: Tensor, k: int) -> Tensor:
    """Top-k indices by k rounds of a vectorised row max over keys that carry their own column index.

    torch's CPU max-with-indices / argmax / small top-k walk each row with a scalar loop (~300 µs per round
    at [4096, 200]), while `amax` is vectorised (~40 µs). Writing the column index into the low b = ⌈log₂ M⌉
    mantissa bits (truncation toward zero is monotone) makes every key unique and its index readable from the
    max itself. The order can differ from exact fp32 only between pre-activations that agree to a relative
    2^-(23-b) (3e-5 at M = 256); the values are recomputed exactly by the caller. `pre` is overwritten.
    """
    n = pre.shape[-1]
    low = (1 << max(1, (n - 1).bit_length())) - 1
    pre.view(torch.int32).bitwise_and_(~low).bitwise_or_(_arange(n, torch.int32, pre.device))
    out = []
    for j in range(k):
        # a NaN row gives garbage low bits: clamp so that the gather downstream cannot read out of bounds
        out.append(pre.amax(dim=-1, keepdim=True).view(torch.int32).bitwise_and_(low).long().clamp_(max=n - 1))
        if j + 1 < k:
            pre.scatter_(-1, out[-1], float("-inf"))
    return out[0] if k == 1 else torch.cat(out, dim=-1)


@lru_cache(maxsize=16)
def _arange(n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A cached arange (never written to): saves its allocation in every step of a small SAE."""
    return torch.arange(n, dtype=dtype, device=device)


@lru_cache(maxsize=16)
def _bag_layout(B: int, k: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """embedding_bag's (offsets, offset2bag) for B bags of k entries, cached (they only depend on B and k)."""
    return torch.arange(0, B * k, k, device=device), torch.arange(B, device=device).repeat_interleave(k)


def _packed_applies(device: torch.device, n: int, k: int) -> bool:
    """Whether the packed-key selection runs: CPU, at most PACKED_MAX_LATENTS latents, k <= 8."""
    return device.type == "cpu" and n <= PACKED_MAX_LATENTS and k <= 8


def _topk(pre: Tensor, k: int, owned: bool = False) -> tuple[Tensor, Tensor | None]:
    """(indices, values) of the k largest entries per row, unsorted; values None where the path cannot give them
    exactly. `owned`: `pre` is a temporary that may be overwritten.

    torch's CPU top-k only takes its partial-sort path when 64·k <= n_latents; below that (the toy model's
    k = 1..4 of 200) the packed-key rounds of `_packed_topk_idx` are 3-2.5x faster than max / argmax rounds.
    """
    on_cpu = pre.device.type == "cpu"
    if pre.dtype == torch.float32 and _packed_applies(pre.device, pre.shape[-1], k):
        return _packed_topk_idx(pre if owned else pre.clone(), k), None
    if k == 1:
        vals, idx = pre.max(dim=-1, keepdim=True)  # one pass, ~15 % faster than top-k on CPU
        return idx, vals
    if not on_cpu or 64 * k <= pre.shape[-1] or k > 8:
        vals, idx = pre.topk(k, dim=-1, sorted=False)
        return idx, vals
    pre = pre if owned else pre.clone()
    out = []
    for j in range(k):
        i = pre.argmax(dim=-1, keepdim=True)
        out.append(i)
        if j + 1 < k:
            pre.scatter_(-1, i, float("-inf"))
    return torch.cat(out, dim=-1), None


def topk_indices(pre: Tensor, k: int) -> Tensor:
    """Indices of the k largest entries along the last dimension (unsorted, no gradient), by the fastest path.

    Same as `pre.topk(k).indices` up to order, except between entries equal to within the packed-key tolerance
    (see `_packed_topk_idx`); gather the values from `pre` with `pre.gather(-1, idx)` to keep autograd.
    """
    with torch.no_grad():
        return _topk(pre.detach(), k)[0]


_PRE_BUFFER: list[Tensor] = []
"""The reusable CPU buffer of the selection GEMM's [rows, n_latents] output (at most one, grown on demand)."""


def _pre_buffer(rows: int, n: int, dtype: torch.dtype) -> Tensor:
    """A [rows, n] view of the reused CPU pre-activation buffer.

    A fresh 400 MB output per step (the paper shape) costs ~100k page faults, ~95 ms of a ~1 s step: glibc
    returns allocations that large to the kernel at every free. Writing into one kept buffer avoids that; it is
    only ever used inside `topk_select`, and `release_topk_buffer` frees it.
    """
    need = rows * n * torch.finfo(dtype).bits // 8
    if not _PRE_BUFFER or _PRE_BUFFER[0].numel() < need:
        _PRE_BUFFER[:] = [torch.empty(need, dtype=torch.uint8)]
    return _PRE_BUFFER[0][:need].view(dtype).view(rows, n)


def release_topk_buffer() -> None:
    """Free the CPU pre-activation buffer kept between Top-k steps (it is rebuilt on the next step)."""
    _PRE_BUFFER.clear()


def topk_select(x: Tensor, W: Tensor, b: Tensor, k: int, matmul_dtype: torch.dtype = torch.float32,
                chunk_rows: int = 0) -> Tensor:
    """Indices of the k largest pre-activations x Wᵀ + b per row, [B, k] (unsorted); no gradient.

    With `matmul_dtype=bfloat16` the dense GEMM (the one dense product of a Top-k step) runs in bf16; only the
    selection uses it (ties within bf16 rounding may pick a different latent), the values are recomputed in fp32
    by the caller. `chunk_rows` > 0 bounds the dense [rows, n_latents] buffer (peak memory) at some speed cost.
    A CPU layer narrow enough for the packed-key selection keeps fp32: there bf16 saves nothing on a GEMM that
    small and its selection would fall back to per-row argmax (measured 2.5x slower at the toy shape).
    """
    return _select(x, W, b, k, matmul_dtype, chunk_rows)[0]


def _select(x: Tensor, W: Tensor, b: Tensor, k: int, matmul_dtype: torch.dtype, chunk_rows: int
            ) -> tuple[Tensor, Tensor | None]:
    """`topk_select` plus the selected fp32 pre-activations when the selection could read them exactly (else None)."""
    if _packed_applies(x.device, W.shape[0], k):
        matmul_dtype = torch.float32
    with torch.no_grad():
        if matmul_dtype != torch.float32:
            Wm, bm = W.to(matmul_dtype), b.to(matmul_dtype)
        idx, vals = [], []
        for xs in x.split(chunk_rows) if 0 < chunk_rows < x.shape[0] else (x,):
            bias, lhs, rhs = (b, xs, W) if matmul_dtype == torch.float32 else (bm, xs.to(matmul_dtype), Wm)
            if x.device.type == "cpu":
                pre = torch.addmm(bias, lhs, rhs.t(), out=_pre_buffer(xs.shape[0], W.shape[0], matmul_dtype))
            else:  # the CUDA caching allocator already reuses the block
                pre = torch.addmm(bias, lhs, rhs.t())
            i, v = _topk(pre, k, owned=True)
            idx.append(i)
            vals.append(v if matmul_dtype == torch.float32 else None)
            del pre
        exact = None if any(v is None for v in vals) else vals[0] if len(vals) == 1 else torch.cat(vals)
        return (idx[0] if len(idx) == 1 else torch.cat(idx)), exact


class _TopKSAE(torch.autograd.Function):
    """Top-k encoder + sparse decoder as one op: x_c ↦ (Σ_j relu(v_bj) W_dec[i_bj], v, i) with v the top-k
    pre-activations of x_c W_encᵀ + b_enc.

    Only the encoder forward is a dense GEMM. The backward touches the k selected latents per row: the
    decoder and encoder weight gradients are embedding_bag weight-gradients (sorted scatter-adds, no
    [B, n_latents] gradient), the gradients of the values are row dot products.
    """

    @staticmethod
    def forward(ctx, x: Tensor, W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, k: int,  # noqa: D102
                matmul_dtype: torch.dtype, chunk_rows: int):
        x_hat, vals, idx, flat, offsets, offset2bag, bag = _topk_forward(x, W_enc, b_enc, W_dec, k, matmul_dtype,
                                                                        chunk_rows)
        ctx.save_for_backward(x, W_enc, W_dec, vals, flat, offsets, offset2bag, *bag)
        ctx.mark_non_differentiable(idx)
        return x_hat, vals.view(idx.shape), idx

    @staticmethod
    def backward(ctx, g_xhat: Tensor, g_vals: Tensor | None, _g_idx: Tensor | None):  # noqa: D102
        x, W_enc, W_dec, vals, flat, offsets, offset2bag, *bag = ctx.saved_tensors
        grads = _topk_backward(x, W_enc, W_dec, vals, flat, offsets, offset2bag, tuple(bag), g_xhat, g_vals,
                               tuple(ctx.needs_input_grad[:4]))
        return (*grads, None, None, None)


def _topk_backward(x: Tensor, W_enc: Tensor, W_dec: Tensor, vals: Tensor, flat: Tensor, offsets: Tensor,
                   offset2bag: Tensor, bag: tuple[Tensor, Tensor, Tensor], g_xhat: Tensor, g_vals: Tensor | None,
                   need: tuple[bool, bool, bool, bool]) -> tuple[Tensor | None, ...]:
    """Gradients (x, W_enc, b_enc, W_dec) of the Top-k encoder + sparse decoder given dL/dx̂ (and dL/dvalues)."""
    M = W_enc.shape[0]
    g_xhat = g_xhat.contiguous()
    dv = _bag_dot(g_xhat, W_dec, flat, offsets, offset2bag)
    if g_vals is not None:
        dv = dv + g_vals.reshape(-1)
    g = dv * (vals > 0)  # relu'
    grad_x = grad_We = grad_be = grad_Wd = None
    if need[3]:
        grad_Wd = _bag_scatter(g_xhat, flat, offsets, bag, M, vals)
    if need[1]:
        grad_We = _bag_scatter(x.contiguous(), flat, offsets, bag, M, g)
    if need[2]:
        grad_be = torch.zeros(M, dtype=g.dtype, device=g.device).index_add_(0, flat, g)
    if need[0]:
        grad_x = _EB._embedding_bag(W_enc, flat, offsets, False, _SUM, False, g)[0]
    return grad_x, grad_We, grad_be, grad_Wd


def _topk_forward(x: Tensor, W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, k: int, matmul_dtype: torch.dtype,
                  chunk_rows: int) -> tuple[Tensor, ...]:
    """x̂ (no b_dec), values, indices and what the backward needs, for the Top-k encoder + sparse decoder."""
    B = x.shape[0]
    idx, pre_vals = _select(x, W_enc, b_enc, k, matmul_dtype, chunk_rows)
    flat = idx.reshape(-1)
    offsets, offset2bag = _bag_layout(B, k, x.device)
    if pre_vals is None:  # recompute in fp32: exact whatever precision the selection GEMM ran in
        pre_vals = _bag_dot(x, W_enc, flat, offsets, offset2bag) + b_enc[flat]
    vals = pre_vals.reshape(-1).relu_()
    x_hat, o2b, bag_size, max_idx = _EB._embedding_bag(W_dec, flat, offsets, False, _SUM, False, vals)
    return x_hat, vals, idx, flat, offsets, offset2bag, (o2b, bag_size, max_idx)


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

    def _activate(self, pre: Tensor) -> Tensor:
        act = self.cfg.activation
        if act == "none":
            return pre
        if act == "relu":
            return pre.relu()
        if act == "jumprelu":
            return pre * (pre > self.cfg.threshold)
        vals, idx = pre.topk(self.cfg.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter_(-1, idx, vals.relu())

    def encode(self, x: Tensor) -> Tensor:
        """Dense latent activations [B, n_latents]."""
        return self._activate(self.pre_activations(x))

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
            x_hat, vals, idx = _TopKSAE.apply(self._centered(x), self.W_enc, self.b_enc, self.W_dec, self.cfg.k,
                                              matmul_dtype, self.chunk_rows)
            return SAEOutput(x_hat=x_hat + self.b_dec if self.cfg.bias else x_hat, top_vals=vals, top_idx=idx)
        with torch.autocast(x.device.type, dtype=matmul_dtype, enabled=matmul_dtype != torch.float32):
            acts = self._activate(self.pre_activations(x))
        acts = acts.float()
        return SAEOutput(x_hat=self.decode(acts), acts=acts)

    # -- constraints ---------------------------------------------------------------------------------
    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Rescale decoder rows to unit norm."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))

    @torch.no_grad()
    def remove_parallel_decoder_grad_(self) -> None:
        """Project out the gradient component along each decoder row (keeps the unit-norm step exact)."""
        if self.W_dec.grad is None:
            return
        # (g·Ŵ)Ŵ = (g·W) W / ‖W‖², written so that no [n_latents, d_in] temporary is formed
        W, G = self.W_dec, self.W_dec.grad
        dots = torch.bmm(G.unsqueeze(1), W.unsqueeze(2)).view(-1)  # row dots; einsum's dispatch costs 2x more
        coef = dots / torch.linalg.vector_norm(W, dim=1).pow(2).clamp_min(1e-24)
        G.addcmul_(W, coef.unsqueeze(1), value=-1.0)

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
    of a [B, d_in] tensor), and the encoder/decoder backward is the sparse one of `_TopKSAE`.
    Returns (loss, x̂, values [B, k], indices [B, k]).
    """
    cfg = sae.cfg
    if cfg.activation != "topk":
        raise ValueError(f"topk_loss_and_grads needs a top-k SAE, not activation={cfg.activation!r}")
    B = x.shape[0]
    x_c = sae._centered(x)
    x_hat, vals, idx, flat, offsets, offset2bag, bag = _topk_forward(
        x_c, sae.W_enc, sae.b_enc, sae.W_dec, cfg.k, matmul_dtype, sae.chunk_rows)
    if cfg.bias:
        x_hat += sae.b_dec
    r = x_hat - x
    if gamma is None:
        wr = r
    else:
        wr = r * (gamma.pow(2) if gamma_inside_norm else gamma)
    loss = torch.dot(wr.view(-1), r.view(-1)) / B  # = mean over rows of Σ_i w_i (x̂ − x)_i²
    g_xhat = wr.mul_(2.0 / B)
    tied = sae.W_dec is sae.W_enc
    need = (cfg.bias, True, cfg.bias, not tied)
    grad_x, grad_We, grad_be, grad_Wd = _topk_backward(x_c, sae.W_enc, sae.W_dec, vals, flat, offsets, offset2bag,
                                                       bag, g_xhat, None, need)
    if tied:
        grad_We += _bag_scatter(g_xhat, flat, offsets, bag, cfg.n_latents, vals)
    else:
        sae.W_dec.grad = grad_Wd
    sae.W_enc.grad = grad_We
    if cfg.bias:
        sae.b_enc.grad = grad_be
        sae.b_dec.grad = (g_xhat - grad_x).sum(0)  # x̂ adds b_dec, x_c = x − b_dec subtracts it
    return loss, x_hat, vals.view(idx.shape), idx


def reconstruction_loss(
    x: Tensor, x_hat: Tensor, gamma: Tensor | None = None, gamma_inside_norm: bool = True
) -> Tensor:
    """Weighted squared error, summed over dimensions and averaged over rows.

    L = E‖Γ(x − x̂)‖² when `gamma_inside_norm` (the paper's form: γ² multiplies the squared error),
    else E Σ_i γ_i (x_i − x̂_i)². `gamma=None` (or all ones) is the plain SAE loss.
    """
    sq = (x - x_hat).pow(2)
    if gamma is not None:
        sq = sq * (gamma.pow(2) if gamma_inside_norm else gamma)
    return sq.sum(-1).mean()


def make_gamma(proxy: Tensor, alpha: float, normalize: Literal["none", "mean"] = "none") -> Tensor:
    """Per-input-dimension weights γ = s^α from a non-negative proxy s; α = 0 gives all ones.

    `normalize="mean"` rescales γ to mean one (a global rescale only changes the loss scale).
    """
    if alpha < 0:
        raise ValueError(f"alpha={alpha} must be >= 0")
    proxy = torch.as_tensor(proxy, dtype=torch.float32)
    if not torch.isfinite(proxy).all() or (proxy < 0).any():
        raise ValueError("weight proxy must be finite and non-negative")
    gamma = torch.ones_like(proxy) if alpha == 0 else proxy.pow(alpha)
    if normalize == "mean":
        mean = gamma.mean()
        if mean <= 0:
            raise ValueError("cannot normalise γ to mean one: all weights are zero")
        gamma = gamma / mean
    elif normalize != "none":
        raise ValueError(f"normalize={normalize!r} is not one of ('none', 'mean')")
    return gamma


def auxk_loss(
    sae: SparseAutoencoder, x: Tensor, residual: Tensor, dead: Tensor, k_aux: int | None = None
) -> Tensor:
    """AuxK: reconstruct the detached residual from the top dead latents (OpenAI / sparsify recipe).

    Only the dead encoder rows are multiplied, the decoder bias is not added again (the residual already
    contains it), and the loss is scaled by min(#dead / k_aux, 1) and normalised by the residual's variance.
    """
    dead_idx = dead.nonzero().squeeze(-1)
    n_dead = int(dead_idx.numel())
    if n_dead == 0:
        return x.new_zeros(())
    k_aux = k_aux or max(1, x.shape[-1] // 2)
    pre = F.linear(sae._centered(x), sae.W_enc[dead_idx], sae.b_enc[dead_idx])
    vals, idx = pre.topk(min(k_aux, n_dead), dim=-1, sorted=False)
    recon = F.embedding_bag(idx, sae.W_dec[dead_idx], per_sample_weights=vals.relu(), mode="sum")
    residual = residual.detach()
    denom = (residual - residual.mean(0)).pow(2).sum().clamp_min(1e-12)
    return min(n_dead / k_aux, 1.0) * (recon - residual).pow(2).sum() / denom
