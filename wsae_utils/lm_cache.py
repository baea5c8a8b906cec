"""The LM activation cache: one LM pass writes per-layer shards; bounded-memory readers for every later stage.

Data flow: `write_activation_cache` runs the LM once over the training and held-out contexts and writes per-layer
shards; everything after it reads the shards (`iter_activations`), so changing α, k or any SAE setting reruns no
LM pass. Layout of `acts_dir` (the contract later stages build on):

- `tokens.safetensors`: int32 `train` [n_train_ctx, ctx] and `heldout` [n_heldout_ctx, ctx] (position 0 = BOS),
  plus `train_doc` / `heldout_doc` (document index of each context, names in meta.json);
- `meta.json`: model, hub id, weights file + hash, layers, d_model, ctx, shard dtype, token counts, documents;
- `layer{L}/{split}-{i:05d}.safetensors`: key `acts` [n_ctx_in_shard, ctx, d_model], BOS position included.

BOS positions are attention sinks with huge-norm activations: they are excluded from statistics, SAE training and
every metric, and kept clean in CE/KL passes.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from .runlog import progress
from .text import TokenSet

SPLITS = ("train", "heldout")
ACTS_DTYPES = ("float32", "bfloat16")


# -- activation cache ------------------------------------------------------------------------------------
def shard_path(acts_dir: str | Path, layer: int, split: str, index: int) -> Path:
    """Path of one activation shard."""
    return Path(acts_dir) / f"layer{layer}" / f"{split}-{index:05d}.safetensors"


def read_meta(acts_dir: str | Path) -> dict[str, Any]:
    """The cache's meta.json."""
    path = Path(acts_dir) / "meta.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run the lm_acts rule first")
    return json.loads(path.read_text())


@torch.no_grad()
def write_activation_cache(lm: Any, token_sets: dict[str, TokenSet], layers: list[int], acts_dir: str | Path,
                           batch_contexts: int = 8, shard_contexts: int = 64, acts_dtype: str = "float32",
                           meta_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the LM once over every split and write tokens, per-layer shards and meta.json; returns the meta.

    The forward stops after the deepest requested layer. Old shards are removed first; meta.json is written
    last, so a killed run never leaves a cache that looks complete.
    """
    import time

    from .lm import check_layers, layer_activations

    if acts_dtype not in ACTS_DTYPES:
        raise ValueError(f"acts_dtype = {acts_dtype!r}: must be one of {ACTS_DTYPES}")
    check_layers(lm, layers)
    acts_dir = Path(acts_dir)
    acts_dir.mkdir(parents=True, exist_ok=True)
    (acts_dir / "meta.json").unlink(missing_ok=True)
    for old in acts_dir.glob("layer*"):
        shutil.rmtree(old, ignore_errors=True)
    for l in layers:
        (acts_dir / f"layer{l}").mkdir()
    dtype = getattr(torch, acts_dtype)
    tensors = {}
    for split, ts in token_sets.items():
        tensors[split] = ts.ids.to(torch.int32).contiguous()
        tensors[f"{split}_doc"] = ts.doc.to(torch.int32).contiguous()
    save_file(tensors, acts_dir / "tokens.safetensors")
    splits_meta: dict[str, Any] = {}
    lm_tokens, t0 = 0, time.time()
    total_ctx = sum(ts.ids.shape[0] for ts in token_sets.values())
    bar = progress(total=total_ctx, desc="LM activation pass (contexts)")
    for split, ts in token_sets.items():
        ids = ts.ids
        shards = []
        for i, start in enumerate(range(0, ids.shape[0], shard_contexts)):
            chunk = ids[start:start + shard_contexts]
            parts: dict[int, list[Tensor]] = {l: [] for l in layers}
            for b in range(0, chunk.shape[0], batch_contexts):
                batch = chunk[b:b + batch_contexts]
                for l, a in layer_activations(lm, batch, layers).items():
                    parts[l].append(a.to(dtype).cpu())
                lm_tokens += batch.numel()
                bar.update(batch.shape[0])
            for l in layers:
                save_file({"acts": torch.cat(parts[l]).contiguous()}, shard_path(acts_dir, l, split, i))
            shards.append({"index": i, "start": start, "n_contexts": int(chunk.shape[0])})
        splits_meta[split] = {
            "n_contexts": int(ids.shape[0]), "n_tokens": int(ids.numel()),
            "n_tokens_without_bos": int(ids.shape[0] * (ids.shape[1] - 1)), "shards": shards,
            "documents": ts.doc_names, "contexts_per_document": ts.counts(),
            "contexts_available_per_document": ts.doc_contexts,
        }
    bar.close()
    seconds = time.time() - t0
    meta = {
        "model": lm.name, "layers": sorted(layers), "d_model": lm.d_model, "n_layers": lm.n_layers,
        "context_size": int(next(iter(token_sets.values())).ids.shape[1]), "dtype": acts_dtype,
        "lm_dtype": str(lm.dtype).replace("torch.", ""), "bos_included": True, "splits": splits_meta,
        "lm_tokens": lm_tokens, "lm_seconds": seconds, "lm_tokens_per_second": lm_tokens / max(seconds, 1e-9),
        **(meta_extra or {}),
    }
    for f in [acts_dir / "tokens.safetensors", *acts_dir.glob("layer*/*.safetensors")]:
        f.chmod(0o644)  # safetensors writes 0600; the cache is read by later stages and other users
    tmp = acts_dir / f".meta.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, acts_dir / "meta.json")
    return meta


def load_tokens(acts_dir: str | Path, split: str) -> Tensor:
    """Token ids [n_ctx, ctx] of a split (int64, position 0 = BOS), in the order of the activation shards."""
    if split not in SPLITS:
        raise ValueError(f"split = {split!r}: must be one of {SPLITS}")
    return load_file(Path(acts_dir) / "tokens.safetensors")[split].long()


def load_documents(acts_dir: str | Path, split: str) -> tuple[Tensor, list[str]]:
    """(document index of each context, document names) of a split."""
    meta = read_meta(acts_dir)
    return load_file(Path(acts_dir) / "tokens.safetensors")[f"{split}_doc"].long(), meta["splits"][split]["documents"]


def iter_activations(acts_dir: str | Path, layer: int, split: str,
                     batch_contexts: int | None = None) -> Iterator[tuple[int, Tensor]]:
    """(index of the first context, float32 activations [n, ctx, d]) in context order, one shard in memory.

    `batch_contexts=None` yields whole shards.
    """
    meta = read_meta(acts_dir)
    if layer not in meta["layers"]:
        raise ValueError(f"layer {layer} is not in the activation cache {acts_dir} (layers {meta['layers']})")
    if split not in meta["splits"]:
        raise ValueError(f"split = {split!r}: the cache has {sorted(meta['splits'])}")
    for sh in meta["splits"][split]["shards"]:
        x = load_file(shard_path(acts_dir, layer, split, sh["index"]))["acts"].float()
        if batch_contexts is None:
            yield sh["start"], x
        else:
            for j in range(0, x.shape[0], batch_contexts):
                yield sh["start"] + j, x[j:j + batch_contexts]


def layer_stats(acts_dir: str | Path, layer: int, split: str = "train") -> dict[str, Tensor]:
    """Per-dimension mean, variance and std over a split's non-BOS tokens (float64 sums)."""
    n, s, sq = 0, 0.0, 0.0
    for _, x in iter_activations(acts_dir, layer, split):
        flat = x[:, 1:].reshape(-1, x.shape[-1]).double()
        n += flat.shape[0]
        s = s + flat.sum(0)
        sq = sq + flat.pow(2).sum(0)
    mean = s / n
    var = (sq / n - mean.pow(2)).clamp_min(0)
    return {"mean": mean.float(), "var": var.float(), "std": var.sqrt().float(), "n_tokens": torch.tensor(n)}
