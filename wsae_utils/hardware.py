"""What this machine computes fast, and the precision each job runs in (`auto` → bf16 or fp32).

Machines of one name differ by chip: on AVX512-BF16 / AMX CPUs a bf16 GEMM runs 2-4x faster than fp32, on an
AVX2-only CPU it runs ~66x *slower* (oneDNN has no bf16 kernel there and emulates it). So no precision is
hard-coded: `auto` resolves once per job from what the device reports, with a short timed probe of both dtypes at
the job's shape where the report is ambiguous (non-x86 CPUs, unreadable flags). Every resolution is kept in
`PRECISION_LOG`, which `results.provenance` writes into each job's metrics.json, and `machine_summary` is the line
shown in every report's header.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

PRECISIONS = ("auto", "float32", "bfloat16")
"""Values of every precision setting (`lm_dtype`, `matmul_dtype`)."""

FLAGS_THAT_MATTER = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "avx512_fp16")
"""CPU flags (from /proc/cpuinfo) that decide which kernels torch/oneDNN can use."""

# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) at or above which it has native bf16 GEMM kernels.
_ONEDNN_BF16_ISAS = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX10_1_512", "AVX10_1_512_AMX",
                     "AVX10_1_512_AMX_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16", "AMX", "ALL")
PROBE_MIN_SPEEDUP = 1.25
"""bf16 is chosen by the timed probe only when it beats fp32 by this factor (noise and rounding are not free)."""


@dataclass(frozen=True)
class Precision:
    """One resolved precision: what was asked, what runs, and why."""

    purpose: str
    """What the dtype is for (e.g. 'LM forward', 'SAE selection GEMM')."""
    requested: str
    """The setting as given: 'auto', 'float32' or 'bfloat16'."""
    dtype: str
    """What runs: 'float32' or 'bfloat16'."""
    device: str
    """torch device type the choice was made for."""
    reason: str
    """Why: the detection outcome, the probe timings, or 'asked for explicitly'."""
    slow_explicit: bool = False
    """True when bfloat16 was asked for explicitly on a CPU without fast bf16 (reports say so)."""

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for metrics.json."""
        return asdict(self)


PRECISION_LOG: list[dict[str, Any]] = []
"""Every precision resolved in this process, in order (written into the job's provenance)."""


@lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """CPU model name and flag set from /proc/cpuinfo (empty where unreadable, e.g. macOS)."""
    model, flags = platform.processor() or platform.machine(), frozenset()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = frozenset(value.split())
            if flags and model:
                break
    except OSError:
        pass
    return model, flags


def torch_cpu_capability() -> str:
    """SIMD level torch's CPU kernels dispatch to ('AVX512', 'AVX2', 'DEFAULT', ...; honours ATEN_CPU_CAPABILITY)."""
    import torch

    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except AttributeError:  # very old torch
        return "unknown"


def cpu_info() -> dict[str, Any]:
    """CPU model, torch capability, the flags that matter, cores usable by this process, and ISA overrides."""
    model, flags = _cpuinfo()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    return {
        "cpu": model,
        "arch": platform.machine(),
        "torch_capability": torch_cpu_capability(),
        "flags": [f for f in FLAGS_THAT_MATTER if f in flags],
        "cores": usable,
        "isa_overrides": {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
                          if k in os.environ},
    }


def cpu_bf16_verdict(capability: str, flags: frozenset[str] | set[str], env: dict[str, str] | None = None,
                     arch: str | None = None) -> tuple[bool | None, str]:
    """Does this CPU run bf16 GEMMs fast? (True / False / None = ambiguous, probe it) and why.

    Pure function of what the machine reports, so each outcome can be tested by passing it in.
    """
    env = dict(os.environ if env is None else env)
    arch = arch or platform.machine()
    isa_cap = (env.get("ONEDNN_MAX_CPU_ISA") or env.get("DNNL_MAX_CPU_ISA") or "").upper()
    if isa_cap and isa_cap not in _ONEDNN_BF16_ISAS:
        return False, f"ONEDNN_MAX_CPU_ISA={isa_cap} caps oneDNN below its bf16 kernels"
    native = sorted({"avx512_bf16", "amx_bf16"} & set(flags))
    if arch in ("x86_64", "AMD64", "i686", "x86"):
        if not flags:
            return None, "x86 CPU flags unreadable"
        if not native:
            return False, f"no AVX512-BF16 or AMX on this CPU (torch capability {capability})"
        if capability.upper() != "AVX512":
            return False, f"CPU has {', '.join(native)} but torch dispatches to {capability} (ATEN_CPU_CAPABILITY?)"
        return True, f"{', '.join(native)} with torch capability {capability}"
    return None, f"{arch} CPU (torch capability {capability}): bf16 speed not known from flags"


def this_cpu_bf16_verdict(info: dict[str, Any] | None = None) -> tuple[bool | None, str]:
    """`cpu_bf16_verdict` for this machine (from `cpu_info()`, or the `info` already read)."""
    info = cpu_info() if info is None else info
    return cpu_bf16_verdict(info["torch_capability"], set(info["flags"]), arch=info["arch"])


def probe_bf16_speedup(shape: tuple[int, int, int] = (2048, 576, 1536), device: str = "cpu", repeats: int = 3
                       ) -> tuple[float, float]:
    """Best-of-`repeats` seconds of one [m, k] × [k, n] product in fp32 and in bf16 on `device` (fp32, bf16)."""
    import torch

    m, k, n = shape
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(m, k, generator=g).to(device), torch.randn(k, n, generator=g).to(device)
    out = {}
    for dt in (torch.float32, torch.bfloat16):
        x, y = a.to(dt), b.to(dt)
        x @ y  # warm-up: kernel selection, page faults
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            x @ y
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
            if best > 2.0:  # a 66x-slow bf16 GEMM needs no second look
                break
        out[dt] = best
    return out[torch.float32], out[torch.bfloat16]


def resolve_precision(requested: str, device: Any, purpose: str, probe_shape: tuple[int, int, int] | None = None,
                      *, cpu_verdict: tuple[bool | None, str] | None = None, cuda_bf16: bool | None = None
                      ) -> Precision:
    """Resolve a precision setting for `device` and record it in `PRECISION_LOG`.

    'float32'/'bfloat16' are kept as asked (bf16 on a CPU without fast bf16 is flagged `slow_explicit`); 'auto' is
    bf16 on CUDA devices that support it and on CPUs with AVX512-BF16/AMX that torch dispatches to, fp32 on other
    CPUs, and the faster of the two in a timed probe at `probe_shape` where the CPU's report is ambiguous.
    `cpu_verdict` and `cuda_bf16` override the detection (tests force each outcome with them).
    """
    if requested not in PRECISIONS:
        raise ValueError(f"{purpose}: precision {requested!r} must be one of {PRECISIONS}")
    dev = str(getattr(device, "type", device)).split(":")[0]
    if dev == "cuda":
        if cuda_bf16 is None:
            import torch

            cuda_bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
        fast, why = cuda_bf16, "CUDA device " + ("supports bf16" if cuda_bf16 else "without bf16 support")
    elif dev == "cpu":
        fast, why = this_cpu_bf16_verdict() if cpu_verdict is None else cpu_verdict
    else:
        fast, why = False, f"device type {dev!r}: fp32 (bf16 speed unknown)"
    slow_explicit = False
    if requested != "auto":
        dtype = requested
        slow_explicit = requested == "bfloat16" and dev == "cpu" and fast is False
        reason = "asked for explicitly" + (f"; this CPU has no fast bf16 ({why}): expect a large slowdown"
                                           if slow_explicit else f" ({why})")
    elif fast is None:
        shape = probe_shape or (2048, 576, 1536)
        t32, t16 = probe_bf16_speedup(shape, dev)
        dtype = "bfloat16" if t32 / t16 >= PROBE_MIN_SPEEDUP else "float32"
        reason = (f"{why}; timed probe at {shape[0]}×{shape[1]}·{shape[1]}×{shape[2]}: fp32 {t32 * 1e3:.1f} ms, "
                  f"bf16 {t16 * 1e3:.1f} ms (bf16 needs ≥ {PROBE_MIN_SPEEDUP}× to be chosen)")
    else:
        dtype = "bfloat16" if fast else "float32"
        reason = why
    prec = Precision(purpose, requested, dtype, dev, reason, slow_explicit)
    PRECISION_LOG.append(prec.as_dict())
    return prec


def machine_summary(threads: int | None = None) -> str:
    """One line for a report header: CPU, torch capability, fast bf16 or not, cores and threads, GPU."""
    import torch

    info = cpu_info()
    fast, _ = this_cpu_bf16_verdict(info)
    bf16 = {True: "fast bf16", False: "no fast bf16", None: "bf16 speed unknown"}[fast]
    line = (f"{info['cpu']} · torch {info['torch_capability']} · {bf16} · {info['cores']} cores, "
            f"{threads or torch.get_num_threads()} threads")
    if info["isa_overrides"]:
        line += " · " + ", ".join(f"{k}={v}" for k, v in info["isa_overrides"].items())
    if torch.cuda.is_available():
        line += f" · GPU {torch.cuda.get_device_name(0)}"
    return line


def resolve_device(device: str = "auto") -> str:
    """The one device resolver: 'auto' → 'cuda' when a CUDA device is visible, else 'cpu'; others unchanged."""
    if device != "auto":
        return device
    import torch  # only here: config validation imports this module and must stay torch-free

    return "cuda" if torch.cuda.is_available() else "cpu"
