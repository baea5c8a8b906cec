"""Contrastive learning for the vision backbone: NT-Xent (CL) and its non-negative variant (NCL), LARS, schedules.

NCL (Wang et al. ICLR 2024) = SimCLR + ReLU on the projector output before the row-wise L2 norm; plain CL skips
the ReLU. Two trainers: a projector on cached backbone features of several views (the laptop default, frozen
backbone) and end-to-end backbone + projector pretraining (the paper path: ResNet-18 on ImageNet-100, GPU).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsae_utils.runlog import progress
from wsae_utils.vision.backbones import make_projector
from wsae_utils.vision.images import IMAGENET_MEAN, IMAGENET_STD, AugmentConfig, augment, iterate_images, normalize


def non_negative(z: Tensor, mode: str) -> Tensor:
    """NCL's output map: 'relu', 'rep_relu' (ReLU value, GELU gradient) or 'none' (plain CL)."""
    if mode == "none":
        return z
    if mode == "relu":
        return z.relu()
    if mode == "rep_relu":
        soft = F.gelu(z)
        return soft + (z.relu() - soft).detach()
    raise ValueError(f"non_neg={mode!r} is not one of ('none', 'relu', 'rep_relu')")


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.2, non_neg: str = "relu") -> Tensor:
    """NT-Xent over 2N views (SimCLR); NCL applies ReLU before the row-wise L2 norm, CL ('none') does not.

    For view i the positive is the other view of the same image, the negatives are all views of other
    images; self-similarity is excluded. Loss = mean over the 2N views of −log softmax(positive).
    """
    z = F.normalize(non_negative(torch.cat([z1, z2]), non_neg), dim=1)
    n = z1.shape[0]
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, target)


class LARS(torch.optim.Optimizer):
    """SGD with momentum and solo-learn's layer-wise trust ratio (the optimiser NCL was trained with).

    For a non-excluded parameter: r = η‖w‖ / (‖g‖ + wd·‖w‖), with `clip_lr` r ← min(r / lr, 1), and the update
    direction is (g + wd·w)·r. Parameter groups with `exclude=True` (biases, BatchNorm) get neither weight decay
    nor the trust ratio, as solo-learn's `exclude_bias_n_norm` does.
    """

    def __init__(self, params: Any, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 eta: float = 0.02, clip_lr: bool = True):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta,
                                      clip_lr=clip_lr, exclude=False))

    @torch.no_grad()
    def step(self, closure: Callable | None = None) -> None:  # noqa: D102
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if not group["exclude"]:
                    wd = group["weight_decay"]
                    pn, gn = p.norm(), p.grad.norm()
                    if pn > 0 and gn > 0:
                        ratio = group["eta"] * pn / (gn + wd * pn + 1e-8)
                        if group["clip_lr"]:
                            ratio = (ratio / group["lr"]).clamp(max=1.0)
                        d = d.add(p, alpha=wd) * ratio
                buf = self.state[p].get("momentum_buffer")
                if buf is None:
                    buf = self.state[p]["momentum_buffer"] = d.clone()
                else:
                    buf.mul_(group["momentum"]).add_(d)
                p.add_(buf, alpha=-group["lr"])


def make_optimizer(modules: list[nn.Module], name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """'lars' (solo-learn: bias/norm excluded) or 'adam' (AdamW) over the parameters of `modules`."""
    decay, no_decay = [], []
    for m in modules:
        for p_name, p in m.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 or p_name.endswith(".bias") else decay).append(p)
    if name == "lars":
        return LARS([{"params": decay}, {"params": no_decay, "exclude": True}], lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                  {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    raise ValueError(f"optimizer={name!r} is not one of ('lars', 'adam')")


def warmup_cosine(step: int, total: int, warmup: int, base_lr: float, start_lr: float = 3e-5) -> float:
    """Linear warm-up from `start_lr`, then cosine to 0 (solo-learn's warmup_cosine)."""
    if step < warmup:
        return start_lr + (base_lr - start_lr) * step / max(1, warmup)
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * base_lr * (1 + math.cos(math.pi * min(1.0, t)))


@dataclass
class ContrastiveConfig:
    """Settings of one contrastive run (projector on cached features, or backbone + projector)."""

    steps: int = 500
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adam"
    warmup_steps: int = 0
    temperature: float = 0.2
    non_neg: str = "relu"
    seed: int = 0
    grad_clip: float = 0.0
    """Clip the gradient norm to this (0: off); Adam on a fresh projector can otherwise jump mid-run."""


def train_projector_on_views(view_feats: Tensor, hidden: int, d_out: int, cfg: ContrastiveConfig,
                             device: str | torch.device = "cpu", show_progress: bool = True,
                             ) -> tuple[nn.Sequential, list[float]]:
    """Train a projector with NT-Xent on cached backbone features of V views per image [N, V, d].

    Each step draws `batch_size` images and two distinct views of each (seeded by cfg.seed).
    """
    N, V, d = view_feats.shape
    if V < 2:
        raise ValueError(f"need at least 2 views per image, got {V}")
    torch.manual_seed(cfg.seed)
    proj = make_projector(d, hidden, d_out).to(device)
    opt = make_optimizer([proj], cfg.optimizer, cfg.lr, cfg.weight_decay)
    g = torch.Generator().manual_seed(cfg.seed + 17)
    losses = []
    for step in progress(range(cfg.steps), desc=f"projector ({cfg.non_neg})", disable=not show_progress, leave=False):
        for group in opt.param_groups:
            group["lr"] = warmup_cosine(step, cfg.steps, cfg.warmup_steps, cfg.lr)
        idx = torch.randint(N, (min(cfg.batch_size, N),), generator=g)
        v1 = torch.randint(V, idx.shape, generator=g)
        v2 = (v1 + torch.randint(1, V, idx.shape, generator=g)) % V  # a different view of the same image
        x1, x2 = view_feats[idx, v1].to(device), view_feats[idx, v2].to(device)
        loss = nt_xent(proj(x1), proj(x2), cfg.temperature, cfg.non_neg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(proj.parameters(), cfg.grad_clip)
        opt.step()
        losses.append(loss.item())
    return proj.eval(), losses


def max_loss_rise(losses: list[float], window: int = 10) -> float:
    """Largest rise of the moving-average loss above its running minimum (0 for a monotone curve).

    A stable run stays near 0; a mid-run jump (an Adam blow-up, a collapse) shows as a rise of the order of
    the loss itself.
    """
    x = torch.tensor(losses, dtype=torch.float64)
    if x.numel() < window:
        return 0.0
    ma = x.unfold(0, window, 1).mean(1)
    return float((ma - torch.cummin(ma, 0).values).max())


def pretrain_end_to_end(backbone: nn.Module, projector: nn.Module, ds: torch.utils.data.Dataset, index: Tensor,
                        cfg: ContrastiveConfig, epochs: int, image_size: int, device: str | torch.device,
                        mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD,
                        num_workers: int = 0, max_steps: int = 0, checkpoint_path: str | Path | None = None,
                        show_progress: bool = True, aug: AugmentConfig | None = None) -> list[float]:
    """SimCLR / NCL pretraining of backbone + projector (LARS, warm-up cosine per step); resumable.

    Views are made on the batch by `augment` on `device`. `max_steps` > 0 stops early (smoke tests).
    The checkpoint (written each epoch) holds models, optimiser, step and the loss curve.
    """
    from wsae_utils.core.train import save_checkpoint

    device = torch.device(device)
    backbone.to(device).train()
    projector.to(device).train()
    opt = make_optimizer([backbone, projector], cfg.optimizer, cfg.lr, cfg.weight_decay)
    steps_per_epoch = max(1, index.numel() // cfg.batch_size)
    total = steps_per_epoch * epochs if not max_steps else min(max_steps, steps_per_epoch * epochs)
    step, losses = 0, []
    if checkpoint_path is not None and Path(checkpoint_path).is_file():
        # our own resume file, still read as weights only: nothing in it needs more than tensors and containers
        ck = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        backbone.load_state_dict(ck["backbone"])
        projector.load_state_dict(ck["projector"])
        opt.load_state_dict(ck["opt"])
        step, losses = ck["step"], ck["losses"]
    bar = progress(total=total, initial=step, desc=f"pretrain ({cfg.non_neg})", disable=not show_progress)
    while step < total:
        epoch = step // steps_per_epoch
        perm = index[torch.randperm(index.numel(), generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch))]
        perm = perm[(step % steps_per_epoch) * cfg.batch_size : steps_per_epoch * cfg.batch_size]
        for images, _ in iterate_images(ds, perm, cfg.batch_size, num_workers):
            if step >= total or images.shape[0] < 2:
                break
            g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
            images = images.to(device, non_blocking=True)
            x1 = normalize(augment(images, image_size, g, aug), mean, std)
            x2 = normalize(augment(images, image_size, g, aug), mean, std)
            for group in opt.param_groups:
                group["lr"] = warmup_cosine(step, total, cfg.warmup_steps, cfg.lr)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                z1, z2 = projector(backbone(x1)), projector(backbone(x2))
            loss = nt_xent(z1.float(), z2.float(), cfg.temperature, cfg.non_neg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if checkpoint_path is not None:
            save_checkpoint({"backbone": backbone.state_dict(), "projector": projector.state_dict(),
                             "opt": opt.state_dict(), "step": step, "losses": losses}, checkpoint_path)
    bar.close()
    backbone.eval()
    projector.eval()
    return losses
