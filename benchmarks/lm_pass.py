"""Throughput of the LM activation pass (the embedded SmolLM2-135M by default), options side by side, run by hand.

Times, on the same Austen tokens and in one run, the plain fp32 transformers forward (all blocks, hidden states
returned: what a user would write) against the project's pass (hooks, stop after the deepest hooked block) with
the options that matter: forward dtype (fp32, bf16 weights, bf16 autocast), contexts per forward, context size,
torch threads and torch.compile. Then checks the bf16 activations against fp32: max and mean relative error per
token, and the FVU of one SAE (trained on fp32 activations) evaluated on both.

    .venv/bin/python benchmarks/lm_pass.py                          # default grid, prints a markdown table
    .venv/bin/python benchmarks/lm_pass.py --tokens 8192 --rounds 2 --out benchmarks/RESULTS_lm_pass.md

The load average and the CPU time used by other processes during the run are printed, so a contended run is
visible (ratios within one run stay comparable; absolute tokens/s do not).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

import torch

from wsae_utils.core.metrics import fvu
from wsae_utils.core.sae import SAEConfig, SparseAutoencoder
from wsae_utils.core.train import SAETrainer, TrainConfig
from wsae_utils.hardware import cpu_info, machine_summary, this_cpu_bf16_verdict
from wsae_utils.lm import model as L
from wsae_utils.lm import text as T


def _cpu_busy() -> tuple[float, float]:
    """(total busy CPU seconds of the machine, this process's CPU seconds)."""
    with open("/proc/stat") as f:
        parts = [float(x) for x in f.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    busy = (sum(parts) - parts[3] - parts[4]) / tick
    return busy, time.process_time()


def _run(lm: L.LM, ids: torch.Tensor, layers: list[int], batch: int, mode: str) -> float:
    """Seconds for one pass over `ids` in `mode` (plain | hooked | autocast)."""
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, ids.shape[0], batch):
            b = ids[i:i + batch]
            if mode == "plain":
                lm.model(input_ids=b, output_hidden_states=True, use_cache=False)
            elif mode == "autocast":
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    L.layer_activations(lm, b, layers)
            else:
                L.layer_activations(lm, b, layers)
    return time.perf_counter() - t0


def _acts(lm: L.LM, ids: torch.Tensor, layers: list[int], batch: int) -> dict[int, torch.Tensor]:
    out: dict[int, list[torch.Tensor]] = {l: [] for l in layers}
    with torch.inference_mode():
        for i in range(0, ids.shape[0], batch):
            for l, a in L.layer_activations(lm, ids[i:i + batch], layers).items():
                out[l].append(a[:, 1:].reshape(-1, a.shape[-1]).float())
    return {l: torch.cat(v) for l, v in out.items()}


def main() -> None:
    """Run the grid and the tolerance check; print (and optionally write) the markdown results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--model-cache", default="resources/models")
    ap.add_argument("--layers", type=int, nargs="+", default=[4, 12, 20])
    ap.add_argument("--tokens", type=int, default=4096, help="tokens per timed configuration")
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    ap.add_argument("--rounds", type=int, default=2, help="round-robin timed rounds (the best per configuration)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of the bf16 model")
    ap.add_argument("--force-bf16", action="store_true", help="time bf16 on a CPU without fast bf16 too")
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    train, held = T.load_corpus("austen")
    tok = L.load_tokenizer(args.model, args.model_cache)
    lm32 = L.load_lm(args.model, args.model_cache, dtype="float32")
    lm16 = L.load_lm(args.model, args.model_cache, dtype="bfloat16")
    by_ctx = {c: T.training_contexts(tok, train, c, max(1, args.tokens // c), seed=0, vocab_size=lm32.vocab_size).ids
              for c in (128, 256)}
    grid = [  # (label, model, mode, batch contexts, context size)
        ("plain fp32 forward, all blocks + hidden states (baseline)", lm32, "plain", 8, 128),
        ("hooked fp32, stop after deepest layer", lm32, "hooked", 8, 128),
        ("hooked fp32, 16 contexts/forward", lm32, "hooked", 16, 128),
        ("hooked fp32, 32 contexts/forward", lm32, "hooked", 32, 128),
        ("hooked fp32, 64 contexts/forward", lm32, "hooked", 64, 128),
        ("hooked bf16 autocast (fp32 weights)", lm32, "autocast", 8, 128),
        ("hooked bf16 weights", lm16, "hooked", 8, 128),
        ("hooked bf16 weights, 16 contexts/forward", lm16, "hooked", 16, 128),
        ("hooked bf16 weights, 32 contexts/forward", lm16, "hooked", 32, 128),
        ("hooked bf16 weights, context 256, 8 contexts/forward", lm16, "hooked", 8, 256),
    ]
    hw = cpu_info()
    fast_bf16, why_bf16 = this_cpu_bf16_verdict(hw)
    if fast_bf16 is not True and not args.force_bf16:  # ~66x slower than fp32 there: minutes per configuration
        print(f"skipping the bf16 configurations: {why_bf16} (--force-bf16 times them anyway)", flush=True)
        grid = [g for g in grid if "bf16" not in g[0]]
    if args.compile:
        comp = L.LM(lm16.name, torch.compile(lm16.model), lm16.tokenizer)
        comp.model.base_model.layers = lm16.model.base_model.layers  # hooks stay on the same modules
        grid.append(("hooked bf16 weights, torch.compile", comp, "hooked", 16, 128))
    busy0, own0 = _cpu_busy()
    load0, t_start = os.getloadavg()[0], time.time()
    best: dict[tuple[int, str], float] = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        for _label, lm, mode, batch, _ctx in grid:  # warm-up (and compilation) outside the timed rounds
            _run(lm, by_ctx[128][:batch], args.layers, batch, mode)
    # Round-robin: every configuration once per round, the best round kept, so a load change on a shared
    # machine hits all configurations alike instead of whichever ran during it.
    for r in range(args.rounds):
        for threads in args.threads:
            torch.set_num_threads(threads)
            for label, lm, mode, batch, ctx in grid:
                ids = by_ctx[ctx]
                secs = _run(lm, ids, args.layers, batch, mode)
                key = (threads, label)
                best[key] = max(best.get(key, 0.0), ids.numel() / secs)
                print(f"round {r} | {threads} thr | {label}: {ids.numel() / secs:.0f} tok/s", flush=True)
    rows = [{"threads": t, "config": label, "tok_s": v} for (t, label), v in best.items()]
    busy1, own1 = _cpu_busy()
    wall = time.time() - t_start
    foreign = max(0.0, (busy1 - busy0) - (own1 - own0)) / wall

    # tolerance: bf16 vs fp32 activations, and an SAE's FVU on both
    torch.set_num_threads(max(args.threads))
    ids = by_ctx[128]
    held_ids = T.heldout_contexts(tok, held, 128, max(1, args.tokens // 128), lm32.vocab_size).ids
    tol = []
    for l in args.layers if any("bf16" in g[0] for g in grid) else ():  # bf16 forwards: skipped where slow
        a32, a16 = _acts(lm32, ids, [l], 8)[l], _acts(lm16, ids, [l], 8)[l]
        rel = (a16 - a32).norm(dim=-1) / a32.norm(dim=-1).clamp_min(1e-12)
        sae = SparseAutoencoder(SAEConfig(d_in=a32.shape[1], n_latents=4 * a32.shape[1], activation="topk", k=32),
                                seed=0)
        sae.init_b_dec_(a32)
        tr = SAETrainer(sae, TrainConfig(steps=300, batch_size=256, lr=2e-3, seed=0))
        g = torch.Generator().manual_seed(0)
        for _ in range(300):
            tr.step(a32[torch.randint(0, a32.shape[0], (256,), generator=g)])
        h32, h16 = _acts(lm32, held_ids, [l], 8)[l], _acts(lm16, held_ids, [l], 8)[l]
        with torch.no_grad():
            f32, f16 = fvu(h32, sae(h32).x_hat), fvu(h16, sae(h16).x_hat)
        tol.append({"layer": l, "max_rel": float(rel.max()), "mean_rel": float(rel.mean()), "fvu_fp32": f32,
                    "fvu_bf16": f16})

    base = {r["threads"]: r["tok_s"] for r in rows if r["config"].startswith("plain")}
    lines = [
        f"## LM activation pass, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine (printed by the benchmark): {machine_summary()}, flags {', '.join(hw['flags'])}; bf16: {why_bf16}; "
        f"torch {torch.__version__}; model {args.model}, "
        f"layers {args.layers}; {args.tokens} tokens per configuration, best of {args.rounds} round-robin round(s).",
        f"Contention: load average {load0:.1f} at start, {os.getloadavg()[0]:.1f} at end; other processes used "
        f"{foreign:.2f} CPUs on average during the timed grid (0 = quiet machine).",
        "Command: `.venv/bin/python benchmarks/lm_pass.py " + " ".join(sys.argv[1:]) + "`",
        "",
        "| threads | configuration | tokens/s | × plain fp32 (same threads) |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['threads']} | {r['config']} | {r['tok_s']:.0f} | {r['tok_s'] / base[r['threads']]:.2f} |"
              for r in rows]
    lines += ["", "bf16 weights vs fp32 (non-BOS tokens; SAE: Top-k k = 32, 4× latents, 300 steps on fp32 "
              "activations, FVU on held-out Persuasion):", "",
              "| layer | max rel. error | mean rel. error | SAE FVU on fp32 | SAE FVU on bf16 | Δ FVU |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {t['layer']} | {t['max_rel']:.4f} | {t['mean_rel']:.4f} | {t['fvu_fp32']:.4f} | "
              f"{t['fvu_bf16']:.4f} | {t['fvu_bf16'] - t['fvu_fp32']:+.4f} |" for t in tol]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        path = Path(args.out)
        old = path.read_text() if path.exists() else "# LM activation-pass benchmark results\n\n"
        path.write_text(old.rstrip("\n") + "\n\n" + text)


if __name__ == "__main__":
    main()
