import pytest
import torch

from wsae_utils.core.sae import SAEConfig, SparseAutoencoder, auxk_loss, make_gamma, reconstruction_loss


def _sae(**kw):
    cfg = SAEConfig(**{"d_in": 12, "n_latents": 40, "activation": "topk", "k": 5, **kw})
    sae = SparseAutoencoder(cfg, seed=1)
    with torch.no_grad():
        sae.b_enc.normal_()
        sae.b_dec.normal_()
    return sae


def test_topk_keeps_exactly_k():
    sae = _sae(k=5)
    x = torch.randn(64, 12) * 3
    with torch.no_grad():
        sae.b_enc.fill_(10.0)  # all pre-activations positive: exactly k survive the ReLU
    acts = sae.encode(x)
    assert ((acts != 0).sum(-1) == 5).all()
    # and the kept ones are the k largest pre-activations
    pre = sae.pre_activations(x)
    kth = pre.topk(5, dim=-1).values[:, -1:]
    assert ((acts != 0) == (pre >= kth)).all()


def test_topk_sparse_forward_matches_dense_and_gradients_agree():
    sae = _sae()
    x = torch.randn(32, 12)
    out = sae(x)
    loss = reconstruction_loss(x, out.x_hat)
    loss.backward()
    sparse_grads = {n: p.grad.clone() for n, p in sae.named_parameters()}
    sae.zero_grad()
    dense = reconstruction_loss(x, sae.decode(sae.encode(x)))
    dense.backward()
    assert torch.allclose(loss, dense, rtol=1e-6)
    for n, p in sae.named_parameters():
        assert torch.allclose(p.grad, sparse_grads[n], atol=1e-5), n


@pytest.mark.parametrize(("d", "n", "k"), [(80, 96, 4), (8, 40, 9), (72, 600, 3)])
def test_stacked_topk_sae_matches_dense_autograd(d, n, k):
    """The stacked sparse op (packed selection where it applies, torch's top-k elsewhere; embedding_bag's
    backward for rows wider than 64, index_add below) equals a dense Top-k SAE per stack member."""
    from wsae_utils.core.kernels import StackedTopKSAE

    g = torch.Generator().manual_seed(0)
    G, B = 3, 50
    xc = torch.randn(G, B, d, generator=g, requires_grad=True)
    W_enc = (torch.randn(G, n, d, generator=g) / d**0.5).requires_grad_()
    b_enc = torch.randn(G, n, generator=g, requires_grad=True)
    W_dec = (torch.randn(G, n, d, generator=g) / d**0.5).requires_grad_()
    target = torch.randn(G, B, d, generator=g)
    params = (xc, W_enc, b_enc, W_dec)
    x_hat, vals, flat = StackedTopKSAE.apply(xc, W_enc, b_enc, W_dec, k)
    ((x_hat - target).pow(2).sum() + vals.sum()).backward()
    sparse = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    pre = torch.baddbmm(b_enc[:, None, :], xc, W_enc.transpose(1, 2))
    top = pre.topk(k, dim=-1)
    z = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
    x_dense = torch.bmm(z, W_dec)
    ((x_dense - target).pow(2).sum() + top.values.relu().sum()).backward()
    assert torch.allclose(x_hat, x_dense, atol=1e-4)
    assert torch.equal((flat % n).sort(-1).values, top.indices.sort(-1).values)
    assert (flat // n == torch.arange(G)[:, None, None]).all()  # every row reaches its own SAE's latents only
    for name, a, b in zip(("x", "W_enc", "b_enc", "W_dec"), sparse, (p.grad for p in params), strict=True):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), name


def test_tied_decoder_is_encoder_transpose():
    sae = SparseAutoencoder(SAEConfig(3, 5, activation="relu", tied=True, bias=False, normalize_decoder=False), seed=0)
    assert sae.W_dec is sae.W_enc
    x = torch.randn(7, 3)
    expected = torch.relu(x @ sae.W_enc.T) @ sae.W_enc  # x̂ = W_mᵀ σ(W_m x)
    assert torch.allclose(sae(x).x_hat, expected, atol=1e-6)
    assert len(list(sae.parameters())) == 3  # W_enc (shared) + two frozen biases


@pytest.mark.parametrize("activation", ["none", "relu", "jumprelu"])
def test_dense_activations(activation):
    sae = _sae(activation=activation, threshold=0.5)
    x = torch.randn(16, 12)
    pre = sae.pre_activations(x)
    acts = sae.encode(x)
    expected = {"none": pre, "relu": pre.relu(), "jumprelu": pre * (pre > 0.5)}[activation]
    assert torch.equal(acts, expected)


def test_alpha_zero_equals_plain_mse():
    x, xh = torch.randn(10, 6), torch.randn(10, 6)
    s = torch.rand(6) * 5
    g = make_gamma(s, 0.0)
    assert torch.equal(g, torch.ones(6))
    plain = ((x - xh) ** 2).sum(-1).mean()
    assert torch.allclose(reconstruction_loss(x, xh, g), plain)
    assert torch.allclose(reconstruction_loss(x, xh, None), plain)


def test_gamma_inside_norm_squares_the_weight():
    x, xh = torch.zeros(1, 2), torch.tensor([[1.0, 2.0]])
    g = torch.tensor([2.0, 0.5])
    assert reconstruction_loss(x, xh, g, gamma_inside_norm=True).item() == pytest.approx(4 * 1 + 0.25 * 4)
    assert reconstruction_loss(x, xh, g, gamma_inside_norm=False).item() == pytest.approx(2 * 1 + 0.5 * 4)


def test_make_gamma_values_and_errors():
    s = torch.tensor([1.0, 4.0, 9.0])
    assert torch.allclose(make_gamma(s, 0.5), torch.tensor([1.0, 2.0, 3.0]))
    assert torch.allclose(make_gamma(s, 1.0, "mean").mean(), torch.tensor(1.0))
    with pytest.raises(ValueError, match="alpha"):
        make_gamma(s, -1)
    with pytest.raises(ValueError, match="non-negative"):
        make_gamma(torch.tensor([1.0, -1.0]), 1)
    with pytest.raises(ValueError, match="normalize"):
        make_gamma(s, 1, "max")


def test_config_errors():
    with pytest.raises(ValueError, match="k=50"):
        SAEConfig(4, 10, activation="topk", k=50)
    with pytest.raises(ValueError, match="activation='gelu'"):
        SAEConfig(4, 10, activation="gelu")


def test_decoder_norm_constraint():
    sae = _sae()
    with torch.no_grad():
        sae.W_dec.mul_(3)
    sae.normalize_decoder_()
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(40), atol=1e-6)
    sae.W_dec.grad = torch.randn_like(sae.W_dec)
    sae.remove_parallel_decoder_grad_()
    assert (sae.W_dec.grad * sae.W_dec).sum(1).abs().max() < 1e-5


def test_auxk_only_uses_dead_latents_and_no_bias():
    sae = _sae()
    x = torch.randn(20, 12)
    resid = torch.randn(20, 12)
    dead = torch.zeros(40, dtype=torch.bool)
    assert auxk_loss(sae, x, resid, dead).item() == 0.0
    dead[:3] = True
    loss = auxk_loss(sae, x, resid, dead, k_aux=2)
    loss.backward()
    assert sae.W_enc.grad[3:].abs().sum() == 0 and sae.W_enc.grad[:3].abs().sum() > 0
    # with zero decoder rows the aux reconstruction is exactly 0: b_dec is not added a second time
    with torch.no_grad():
        sae.W_dec[:3] = 0
    expected = min(3 / 2, 1.0) * resid.pow(2).sum() / (resid - resid.mean(0)).pow(2).sum()
    assert auxk_loss(sae, x, resid, dead, k_aux=2).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("d_in", [12, 80])  # narrow rows take the index_add path, wide ones embedding_bag's kernels
@pytest.mark.parametrize("tied", [False, True])
def test_fused_topk_step_matches_dense_autograd(d_in, tied):
    sae = _sae(d_in=d_in, n_latents=96, k=7, tied=tied)
    x = torch.randn(50, d_in)
    gamma = torch.rand(d_in) + 0.5
    out = sae(x)
    loss = reconstruction_loss(x, out.x_hat, gamma)
    loss.backward()
    fused = {n: p.grad.clone() for n, p in sae.named_parameters() if p.grad is not None}
    sae.zero_grad()
    dense = reconstruction_loss(x, sae.decode(sae.encode(x)), gamma)
    dense.backward()
    assert torch.allclose(loss, dense, rtol=1e-5)
    assert ((sae.encode(x) != 0).sum(-1) <= 7).all()
    for n, p in sae.named_parameters():
        if p.grad is not None:
            assert torch.allclose(p.grad, fused[n], rtol=1e-4, atol=1e-5), n


def test_topk_selection_small_k_path_matches_torch_topk():
    """The packed-key path (CPU, n_latents <= 512, k <= 8) equals torch.topk except between near-ties."""
    from wsae_utils.core.kernels import topk_indices

    gen = torch.Generator().manual_seed(3)
    pre = torch.randn(2000, 200, generator=gen)
    pre[:100] -= 10.0  # rows of negative pre-activations: truncation toward zero must keep their order
    tol = 2.0**-14  # 8 index bits leave 15 mantissa bits: keys differ from values by < 2^-15 relative
    for k in (1, 2, 3, 4, 8):
        got = topk_indices(pre, k)
        top = pre.topk(k + 1, dim=-1).values
        assert got.shape == (2000, k) and bool(((got >= 0) & (got < 200)).all())
        assert bool((got.sort(-1).values.diff(dim=-1) > 0).all()), "indices repeat within a row"
        clear = (top[:, k - 1] - top[:, k]) > tol * top[:, k - 1].abs()  # no near-tie at the k-th place
        ref = pre.topk(k, dim=-1).indices.sort(-1).values
        assert clear.sum() > 1900 and torch.equal(got.sort(-1).values[clear], ref[clear])
        # where a near-tie exists, what is picked is still within the tolerance of the exact top-k
        picked = pre.gather(1, got).sum(-1)
        assert bool((picked >= top[:, :k].sum(-1) - k * tol * top[:, 0].abs().clamp_min(1)).all())


def test_topk_selection_breaks_exact_ties_into_distinct_latents():
    from wsae_utils.core.kernels import topk_indices

    pre = torch.zeros(5, 64)
    pre[:, [3, 9, 40]] = 2.0  # three equal maxima
    got = topk_indices(pre, 3).sort(-1).values
    assert torch.equal(got, torch.tensor([[3, 9, 40]] * 5))
    nan_row = torch.full((1, 64), float("nan"))
    assert bool(((topk_indices(nan_row, 2) >= 0) & (topk_indices(nan_row, 2) < 64)).all())


def test_chunked_selection_is_identical():
    sae = _sae(d_in=80, n_latents=96, k=7)
    x = torch.randn(50, 80)
    ref = sae(x)
    sae.chunk_rows = 16
    out = sae(x)
    assert torch.equal(ref.top_idx, out.top_idx) and torch.allclose(ref.x_hat, out.x_hat)


# bf16 selection GEMM vs fp32, after N Adam steps on the same data. bf16 rounding (8-bit mantissa) only changes
# which latent wins a near-tie; values, gradients, weights and Adam stay fp32. Tolerances measured with margin.
BF16_STEPS, BF16_LOSS_RTOL, BF16_WEIGHT_RTOL = 30, 0.01, 0.02  # measured: 0.002, 0.008


def test_bf16_selection_stays_within_tolerance_of_fp32():
    from wsae_utils.core.train import SAETrainer, TrainConfig

    g = torch.Generator().manual_seed(0)
    scales = torch.exp(0.5 * torch.randn(96, generator=g))
    data = torch.randn(BF16_STEPS, 256, 96, generator=g) * scales + torch.randn(96, generator=g)
    runs = {}
    for dtype in ("float32", "bfloat16"):
        sae = SparseAutoencoder(SAEConfig(96, 384, activation="topk", k=16), seed=0)
        sae.init_b_dec_(data[0])
        tr = SAETrainer(sae, TrainConfig(steps=BF16_STEPS, batch_size=256, lr=1e-3, matmul_dtype=dtype))
        losses = torch.tensor([tr.step(b) for b in data])
        runs[dtype] = (losses, sae)
    (l32, s32), (l16, s16) = runs["float32"], runs["bfloat16"]
    assert (l16 - l32).abs().max() / l32.abs().max() < BF16_LOSS_RTOL
    assert l16[-1] < 0.8 * l16[0]  # and it trains
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        a, b = getattr(s16, name).detach(), getattr(s32, name).detach()
        assert (a - b).norm() / b.norm() < BF16_WEIGHT_RTOL, name


@pytest.mark.parametrize("tied,bias,inside", [(False, True, True), (True, False, True), (False, True, False)])
def test_hand_written_step_matches_autograd(tied, bias, inside):
    from wsae_utils.core.sae import topk_loss_and_grads

    sae = _sae(d_in=80, n_latents=96, k=7, tied=tied, bias=bias)
    x = torch.randn(40, 80)
    gamma = torch.rand(80) + 0.5
    loss = reconstruction_loss(x, sae(x).x_hat, gamma, inside)
    loss.backward()
    ref = {n: p.grad.clone() for n, p in sae.named_parameters() if p.grad is not None}
    sae.zero_grad(set_to_none=True)
    fused_loss, *_ = topk_loss_and_grads(sae, x, gamma, inside)
    assert torch.allclose(fused_loss, loss, rtol=1e-5)
    got = {n: p.grad for n, p in sae.named_parameters() if p.grad is not None}
    assert got.keys() == ref.keys()
    for n in ref:
        assert torch.allclose(got[n], ref[n], rtol=1e-4, atol=1e-5), n


def test_trainer_with_auxk_matches_an_autograd_loop():
    """The trainer's hand-written Top-k step (plus autograd AuxK on dead latents) against the plain autograd loop."""
    from wsae_utils.core.train import SAETrainer, TrainConfig

    cfg = TrainConfig(steps=6, batch_size=64, lr=1e-2, auxk_alpha=0.5, dead_window=64)
    data = torch.randn(6, 64, 80) * (torch.rand(80) * 3)
    gamma = torch.rand(80) + 0.5
    sae = _sae(d_in=80, n_latents=96, k=4)
    ref = _sae(d_in=80, n_latents=96, k=4)
    ref.load_state_dict(sae.state_dict())
    tr = SAETrainer(sae, cfg, gamma)
    opt = torch.optim.Adam(ref.parameters(), lr=cfg.lr)
    since = torch.zeros(96, dtype=torch.long)
    for x in data:
        tr.step(x)
        out = ref(x)
        loss = reconstruction_loss(x, out.x_hat, gamma) + 0.5 * auxk_loss(ref, x, x - out.x_hat, since >= 64)
        opt.zero_grad()
        loss.backward()
        ref.remove_parallel_decoder_grad_()
        opt.step()
        ref.normalize_decoder_()
        fired = torch.zeros(96, dtype=torch.bool)
        fired[out.top_idx[out.top_vals > 0]] = True
        since += 64
        since[fired] = 0
    assert tr.dead_mask().any()  # AuxK really ran
    assert torch.equal(tr.rows_since_fired, since)
    for n, p in ref.named_parameters():
        assert torch.allclose(getattr(sae, n), p, rtol=1e-4, atol=1e-5), n


@pytest.mark.parametrize("k_aux", [70, 200])  # some dead latents left out by the top-k / every dead latent kept
def test_wide_auxk_dense_product_matches_the_bag_path(monkeypatch, k_aux):
    """AuxK's dense batched product (wide bags) gives the embedding_bag path's loss and gradients."""
    import wsae_utils.core.sae as S

    g = torch.Generator().manual_seed(0)
    G, B, n, d = 3, 40, 300, 16
    xc, res = torch.randn(G, B, d, generator=g), torch.randn(G, B, d, generator=g)
    dead = torch.rand(G, n, generator=g) < 0.4
    dead[1] = False  # an SAE without dead latents gets 0
    out = []
    for threshold in (10_000, 64):
        monkeypatch.setattr(S, "DENSE_AUXK_MIN_K", threshold)
        W_enc = torch.randn(G, n, d, generator=torch.Generator().manual_seed(1), requires_grad=True)
        b_enc = torch.randn(G, n, generator=torch.Generator().manual_seed(2), requires_grad=True)
        W_dec = torch.randn(G, n, d, generator=torch.Generator().manual_seed(3), requires_grad=True)
        loss = S.stacked_auxk_loss(xc, res, W_enc, b_enc, W_dec, dead, k_aux)
        loss.sum().backward()
        out.append((loss.detach(), W_enc.grad, b_enc.grad, W_dec.grad))
    assert out[0][0][1] == 0
    for a, b in zip(*out, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)
