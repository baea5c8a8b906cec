#!/usr/bin/env python
"""Profile one wsae_utils Top-k training step with torch.profiler (self CPU time per op), to see where time goes.

    .venv/bin/python benchmarks/profile_step.py --shape paper --threads 2 [--dtype bf16] [--weighted]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sae_step import Shape, default_lm_shape, make_activations, make_wsae  # noqa: E402


def main() -> None:
    """Warm up, then profile `--steps` steps and print the top ops by self CPU time."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--shape", default="paper", choices=["paper", "default", "toy"])
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--weighted", action="store_true")
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--top", type=int, default=15)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    shape = {"paper": Shape("paper", 768, 24576, a.k, 4096), "default": default_lm_shape(),
             "toy": Shape("toy", 20, 200, min(a.k, 4), 4096)}[a.shape]
    ad = make_wsae(shape, 0, "cpu", a.dtype, a.weighted)
    x = make_activations(shape.batch, shape.d_in, 0)
    for _ in range(3 if a.shape == "toy" else 1):
        ad.step(x)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(a.steps):
            ad.step(x)
    ev = prof.key_averages()
    tot = sum(e.self_cpu_time_total for e in ev)
    print(f"{shape.label} {a.dtype}: total self CPU {tot / 1e3 / a.steps:.1f} ms/step")
    for e in sorted(ev, key=lambda e: -e.self_cpu_time_total)[: a.top]:
        print(f"  {e.key:45s} self {e.self_cpu_time_total / 1e3 / a.steps:8.2f} ms  calls {e.count // a.steps}")


if __name__ == "__main__":
    main()
