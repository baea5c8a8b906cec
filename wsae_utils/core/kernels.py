"""CPU/GPU kernels of the Top-k SAE step: top-k selection (a packed small-k path where torch's CPU top-k is slow,
a reused pre-activation buffer), and the sparse forward/backward through embedding_bag's own kernels, so a step
forms no dense [batch, n_latents] gradient. `wsae_utils.core.sae` builds the model on them.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

_EB = torch.ops.aten  # embedding_bag's own kernels: its forward, weight-grad and per-sample-weight-grad
_SUM = 0  # embedding_bag mode "sum"


def _bag_dot(rows: Tensor, W: Tensor, flat_idx: Tensor, offsets: Tensor, offset2bag: Tensor) -> Tensor:
    """d[b·k + j] = rows[b] · W[idx[b, j]] without gathering a [B, k, d] tensor (embedding_bag's psw-grad kernel)."""
    return _EB._embedding_bag_per_sample_weights_backward(rows, W, flat_idx, offsets, offset2bag, _SUM)


def bag_scatter(rows: Tensor, flat_idx: Tensor, offsets: Tensor, bag: tuple[Tensor, Tensor, Tensor], n: int,
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


class TopKSAEFunction(torch.autograd.Function):
    """Top-k encoder + sparse decoder as one op: x_c ↦ (Σ_j relu(v_bj) W_dec[i_bj], v, i) with v the top-k
    pre-activations of x_c W_encᵀ + b_enc.

    Only the encoder forward is a dense GEMM. The backward touches the k selected latents per row: the
    decoder and encoder weight gradients are embedding_bag weight-gradients (sorted scatter-adds, no
    [B, n_latents] gradient), the gradients of the values are row dot products.
    """

    @staticmethod
    def forward(ctx, x: Tensor, W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, k: int,  # noqa: D102
                matmul_dtype: torch.dtype, chunk_rows: int):
        x_hat, vals, idx, flat, offsets, offset2bag, bag = topk_forward(x, W_enc, b_enc, W_dec, k, matmul_dtype,
                                                                        chunk_rows)
        ctx.save_for_backward(x, W_enc, W_dec, vals, flat, offsets, offset2bag, *bag)
        ctx.mark_non_differentiable(idx)
        return x_hat, vals.view(idx.shape), idx

    @staticmethod
    def backward(ctx, g_xhat: Tensor, g_vals: Tensor | None, _g_idx: Tensor | None):  # noqa: D102
        x, W_enc, W_dec, vals, flat, offsets, offset2bag, *bag = ctx.saved_tensors
        grads = topk_backward(x, W_enc, W_dec, vals, flat, offsets, offset2bag, tuple(bag), g_xhat, g_vals,
                               tuple(ctx.needs_input_grad[:4]))
        return (*grads, None, None, None)


def topk_backward(x: Tensor, W_enc: Tensor, W_dec: Tensor, vals: Tensor, flat: Tensor, offsets: Tensor,
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
        grad_Wd = bag_scatter(g_xhat, flat, offsets, bag, M, vals)
    if need[1]:
        grad_We = bag_scatter(x.contiguous(), flat, offsets, bag, M, g)
    if need[2]:
        grad_be = torch.zeros(M, dtype=g.dtype, device=g.device).index_add_(0, flat, g)
    if need[0]:
        grad_x = _EB._embedding_bag(W_enc, flat, offsets, False, _SUM, False, g)[0]
    return grad_x, grad_We, grad_be, grad_Wd


def topk_forward(x: Tensor, W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, k: int, matmul_dtype: torch.dtype,
                  chunk_rows: int) -> tuple[Tensor, ...]:
    """x̂ (no b_dec), values, indices and what the backward needs, for the Top-k encoder + sparse decoder."""
    idx, pre_vals = _select(x, W_enc, b_enc, k, matmul_dtype, chunk_rows)
    x_hat, vals, flat, offsets, offset2bag, bag = _sparse_forward(x, W_enc, b_enc, W_dec, idx.reshape(-1), pre_vals, k)
    return x_hat, vals, idx, flat, offsets, offset2bag, bag


def _sparse_forward(x: Tensor, W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, flat: Tensor, pre_vals: Tensor | None,
                    k: int) -> tuple[Tensor, ...]:
    """(x̂, values, flat, offsets, offset2bag, bag) of rows x [B, d] whose k latents `flat` [B·k] are chosen."""
    offsets, offset2bag = _bag_layout(x.shape[0], k, x.device)
    if pre_vals is None:  # recompute in fp32: exact whatever precision or packing the selection used
        pre_vals = _bag_dot(x, W_enc, flat, offsets, offset2bag) + b_enc[flat]
    vals = pre_vals.reshape(-1).relu_()
    x_hat, o2b, bag_size, max_idx = _EB._embedding_bag(W_dec, flat, offsets, False, _SUM, False, vals)
    return x_hat, vals, flat, offsets, offset2bag, (o2b, bag_size, max_idx)


class StackedTopKSAE(torch.autograd.Function):
    """G Top-k SAEs of one shape as one op: centred inputs xc [G, B, d] ↦ (x̂ without b_dec [G, B, d], values
    relu(top-k pre-activations) [G, B, k], flat latent indices [G, B, k]).

    Each SAE selects with its own GEMM (one batched GEMM for all G). After that the stack is one SAE of G·n latents
    whose rows only reach their own SAE's latents (job g's latent j is flat index g·n + j), so the sparse decoder
    and the whole backward are `TopKSAEFunction`'s: embedding_bag kernels over the k selected latents per row, no
    dense [G, B, n] gradient and no [G·B·k, d] gather.
    """

    @staticmethod
    def forward(ctx, xc: Tensor, W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, k: int):  # noqa: D102
        G, B, d = xc.shape
        n = W_enc.shape[1]
        with torch.no_grad():
            idx, pre_vals = _topk(torch.baddbmm(b_enc[:, None, :], xc, W_enc.transpose(1, 2)), k, owned=True)
        flat = (idx + (torch.arange(G, device=idx.device) * n)[:, None, None]).reshape(-1)
        x2, We2, Wd2 = xc.reshape(G * B, d), W_enc.reshape(G * n, d), W_dec.reshape(G * n, d)
        x_hat, vals, flat, offsets, offset2bag, bag = _sparse_forward(x2, We2, b_enc.reshape(-1), Wd2, flat,
                                                                      pre_vals, k)
        ctx.save_for_backward(x2, We2, Wd2, vals, flat, offsets, offset2bag, *bag)
        ctx.shape = (G, B, n, d, k)
        ctx.mark_non_differentiable(flat)
        return x_hat.view(G, B, d), vals.view(G, B, k), flat.view(G, B, k)

    @staticmethod
    def backward(ctx, g_xhat: Tensor, g_vals: Tensor | None, _g_flat: Tensor | None):  # noqa: D102
        x2, We2, Wd2, vals, flat, offsets, offset2bag, *bag = ctx.saved_tensors
        G, B, n, d, k = ctx.shape
        g_vals = None if g_vals is None else g_vals.reshape(-1)
        gx, gWe, gbe, gWd = topk_backward(x2, We2, Wd2, vals, flat, offsets, offset2bag, tuple(bag),
                                          g_xhat.reshape(G * B, d), g_vals, tuple(ctx.needs_input_grad[:4]))
        return (None if gx is None else gx.view(G, B, d), None if gWe is None else gWe.view(G, n, d),
                None if gbe is None else gbe.view(G, n), None if gWd is None else gWd.view(G, n, d), None)
