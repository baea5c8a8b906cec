#!/usr/bin/env python
"""Side-by-side timing of one Top-k SAE training step: wsae_utils vs SAELens vs sparsify vs the GEMM bounds.

Every library trains on the SAME seeded activations (residual-stream-like: per-dimension log-normal scales, a few
20-40x outlier dimensions, a mean offset) at each shape, in ONE process. Adapters run round-robin (`--rounds`), so a
noisy neighbour slows them all alike; the CPU time used by other processes during each shape is recorded (from
/proc/stat minus this process's own jiffies) and printed, so a contended run is visible.

One step = forward, loss, backward, optimizer step and the per-step bookkeeping that library's own trainer does:

  wsae            wsae_utils.core.train.SAETrainer.step (fused sparse Top-k step), plain MSE
  wsae_weighted   the same with the WSAE loss ||Γ(x − x̂)||² (γ fixed, positive)
  saelens         SAELens TopKTrainingSAE + its SAETrainer.step (library defaults)
  sparsify        EleutherAI sparsify SparseCoder + the per-step sequence of its Trainer.fit (FVU loss)
  bound           measured GEMMs of the encoder shape: the 1-GEMM bound (only the encoder forward is dense) and
                  the 3-GEMM ceiling (forward, dW, dX all dense); in bf16 too when the device has fast bf16

Precisions (`--dtypes`): 'fp32' runs everything in fp32. 'bf16' runs wsae_utils with bf16 GEMMs (fp32 master
weights and Adam) and the anchors under bf16 autocast (SAELens' own `autocast=True`; sparsify under
torch.autocast). On CUDA sparsify always autocasts its forward to bf16 (decorator in its source), whatever is asked.

Shapes: 'paper' (768 → 24,576, k = 32, batch 4,096: Pythia-160M, 32x), 'default' (the LM shape of
config/config.yaml: SmolLM2-135M d = 576, its expansion, k and batch) and 'toy' (20 → 200, k = 1..4).

Run from the repository root (anchors come with `pip install -e ".[bench]"`):

    .venv/bin/python benchmarks/sae_step.py                      # everything, 2 threads, CPU (+ GPU if present)
    .venv/bin/python benchmarks/sae_step.py --shapes toy --adapters wsae,sparsify --threads 1
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

if importlib.util.find_spec("triton") is None:  # CPU wheels: sparsify's eager embedding_bag decoder, no warning
    os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from wsae_utils.hardware import cpu_info, machine_summary, this_cpu_bf16_verdict  # noqa: E402
from wsae_utils.lm.model import model_facts  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------------------------
# shapes, data, adapters
# ---------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Shape:
    """One SAE shape: input width, latents, active latents, batch rows."""

    name: str
    d_in: int
    n_latents: int
    k: int
    batch: int

    @property
    def label(self) -> str:
        """Short human label."""
        return f"{self.name} {self.d_in}→{self.n_latents} k={self.k} B={self.batch}"


@dataclasses.dataclass
class Adapter:
    """One trainable SAE under test: `step(batch)` is one complete training step and returns the loss."""

    name: str
    step: Callable[[Tensor], float | Tensor]
    version: str = ""
    notes: str = ""
    state_bytes: int = 0
    bound: dict | None = None


def default_lm_shape(batch: int | None = None) -> Shape:
    """The LM SAE shape of config/config.yaml (lm.train model/expansion/k/batch_size), with the notebook's fallbacks."""
    model, expansion, k, bs = "smollm2-135m", 4, 32, 256
    try:
        import yaml

        train = (yaml.safe_load((REPO / "config" / "config.yaml").read_text()).get("lm") or {}).get("train") or {}
        model = train.get("model", model)
        expansion, k, bs = train.get("expansion", expansion), train.get("k", k), train.get("batch_size", bs)
    except (OSError, ImportError, AttributeError):
        pass
    d = model_facts(model)["d_model"]
    return Shape("default", d, d * expansion, k, batch or bs)


def make_activations(n: int, d: int, seed: int) -> Tensor:
    """Residual-stream-like fp32 activations: correlated Gaussian, log-normal scales, outlier dims, mean offset."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.exp(0.5 * torch.randn(d, generator=g))
    n_out = max(1, d // 96)
    out_dims = torch.randperm(d, generator=g)[:n_out]
    scales[out_dims] = 20.0 + 20.0 * torch.rand(n_out, generator=g)
    mix = torch.eye(d) + 0.1 * torch.randn(d, d, generator=g) / d**0.5
    mean = 0.5 * torch.randn(d, generator=g)
    mean[out_dims] = 5.0 * torch.randn(n_out, generator=g)
    z = torch.randn(n, d, generator=g)
    return ((z @ mix) * scales + mean).contiguous()


def _nbytes(*modules_or_opts) -> int:
    total = 0
    for m in modules_or_opts:
        if isinstance(m, torch.nn.Module):
            total += sum(p.numel() * p.element_size() for p in m.parameters())
        elif isinstance(m, torch.optim.Optimizer):
            for st in m.state.values():
                total += sum(v.numel() * v.element_size() for v in st.values() if torch.is_tensor(v) and v.dim())
    return total


def make_wsae(shape: Shape, seed: int, device: str, dtype: str, weighted: bool) -> Adapter:
    """wsae_utils: SAETrainer.step on a Top-k SAE (unit-norm decoder, Adam), optionally with Γ."""
    import wsae_utils
    from wsae_utils.core.sae import SAEConfig, SparseAutoencoder
    from wsae_utils.core.train import SAETrainer, TrainConfig

    sae = SparseAutoencoder(SAEConfig(shape.d_in, shape.n_latents, activation="topk", k=shape.k), seed=seed,
                            device=device)
    gamma = None
    if weighted:
        gamma = torch.rand(shape.d_in, generator=torch.Generator().manual_seed(seed)) + 0.5
    matmul = "bfloat16" if dtype == "bf16" else "float32"
    cfg = TrainConfig(steps=10**9, batch_size=shape.batch, lr=2e-4, seed=seed, matmul_dtype=matmul)
    trainer = SAETrainer(sae, cfg, gamma)
    first = [True]

    def step(batch: Tensor) -> float:
        if first[0]:
            sae.init_b_dec_(batch)
            first[0] = False
        return trainer.step(batch)

    ad = Adapter("wsae_weighted" if weighted else "wsae", step, f"wsae_utils {wsae_utils.__version__}",
                 f"matmul_dtype={matmul}" + (", Γ loss" if weighted else ""))
    ad.state_bytes = _nbytes(sae)  # Adam state is lazily created; counted after warm-up below
    ad._modules = (sae, trainer.opt)  # type: ignore[attr-defined]
    return ad


def make_saelens(shape: Shape, seed: int, device: str, dtype: str) -> Adapter:
    """SAELens TopKTrainingSAE stepped by its own SAETrainer.step (library defaults, runner's LR defaults)."""
    import sae_lens
    from sae_lens import LoggingConfig, SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig

    torch.manual_seed(seed)
    cfg = TopKTrainingSAEConfig(d_in=shape.d_in, d_sae=shape.n_latents, k=shape.k, dtype="float32", device=device)
    sae = TopKTrainingSAE(cfg)
    tcfg = SAETrainerConfig(
        total_training_samples=shape.batch * 10**6, train_batch_size_samples=shape.batch,
        lr=3e-4, lr_end=3e-5,  # SAETrainerConfig has no post-init: lr_end must be given (runner uses lr / 10)
        device=device, autocast=dtype == "bf16", logger=LoggingConfig(log_to_wandb=False),
    )
    trainer = SAETrainer(cfg=tcfg, sae=sae, data_provider=iter(()))

    def step(batch: Tensor) -> Tensor:
        out = trainer.step(batch)
        trainer.n_training_steps += 1  # what SAETrainer.fit() does after step()
        return out.loss.detach()

    ad = Adapter("saelens", step, f"sae-lens {sae_lens.__version__}", f"SAETrainer.step, autocast={dtype == 'bf16'}")
    ad._modules = (sae, trainer.optimizer)  # type: ignore[attr-defined]
    return ad


def make_sparsify(shape: Shape, seed: int, device: str, dtype: str) -> Adapter:
    """sparsify SparseCoder with the per-step sequence of sparsify.trainer.Trainer.fit (FVU, Adam)."""
    import sparsify
    from sparsify import SparseCoder, SparseCoderConfig

    torch.manual_seed(seed)
    cfg = SparseCoderConfig(num_latents=shape.n_latents, k=shape.k)
    sae = SparseCoder(shape.d_in, cfg, device=device, dtype=torch.float32)
    lr = 2e-4 / (sae.num_latents / 2**14) ** 0.5  # sparsify's default Adam LR rule
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    did_fire = torch.zeros(sae.num_latents, dtype=torch.bool, device=device)
    state = {"step": 0}
    cpu_bf16 = dtype == "bf16" and device == "cpu"

    def step(batch: Tensor) -> Tensor:
        if state["step"] == 0:
            sae.b_dec.data = batch.mean(0).to(sae.dtype)
        if cfg.normalize_decoder:
            sae.set_decoder_norm_to_unit_norm()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_bf16):
            out = sae(batch, dead_mask=None)
            loss = out.fvu + out.multi_topk_fvu / 8
        loss.backward()
        did_fire[out.latent_indices.flatten()] = True
        if cfg.normalize_decoder:
            sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
        state["step"] += 1
        return loss.detach()

    note = "CUDA: always bf16 autocast (its decorator)" if device != "cpu" else f"cpu autocast={cpu_bf16}"
    ad = Adapter("sparsify", step, f"eai-sparsify {sparsify.__version__}", f"Trainer.fit sequence, lr {lr:.2e}; {note}")
    ad._modules = (sae, opt)  # type: ignore[attr-defined]
    return ad


def make_bound(shape: Shape, seed: int, device: str, dtype: str) -> Adapter:
    """GEMM bounds: a 'step' times the 3 encoder-shaped GEMMs (fwd X Wᵀ, dW = Gᵀ X, dX = G W) once each."""
    g = torch.Generator().manual_seed(seed)
    B, d, M = shape.batch, shape.d_in, shape.n_latents
    dt = torch.bfloat16 if dtype == "bf16" else torch.float32
    X = torch.randn(B, d, generator=g).to(device, dt)
    W = torch.randn(M, d, generator=g).to(device, dt)
    G = torch.randn(B, M, generator=g).to(device, dt)
    per: list[list[float]] = [[], [], []]
    ops = (lambda: X @ W.t(), lambda: G.t() @ X, lambda: G @ W)

    def step(_batch: Tensor) -> float:
        for i, op in enumerate(ops):
            _sync(device)
            t0 = time.perf_counter()
            op()
            _sync(device)
            per[i].append(time.perf_counter() - t0)
        return 0.0

    ad = Adapter("bound", step, f"torch {torch.__version__}", f"{dtype} GEMMs, 2·B·d·M FLOPs each")
    ad.bound = {"per_gemm": per}
    return ad


FACTORIES: dict[str, Callable[..., Adapter]] = {
    "bound": make_bound,
    "wsae": lambda s, seed, dev, dt: make_wsae(s, seed, dev, dt, weighted=False),
    "wsae_weighted": lambda s, seed, dev, dt: make_wsae(s, seed, dev, dt, weighted=True),
    "saelens": make_saelens,
    "sparsify": make_sparsify,
}


# ---------------------------------------------------------------------------------------------------------------
# measurement helpers: sync, CPU contention, peak memory
# ---------------------------------------------------------------------------------------------------------------
def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _cpu_snapshot() -> tuple[int, int, int, int]:
    """(busy, total, steal) jiffies of the machine and this process's own jiffies, from /proc."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        with open("/proc/self/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()
        user, nice, system, idle, iowait, irq, softirq, steal = v
        busy = user + nice + system + irq + softirq + steal
        return busy, busy + idle + iowait, steal, int(own[11]) + int(own[12])
    except (OSError, ValueError, IndexError):
        return 0, 0, 0, 0


def _contention(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> dict:
    """Average number of cores used by OTHER processes, stolen by the hypervisor, and used by this process."""
    d_busy, d_total, d_steal, d_own = (y - x for x, y in zip(a, b, strict=True))
    n = os.cpu_count() or 1
    if d_total <= 0:
        return {}
    return {"other_cores": round(max(0, d_busy - d_own - d_steal) / d_total * n, 2),
            "steal_cores": round(d_steal / d_total * n, 2), "own_cores": round(d_own / d_total * n, 2)}


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


class PeakMemory:
    """Peak memory a step adds: CUDA allocator peak, or on CPU the RSS high-water mark reset per step (clear_refs)."""

    def __init__(self, device: str):
        self.device = device
        self.cpu_ok = Path("/proc/self/clear_refs").exists()

    def start(self) -> None:
        """Reset the peak counters; remember the current footprint."""
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        elif self.cpu_ok:
            try:
                Path("/proc/self/clear_refs").write_text("5")  # "5" resets VmHWM to the current RSS
            except OSError:
                self.cpu_ok = False
            self.base = _status_kb("VmRSS") * 1024

    def peak_bytes(self) -> int:
        """Bytes above the footprint at `start()` reached since then."""
        if self.device.startswith("cuda"):
            return torch.cuda.max_memory_allocated() - self.base
        if self.cpu_ok:
            return max(0, _status_kb("VmHWM") * 1024 - self.base)
        return 0


# ---------------------------------------------------------------------------------------------------------------
# runner
# ---------------------------------------------------------------------------------------------------------------
def run_shape(shape: Shape, names: list[str], device: str, dtype: str, *, warmup: int, steps: int, rounds: int,
              seed: int) -> list[dict]:
    """Time every adapter on one shape and precision; returns one row per adapter (errors reported, not raised)."""
    snap0 = _cpu_snapshot()
    data = make_activations(4 * shape.batch, shape.d_in, seed).to(device)
    batches = list(data.split(shape.batch))
    adapters: dict[str, Adapter] = {}
    errors: dict[str, str] = {}
    for name in names:
        try:
            adapters[name] = FACTORIES[name](shape, seed, device, dtype)
        except Exception as e:  # a library that cannot build is reported in the table, the others go on
            errors[name] = f"{type(e).__name__}: {e}"
            print(f"  [{name}] FAILED to build: {errors[name][:300]}", flush=True)
    times: dict[str, list[float]] = {n: [] for n in adapters}
    peaks: dict[str, int] = dict.fromkeys(adapters, 0)
    losses: dict[str, list[float]] = {n: [] for n in adapters}
    cursor = dict.fromkeys(adapters, 0)
    mem = PeakMemory(device)

    def run(name: str, n: int, record: bool) -> None:
        ad = adapters[name]
        gc.collect()  # once per adapter turn: per step it costs more wall time than a toy step
        for _ in range(n):
            b = batches[cursor[name] % len(batches)]
            cursor[name] += 1
            _sync(device)
            mem.start()
            t0 = time.perf_counter()
            loss = float(ad.step(b))
            _sync(device)
            dt = time.perf_counter() - t0
            if record:
                times[name].append(dt)
                losses[name].append(loss)
                peaks[name] = max(peaks[name], mem.peak_bytes())

    for name in list(adapters):
        try:
            run(name, warmup, record=False)
        except Exception as e:
            errors[name] = f"{type(e).__name__}: {e}"
            print(f"  [{name}] FAILED in warm-up: {errors[name][:300]}", flush=True)
            del adapters[name]
    for ad in adapters.values():
        if ad.bound:
            for lst in ad.bound["per_gemm"]:
                lst.clear()
        if hasattr(ad, "_modules"):
            ad.state_bytes = _nbytes(*ad._modules)  # type: ignore[attr-defined]
    for r in range(rounds):
        for name in list(adapters):
            try:
                run(name, steps, record=True)
            except Exception as e:
                errors[name] = f"{type(e).__name__}: {e}"
                print(f"  [{name}] FAILED: {errors[name][:300]}", flush=True)
                del adapters[name]
                continue
            print(f"  round {r + 1}/{rounds} [{name}] median {statistics.median(times[name][-steps:]) * 1e3:.1f} "
                  f"ms/step (load {_loadavg()})", flush=True)
    contention = _contention(snap0, _cpu_snapshot())
    print(f"  CPU cores used during {shape.label} {dtype}: {contention}", flush=True)
    rows = []
    for name in names:
        base = {"shape": dataclasses.asdict(shape), "dtype": dtype, "device": device, "adapter": name,
                "contention": contention}
        if name in errors:
            rows.append({**base, "error": errors[name]})
            continue
        ad = adapters[name]
        med = statistics.median(times[name])
        row = {**base, "version": ad.version, "notes": ad.notes, "n_timed": len(times[name]), "median_s": med,
               "min_s": min(times[name]), "max_s": max(times[name]), "tok_s": shape.batch / med,
               "peak_step_mb": peaks[name] / 2**20, "state_mb": ad.state_bytes / 2**20,
               "first_loss": losses[name][0], "last_loss": losses[name][-1]}
        if ad.bound:
            meds = [statistics.median(x) for x in ad.bound["per_gemm"]]
            flops = 2.0 * shape.batch * shape.d_in * shape.n_latents
            row.update(gemm_s=meds, gemm_gflops=[flops / m / 1e9 for m in meds],
                       tok_s=shape.batch / meds[0], tok_s_3gemm=shape.batch / sum(meds), peak_step_mb=None)
        rows.append(row)
    adapters.clear()
    batches.clear()
    del data
    gc.collect()
    return rows


def add_ratios(rows: list[dict]) -> None:
    """Ratios to sparsify, SAELens and the 1-GEMM bound measured in the same run, shape and device.

    Anchors are compared at the same precision label, except that on CPU the anchors' own default (fp32) is
    also what a bf16 wsae row is compared with, since that is what a user of those libraries gets here.
    """
    def find(r: dict, adapter: str, dtype: str) -> dict | None:
        for o in rows:
            if (o["shape"] == r["shape"] and o["device"] == r["device"] and o["adapter"] == adapter
                    and o["dtype"] == dtype and "tok_s" in o):
                return o
        return None

    for r in rows:
        if "tok_s" not in r:
            continue
        for anchor in ("sparsify", "saelens"):
            a = find(r, anchor, r["dtype"])
            r[f"x_{anchor}"] = r["tok_s"] / a["tok_s"] if a else None
            a32 = find(r, anchor, "fp32")
            r[f"x_{anchor}_fp32"] = r["tok_s"] / a32["tok_s"] if a32 else None
        b = find(r, "bound", r["dtype"])
        r["x_bound"] = r["tok_s"] / b["tok_s"] if b else None


def _f(x: float | None, fmt: str) -> str:
    return "" if x is None else format(x, fmt)


def markdown(rows: list[dict]) -> str:
    """The printed table: one line per (shape, precision, adapter), then per-shape contention and GEMM rates."""
    out = ("| shape | dev | prec | adapter | ms/step (median, min–max) | tokens/s | × sparsify | × SAELens "
           "| × sparsify fp32 | × 1-GEMM bound | step peak MB | state MB |\n"
           "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    for r in rows:
        s = Shape(**r["shape"])
        head = f"| {s.label} | {r['device']} | {r['dtype']} | {r['adapter']}"
        if "error" in r:
            out += f"{head} | FAILED: {r['error'][:100]} | | | | | | | |\n"
            continue
        if r["adapter"] == "bound":
            ms = " / ".join(f"{x * 1e3:.1f}" for x in r["gemm_s"])
            out += (f"{head} (1 GEMM; 3 GEMMs {r['tok_s_3gemm']:,.0f} tok/s) | {ms} (fwd / dW / dX) "
                    f"| {r['tok_s']:,.0f} | | | | 1.00 | | |\n")
            continue
        out += (f"{head} | {r['median_s'] * 1e3:.1f} ({r['min_s'] * 1e3:.1f}–{r['max_s'] * 1e3:.1f}) "
                f"| {r['tok_s']:,.0f} | {_f(r.get('x_sparsify'), '.2f')} | {_f(r.get('x_saelens'), '.2f')} "
                f"| {_f(r.get('x_sparsify_fp32'), '.2f')} | {_f(r.get('x_bound'), '.2f')} "
                f"| {_f(r['peak_step_mb'], ',.0f')} | {r['state_mb']:,.1f} |\n")
    seen = []
    for r in rows:
        key = (Shape(**r["shape"]).label, r["device"], r["dtype"])
        if key not in seen:
            seen.append(key)
            out += f"\nCPU cores used while timing {key[0]} {key[1]} {key[2]}: {r['contention']}"
    return out + "\n"


def env_info(device: str) -> dict:
    """Machine (CPU model, torch capability, the flags that matter, fast bf16 or not), library versions, load."""
    hw = cpu_info()
    fast, why = this_cpu_bf16_verdict(hw)
    info = {"date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "python": sys.version.split()[0],
            "platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            **hw, "cpu_fast_bf16": fast, "cpu_bf16_why": why, "hardware": machine_summary(),
            "loadavg_start": _loadavg(), "command": " ".join([Path(sys.executable).name, *sys.argv])}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    for pkg in ("wsae_utils", "sae_lens", "sparsify"):
        try:
            info[pkg] = importlib.import_module(pkg).__version__
        except Exception as e:  # noqa: BLE001 - a missing anchor is reported, not fatal
            info[pkg] = f"not importable: {type(e).__name__}"
    return info


def main(argv: list[str] | None = None) -> int:
    """Parse options, time every (device, precision, shape), print and write the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="paper,default,toy", help="comma list of paper, default, toy")
    p.add_argument("--adapters", default="bound,wsae,wsae_weighted,sparsify,saelens")
    p.add_argument("--device", default="auto", help="auto (CPU, then CUDA too when present), cpu or cuda")
    p.add_argument("--dtypes", default="fp32,bf16", help="fp32 and/or bf16")
    p.add_argument("--force-bf16", action="store_true", help="time bf16 on a CPU without fast bf16 too")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--toy-k", default="1,2,3,4")
    p.add_argument("--toy-batch", type=int, default=4096)
    p.add_argument("--default-batch", type=int, default=None, help="override the config's lm.train.batch_size")
    p.add_argument("--big-steps", type=int, default=3, help="timed steps per round, paper/default shapes")
    p.add_argument("--toy-steps", type=int, default=40, help="timed steps per round, toy shape")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", default=None, help="write <out>.md and <out>.json")
    a = p.parse_args(argv)

    torch.set_num_threads(a.threads)
    names = [n for n in a.adapters.split(",") if n]
    unknown = sorted(set(names) - set(FACTORIES))
    if unknown:
        p.error(f"unknown adapters {unknown}; known {sorted(FACTORIES)}")
    devices = ["cpu", "cuda"] if a.device == "auto" and torch.cuda.is_available() else (
        ["cpu"] if a.device == "auto" else [a.device])
    shapes: list[Shape] = []
    for s in a.shapes.split(","):
        if s == "paper":
            shapes.append(Shape("paper", 768, 24576, 32, 4096))
        elif s == "default":
            shapes.append(default_lm_shape(a.default_batch))
        elif s == "toy":
            shapes += [Shape("toy", 20, 200, int(k), a.toy_batch) for k in a.toy_k.split(",")]
        else:
            p.error(f"unknown shape {s!r}")
    t0 = time.perf_counter()
    info = env_info(devices[-1])
    print(json.dumps(info, indent=1), flush=True)
    rows: list[dict] = []
    for device in devices:
        for dtype in a.dtypes.split(","):
            if dtype == "bf16" and device == "cpu" and info["cpu_fast_bf16"] is not True and not a.force_bf16:
                # bf16 GEMMs run ~66x slower than fp32 on CPUs without AVX512-BF16/AMX: not a precision to time
                print(f"  skipping bf16 on CPU: {info['cpu_bf16_why']} (--force-bf16 times it anyway)", flush=True)
                continue
            for shape in shapes:
                toy = shape.name == "toy"
                print(f"== {shape.label} {device} {dtype}", flush=True)
                rows += run_shape(shape, names, device, dtype, warmup=10 if toy else 1,
                                  steps=a.toy_steps if toy else a.big_steps, rounds=a.rounds, seed=a.seed)
    add_ratios(rows)
    info["loadavg_end"] = _loadavg()
    info["wall_s"] = round(time.perf_counter() - t0, 1)
    md = f"Hardware (printed by the benchmark): {info['hardware']}; flags {', '.join(info['flags'])}; " \
         f"bf16: {info['cpu_bf16_why']}\n\n" + markdown(rows)
    print("\n" + md)
    print(f"wall {info['wall_s']} s; loadavg start {info['loadavg_start']}, end {info['loadavg_end']}")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out + ".md").write_text(md)
        Path(a.out + ".json").write_text(json.dumps({"env": info, "args": vars(a), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
