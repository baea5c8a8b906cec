"""Shared test setup: one torch thread (2-core CI machines oversubscribe badly otherwise), no hub access, and a stub
of the paper's data folders so `config/paper.yaml` passes its path checks here (found through WSAE_REPO, the
fallback root for relative data paths that do not exist from the working directory)."""

import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

_STUB = Path(tempfile.mkdtemp(prefix="wsae-paper-data-"))
for _split in ("train", "val"):
    (_STUB / "data" / "imagenet100" / _split).mkdir(parents=True)
os.environ["WSAE_REPO"] = str(_STUB)

import torch  # noqa: E402

torch.set_num_threads(1)

# Modules that hold a long module-scoped fixture (the smoke DAG: ~4 min; a private SLURM cluster: ~2 min). Under
# `make test`'s two xdist workers (`--dist loadfile`, one module per worker at a time) they go first, so they run
# beside the many short modules instead of after them.
LONG_MODULES = ("test_workflow.py", "test_slurm.py")


def pytest_collection_modifyitems(config, items):
    """Long modules first (`LONG_MODULES`), everything else in its usual order."""
    rank = {name: i for i, name in enumerate(LONG_MODULES)}
    order = {id(item): i for i, item in enumerate(items)}
    items.sort(key=lambda it: (rank.get(Path(str(it.fspath)).name, len(rank)), order[id(it)]))
