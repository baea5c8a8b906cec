"""SAELens on-disk format: export a Top-k SparseAutoencoder so `sae_lens.SAE.load_from_disk` loads it, and read it back.

Folder layout (SAELens 6.x inference form, see reference/anchor_bench.md §6):
- cfg.json: architecture "topk", d_in, d_sae, k, dtype "float32", apply_b_dec_to_input, normalize_activations
  "none", rescale_acts_by_decoder_norm false, metadata (sae_lens_version >= 6.0.0, model/hook/context info,
  metadata.wsae → side file);
- sae_weights.safetensors: exactly W_enc [d_in, d_sae] (our W_enc transposed), b_enc, W_dec [d_sae, d_in], b_dec
  (SAELens loads strictly: any extra tensor would fail);
- wsae.json (α, γ normalisation, proxy, training settings) and wsae.safetensors (gamma, proxy).
The folder is written into a temporary sibling and renamed, so a killed export never leaves half an SAE.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from wsae_utils.core.sae import SAEConfig, SparseAutoencoder

SAE_LENS_VERSION = "6.0.0"
SIDE_JSON, SIDE_TENSORS = "wsae.json", "wsae.safetensors"


def save_sae(
    sae: SparseAutoencoder, out_dir: str | Path, *, alpha: float, gamma: Tensor | None = None,
    proxy: Tensor | None = None, proxy_kind: str = "variance", gamma_normalize: str = "none",
    gamma_inside_norm: bool = True, model_name: str = "", hook_name: str = "", context_size: int = 0,
    prepend_bos: bool = True, extra: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None,
) -> Path:
    """Write `sae` in SAELens format plus the wsae side files; returns the folder.

    `metadata` adds SAELens metadata keys (e.g. `seqpos_slice`, `dataset_path`, `model_from_pretrained_kwargs`)
    and free-form provenance (weights file and hash); files are world-readable (0644, folders 0755).
    """
    cfg = sae.cfg
    if cfg.activation != "topk" or cfg.tied or not cfg.bias:
        raise ValueError("SAELens export supports untied top-k SAEs with biases (architecture 'topk')")
    out_dir = Path(out_dir)
    # No norm folding: with rescale_acts_by_decoder_norm false SAELens encodes and decodes exactly as we do,
    # whatever the decoder row norms are (ours are unit norm anyway).
    W_enc = sae.W_enc.detach().float().cpu().t().contiguous()
    W_dec, b_enc, b_dec = (t.detach().float().cpu().contiguous() for t in (sae.W_dec, sae.b_enc, sae.b_dec))
    side = {
        "alpha": float(alpha), "proxy": proxy_kind, "gamma_normalize": gamma_normalize,
        "gamma_inside_norm": gamma_inside_norm, "sae_config": cfg.to_dict(), **(extra or {}),
    }
    cfg_json = {
        "architecture": "topk", "d_in": cfg.d_in, "d_sae": cfg.n_latents, "k": cfg.k, "dtype": "float32",
        "device": "cpu", "apply_b_dec_to_input": True, "normalize_activations": "none",
        "reshape_activations": "none", "rescale_acts_by_decoder_norm": False,
        "metadata": {
            "sae_lens_version": SAE_LENS_VERSION, "sae_lens_training_version": SAE_LENS_VERSION,
            "model_name": model_name, "hook_name": hook_name, "context_size": context_size,
            "prepend_bos": prepend_bos, **(metadata or {}),
            "wsae": {"file": SIDE_JSON, "tensors": SIDE_TENSORS, "alpha": float(alpha)},
        },
    }
    tmp = out_dir.with_name(f".{out_dir.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        save_file({"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}, tmp / "sae_weights.safetensors")
        tensors = {}
        if gamma is not None:
            tensors["gamma"] = torch.as_tensor(gamma, dtype=torch.float32).cpu().contiguous()
        if proxy is not None:
            tensors["proxy"] = torch.as_tensor(proxy, dtype=torch.float32).cpu().contiguous()
        if tensors:
            save_file(tensors, tmp / SIDE_TENSORS)
        (tmp / SIDE_JSON).write_text(json.dumps(side, indent=2) + "\n")
        (tmp / "cfg.json").write_text(json.dumps(cfg_json, indent=2) + "\n")
        tmp.chmod(0o755)  # readable by every user of a shared results folder (not the 0600 of some umasks)
        for f in tmp.iterdir():
            f.chmod(0o644)
        old = out_dir.with_name(f".{out_dir.name}.old{os.getpid()}")
        if out_dir.exists():
            os.rename(out_dir, old)
        os.rename(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def load_sae(sae_dir: str | Path, device: str | torch.device = "cpu") -> tuple[SparseAutoencoder, dict[str, Any]]:
    """Read an exported folder back into a SparseAutoencoder; returns (sae, info) with cfg.json + wsae.json."""
    sae_dir = Path(sae_dir)
    cfg_path = sae_dir / "cfg.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{cfg_path} does not exist: not an exported SAE folder")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("architecture") != "topk":
        raise ValueError(f"{cfg_path}: architecture {cfg.get('architecture')!r}, only 'topk' is supported")
    w = load_file(sae_dir / "sae_weights.safetensors")
    sae = SparseAutoencoder(SAEConfig(d_in=cfg["d_in"], n_latents=cfg["d_sae"], activation="topk", k=cfg["k"]),
                            device=device)
    with torch.no_grad():
        sae.W_enc.copy_(w["W_enc"].t())
        sae.W_dec.copy_(w["W_dec"])
        sae.b_enc.copy_(w["b_enc"])
        sae.b_dec.copy_(w["b_dec"])
    info = {"cfg": cfg}
    if (sae_dir / SIDE_JSON).exists():
        info["wsae"] = json.loads((sae_dir / SIDE_JSON).read_text())
    if (sae_dir / SIDE_TENSORS).exists():
        info.update(load_file(sae_dir / SIDE_TENSORS))
    return sae, info
