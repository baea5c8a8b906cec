import gzip
import math
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wsae_utils.core.metrics import semantic_consistency
from wsae_utils.vision import backbones as B
from wsae_utils.vision import contrastive as C
from wsae_utils.vision import images as I
from wsae_utils.vision import saes as V


# -- semantic consistency (NCL definition) -------------------------------------------------------------
def test_consistency_hand_cases():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    acts = torch.zeros(6, 4)
    acts[:2, 0] = 1.0  # only on class 0 → 1.0
    acts[:, 1] = 0.5  # everywhere, balanced classes → 1/3
    acts[[0, 2, 3], 2] = 1.0  # {0, 1, 1} → 2/3
    # dim 3 never active → NaN
    acts[4:, 3] = 1e-9  # below the activity threshold after L2 norm? rows 4, 5 have dim 1 = 0.5
    per = semantic_consistency(acts, labels)
    assert per[0] == pytest.approx(1.0)
    assert per[1] == pytest.approx(1 / 3)
    assert per[2] == pytest.approx(2 / 3)
    assert np.isnan(per[3])
    rep = V.consistency_report(acts, labels)
    assert rep["n_active_dims"] == 3 and rep["n_dims"] == 4
    assert rep["consistency"] == pytest.approx((1 + 1 / 3 + 2 / 3) / 3)
    assert rep["chance"] == pytest.approx(1 / 3)


def test_consistency_top_m_hand_case():
    labels = torch.tensor([0, 0, 1, 1, 1])
    # dimension 0 is active everywhere, its two largest activations are class 0; dimension 1 is a constant
    # companion so that the row-wise L2 norm keeps the order of dimension 0 (a lone column would become all 1)
    acts = torch.tensor([[5.0, 1.0], [4.0, 1.0], [3.0, 1.0], [2.0, 1.0], [1.0, 1.0]])
    assert semantic_consistency(acts, labels)[0] == pytest.approx(3 / 5)
    assert semantic_consistency(acts, labels, top_m=2)[0] == pytest.approx(1.0)
    assert semantic_consistency(acts, labels, top_m=3)[0] == pytest.approx(2 / 3)


def test_feature_sparsity():
    z = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    assert V.feature_sparsity(z) == pytest.approx((3 / 4 + 2 / 4) / 2)


# -- losses --------------------------------------------------------------------------------------------
def _nt_xent_loop(z1, z2, tau, relu):
    """Independent per-anchor NT-Xent (SimCLR's formula, written out)."""
    z = torch.cat([z1, z2])
    if relu:
        z = z.clamp_min(0)
    z = z / z.norm(dim=1, keepdim=True)
    n2 = z.shape[0]
    n = n2 // 2
    total = 0.0
    for i in range(n2):
        pos = (i + n) % n2
        num = math.exp(float(z[i] @ z[pos]) / tau)
        den = sum(math.exp(float(z[i] @ z[j]) / tau) for j in range(n2) if j != i)
        total += -math.log(num / den)
    return total / n2


def test_nt_xent_matches_hand_computation_and_ncl_differs_from_cl():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    ncl = C.nt_xent(z1, z2, 0.2, "relu")
    cl = C.nt_xent(z1, z2, 0.2, "none")
    assert float(ncl) == pytest.approx(_nt_xent_loop(z1, z2, 0.2, True), rel=1e-5)
    assert float(cl) == pytest.approx(_nt_xent_loop(z1, z2, 0.2, False), rel=1e-5)
    assert abs(float(ncl) - float(cl)) > 1e-3  # outputs have negative entries
    # non-negative outputs: ReLU is the identity, NCL == CL
    a, b = z1.abs(), z2.abs()
    assert float(C.nt_xent(a, b, 0.2, "relu")) == pytest.approx(float(C.nt_xent(a, b, 0.2, "none")))


def test_nt_xent_two_pairs_closed_form():
    # two images, orthogonal non-negative embeddings, identical views: sim(pos) = 1, sim(neg) = 0
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    tau = 0.5
    expected = -math.log(math.exp(2) / (math.exp(2) + 2 * math.exp(0)))
    assert float(C.nt_xent(z1, z1.clone(), tau, "relu")) == pytest.approx(expected, rel=1e-6)


def test_rep_relu_value_is_relu_gradient_is_gelu():
    z = torch.tensor([-1.0, 0.5], requires_grad=True)
    out = C.non_negative(z, "rep_relu")
    assert torch.equal(out.detach(), torch.tensor([0.0, 0.5]))
    out.sum().backward()
    zz = torch.tensor([-1.0, 0.5], requires_grad=True)
    F.gelu(zz).sum().backward()
    assert torch.allclose(z.grad, zz.grad)
    assert z.grad[0] != 0  # a dead ReLU unit still gets a gradient
    with pytest.raises(ValueError, match="non_neg"):
        C.non_negative(z, "softplus")


# -- models --------------------------------------------------------------------------------------------
def test_resnet18_keys_match_torchvision():
    sd = B.ResNet18().state_dict()
    # torchvision resnet18: 62 parameters + 60 BatchNorm buffers (20 BNs × running_mean/var/num_batches)
    assert len(sd) == 122
    assert sum(p.numel() for p in B.ResNet18().parameters()) == 11_689_512
    keys = list(sd)
    assert keys[:6] == ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
                        "bn1.num_batches_tracked"]
    for k in ["layer1.0.conv1.weight", "layer1.1.bn2.running_var", "layer2.0.downsample.0.weight",
              "layer2.0.downsample.1.num_batches_tracked", "layer3.0.downsample.1.weight",
              "layer4.1.conv2.weight", "fc.weight", "fc.bias"]:
        assert k in sd
    assert "layer1.0.downsample.0.weight" not in sd
    assert sd["layer4.0.downsample.0.weight"].shape == (512, 256, 1, 1)
    assert sd["fc.weight"].shape == (1000, 512)
    assert keys[-2:] == ["fc.weight", "fc.bias"]


def test_resnet18_stems_and_features():
    torch.manual_seed(0)
    cifar = B.ResNet18("cifar", num_classes=0).eval()
    assert cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1)
    assert isinstance(cifar.maxpool, torch.nn.Identity)
    assert cifar(torch.randn(2, 3, 16, 16)).shape == (2, 512)
    imnet = B.ResNet18("imagenet").eval()
    assert imnet.conv1.kernel_size == (7, 7) and imnet(torch.randn(1, 3, 64, 64)).shape == (1, 512)
    # same weight shapes either way: an ImageNet-stem state dict loads into the CIFAR-stem model minus conv1
    assert set(B.ResNet18("cifar").state_dict()) == set(imnet.state_dict())
    with pytest.raises(ValueError, match="stem"):
        B.ResNet18("tiny")


def _solo_checkpoint(stem="cifar", hidden=32, d_out=8):
    torch.manual_seed(1)
    backbone = B.ResNet18(stem, num_classes=0)
    proj = B.make_projector(512, hidden, d_out)
    sd = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    sd.update({f"projector.{k}": v for k, v in proj.state_dict().items()})
    sd["classifier.weight"], sd["classifier.bias"] = torch.zeros(10, 512), torch.zeros(10)
    return {"state_dict": sd, "epoch": 99}, backbone, proj


def test_solo_learn_mapping(tmp_path):
    ckpt, backbone, proj = _solo_checkpoint()
    bsd, psd = B.map_solo_learn_state_dict(ckpt)
    assert set(bsd) == set(backbone.state_dict()) and "fc.weight" not in bsd
    assert set(psd) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert "classifier.weight" not in bsd
    # DataParallel-style wrapper prefixes are stripped too
    wrapped = {f"module.{k}": v for k, v in ckpt["state_dict"].items()}
    assert set(B.map_solo_learn_state_dict(wrapped)[0]) == set(bsd)
    path = tmp_path / "ncl.ckpt"
    torch.save(ckpt, path)
    b2, p2 = B.load_solo_learn_checkpoint(path, "cifar")
    for k, v in backbone.state_dict().items():
        assert torch.equal(b2.state_dict()[k], v)
    assert p2[0].weight.shape == (32, 512) and p2[2].weight.shape == (8, 32)
    assert torch.equal(p2[2].weight, proj[2].weight)
    with pytest.raises(KeyError, match="solo-learn"):
        B.map_solo_learn_state_dict({"encoder.conv1.weight": torch.zeros(1)})
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        B.load_solo_learn_checkpoint(tmp_path / "nope.ckpt", "cifar")


def test_torchvision_path_errors_clearly_or_loads():
    try:
        import torchvision  # noqa: F401
    except Exception:
        with pytest.raises(RuntimeError, match="torchvision"):
            B.torchvision_resnet18_imagenet()
    else:
        pytest.skip("torchvision importable here: the hub path needs network")


# -- data ----------------------------------------------------------------------------------------------
def _write_idx(path, arr, code=0x08):
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(">u1" if code == 0x08 else ">i4").tobytes())


def test_idx_reader_hand_written(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([7, 3], dtype=np.uint8)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    got = I.read_idx(tmp_path / "train-images-idx3-ubyte.gz")
    assert got.shape == (2, 3, 4) and np.array_equal(got, images)
    # images header is 16 bytes, labels header 8 bytes (the Fashion-MNIST offsets)
    raw = gzip.open(tmp_path / "train-labels-idx1-ubyte.gz").read()
    assert len(raw) == 8 + 2
    ints = np.array([[1, -2], [300, 4]], dtype=np.int32)
    _write_idx(tmp_path / "ints.gz", ints, code=0x0C)
    assert np.array_equal(I.read_idx(tmp_path / "ints.gz"), ints)
    x, y = I.load_fashion_mnist(tmp_path, "train")
    assert x.shape == (2, 1, 3, 4) and x.dtype == torch.uint8 and y.tolist() == [7, 3]
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x01\x02\x03\x04"))
    with pytest.raises(ValueError, match="IDX"):
        I.read_idx(tmp_path / "bad.gz")
    _write_idx(tmp_path / "short.gz", images)
    data = gzip.open(tmp_path / "short.gz").read()[:-3]
    (tmp_path / "short.gz").write_bytes(gzip.compress(data))
    with pytest.raises(ValueError, match="header says"):
        I.read_idx(tmp_path / "short.gz")
    with pytest.raises(FileNotFoundError, match="make data"):
        I.load_fashion_mnist(tmp_path / "missing", "train")


def test_image_folder_and_class_list(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for c, color in (("n01", (255, 0, 0)), ("n02", (0, 0, 255)), ("extra", (0, 255, 0))):
            d = tmp_path / "root" / split / c
            d.mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (40 + i * 10, 30), color).save(d / f"{i}.png")
    (tmp_path / "classes.txt").write_text("n02 n01  # two classes\n")
    ds = I.load_dataset("imagefolder", "train", str(tmp_path / "root"), str(tmp_path / "classes.txt"), image_size=16)
    assert ds.classes == ["n01", "n02"] and len(ds) == 4  # sorted folder order, 'extra' left out
    img, lab = ds[3]
    assert img.shape == (3, 16, 16) and img.dtype == torch.uint8 and lab == 1
    assert img[2].float().mean() > 250 and img[0].float().mean() < 5  # blue
    assert I.load_dataset("imagefolder", "test", str(tmp_path / "root"), "", image_size=8).classes == \
        ["extra", "n01", "n02"]
    (tmp_path / "missing.txt").write_text("n03\n")
    with pytest.raises(FileNotFoundError, match="no folder"):
        I.load_dataset("imagefolder", "train", str(tmp_path / "root"), str(tmp_path / "missing.txt"))


def test_imagenet100_list_shipped():
    names = I.resolve_class_list("imagenet100")
    assert len(names) == 100 and len(set(names)) == 100
    assert names[:5] == ["n02869837", "n01749939", "n02488291", "n02107142", "n13037406"]
    assert names[-1] == "n02090622"
    assert I.resolve_class_list("") is None


def test_balanced_subset():
    labels = torch.arange(10).repeat(20)
    idx = I.balanced_subset(labels, 50, seed=0)
    assert idx.numel() == 50 and torch.bincount(labels[idx]).tolist() == [5] * 10
    assert torch.equal(idx, I.balanced_subset(labels, 50, seed=0))
    assert I.balanced_subset(labels, 0, 0).numel() == 200


# -- augmentations -------------------------------------------------------------------------------------
def test_augment_seeded_and_valid():
    imgs = (torch.rand(6, 1, 28, 28) * 255).to(torch.uint8)
    a = I.augment(imgs, 32, torch.Generator().manual_seed(3))
    b = I.augment(imgs, 32, torch.Generator().manual_seed(3))
    c = I.augment(imgs, 32, torch.Generator().manual_seed(4))
    assert a.shape == (6, 3, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    # no augmentation at all: full crop without flip returns the (resized) image
    none = I.AugmentConfig(crop_scale=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)
    r = torch.linspace(0, 1, 16)
    smooth = ((r[None, :] + r[:, None]) / 2).expand(2, 3, 16, 16).contiguous()
    # the aspect ratio is still drawn, so compare the centre of a smooth image, which a full-area crop barely moves
    for seed in range(5):
        out = I.augment(smooth, 16, torch.Generator().manual_seed(seed), none)
        assert out.shape == smooth.shape
        assert (out[..., 6:10, 6:10] - smooth[..., 6:10, 6:10]).abs().max() < 0.08
    x = torch.rand(2, 3, 16, 16)
    out = I.augment(x, 16, torch.Generator().manual_seed(0), none)
    flip = I.AugmentConfig(crop_scale=(1.0, 1.0), flip_p=1.0, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)
    out_f = I.augment(x, 16, torch.Generator().manual_seed(0), flip)
    assert torch.allclose(out_f, out.flip(-1), atol=1e-5)


def test_gaussian_blur_preserves_constant_and_mean():
    x = torch.full((2, 3, 12, 12), 0.3)
    assert torch.allclose(I._gaussian_blur(x, torch.tensor([0.5, 2.0])), x, atol=1e-6)


# -- weights, probe, effects ---------------------------------------------------------------------------
def test_consistency_weights():
    per = np.array([0.2, 0.8, np.nan, 0.5])
    assert torch.equal(V.consistency_weights(per, 0.0), torch.ones(4))
    g = V.consistency_weights(per, 1.0, never_active="min", normalize="none")
    assert torch.allclose(g, torch.tensor([0.2, 0.8, 0.2, 0.5]))
    g = V.consistency_weights(per, 1.0, never_active="zero", normalize="mean")
    assert g.mean() == pytest.approx(1.0) and g[2] == 0
    g = V.consistency_weights(per, 0.5, normalize="none")
    assert g[1] == pytest.approx(math.sqrt(0.8))
    with pytest.raises(ValueError, match="is ever active"):
        V.consistency_weights(np.array([np.nan, np.nan]), 1.0)


def test_linear_probe_separable():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(3).repeat(40)
    x = F.one_hot(y, 3).float() * 3 + 0.1 * torch.randn(120, 3, generator=g)
    assert V.linear_probe(x[:90], y[:90], x[90:], y[90:], epochs=50) == 1.0


def test_paired_effect():
    eff = V.paired_effect({0.0: [1.0, 2.0, 3.0], 1.0: [2.0, 3.0, 5.0]})[1.0]
    assert eff["mean"] == pytest.approx(4 / 3) and eff["n"] == 3
    from scipy import stats

    half = stats.t.ppf(0.975, 2) * np.std([1, 1, 2], ddof=1) / math.sqrt(3)
    assert eff["ci_low"] == pytest.approx(4 / 3 - half) and eff["ci_high"] == pytest.approx(4 / 3 + half)


def test_top_activating():
    acts = torch.tensor([[0.0, 1.0], [2.0, 0.0], [1.0, 3.0]])
    assert V.top_activating(acts, [0, 1], 5) == [[1, 2], [2, 0]]


# -- training ------------------------------------------------------------------------------------------
def test_projector_on_views_learns():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(64, 1, 16, generator=g)
    views = base + 0.05 * torch.randn(64, 3, 16, generator=g)
    cfg = C.ContrastiveConfig(steps=30, batch_size=32, lr=1e-2, non_neg="relu", seed=0)
    proj, losses = C.train_projector_on_views(views, 32, 8, cfg, show_progress=False)
    assert losses[-1] < losses[0] and all(map(math.isfinite, losses))
    z = B.projector_features(proj, base[:, 0])
    norms = z.norm(dim=1)  # 1, or 0 for a sample on which every ReLU output is 0
    assert (z >= 0).all() and torch.all(((norms - 1).abs() < 1e-5) | (norms == 0))


def test_tiny_cpu_pretraining_runs_and_resumes(tmp_path):
    torch.manual_seed(0)
    imgs = (torch.rand(8, 1, 12, 12) * 255).to(torch.uint8)
    ds = I.TensorImages(imgs, torch.arange(8) % 2)
    net, proj = B.ResNet18("cifar", num_classes=0), B.make_projector(512, 16, 8)
    before = net.conv1.weight.detach().clone()
    cfg = C.ContrastiveConfig(batch_size=4, lr=0.1, optimizer="lars", warmup_steps=1, seed=0)
    ck = tmp_path / "pre.pt"
    losses = C.pretrain_end_to_end(net, proj, ds, torch.arange(8), cfg, epochs=1, image_size=12, device="cpu",
                                   max_steps=2, checkpoint_path=ck, show_progress=False)
    assert len(losses) == 2 and all(map(math.isfinite, losses))
    assert not torch.equal(before, net.conv1.weight)
    # a second call with the same checkpoint resumes at step 2 and has nothing left to do
    again = C.pretrain_end_to_end(B.ResNet18("cifar", num_classes=0), B.make_projector(512, 16, 8), ds,
                                  torch.arange(8), cfg, epochs=1, image_size=12, device="cpu", max_steps=2,
                                  checkpoint_path=ck, show_progress=False)
    assert again == losses
    feats = B.backbone_features(net, ds, torch.arange(8), 12, "cpu", batch_size=4, n_views=2, show_progress=False,
                                mean=(0.5,) * 3, std=(0.25,) * 3)
    assert feats.shape == (8, 2, 512) and (feats >= 0).all()


def test_lars_excludes_bias_from_trust_ratio():
    w = torch.nn.Parameter(torch.ones(4))
    b = torch.nn.Parameter(torch.ones(4))
    opt = C.LARS([{"params": [w]}, {"params": [b], "exclude": True}], lr=1.0, momentum=0.0, eta=0.02)
    w.grad, b.grad = torch.full((4,), 10.0), torch.full((4,), 10.0)
    opt.step()
    assert torch.allclose(b, torch.full((4,), -9.0))  # plain SGD step
    assert torch.allclose(w, torch.full((4,), 1 - 0.02 * 10 * (2 / 20)))  # trust ratio η‖w‖/‖g‖ = 0.002


def test_lars_matches_solo_learn_formula_with_weight_decay_and_clipping():
    # solo-learn: r = η‖w‖/(‖g‖ + wd‖w‖); clip_lr: r = min(r/lr, 1); step = lr·(g + wd·w)·r
    w = torch.nn.Parameter(torch.ones(4))
    lr, wd, eta = 0.5, 0.1, 0.02
    opt = C.LARS([{"params": [w]}], lr=lr, momentum=0.0, weight_decay=wd, eta=eta)
    w.grad = torch.full((4,), 10.0)
    opt.step()
    r = min(eta * 2.0 / (20.0 + wd * 2.0) / lr, 1.0)  # ‖w‖ = 2, ‖g‖ = 20
    assert r == pytest.approx(0.0039604, rel=1e-4)
    assert torch.allclose(w, torch.full((4,), 1 - lr * (10.0 + wd * 1.0) * r), atol=1e-7)
    # with a large eta the clip binds: the step is plain SGD with weight decay
    v = torch.nn.Parameter(torch.ones(4))
    opt2 = C.LARS([{"params": [v]}], lr=lr, momentum=0.0, weight_decay=wd, eta=100.0)
    v.grad = torch.full((4,), 10.0)
    opt2.step()
    assert torch.allclose(v, torch.full((4,), 1 - lr * (10.0 + wd)), atol=1e-6)


def test_warmup_cosine():
    assert C.warmup_cosine(0, 100, 10, 1.0, start_lr=0.0) == 0.0
    assert C.warmup_cosine(10, 100, 10, 1.0) == pytest.approx(1.0)
    assert C.warmup_cosine(100, 100, 10, 1.0) == pytest.approx(0.0)
