"""Precision resolution: every detection outcome forced, explicit settings kept, slow explicit bf16 flagged."""

from __future__ import annotations

import pytest
import torch

from wsae_utils import hardware as H

AVX512_BF16 = {"avx2", "fma", "avx512f", "avx512_bf16"}
AMX = {"avx2", "avx512f", "amx_tile", "amx_bf16"}
AVX2_ONLY = {"avx2", "fma"}


@pytest.mark.parametrize(("capability", "flags", "env", "arch", "expected"), [
    ("AVX512", AVX512_BF16, {}, "x86_64", True),
    ("AVX512", AMX, {}, "x86_64", True),
    ("AVX2", AVX2_ONLY, {}, "x86_64", False),                            # the 66x-slow machine
    ("AVX512", {"avx2", "avx512f"}, {}, "x86_64", False),                # AVX-512 without bf16 (Skylake-X)
    ("AVX2", AVX512_BF16, {"ATEN_CPU_CAPABILITY": "avx2"}, "x86_64", False),  # imitated AVX2
    ("AVX512", AVX512_BF16, {"ONEDNN_MAX_CPU_ISA": "AVX2"}, "x86_64", False),
    ("AVX512", AVX512_BF16, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}, "x86_64", True),
    ("AVX512", set(), {}, "x86_64", None),                               # flags unreadable: probe
    ("DEFAULT", {"asimd", "bf16"}, {}, "aarch64", None),                 # Arm: probe
])
def test_cpu_bf16_verdict_outcomes(capability, flags, env, arch, expected):
    fast, why = H.cpu_bf16_verdict(capability, flags, env=env, arch=arch)
    assert fast is expected
    assert why


@pytest.mark.parametrize(("verdict", "cuda", "device", "expected"), [
    ((True, "avx512_bf16"), None, "cpu", "bfloat16"),
    ((False, "no AVX512-BF16"), None, "cpu", "float32"),
    (None, True, "cuda", "bfloat16"),
    (None, False, "cuda:0", "float32"),
])
def test_auto_resolves_by_detection(verdict, cuda, device, expected):
    p = H.resolve_precision("auto", device, "test", cpu_verdict=verdict, cuda_bf16=cuda)
    assert p.dtype == expected and p.requested == "auto" and not p.slow_explicit
    assert H.PRECISION_LOG[-1] == p.as_dict()


def test_auto_on_cpu_never_bf16_without_fast_bf16():
    p = H.resolve_precision("auto", torch.device("cpu"), "LM forward", cpu_verdict=(False, "AVX2 only"))
    assert p.dtype == "float32"


def test_explicit_bf16_on_slow_cpu_is_kept_and_flagged():
    p = H.resolve_precision("bfloat16", "cpu", "LM forward", cpu_verdict=(False, "AVX2 only"))
    assert p.dtype == "bfloat16" and p.slow_explicit
    assert "slowdown" in p.reason and "explicit" in p.reason


@pytest.mark.parametrize("requested", ["float32", "bfloat16"])
def test_explicit_dtype_kept_where_bf16_is_fast(requested):
    p = H.resolve_precision(requested, "cpu", "x", cpu_verdict=(True, "amx_bf16"))
    assert p.dtype == requested and not p.slow_explicit


def test_ambiguous_cpu_is_probed(monkeypatch):
    monkeypatch.setattr(H, "probe_bf16_speedup", lambda shape, device: (0.030, 0.010))
    assert H.resolve_precision("auto", "cpu", "x", cpu_verdict=(None, "arm")).dtype == "bfloat16"
    monkeypatch.setattr(H, "probe_bf16_speedup", lambda shape, device: (0.030, 2.0))
    p = H.resolve_precision("auto", "cpu", "x", cpu_verdict=(None, "arm"))
    assert p.dtype == "float32" and "probe" in p.reason


def test_probe_runs_at_a_tiny_shape():
    t32, t16 = H.probe_bf16_speedup((8, 16, 8), "cpu", repeats=1)
    assert t32 > 0 and t16 > 0


def test_bad_precision_names_the_value():
    with pytest.raises(ValueError, match="'fp16'"):
        H.resolve_precision("fp16", "cpu", "LM forward")


def test_provenance_records_hardware_and_precisions():
    from wsae_utils.run.results import provenance

    H.resolve_precision("float32", "cpu", "provenance test")
    prov = provenance(a=1)
    assert {"cpu", "torch_capability", "flags", "cores"} <= set(prov["hardware"])
    assert prov["precision"][-1]["purpose"] == "provenance test"
    assert H.machine_summary()
