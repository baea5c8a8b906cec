"""wsae_utils adapters for the anchor benchmark (`../shared/tools/anchor_train_bench.py --plugin ...`).

One training step of `wsae_utils.train.SAETrainer` (sparse top-k encoder backward, embedding_bag decoder, unit-norm
decoder with parallel-gradient removal, Adam), unweighted and with the WSAE loss ‖Γ(x − x̂)‖².
"""

from __future__ import annotations

import torch
from anchor_train_bench import Adapter, SAEShape

import wsae_utils
from wsae_utils.sae import SAEConfig, SparseAutoencoder
from wsae_utils.train import SAETrainer, TrainConfig


def _make(shape: SAEShape, seed: int, weighted: bool) -> Adapter:
    sae = SparseAutoencoder(SAEConfig(shape.d_in, shape.d_sae, activation="topk", k=shape.k), seed=seed)
    gamma = None
    if weighted:
        gamma = torch.rand(shape.d_in, generator=torch.Generator().manual_seed(seed)) + 0.5
    trainer = SAETrainer(sae, TrainConfig(steps=10**9, batch_size=shape.batch, lr=2e-4, seed=seed), gamma)
    first = [True]

    def step(batch: torch.Tensor) -> float:
        if first[0]:
            sae.init_b_dec_(batch)
            first[0] = False
        return trainer.step(batch)

    def reconstruct(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return sae(x).x_hat

    return Adapter(
        name="wsae_utils_weighted" if weighted else "wsae_utils",
        step=step,
        reconstruct=reconstruct,
        version=f"wsae_utils {wsae_utils.__version__}",
        loss_name="‖Γ(x−x̂)‖² sum/mean" if weighted else "MSE sum/mean",
        notes="sparse top-k backward (index_add/embedding_bag), unit-norm decoder, Adam",
    )


def make_adapter(shape: SAEShape, seed: int) -> Adapter:
    """Plain top-k SAE step."""
    return _make(shape, seed, weighted=False)


def make_adapter_weighted(shape: SAEShape, seed: int) -> Adapter:
    """WSAE step (per-dimension Γ inside the norm)."""
    return _make(shape, seed, weighted=True)
