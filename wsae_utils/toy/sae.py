"""Toy SAEs trained many at once: G small SAEs in one set of stacked tensors (one bmm per step), with the
convergence criterion every toy verdict relies on.

The toy experiments need hundreds of tiny SAEs (n_p = 20 inputs, ≤ 400 latents). One at a time they are
dominated by per-step Python overhead; stacked along a group axis G, one step trains all of them. Groups are
independent: each has its own weights, Adam state (Adam is elementwise, so one optimiser over stacked tensors is
G independent optimisers), data pool, Γ and seed. Groups that share (seed, S) see exactly the same batches, so
a comparison between them (e.g. α = 0 vs α = 1) is paired.

SAE kinds (`SAE_KINDS`):
- `tied_relu`, `tied_topk`, `tied_linear`, `tied_jumprelu`: the theory's SAE, x_m = σ(W_m x_p), x̂_p = W_mᵀ x_m,
  no biases (`tied_jumprelu` uses a fixed threshold θ);
- `topk_auxk`: the SAE practice uses (and the LM experiment): untied, encoder/decoder biases, unit-norm
  decoder rows, Top-k plus the AuxK loss on dead latents (OpenAI / sparsify recipe);
- `jumprelu`: untied with biases and a *learned* per-latent threshold trained with straight-through
  pseudo-derivatives and an L0 penalty (Rajamanoharan et al. 2024, Gemma Scope's recipe). Nothing fixes the scale
  of its latents (the L0 penalty is scale-free), so its latents are compared with x in input units, z_j·‖d_j‖
  (`toy_eval.recovery_metrics`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from wsae_utils.core.sae import (
    activate,
    error_weights,
    normalize_rows_,
    remove_parallel_grad_,
    stacked_auxk_loss,
    weighted_sq_error,
)
from wsae_utils.core.train import batch_generator, lr_scale

SAE_KINDS: dict[str, dict] = {
    "tied_linear": {"activation": "none", "tied": True, "bias": False},
    "tied_relu": {"activation": "relu", "tied": True, "bias": False},
    "tied_jumprelu": {"activation": "jumprelu", "tied": True, "bias": False},
    "tied_topk": {"activation": "topk", "tied": True, "bias": False},
    "topk_auxk": {"activation": "topk", "tied": False, "bias": True, "normalize_decoder": True, "auxk": True},
    "jumprelu": {"activation": "jumprelu", "tied": False, "bias": True, "learn_threshold": True},
}
THEORY_KINDS: tuple[str, ...] = ("tied_linear", "tied_relu", "tied_jumprelu", "tied_topk")


@dataclass
class ToySAEConfig:
    """Architecture shared by every SAE of one batched group (all groups have the same shape)."""

    n_p: int
    n_m: int
    kind: str = "tied_relu"
    k: int = 2
    """Active latents per row (Top-k kinds)."""
    threshold: float = 0.1
    """JumpReLU θ: fixed for `tied_jumprelu`, the initial value for the learned `jumprelu`."""
    l0_coeff: float = 0.01
    """Weight of the L0 penalty of the learned JumpReLU."""
    bandwidth: float = 0.05
    """Width ε of the rectangle kernel of JumpReLU's pseudo-derivative."""
    auxk_alpha: float = 1.0 / 32
    """Weight of the AuxK loss (`topk_auxk`)."""

    def __post_init__(self) -> None:
        if self.kind not in SAE_KINDS:
            raise ValueError(f"kind={self.kind!r} is not one of {tuple(SAE_KINDS)}")
        if self.activation == "topk" and not 1 <= self.k <= self.n_m:
            raise ValueError(f"k={self.k} must be in [1, n_m={self.n_m}]")

    @property
    def spec(self) -> dict:
        """The kind's architecture flags."""
        return SAE_KINDS[self.kind]

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


class BatchedToySAE(nn.Module):
    """G SAEs of one kind and shape, stacked: weights [G, n_m, n_p]; inputs [G, B, n_p]."""

    def __init__(self, cfg: ToySAEConfig, seeds: list[int], device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        self.cfg, self.seeds = cfg, list(seeds)
        G, m, d = len(seeds), cfg.n_m, cfg.n_p
        bound = 1.0 / math.sqrt(d)
        # Each group's init depends on its seed only, so equal seeds start from equal weights (paired runs).
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
    def init_b_dec_(self, x_p: Tensor) -> None:
        """Decoder bias at each group's data mean (sparsify's choice; no-op without biases)."""
        if self.cfg.spec["bias"]:
            self.b_dec.copy_(x_p.mean(1).to(self.b_dec))

    def theta(self) -> Tensor:
        """JumpReLU thresholds [G, n_m]."""
        return self.log_theta.exp()

    def pre_activations(self, x_p: Tensor) -> Tensor:
        """(x_p − b_dec) W_encᵀ + b_enc, [G, B, n_m]."""
        x = x_p - self.b_dec[:, None, :] if self.cfg.spec["bias"] else x_p
        pre = torch.bmm(x, self.W_enc.transpose(1, 2))
        return pre + self.b_enc[:, None, :] if self.cfg.spec["bias"] else pre

    def activate(self, pre: Tensor) -> tuple[Tensor, Tensor | None]:
        """(latents, H) where H is the learned JumpReLU's step (for its L0 penalty), else None."""
        if self.cfg.spec.get("learn_threshold"):
            H = _Step.apply(pre.detach(), self.theta()[:, None, :], self.cfg.bandwidth)
            return pre * H, H
        # torch's CPU top-k is 5-10x slower at k <= 8 of a few hundred latents: the fast selection
        theta = self.theta()[:, None, :] if self.cfg.activation == "jumprelu" else 0.0
        return activate(pre, self.cfg.activation, self.cfg.k, theta, fast_topk=True), None

    def encode(self, x_p: Tensor) -> Tensor:
        """Latents x_m [G, B, n_m]."""
        return self.activate(self.pre_activations(x_p))[0]

    def decode(self, z: Tensor) -> Tensor:
        """Reconstruction x̂_p [G, B, n_p]."""
        out = torch.bmm(z, self.W_dec)
        return out + self.b_dec[:, None, :] if self.cfg.spec["bias"] else out

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


@dataclass
class ConvergenceRule:
    """A run has converged when its held-out objective changed by at most rtol·L between the mean of the last
    `window` fraction of logged points and the mean of the window before it (L: the last window's mean).

    The rule is relative to the loss it judges. The absolute term only covers a loss that is itself at numerical
    zero: a run counts as converged by it only when both windows' means are at most atol·E‖x_p‖². (An absolute
    allowance added to the relative one would exceed the loss where that is small, e.g. 1.9e-4 against a closed-form
    loss of 7.6e-5 at S = 0.99, and pass a run still changing by a third over its last window.)
    """

    window: float = 0.1
    rtol: float = 0.01
    atol: float = 1e-9

    def describe(self) -> str:
        """One sentence for reports."""
        return (f"held-out training objective, mean over the last {self.window:.0%} of steps vs the {self.window:.0%} "
                f"before: |change| ≤ {self.rtol:.0%} of the loss (relative; a loss whose two windows are both "
                f"≤ {self.atol:g}·E‖x_p‖² counts as converged at zero)")

    def check(self, curve: np.ndarray, energy: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """(converged [G], relative change [G]) from a curve [n_logged, G] of held-out objective values."""
        curve = np.asarray(curve, dtype=float)
        n = curve.shape[0]
        w = max(1, int(round(self.window * n)))
        if n < 2 * w:
            return np.zeros(curve.shape[1], dtype=bool), np.full(curve.shape[1], np.nan)
        last, prev = curve[-w:].mean(0), curve[-2 * w:-w].mean(0)
        change = prev - last
        floor = self.atol * np.asarray(energy, dtype=float)
        ok = (np.abs(change) <= self.rtol * np.abs(last)) | (np.maximum(np.abs(last), np.abs(prev)) <= floor)
        ok &= np.isfinite(last)
        return ok, change / np.maximum(np.abs(last), 1e-30)


@dataclass
class TrainLog:
    """What a batched run recorded: held-out objective curve per group and the convergence verdict."""

    steps: list[int] = field(default_factory=list)
    objective: list[np.ndarray] = field(default_factory=list)
    recon: list[np.ndarray] = field(default_factory=list)
    converged: np.ndarray | None = None
    rel_change: np.ndarray | None = None
    rule: str = ""

    def curve(self) -> np.ndarray:
        """Held-out objective [n_logged, G]."""
        return np.stack(self.objective) if self.objective else np.zeros((0, 0))


def train_groups(
    sae: BatchedToySAE,
    batch_fn: Callable[[int], Tensor],
    steps: int,
    lr: float,
    eval_x: Tensor,
    gamma: Tensor | None = None,
    log_every: int = 0,
    warmup_steps: int = 0,
    dead_window_steps: int = 50,
    rule: ConvergenceRule | None = None,
    on_log: Callable[[int, np.ndarray], None] | None = None,
) -> TrainLog:
    """Adam on every group's loss at once; logs the held-out objective and applies the convergence rule.

    `batch_fn(step)` returns x_p [G, B, n_p]; `eval_x` [G, N, n_p] is held-out data of each group; `gamma`
    [G, n_p] weights the squared error (WSAE; None = plain SAE). The objective is the weighted reconstruction
    loss plus the kind's auxiliary terms (AuxK, JumpReLU's L0 penalty).
    """
    rule = rule or ConvergenceRule()
    cfg = sae.cfg
    log_every = log_every or max(1, steps // 50)
    params = [p for p in sae.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    G = sae.groups
    since_fired = torch.zeros(G, cfg.n_m, dtype=torch.long, device=sae.W_enc.device)
    k_aux = max(1, cfg.n_p // 2)
    out = TrainLog(rule=rule.describe())
    weights = None if gamma is None else error_weights(gamma)[:, None, :]
    with torch.no_grad():
        energy = eval_x.double().pow(2).sum(-1).mean(-1).cpu().numpy()

    def objective(x: Tensor, with_aux: bool, dead: Tensor | None = None) -> tuple[Tensor, Tensor]:
        pre = sae.pre_activations(x)
        z, H = sae.activate(pre)
        x_hat = sae.decode(z)
        recon = weighted_sq_error(x, x_hat, weights)
        total = recon
        if H is not None and cfg.spec.get("learn_threshold"):
            total = total + cfg.l0_coeff * H.sum(-1).mean(-1)
        if with_aux and cfg.spec.get("auxk") and dead is not None:
            xc = x - sae.b_dec[:, None, :]  # the bias-centred input the encoder saw
            total = total + cfg.auxk_alpha * stacked_auxk_loss(xc, x - x_hat, sae.W_enc, sae.b_enc, sae.W_dec, dead,
                                                               k_aux)
        return total, z

    def log_point(step: int) -> None:
        with torch.no_grad():
            total, z = objective(eval_x, with_aux=False)
            plain = weighted_sq_error(eval_x, sae.decode(z))
        out.steps.append(step)
        out.objective.append(total.double().cpu().numpy())
        out.recon.append(plain.double().cpu().numpy())
        if on_log is not None:
            on_log(step, out.objective[-1])

    for step in range(steps):
        if step % log_every == 0:
            log_point(step)
        for group in opt.param_groups:
            group["lr"] = lr * lr_scale(step, steps, warmup_steps)
        x = batch_fn(step)
        dead = since_fired >= dead_window_steps
        total, z = objective(x, with_aux=True, dead=dead)
        opt.zero_grad(set_to_none=True)
        total.sum().backward()
        if cfg.spec.get("normalize_decoder"):
            sae.remove_parallel_decoder_grad_()
        opt.step()
        if cfg.spec.get("normalize_decoder"):
            sae.normalize_decoder_()
        with torch.no_grad():
            fired = (z > 0).any(1)
            since_fired += 1
            since_fired[fired] = 0
    log_point(steps)
    out.converged, out.rel_change = rule.check(out.curve(), energy)
    return out


def pool_sampler(pools: Tensor, batch_size: int, seeds: list[int]) -> Callable[[int], Tensor]:
    """batch_fn(step): group g draws rows of its pool [G, P, n_p] with a generator seeded by (seeds[g], step).

    Batches depend on the group's own seed only, so a group trains the same alone or in any batch, and groups with
    equal (seed, sparsity) see identical batches (paired comparisons).
    """
    G, P, _ = pools.shape
    rows = torch.arange(G, device=pools.device)[:, None]

    def batch_fn(step: int) -> Tensor:
        drawn = {s: torch.randint(0, P, (batch_size,), generator=batch_generator(s, step)) for s in set(seeds)}
        idx = torch.stack([drawn[s] for s in seeds]).to(pools.device)
        return pools[rows, idx]

    return batch_fn
