"""Images for the vision experiment: IDX / image-folder datasets, class lists, seeded batched SimCLR augmentations.

Everything works on uint8 or float tensors [N, C, H, W]; augmentations are batched tensor ops driven by an explicit
torch.Generator, so a seed fixes every crop, flip and jitter. PIL is imported only to read image folders.
"""

from __future__ import annotations

import gzip
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from wsae_utils.paths import resolve_data_path

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET100_CLASSES = Path(__file__).resolve().parent / "imagenet100.txt"
"""The CMC ImageNet-100 synset list (HobbitLong/CMC@bc687a26 imagenet100.txt, identical to NCL's copy)."""
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]


# =====================================================================================================
# Data
# =====================================================================================================
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _missing(path: Path, what: str) -> FileNotFoundError:
    return FileNotFoundError(f"{what} not found at {str(path)!r}: run `make data` (or set the path in the config)")


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally .gz): magic 0,0,dtype,ndim, then big-endian uint32 dims, then data."""
    path = Path(path)
    if not path.is_file():
        raise _missing(path, "IDX file")
    raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic {raw[:4]!r})")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    data = np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} = {int(np.prod(dims))} items, file holds {data.size}")
    return data.reshape(dims).astype(dtype.newbyteorder("="))


def load_fashion_mnist(root: str | Path, split: str) -> tuple[Tensor, Tensor]:
    """Fashion-MNIST images uint8 [N, 1, 28, 28] and labels int64 [N]; split 'train' (60k) or 'test' (10k)."""
    root = resolve_data_path(root)
    if not root.is_dir():
        raise _missing(root, "Fashion-MNIST directory")
    prefix = {"train": "train", "test": "t10k"}[split]
    images = read_idx(root / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(root / f"{prefix}-labels-idx1-ubyte.gz")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{root}: {images.shape[0]} images but {labels.shape[0]} labels in split {split!r}")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def read_class_list(path: str | Path) -> list[str]:
    """Class (folder) names from a file: whitespace-separated, '#' starts a comment (CMC / NCL formats)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class-list file not found at {str(path)!r}")
    names = []
    for line in path.read_text().splitlines():
        names.extend(line.split("#", 1)[0].split())
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: duplicate class names")
    return names


def resolve_class_list(spec: str) -> list[str] | None:
    """'' → all folders; 'imagenet100' → the shipped CMC list; anything else is a class-list file path."""
    if not spec:
        return None
    return read_class_list(IMAGENET100_CLASSES if spec == "imagenet100" else spec)


_IMG_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff", ".gif")


class ImageFolderDataset(torch.utils.data.Dataset):
    """root/<class>/<image>, classes sorted (torchvision ImageFolder order), read with PIL.

    Each item is (uint8 [3, size, size], label): the shorter side is resized to `size` and centre-cropped,
    so batches stack; random-resized crops for pretraining are then taken on the batch (see `augment`).
    """

    def __init__(self, root: str | Path, classes: list[str] | None = None, size: int = 224,
                 max_per_class: int = 0, seed: int = 0):
        root = Path(root)
        if not root.is_dir():
            raise _missing(root, "image-folder root")
        present = sorted(p.name for p in root.iterdir() if p.is_dir())
        if classes is not None:
            missing = [c for c in classes if c not in present]
            if missing:
                raise FileNotFoundError(f"{root}: {len(missing)} listed classes have no folder, e.g. {missing[:3]}")
            present = sorted(classes)
        if not present:
            raise FileNotFoundError(f"{root}: no class folders")
        self.classes, self.size = present, size
        rng = np.random.default_rng(seed)
        self.samples: list[tuple[Path, int]] = []
        for label, name in enumerate(present):
            files = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in _IMG_EXT)
            if max_per_class and len(files) > max_per_class:
                files = [files[i] for i in sorted(rng.choice(len(files), max_per_class, replace=False))]
            self.samples.extend((f, label) for f in files)
        if not self.samples:
            raise FileNotFoundError(f"{root}: no images found")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        from PIL import Image

        path, label = self.samples[i]
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            s = self.size / min(w, h)
            im = im.resize((max(self.size, round(w * s)), max(self.size, round(h * s))), Image.BILINEAR)
            w, h = im.size
            left, top = (w - self.size) // 2, (h - self.size) // 2
            im = im.crop((left, top, left + self.size, top + self.size))
            arr = np.asarray(im, dtype=np.uint8).copy()
        return torch.from_numpy(arr).permute(2, 0, 1), label

    @property
    def labels(self) -> Tensor:
        """All labels, without reading any image."""
        return torch.tensor([lab for _, lab in self.samples], dtype=torch.long)


class TensorImages(torch.utils.data.Dataset):
    """In-memory uint8 images [N, C, H, W] with labels (Fashion-MNIST)."""

    def __init__(self, images: Tensor, labels: Tensor, classes: list[str] | None = None):
        self.images, self._labels = images, labels
        self.classes = classes or [str(c) for c in range(int(labels.max()) + 1)]

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.images[i], int(self._labels[i])

    @property
    def labels(self) -> Tensor:
        """All labels."""
        return self._labels


def balanced_subset(labels: Tensor, n: int, seed: int) -> Tensor:
    """Indices of a seeded class-balanced subset of size ≤ n (all when n <= 0 or n >= len)."""
    N = labels.shape[0]
    if n <= 0 or n >= N:
        return torch.arange(N)
    g = torch.Generator().manual_seed(seed)
    classes = labels.unique()
    per = n // len(classes)
    out = []
    for c in classes:
        idx = (labels == c).nonzero().squeeze(1)
        out.append(idx[torch.randperm(idx.numel(), generator=g)[:per]])
    return torch.cat(out).sort().values


def load_dataset(dataset: str, split: str, data_root: str, class_list: str = "", image_size: int = 224,
                 max_per_class: int = 0, seed: int = 0) -> TensorImages | ImageFolderDataset:
    """'fashion-mnist' (data_root = the IDX directory) or 'imagefolder' (data_root/<split>/<class>/...)."""
    if dataset == "fashion-mnist":
        return TensorImages(*load_fashion_mnist(data_root, split), FASHION_MNIST_CLASSES)
    if dataset == "imagefolder":
        folder = {"train": "train", "test": "val"}[split]
        root = resolve_data_path(data_root) / folder
        return ImageFolderDataset(root, resolve_class_list(class_list), image_size, max_per_class, seed)
    raise ValueError(f"dataset={dataset!r} is not one of ('fashion-mnist', 'imagefolder')")


def iterate_images(ds: torch.utils.data.Dataset, index: Tensor, batch_size: int,
                   num_workers: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
    """Batches (uint8 images, labels) of `ds[index]` in order."""
    if isinstance(ds, TensorImages):
        for s in range(0, index.numel(), batch_size):
            i = index[s : s + batch_size]
            yield ds.images[i], ds.labels[i]
        return
    sub = torch.utils.data.Subset(ds, index.tolist())
    yield from torch.utils.data.DataLoader(sub, batch_size=batch_size, shuffle=False, num_workers=num_workers)


def thumbnails(images: Tensor, size: int = 32) -> Tensor:
    """Small uint8 copies of images for top-activation grids (kept with the features)."""
    if images.shape[-1] <= size:
        return images.clone()
    return F.interpolate(images.float(), size=(size, size), mode="area").round().clamp(0, 255).to(torch.uint8)


# =====================================================================================================
# Batched, seeded SimCLR augmentations (tensor ops only, so they run on the GPU with the model)
# =====================================================================================================
@dataclass
class AugmentConfig:
    """SimCLR / NCL augmentations (solo-learn symmetric.yaml values by default)."""

    crop_scale: tuple[float, float] = (0.08, 1.0)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.8
    contrast: float = 0.8
    saturation: float = 0.8
    hue: float = 0.2
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)


def _rand(n: int, g: torch.Generator, device: torch.device, lo: float = 0.0, hi: float = 1.0) -> Tensor:
    return (torch.rand(n, generator=g) * (hi - lo) + lo).to(device)


def to_float_rgb(images: Tensor) -> Tensor:
    """uint8 [B, C, H, W] (C = 1 or 3) → float [B, 3, H, W] in [0, 1]."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def resize(x: Tensor, size: int) -> Tensor:
    """Bilinear resize of a float batch to size × size."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def normalize(x: Tensor, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD) -> Tensor:
    """Per-channel (x − mean) / std."""
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def _gray(x: Tensor) -> Tensor:
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def _gaussian_blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Separable Gaussian blur with one σ per sample (kernel ≈ 10 % of the image side, odd)."""
    B, C, H, W = x.shape
    k = max(3, int(0.1 * H) // 2 * 2 + 1)
    r = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2
    ker = torch.exp(-(r[None] ** 2) / (2 * sigma[:, None] ** 2))
    ker = (ker / ker.sum(1, keepdim=True)).repeat_interleave(C, 0)  # [B*C, k]
    y = x.reshape(1, B * C, H, W)
    y = F.conv2d(F.pad(y, (k // 2, k // 2, 0, 0), mode="reflect"), ker[:, None, None, :], groups=B * C)
    y = F.conv2d(F.pad(y, (0, 0, k // 2, k // 2), mode="reflect"), ker[:, None, :, None], groups=B * C)
    return y.reshape(B, C, H, W)


def augment(images: Tensor, out_size: int, g: torch.Generator, cfg: AugmentConfig | None = None) -> Tensor:
    """One SimCLR view per image: random resized crop + flip, colour jitter, grayscale, blur → [0, 1] floats.

    Randomness comes only from the CPU generator `g`, so a (seed, batch) pair fixes the views on any device.
    Colour jitter applies brightness, contrast, saturation, hue in a fixed order (torchvision shuffles it).
    """
    cfg = cfg or AugmentConfig()
    x = to_float_rgb(images)
    B, dev = x.shape[0], x.device
    # random resized crop as an affine grid: area fraction s, aspect ratio r (log-uniform in [3/4, 4/3])
    s = _rand(B, g, dev, *cfg.crop_scale)
    logr = _rand(B, g, dev, math.log(3 / 4), math.log(4 / 3))
    w = torch.sqrt(s * logr.exp()).clamp(max=1.0)
    h = torch.sqrt(s / logr.exp()).clamp(max=1.0)
    cx = (_rand(B, g, dev) * 2 - 1) * (1 - w)
    cy = (_rand(B, g, dev) * 2 - 1) * (1 - h)
    flip = torch.where(_rand(B, g, dev) < cfg.flip_p, -1.0, 1.0)
    theta = torch.zeros(B, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w * flip, cx, h, cy
    grid = F.affine_grid(theta, [B, 3, out_size, out_size], align_corners=False)
    src = x if x.shape[-1] <= 2 * out_size else resize(x, 2 * out_size)  # limit aliasing on big inputs
    x = F.grid_sample(src, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    # colour jitter
    on = (_rand(B, g, dev) < cfg.jitter_p).view(B, 1, 1, 1)
    b = _rand(B, g, dev, 1 - cfg.brightness, 1 + cfg.brightness).view(B, 1, 1, 1)
    c = _rand(B, g, dev, 1 - cfg.contrast, 1 + cfg.contrast).view(B, 1, 1, 1)
    sat = _rand(B, g, dev, 1 - cfg.saturation, 1 + cfg.saturation).view(B, 1, 1, 1)
    hue = _rand(B, g, dev, -cfg.hue, cfg.hue) * 2 * math.pi
    y = (x * b).clamp(0, 1)
    y = ((y - _gray(y).mean((2, 3), keepdim=True)) * c + _gray(y).mean((2, 3), keepdim=True)).clamp(0, 1)
    y = ((y - _gray(y)) * sat + _gray(y)).clamp(0, 1)
    # hue: rotate the chroma plane of YIQ by the hue angle
    yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], device=dev)
    q = torch.einsum("ij,bjhw->bihw", yiq, y)
    cos, sin = hue.cos().view(B, 1, 1), hue.sin().view(B, 1, 1)
    i2, q2 = q[:, 1] * cos - q[:, 2] * sin, q[:, 1] * sin + q[:, 2] * cos
    y = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(yiq), torch.stack([q[:, 0], i2, q2], 1)).clamp(0, 1)
    x = torch.where(on, y, x)
    gray = (_rand(B, g, dev) < cfg.grayscale_p).view(B, 1, 1, 1)
    x = torch.where(gray, _gray(x).expand(-1, 3, -1, -1), x)
    blur = _rand(B, g, dev) < cfg.blur_p
    sigma = _rand(B, g, dev, *cfg.blur_sigma)
    if cfg.blur_p > 0 and bool(blur.any()):
        x = torch.where(blur.view(B, 1, 1, 1), _gaussian_blur(x, sigma), x)
    return x
