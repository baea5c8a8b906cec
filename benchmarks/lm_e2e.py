#!/usr/bin/env python
"""End to end: one LM pass feeding every (layer, α) SAE; tokens/s and peak memory (run by hand; meant for a GPU).

The paper's language-model set-up at full scale: Pythia-160M's shape (`pythia-160m-random`: random weights, so no
download; throughput does not depend on the weights), all 12 layers, α ∈ {0, 0.5, 1}, 768 → 24,576 latents, k = 32,
4,096-token batches. Each batch is one forward hooked at every requested layer (stopping after the deepest), then
one `SAETrainer.step` per (layer, α) on that layer's activations: 36 SAE steps per batch by default. Tokens/s counts
LM tokens, each of which trains every SAE once.

    .venv/bin/python benchmarks/lm_e2e.py --device cuda                       # the issue's GPU check (>= 100k tok/s)
    .venv/bin/python benchmarks/lm_e2e.py --device cpu --expansion 2 --layers 0 11 --steps 2    # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import torch

from wsae_utils.core.sae import SAEConfig, SparseAutoencoder, make_gamma
from wsae_utils.core.train import SAETrainer, TrainConfig
from wsae_utils.hardware import PRECISIONS, machine_summary, resolve_device, resolve_precision
from wsae_utils.lm import model as L


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(args: argparse.Namespace) -> dict:
    """Build the LM and the SAEs, warm up, time `args.steps` batches; return the measurements."""
    device = torch.device(resolve_device(args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    facts = L.model_facts(args.model)
    layers = list(range(facts["n_layers"])) if args.layers is None else args.layers
    lm_dtype = resolve_precision(args.lm_dtype, device, "LM forward").dtype
    sae_dtype = resolve_precision(args.sae_dtype, device, "SAE selection GEMM").dtype
    n_ctx, rem = divmod(args.batch_tokens, args.ctx)
    if rem or n_ctx < 1:
        raise ValueError(f"--batch-tokens {args.batch_tokens} must be a positive multiple of --ctx {args.ctx}")
    bad = [l for l in layers if not 0 <= l < facts["n_layers"]]
    if bad:
        raise ValueError(f"--layers {bad}: {args.model} has layers 0..{facts['n_layers'] - 1}")
    lm = L.load_lm(args.model, device=device, seed=args.seed, dtype=lm_dtype)
    gen = torch.Generator().manual_seed(args.seed)
    vocab = facts["vocab_size"]

    def batch() -> dict[int, torch.Tensor]:
        ids = torch.randint(vocab, (n_ctx, args.ctx), generator=gen).to(device)
        return {l: a.reshape(-1, a.shape[-1]) for l, a in L.layer_activations(lm, ids, layers).items()}

    d = facts["d_model"]
    first = batch()
    trainers: list[tuple[int, SAETrainer]] = []
    for l in layers:
        for a in args.alphas:
            sae = SparseAutoencoder(SAEConfig(d, d * args.expansion, activation="topk", k=args.k), seed=args.seed,
                                    device=device)
            sae.init_b_dec_(first[l])
            gamma = make_gamma(first[l].var(0).cpu(), a, normalize="mean").to(device)
            cfg = TrainConfig(steps=10**9, batch_size=args.batch_tokens, lr=2e-4, seed=args.seed,
                              matmul_dtype=sae_dtype)
            trainers.append((l, SAETrainer(sae, cfg, gamma)))

    def step(acts: dict[int, torch.Tensor]) -> None:
        for l, tr in trainers:
            tr.step(acts[l])

    for _ in range(args.warmup):
        step(batch())
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    lm_s = sae_s = 0.0
    for _ in range(args.steps):
        t0 = time.perf_counter()
        acts = batch()
        _sync(device)
        t1 = time.perf_counter()
        step(acts)
        _sync(device)
        lm_s, sae_s = lm_s + t1 - t0, sae_s + time.perf_counter() - t1
    tokens = args.steps * args.batch_tokens
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {
        "model": args.model, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else machine_summary(),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "lm_dtype": lm_dtype, "sae_dtype": sae_dtype,
        "layers": layers, "alphas": args.alphas, "d_model": d, "n_latents": d * args.expansion, "k": args.k,
        "batch_tokens": args.batch_tokens, "ctx": args.ctx, "steps": args.steps, "saes": len(trainers),
        "tokens_per_s": tokens / (lm_s + sae_s), "lm_share": lm_s / (lm_s + sae_s),
        "sae_steps_per_s": args.steps * len(trainers) / (lm_s + sae_s),
        "peak_memory_gb": peak / 2**30, "peak_memory_kind": "cuda max allocated" if device.type == "cuda" else "RSS",
        "final_losses": [round(tr.state.loss_curve[-1][1], 6) for _, tr in trainers[:3]],
    }


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print a one-line table and the JSON."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="pythia-160m-random", help="a wsae_utils.lm.model registry name")
    p.add_argument("--layers", type=int, nargs="+", default=None, help="default: every layer of the model")
    p.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    p.add_argument("--expansion", type=int, default=32, help="latents per model dimension")
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch-tokens", type=int, default=4096)
    p.add_argument("--ctx", type=int, default=256, help="tokens per context")
    p.add_argument("--steps", type=int, default=20, help="timed batches")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--lm-dtype", choices=PRECISIONS, default="auto",
                   help="auto: bfloat16 where the device runs it fast (CUDA, AVX512-BF16/AMX CPUs), else float32")
    p.add_argument("--sae-dtype", choices=PRECISIONS, default="auto", help="SAE selection GEMM (auto as above)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    r = run(args)
    print(f"| {r['model']} | {r['device_name']} | {len(r['layers'])} layers × {len(r['alphas'])} α = {r['saes']} SAEs "
          f"{r['d_model']}→{r['n_latents']} k={r['k']} | LM {r['lm_dtype']}, "
          f"SAE {r['sae_dtype']} | {r['tokens_per_s']:,.0f} tok/s | LM {100 * r['lm_share']:.0f} % of the time | "
          f"peak {r['peak_memory_gb']:.1f} GB ({r['peak_memory_kind']}) |")
    print(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
