"""Seeded SAE trainer: Adam on the (weighted) reconstruction loss, AuxK, dead-latent tracking, exact resume.

`SAETrainer` owns one SAE and its optimiser and takes one batch per `step`, so several SAEs can train from
one activation stream (the language-model experiment feeds every (layer, α) SAE from a single LM pass).
`train_sae` is the plain loop for data that is a pure function of the step index (the toy experiments):
that makes a resumed run see exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from wsae_utils.core.sae import (
    SAEConfig,
    SparseAutoencoder,
    StackedSAE,
    auxk_loss,
    error_weights,
    reconstruction_loss,
    stacked_auxk_loss,
    topk_loss_and_grads,
    weighted_sq_error,
)
from wsae_utils.runlog import progress as progress_bar


@dataclass
class TrainConfig:
    """Optimisation settings for one SAE."""

    steps: int = 1000
    """Number of optimiser steps."""
    batch_size: int = 4096
    """Rows (tokens, images or toy samples) per step."""
    lr: float = 1e-3
    """Adam learning rate (constant after warm-up, then linear decay over the last `lr_decay_frac`)."""
    lr_warmup_steps: int = 0
    """Linear warm-up from 0."""
    lr_decay_frac: float = 0.0
    """Fraction of the run, at its end, over which the learning rate decays linearly to 0."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """Adam β₁, β₂."""
    auxk_alpha: float = 0.0
    """Weight of the AuxK dead-latent loss (top-k only; OpenAI uses 1/32)."""
    dead_window: int = 1_000_000
    """A latent that has not fired for this many rows counts as dead (for AuxK and the dead fraction)."""
    gamma_inside_norm: bool = True
    """Γ inside the norm (γ² multiplies the squared error), as the paper writes it; else γ does."""
    grad_clip: float = 0.0
    """Clip the gradient norm to this value (0: no clipping)."""
    seed: int = 0
    """Seed of the SAE initialisation and of any randomness the trainer itself draws."""
    matmul_dtype: str = "float32"
    """'bfloat16' runs the encoder GEMM in bf16 (top-k: only the latent selection; values, weights, gradients and
    Adam stay fp32): ~3x faster on GPUs and AVX512-BF16 CPUs, within the tolerance tested in tests/test_sae.py."""
    log_every: int = 10
    """Record the loss every this many steps in `loss_curve`."""

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr} must be > 0")
        if self.matmul_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"matmul_dtype={self.matmul_dtype!r} must be 'float32' or 'bfloat16'")
        self.adam_betas = tuple(self.adam_betas)

    def to_dict(self) -> dict:
        """Plain dict for JSON."""
        return asdict(self)


@dataclass
class TrainState:
    """What a trainer has recorded so far (kept in checkpoints)."""

    step: int = 0
    rows_seen: int = 0
    loss_curve: list[tuple[int, float]] = field(default_factory=list)


def lr_scale(step: int, steps: int, warmup_steps: int = 0, decay_frac: float = 0.0) -> float:
    """The one learning-rate schedule (as a factor of the base rate): linear warm-up over `warmup_steps`, constant,
    linear decay to 0 over the last `decay_frac` of `steps`."""
    scale = 1.0
    if warmup_steps > 0:
        scale = min(scale, (step + 1) / warmup_steps)
    decay_steps = int(decay_frac * steps)
    if decay_steps > 0 and step >= steps - decay_steps:
        scale = min(scale, (steps - step) / decay_steps)
    return scale


def _adam(params: list[torch.nn.Parameter], lr: float, betas: tuple[float, float]) -> torch.optim.Adam:
    """Adam, fused (one pass over param, grad and both moments) where this torch build has it for the device."""
    try:
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, lr=lr, betas=betas)


class SAETrainer:
    """One SAE, its Adam state, its Γ and its dead-latent counters; call `step(batch)` per batch."""

    def __init__(
        self,
        sae: SparseAutoencoder,
        cfg: TrainConfig,
        gamma: Tensor | None = None,
    ):
        self.sae, self.cfg = sae, cfg
        device = sae.W_enc.device
        self.gamma = None if gamma is None else torch.as_tensor(gamma, dtype=torch.float32, device=device)
        if self.gamma is not None and self.gamma.shape != (sae.cfg.d_in,):
            raise ValueError(f"gamma has shape {tuple(self.gamma.shape)}, expected ({sae.cfg.d_in},)")
        params = [p for p in sae.parameters() if p.requires_grad]
        self.opt = _adam(params, cfg.lr, cfg.adam_betas)
        self.rows_since_fired = torch.zeros(sae.cfg.n_latents, dtype=torch.long, device=device)
        self.state = TrainState()
        self._matmul_dtype = getattr(torch, cfg.matmul_dtype)

    def lr_at(self, step: int) -> float:
        """Learning rate at `step` (`lr_scale`'s schedule)."""
        cfg = self.cfg
        return cfg.lr * lr_scale(step, cfg.steps, cfg.lr_warmup_steps, cfg.lr_decay_frac)

    def dead_mask(self) -> Tensor:
        """Latents that have not fired within the last `dead_window` rows."""
        return self.rows_since_fired >= self.cfg.dead_window

    def step(self, x: Tensor) -> float:
        """One optimiser step on batch `x`; returns the (weighted) reconstruction loss."""
        sae, cfg = self.sae, self.cfg
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.state.step)
        if sae.cfg.activation == "topk":
            # hand-written sparse forward + backward (no autograd graph): the step's one dense GEMM plus O(B·k·d)
            loss, x_hat, top_vals, top_idx = topk_loss_and_grads(sae, x, self.gamma, cfg.gamma_inside_norm,
                                                                 self._matmul_dtype)
            total = loss
            if cfg.auxk_alpha > 0:
                aux = auxk_loss(sae, x, x - x_hat, self.dead_mask())
                if aux.requires_grad:  # dead latents exist: autograd adds their gradient to .grad
                    (cfg.auxk_alpha * aux).backward()
                    total = total + cfg.auxk_alpha * aux.detach()
        else:
            self.opt.zero_grad(set_to_none=True)  # the top-k path assigns every .grad itself
            out = sae(x, matmul_dtype=self._matmul_dtype)
            loss = reconstruction_loss(x, out.x_hat, self.gamma, cfg.gamma_inside_norm)
            total = loss
            top_idx = None
        value = float(loss.detach())
        if not math.isfinite(value if total is loss else float(total.detach())):
            # checked here rather than up front: a non-finite batch always gives a non-finite loss, and nothing
            # has been updated yet (a full-batch check costs ~7 % of a toy-shape step)
            if not torch.isfinite(x).all():
                raise FloatingPointError(f"non-finite values in the training batch at step {self.state.step}")
            raise FloatingPointError(f"loss became {float(total.detach())} at step {self.state.step}")
        if top_idx is None:
            total.backward()
        if sae.cfg.normalize_decoder:
            sae.remove_parallel_decoder_grad_()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(sae.parameters(), cfg.grad_clip)
        self.opt.step()
        if sae.cfg.normalize_decoder:
            sae.normalize_decoder_()
        with torch.no_grad():
            self.rows_since_fired += x.shape[0]
            if top_idx is not None:
                # a selected latent fired when its value is positive: min with 0 resets it, min with the
                # dtype's max leaves it (one scatter, no boolean indexing or dense mask)
                keep = torch.iinfo(self.rows_since_fired.dtype).max
                src = torch.where(top_vals > 0, 0, keep).reshape(-1)
                self.rows_since_fired.scatter_reduce_(0, top_idx.reshape(-1), src, reduce="amin")
            else:
                self.rows_since_fired.masked_fill_((out.acts != 0).any(0), 0)
        st = self.state
        if st.step % cfg.log_every == 0 or st.step == cfg.steps - 1:
            st.loss_curve.append((st.step, value))
        st.step += 1
        st.rows_seen += x.shape[0]
        return value

    # -- checkpoints ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue bit-for-bit: weights, Adam, counters, step, RNG states."""
        return {
            "sae_cfg": self.sae.cfg.to_dict(),
            "train_cfg": self.cfg.to_dict(),
            "sae": self.sae.state_dict(),
            "opt": self.opt.state_dict(),
            "rows_since_fired": self.rows_since_fired,
            "state": asdict(self.state),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "numpy": np.random.get_state(),
                "python": random.getstate(),
            },
        }

    def load_state_dict(self, sd: dict) -> None:
        """Restore from `state_dict()` output."""
        self.sae.load_state_dict(sd["sae"])
        self.opt.load_state_dict(sd["opt"])
        self.rows_since_fired.copy_(sd["rows_since_fired"])
        st = sd["state"]
        self.state = TrainState(st["step"], st["rows_seen"], [tuple(p) for p in st["loss_curve"]])
        rng = sd["rng"]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])


def save_checkpoint(obj: dict, path: str | Path) -> None:
    """Write a checkpoint atomically (temporary file, then rename), so a kill never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict | None:
    """Load a checkpoint, or None when there is none."""
    path = Path(path)
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def train_sae(
    sae_cfg: SAEConfig,
    train_cfg: TrainConfig,
    batch_fn: Callable[[int], Tensor],
    gamma: Tensor | None = None,
    device: str | torch.device = "cpu",
    checkpoint_path: str | Path | None = None,
    checkpoint_every: int = 0,
    init_b_dec: Tensor | None = None,
    progress: bool = True,
    desc: str = "train SAE",
) -> SAETrainer:
    """Train one SAE on `batch_fn(step)` batches; resumes from `checkpoint_path` when it exists.

    `batch_fn` must be a pure function of the step (e.g. a generator seeded with (seed, step)) so that a
    resumed run continues on exactly the data the uninterrupted run would have used.
    """
    device = torch.device(device)
    sae = SparseAutoencoder(sae_cfg, seed=train_cfg.seed, device=device)
    if init_b_dec is not None:
        sae.init_b_dec_(init_b_dec.to(device))
    trainer = SAETrainer(sae, train_cfg, gamma)
    if checkpoint_path is not None and (ckpt := load_checkpoint(checkpoint_path)) is not None:
        trainer.load_state_dict(ckpt)
    bar = progress_bar(total=train_cfg.steps, initial=trainer.state.step, desc=desc, disable=not progress, leave=False)
    while trainer.state.step < train_cfg.steps:
        loss = trainer.step(batch_fn(trainer.state.step).to(device))
        bar.update(1)
        if trainer.state.step % max(1, train_cfg.log_every) == 0:
            bar.set_postfix(loss=f"{loss:.4g}")
        if checkpoint_path is not None and checkpoint_every > 0 and trainer.state.step % checkpoint_every == 0:
            save_checkpoint(trainer.state_dict(), checkpoint_path)
    bar.close()
    if checkpoint_path is not None:
        save_checkpoint(trainer.state_dict(), checkpoint_path)
    return trainer


def batch_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator seeded from (seed, step): the batch for a step is fixed whatever came before."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63 - 1))


# =====================================================================================================
# Many SAEs at once (the toy grids and the vision grid): one step trains a whole `StackedSAE`
# =====================================================================================================
@dataclass
class ConvergenceRule:
    """A run has converged when its held-out objective changed by at most rtol·L between the mean of the last
    `window` fraction of logged points and the mean of the window before it (L: the last window's mean).

    The rule is relative to the loss it judges. The absolute term only covers a loss that is itself at numerical
    zero: a run counts as converged by it only when both windows' means are at most atol·E‖x‖². (An absolute
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
    """What a stacked run recorded: the training-batch loss and (with held-out data) the held-out objective per SAE,
    and the convergence verdict."""

    steps: list[int] = field(default_factory=list)
    """Steps of the held-out points."""
    objective: list[np.ndarray] = field(default_factory=list)
    """Held-out objective [G] per point: weighted reconstruction loss plus the kind's auxiliary terms."""
    recon: list[np.ndarray] = field(default_factory=list)
    """Held-out unweighted squared error [G] per point."""
    train_steps: list[int] = field(default_factory=list)
    """Steps of the training-loss points."""
    train_loss: list[np.ndarray] = field(default_factory=list)
    """Weighted reconstruction loss [G] of the batch each logged step trained on (before its update)."""
    converged: np.ndarray | None = None
    rel_change: np.ndarray | None = None
    rule: str = ""

    def curve(self) -> np.ndarray:
        """Held-out objective [n_logged, G]."""
        return np.stack(self.objective) if self.objective else np.zeros((0, 0))


def stacked_batches(sets: list[Tensor], data_of: list[int], seeds: list[int], batch_size: int,
                    device: str | torch.device = "cpu") -> Callable[[int], Tensor]:
    """batch_fn(step) → [G, B, d]: SAE g draws `batch_size` rows of `sets[data_of[g]]` with a generator seeded by
    (seeds[g], step).

    A batch depends on the SAE's own (data, seed) only, so an SAE trains the same alone or in any stack, and SAEs
    that share (data, seed) see identical batches (paired comparisons).
    """
    sizes = [s.shape[0] for s in sets]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).tolist()
    flat = torch.cat(list(sets)).to(device)
    pairs = list(zip(data_of, seeds, strict=True))

    def batch_fn(step: int) -> Tensor:
        drawn = {p: torch.randint(0, sizes[p[0]], (batch_size,), generator=batch_generator(p[1], step)) + starts[p[0]]
                 for p in set(pairs)}
        idx = torch.stack([drawn[p] for p in pairs]).view(-1).to(flat.device)
        # one index_select of the concatenated sets: advanced indexing of a [G, P, d] stack is ~5x slower on CPU
        return flat.index_select(0, idx).view(len(pairs), batch_size, -1)

    return batch_fn


def train_stacked(
    sae: StackedSAE,
    batch_fn: Callable[[int], Tensor],
    cfg: TrainConfig,
    gamma: Tensor | None = None,
    eval_x: Tensor | None = None,
    rule: ConvergenceRule | None = None,
    fused_adam: bool = False,
    on_log: Callable[[int, np.ndarray], None] | None = None,
    desc: str | None = None,
) -> TrainLog:
    """Adam on every SAE of the stack at once: `SAETrainer`'s loss, schedule and dead-latent rule for G SAEs.

    `batch_fn(step)` gives x [G, B, n_p] (`stacked_batches`); `gamma` [G, n_p] weights each SAE's squared error
    (None: plain SAEs). The objective is the weighted reconstruction loss plus the kind's auxiliary terms (AuxK
    weighted by `cfg.auxk_alpha` on latents dead for `cfg.dead_window` rows, JumpReLU's L0 penalty). Adam is
    elementwise, so one Adam over the stacked tensors is G independent optimisers (`fused_adam`: one kernel for all
    of them, same maths, other rounding). Every `cfg.log_every` steps it records the training-batch loss, and with
    held-out data `eval_x` [G, N, n_p] the held-out objective, to which it applies `rule`.
    """
    rule = rule or ConvergenceRule()
    scfg = sae.cfg
    steps, B = cfg.steps, cfg.batch_size
    params = [p for p in sae.parameters() if p.requires_grad]
    opt = _adam(params, cfg.lr, cfg.adam_betas) if fused_adam else torch.optim.Adam(params, lr=cfg.lr,
                                                                                      betas=cfg.adam_betas)
    G = sae.groups
    since_fired = torch.zeros(G, scfg.n_m, dtype=torch.long, device=sae.W_enc.device)
    k_aux = max(1, scfg.n_p // 2)
    auxk = bool(scfg.spec.get("auxk")) and cfg.auxk_alpha > 0
    out = TrainLog(rule=rule.describe())
    weights = None if gamma is None else error_weights(gamma, cfg.gamma_inside_norm)[:, None, :]

    def objective(x: Tensor, dead: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        x_hat, fired, H = sae(x)
        recon = weighted_sq_error(x, x_hat, weights)
        total = recon
        if H is not None:
            total = total + scfg.l0_coeff * H.sum(-1).mean(-1)
        if auxk and dead is not None:  # the residual is reconstructed from the bias-centred input the encoder saw
            xc = x - sae.b_dec[:, None, :]  # formed here, after x̂: the order autograd sums b_dec's gradients in
            total = total + cfg.auxk_alpha * stacked_auxk_loss(xc, x - x_hat, sae.W_enc, sae.b_enc, sae.W_dec, dead,
                                                               k_aux)
        return total, recon, fired, x_hat

    def log_point(step: int) -> None:
        with torch.no_grad():
            total, _, _, x_hat = objective(eval_x, None)
            plain = weighted_sq_error(eval_x, x_hat)
        out.steps.append(step)
        out.objective.append(total.double().cpu().numpy())
        out.recon.append(plain.double().cpu().numpy())
        if on_log is not None:
            on_log(step, out.objective[-1])

    for step in progress_bar(range(steps), desc=desc or "", disable=desc is None):
        if eval_x is not None and step % cfg.log_every == 0:
            log_point(step)
        for group in opt.param_groups:
            group["lr"] = cfg.lr * lr_scale(step, steps, cfg.lr_warmup_steps, cfg.lr_decay_frac)
        x = batch_fn(step)
        total, recon, fired, _ = objective(x, since_fired >= cfg.dead_window)
        if step % cfg.log_every == 0 or step == steps - 1:
            out.train_steps.append(step)
            out.train_loss.append(recon.detach().double().cpu().numpy())
        opt.zero_grad(set_to_none=True)
        total.sum().backward()
        if scfg.spec.get("normalize_decoder"):
            sae.remove_parallel_decoder_grad_()
        opt.step()
        if scfg.spec.get("normalize_decoder"):
            sae.normalize_decoder_()
        with torch.no_grad():
            since_fired += B
            since_fired[fired] = 0
    if eval_x is not None:
        log_point(steps)
        with torch.no_grad():
            energy = eval_x.double().pow(2).sum(-1).mean(-1).cpu().numpy()
        out.converged, out.rel_change = rule.check(out.curve(), energy)
    return out
