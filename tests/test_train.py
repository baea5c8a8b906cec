import pytest
import torch

from wsae_utils.core.sae import SAEConfig
from wsae_utils.core.train import TrainConfig, batch_generator, load_checkpoint, train_sae


def _batch(step):
    g = batch_generator(7, step)
    return torch.rand(64, 8, generator=g) * (torch.rand(64, 8, generator=g) > 0.5)


SAE = SAEConfig(d_in=8, n_latents=32, activation="topk", k=3)


def test_resume_equals_uninterrupted(tmp_path):
    cfg = TrainConfig(steps=40, batch_size=64, lr=3e-3, auxk_alpha=1 / 32, dead_window=128, seed=3)
    full = train_sae(SAE, cfg, _batch, progress=False)
    ckpt = tmp_path / "ckpt.pt"

    def dies_at_17(step):
        if step == 17:
            raise KeyboardInterrupt("killed")
        return _batch(step)

    with pytest.raises(KeyboardInterrupt):
        train_sae(SAE, cfg, dies_at_17, checkpoint_path=ckpt, checkpoint_every=5, progress=False)
    assert load_checkpoint(ckpt)["state"]["step"] == 15  # the last checkpoint before the kill
    resumed = train_sae(SAE, cfg, _batch, checkpoint_path=ckpt, checkpoint_every=5, progress=False)
    assert resumed.state.step == 40
    for (n, a), b in zip(full.sae.state_dict().items(), resumed.sae.state_dict().values(), strict=True):
        assert torch.equal(a, b), n
    assert full.state.loss_curve == resumed.state.loss_curve
    assert torch.equal(full.rows_since_fired, resumed.rows_since_fired)


def test_training_reduces_loss_and_is_seeded():
    cfg = TrainConfig(steps=60, batch_size=64, lr=3e-3, seed=1, log_every=1)
    a = train_sae(SAE, cfg, _batch, progress=False)
    b = train_sae(SAE, cfg, _batch, progress=False)
    assert torch.equal(a.sae.W_enc, b.sae.W_enc)
    curve = [v for _, v in a.state.loss_curve]
    assert sum(curve[-10:]) < 0.7 * sum(curve[:10])


def test_lr_schedule():
    from wsae_utils.core.sae import SparseAutoencoder
    from wsae_utils.core.train import SAETrainer

    tr = SAETrainer(SparseAutoencoder(SAE), TrainConfig(steps=100, lr=1.0, lr_warmup_steps=10, lr_decay_frac=0.2))
    assert tr.lr_at(0) == pytest.approx(0.1)
    assert tr.lr_at(50) == 1.0
    assert tr.lr_at(90) == pytest.approx(0.5)


def test_non_finite_batch_is_refused():
    from wsae_utils.core.sae import SparseAutoencoder
    from wsae_utils.core.train import SAETrainer

    tr = SAETrainer(SparseAutoencoder(SAE), TrainConfig(steps=5))
    x = torch.ones(4, 8)
    x[1, 2] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite"):
        tr.step(x)
    with pytest.raises(ValueError, match="gamma has shape"):
        SAETrainer(SparseAutoencoder(SAE), TrainConfig(steps=5), gamma=torch.ones(3))


def test_train_config_errors():
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match="matmul_dtype"):
        TrainConfig(matmul_dtype="float16")
