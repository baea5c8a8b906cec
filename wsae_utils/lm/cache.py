"""The LM activation cache: one LM pass writes per-layer shards; bounded-memory readers for every later stage.

Data flow: `write_activation_cache` runs the LM once over the training and held-out contexts and writes per-layer
shards; everything after it reads the shards (`iter_activations`), so changing α, k or any SAE setting reruns no
LM pass. Layout of `acts_dir` (the contract later stages build on):

- `tokens.safetensors`: int32 `train` [n_train_ctx, ctx] and `heldout` [n_heldout_ctx, ctx] (position 0 = BOS),
  plus `train_doc` / `heldout_doc` (document index of each context, names in meta.json);
- `meta.json`: model, hub id, weights file + hash, layers, d_model, ctx, shard dtype, token counts, documents,
  the notebook settings that wrote it, and `files`: sha256, size, shape and dtype of every tensor file;
- `layer{L}/{split}-{i:05d}.safetensors`: key `acts` [n_ctx_in_shard, ctx, d_model], BOS position included.

The cache is verified, not trusted: every reader checks a file's size and sha256 against `files` before parsing
it (truncated, overwritten or swapped shards stop the reader with the shard's name and how to rebuild), then its
shape and dtype, and that every activation is finite. `declared_shards` gives the workflow the shard list of the
cache on disk, so a deleted shard is a missing output of lm_acts and `snakemake -n` reruns it.

BOS positions are attention sinks with huge-norm activations: they are excluded from statistics, SAE training and
every metric, and kept clean in CE/KL passes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save_file
from torch import Tensor

from wsae_utils.lm.text import TokenSet
from wsae_utils.runlog import progress

SPLITS = ("train", "heldout")
ACTS_DTYPES = ("float32", "bfloat16")
REBUILD = "rebuild the cache: snakemake --forcerun lm_acts (with the same --configfile)"


class CacheError(RuntimeError):
    """The activation cache on disk is not the one lm_acts wrote; the message names the file and how to rebuild."""


# -- integrity records ------------------------------------------------------------------------------------------
def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_record(path: str | Path) -> dict[str, Any]:
    """sha256, size and per-tensor shape/dtype of one safetensors file (as written, before any reader sees it)."""
    data = Path(path).read_bytes()
    tensors = load_bytes(data)
    return {"sha256": _sha256(data), "bytes": len(data),
            "tensors": {k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")}
                        for k, v in tensors.items()}}


def write_meta(acts_dir: str | Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Add the integrity record of every tensor file under `acts_dir` to `meta` and write meta.json atomically."""
    acts_dir = Path(acts_dir)
    files = [acts_dir / "tokens.safetensors", *sorted(acts_dir.glob("layer*/*.safetensors"))]
    meta = {**meta, "files": {f.relative_to(acts_dir).as_posix(): file_record(f) for f in files}}
    tmp = acts_dir / f".meta.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, acts_dir / "meta.json")
    return meta


def _non_finite_note(tensors: dict[str, Tensor]) -> str:
    bad = {k: int((~torch.isfinite(v)).sum()) for k, v in tensors.items() if v.is_floating_point()}
    bad = {k: n for k, n in bad.items() if n}
    return "; it holds " + ", ".join(f"{n} non-finite values in {k!r}" for k, n in bad.items()) if bad else ""


def read_verified(acts_dir: str | Path, name: str, meta: dict[str, Any] | None = None) -> dict[str, Tensor]:
    """The tensors of cache file `name` (relative to acts_dir), after checking it is the file lm_acts wrote.

    Size and sha256 are checked on the bytes that are then parsed (one read), shapes and dtypes against the
    record, and floating tensors must be finite. Any failure raises `CacheError` naming the file.
    """
    acts_dir = Path(acts_dir)
    meta = read_meta(acts_dir) if meta is None else meta
    path = acts_dir / name
    records = meta.get("files")
    if not isinstance(records, dict):
        raise CacheError(f"{acts_dir / 'meta.json'}: no integrity record of the shards (written by an older "
                         f"version, or edited); {REBUILD}")
    if name not in records:
        raise CacheError(f"{path}: not listed in {acts_dir / 'meta.json'}; {REBUILD}")
    rec = records[name]
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CacheError(f"{path}: cache file missing; {REBUILD}") from None
    if len(data) != rec["bytes"] or _sha256(data) != rec["sha256"]:
        what = (f"{len(data)} bytes, lm_acts wrote {rec['bytes']} (truncated or extended)"
                if len(data) != rec["bytes"] else "sha256 differs from what lm_acts wrote (changed since)")
        try:
            note = _non_finite_note(load_bytes(data))
        except Exception:  # noqa: BLE001 (a damaged file need not parse; the mismatch is the error)
            note = ""
        raise CacheError(f"{path}: {what}{note}; {REBUILD}")
    tensors = load_bytes(data)
    for key, want in rec.get("tensors", {}).items():
        got = tensors.get(key)
        if got is None or list(got.shape) != want["shape"] or str(got.dtype).replace("torch.", "") != want["dtype"]:
            raise CacheError(f"{path}: tensor {key!r} is not the recorded {want['dtype']} {want['shape']}; {REBUILD}")
    note = _non_finite_note(tensors)
    if note:
        raise CacheError(f"{path}: non-finite activations{note} (the LM pass overflowed: try lm.acts.lm_dtype "
                         f"float32); {REBUILD}")
    return tensors


def load_shard(acts_dir: str | Path, layer: int, split: str, index: int,
               meta: dict[str, Any] | None = None) -> Tensor:
    """Activations [n_ctx, ctx, d_model] of one verified shard, in the stored dtype."""
    return read_verified(acts_dir, shard_path("", layer, split, index).as_posix(), meta)["acts"]


def declared_shards(acts_dir: str | Path, settings: dict[str, Any], layers: list[int]) -> list[str]:
    """Shard paths (under acts_dir) of the cache on disk, for the workflow to declare as lm_acts outputs.

    The shard count depends on the text (documents shorter than the budget), so it is read from the meta.json of
    the previous run, and only when that run had the same settings (else lm_acts reruns anyway, as its params
    changed). A shard deleted since is then a missing output, and `snakemake -n` reruns lm_acts.
    """
    try:
        meta = read_meta(acts_dir)
    except (FileNotFoundError, ValueError):
        return []
    def norm(s: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in s.items() if k not in ("out_dir", "device", "num_threads")}
        if isinstance(out.get("layers"), list):  # the notebook records them sorted and unique
            out["layers"] = sorted({int(x) for x in out["layers"]})
        return out

    recorded, wanted = norm(meta.get("settings") or {}), norm(settings)
    if not recorded or json.dumps(recorded, sort_keys=True) != json.dumps(wanted, sort_keys=True):
        return []
    return [str(shard_path(acts_dir, l, split, sh["index"]))
            for l in layers for split, m in meta["splits"].items() for sh in m["shards"]]


# -- activation cache ------------------------------------------------------------------------------------
def shard_path(acts_dir: str | Path, layer: int, split: str, index: int) -> Path:
    """Path of one activation shard."""
    return Path(acts_dir) / f"layer{layer}" / f"{split}-{index:05d}.safetensors"


def read_meta(acts_dir: str | Path) -> dict[str, Any]:
    """The cache's meta.json."""
    path = Path(acts_dir) / "meta.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run the lm_acts rule first")
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise CacheError(f"{path}: not valid JSON ({err}); {REBUILD}") from err


@torch.no_grad()
def write_activation_cache(lm: Any, token_sets: dict[str, TokenSet], layers: list[int], acts_dir: str | Path,
                           batch_contexts: int = 8, shard_contexts: int = 64, acts_dtype: str = "float32",
                           meta_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the LM once over every split and write tokens, per-layer shards and meta.json; returns the meta.

    The forward stops after the deepest requested layer. Old shards are removed first; meta.json is written
    last, so a killed run never leaves a cache that looks complete.
    """
    import time

    from wsae_utils.lm.model import check_layers, layer_activations

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
    total_tokens = sum(ts.ids.numel() for ts in token_sets.values())
    bar = progress(total=total_tokens, desc="LM activation pass", unit="tok", unit_scale=True)  # tokens/s and ETA
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
                bar.update(batch.numel())
            for l in layers:
                x = torch.cat(parts[l]).contiguous()
                bad = int((~torch.isfinite(x)).sum())
                if bad:  # refuse here, named, rather than let a trainer fail later on a NaN loss
                    raise CacheError(f"layer {l}, {split} contexts {start}..{start + chunk.shape[0] - 1}: the LM "
                                     f"produced {bad} non-finite activations ({acts_dtype} shards, "
                                     f"{str(lm.dtype).replace('torch.', '')} forward); try lm.acts.lm_dtype float32")
                save_file({"acts": x}, shard_path(acts_dir, l, split, i))
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
    return write_meta(acts_dir, meta)


def load_tokens(acts_dir: str | Path, split: str) -> Tensor:
    """Token ids [n_ctx, ctx] of a split (int64, position 0 = BOS), in the order of the activation shards."""
    if split not in SPLITS:
        raise ValueError(f"split = {split!r}: must be one of {SPLITS}")
    return read_verified(acts_dir, "tokens.safetensors")[split].long()


def load_documents(acts_dir: str | Path, split: str) -> tuple[Tensor, list[str]]:
    """(document index of each context, document names) of a split."""
    meta = read_meta(acts_dir)
    doc = read_verified(acts_dir, "tokens.safetensors", meta)[f"{split}_doc"].long()
    return doc, meta["splits"][split]["documents"]


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
        x = load_shard(acts_dir, layer, split, sh["index"], meta).float()
        if batch_contexts is None:
            yield sh["start"], x
        else:
            for j in range(0, x.shape[0], batch_contexts):
                yield sh["start"] + j, x[j:j + batch_contexts]


def layer_stats(acts_dir: str | Path, layer: int, split: str = "train", max_norm: float = math.inf
                ) -> dict[str, Tensor]:
    """Per-dimension mean, variance and std over a split's non-BOS tokens (float64 sums); tokens whose norm
    exceeds `max_norm` (massive activations, `massive_norm_threshold`) are left out like BOS."""
    n, s, sq = 0, 0.0, 0.0
    for _, x in iter_activations(acts_dir, layer, split):
        flat = x[:, 1:].reshape(-1, x.shape[-1]).double()
        flat = flat[flat.norm(dim=-1) <= max_norm]
        n += flat.shape[0]
        s = s + flat.sum(0)
        sq = sq + flat.pow(2).sum(0)
    mean = s / n
    var = (sq / n - mean.pow(2)).clamp_min(0)
    return {"mean": mean.float(), "var": var.float(), "std": var.sqrt().float(), "n_tokens": torch.tensor(n)}


def massive_norm_threshold(acts_dir: str | Path, layer: int, ratio: float, split: str = "train") -> float:
    """`ratio` × the median token norm (non-BOS tokens of `split`): tokens above it are massive activations
    (attention-sink-like tokens with norms ~100× the median, a handful of which carry most of a residual stream's
    variance), left out of SAE training and of every reconstruction metric like BOS. `ratio` <= 0: none (inf)."""
    if ratio <= 0:
        return math.inf
    norms = torch.cat([x[:, 1:].float().norm(dim=-1).reshape(-1) for _, x in iter_activations(acts_dir, layer, split)])
    return float(ratio * norms.median())
