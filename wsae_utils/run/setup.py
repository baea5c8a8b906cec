"""How every notebook starts: torch threads, seeds of every random source, the device ('auto' resolved), and the
report's figures folder. Kept apart from the trainer so a notebook that trains nothing (the LM pass) does not
depend on, and rerun for, trainer code."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from wsae_utils.hardware import resolve_device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def start_run(out_dir: str | Path, seed: int, device: str = "auto", num_threads: int | None = None
              ) -> tuple[Path, torch.device]:
    """Notebook run set-up: torch threads, seeds, device, and `{out_dir}/figures/`; returns (out_dir, device)."""
    if num_threads:
        torch.set_num_threads(num_threads)
    seed_everything(seed)
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    return out, torch.device(resolve_device(device))
