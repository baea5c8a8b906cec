"""Toy SAEs against the ground truth: recovery metrics of one trained SAE, the batch runner that trains and
evaluates a grid of SAEs at once, and the seed statistics the toy verdicts use.

Held-out data comes in two splits per (seed, S): every matching (Hungarian, for L_GT and MCC) is fitted on the first
and every number is read on the second. Metrics are unweighted, also for a WSAE.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import Tensor

from wsae_utils.core.sae import StackedSAE, StackedSAEConfig, activate, encoder_affine
from wsae_utils.core.train import ConvergenceRule, TrainConfig, TrainLog, stacked_batches, train_stacked

# -- evaluation of one group against the ground truth -------------------------------------------------
TOY_AUXK_ALPHA = 1.0 / 32
"""Weight of the AuxK loss of the toy's `topk_auxk` SAEs (OpenAI's)."""


def encode_weights(w: dict[str, Tensor], cfg: StackedSAEConfig, x_p: Tensor) -> Tensor:
    """Latents of one SAE given its float64 weights (`StackedSAE.group_weights`), x_p [N, n_p] → [N, n_m]."""
    bias = cfg.spec["bias"]
    pre = encoder_affine(x_p.double(), w["W_enc"], w["b_enc"] if bias else None, w["b_dec"] if bias else None)
    return activate(pre, cfg.activation, cfg.k, w["theta"])


def decode_weights(w: dict[str, Tensor], cfg: StackedSAEConfig, z: Tensor) -> Tensor:
    """Reconstruction of one SAE from its latents [N, n_m]."""
    out = z.double() @ w["W_dec"]
    return out + w["b_dec"] if cfg.spec["bias"] else out


def recovery_metrics(
    w: dict[str, Tensor], cfg: StackedSAEConfig, W_p: Tensor, x_fit: Tensor, x_eval: Tensor,
    cos_threshold: float = 0.99, probe_tau: float = 0.0, probe_tau_rel: float = 0.1, min_fires: int = 10,
    polysemantic: Tensor | None = None, x_probe: Tensor | None = None,
) -> dict[str, float]:
    """Ground-truth recovery of one SAE: matchings fitted on `x_fit`, every number read on held-out `x_eval`.

    Untied SAEs' latents are read in input units (z_j·‖d_j‖). Keys: L_SAE (unweighted) and L_SAE_rel = L_SAE / E‖x_p‖²;
    L_GT and L_GT_rel = L_GT / E‖x‖² (the all-zero
    latent vector scores exactly 1); mcc_matchable / mcc_all; matched_cos (Hungarian, one latent per feature)
    and mean_max_cos; recovered (matched cosine ≥ `cos_threshold`); n_eff and top_share (features driving each
    latent when it fires, Top-k aware, latents firing ≥ `min_fires` rows) on the fixed random sparse inputs
    `x_probe` (the same yardstick for every SAE; default: the held-out data) and n_eff_data on the held-out data of
    the run's own S (which mixes in how many features each row carries); fpl_probe_tau0 and fpl_probe_rel (one-hot
    probes at τ = `probe_tau` and at τ_rel·max: reported, never a Top-k verdict metric); alive, dead_frac, l0,
    latent_var (mean per-latent variance over all latents).
    """
    from wsae_utils.core.metrics import (
        activation_feature_shares,
        features_per_latent,
        features_per_latent_relative,
        ground_truth_loss_split,
        matched_cosine,
        max_cosine_per_feature,
        mcc_split,
        per_feature_ground_truth_loss,
    )

    Wp = W_p.double()
    x_fit, x_eval = x_fit.double(), x_eval.double()
    xp_eval = x_eval @ Wp.T
    z_fit, z_eval = encode_weights(w, cfg, x_fit @ Wp.T), encode_weights(w, cfg, xp_eval)
    l_sae = float((xp_eval - decode_weights(w, cfg, z_eval)).pow(2).sum(1).mean())
    if not cfg.spec["tied"]:
        # Untied latents are read in input units, z_j·‖d_j‖ (the identity for unit-norm decoders): the decoder norm is
        # a free gauge there. The tied theory SAE keeps its raw latents, as the paper defines L_GT.
        scale = w["W_dec"].norm(dim=1)
        z_fit, z_eval = z_fit * scale, z_eval * scale
    l_gt, match = ground_truth_loss_split(x_fit, z_fit, x_eval, z_eval)
    mcc = mcc_split(x_fit, z_fit, x_eval, z_eval)
    mcos, per_cos, _ = matched_cosine(Wp.T, w["W_dec"])
    eff = w["W_enc"] @ Wp
    shares_data = activation_feature_shares(x_eval, z_eval, eff, min_fires=min_fires)
    if x_probe is None:
        shares = shares_data
    else:
        x_probe = x_probe.double()
        shares = activation_feature_shares(x_probe, encode_weights(w, cfg, x_probe @ Wp.T), eff, min_fires=min_fires)
    n = Wp.shape[1]
    probe = encode_weights(w, cfg, torch.eye(n, dtype=torch.float64) @ Wp.T)
    if cfg.spec["bias"]:  # probes measure the response added by the feature, not the bias alone
        probe = probe - encode_weights(w, cfg, torch.zeros(1, Wp.shape[0], dtype=torch.float64))
    fires = (z_eval != 0).sum(0)
    out = {
        "L_SAE": l_sae,
        "L_SAE_rel": l_sae / max(float(xp_eval.pow(2).sum(1).mean()), 1e-30),
        "L_GT": l_gt,
        "L_GT_rel": l_gt / max(float(x_eval.pow(2).sum(1).mean()), 1e-30),
        "mcc_matchable": mcc["mcc_matchable"],
        "mcc_all": mcc["mcc_all"],
        "matched_cos": mcos,
        "mean_max_cos": float(np.mean(max_cosine_per_feature(Wp.T, w["W_dec"]))),
        "recovered": int((per_cos >= cos_threshold).sum()),
        "n_eff": _nanmean(shares["n_eff"]),
        "top_share": _nanmean(shares["top_share"]),
        "n_eff_data": _nanmean(shares_data["n_eff"]),
        "fpl_probe_tau0": features_per_latent(probe, tau=probe_tau),
        "fpl_probe_rel": features_per_latent_relative(probe, probe_tau_rel),
        "probe_tau": probe_tau,
        "probe_tau_rel": probe_tau_rel,
        "alive": int((fires > 0).sum()),
        "dead_frac": float((fires == 0).double().mean()),
        "l0": float((z_eval != 0).sum(1).double().mean()),
        "latent_var": float(z_eval.var(0).mean()),
    }
    if polysemantic is not None:
        per = per_feature_ground_truth_loss(x_eval, z_eval, match)
        poly = np.asarray(polysemantic, dtype=bool)
        energy = x_eval.pow(2).mean(0).numpy()
        for name, mask in (("poly", poly), ("mono", ~poly)):
            denom = max(float(energy[mask].sum()), 1e-30)
            out[f"L_GT_rel_{name}"] = float(per[mask].sum()) / denom if mask.any() else float("nan")
    return out


def _nanmean(v: np.ndarray) -> float:
    v = np.asarray(v, dtype=float)
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")


def tied_weights(W_m: Tensor, theta: float = 0.0) -> dict[str, Tensor]:
    """Weights dict of a tied, bias-free SAE with encoder rows W_m [n_m, n_p] (e.g. the closed form W_pᵀ)."""
    W = W_m.double()
    return {"W_enc": W, "W_dec": W, "b_enc": torch.zeros(W.shape[0], dtype=torch.float64),
            "b_dec": torch.zeros(W.shape[1], dtype=torch.float64),
            "theta": torch.full((W.shape[0],), theta, dtype=torch.float64)}


def eval_split(W_p: Tensor, sparsity: float, seed: int, rows: int) -> tuple[Tensor, Tensor]:
    """(x_fit, x_eval): two held-out feature sets of `rows` non-empty rows, disjoint from any training pool."""
    from wsae_utils.toy.data import sample_features

    n = W_p.shape[1]
    fit = sample_features(rows, n, sparsity, torch.Generator().manual_seed(seed + 1_000_003), nonempty=True)
    ev = sample_features(rows, n, sparsity, torch.Generator().manual_seed(seed + 2_000_003), nonempty=True)
    return fit, ev


def run_groups(
    W_p: Tensor, cfg: StackedSAEConfig, groups: list[dict[str, Any]], steps: int, batch_size: int, lr: float,
    pool_rows: int, eval_rows: int, device: str | torch.device = "cpu", rule: ConvergenceRule | None = None,
    metric_kwargs: dict[str, Any] | None = None, polysemantic: Tensor | None = None, x_probe: Tensor | None = None,
) -> tuple[list[dict[str, Any]], TrainLog, StackedSAE | None]:
    """Train one batch of toy SAEs (one per group dict) and evaluate each against the ground truth.

    A group dict holds `seed` and `sparsity` and optionally `gamma` [n_p] (WSAE weights) and `init`
    [n_m, n_p] (start from these encoder rows); other keys are copied into its result row. Pools and held-out
    sets depend on (seed, sparsity) only, so groups that share them are paired. Returns (rows, log, sae); each row
    has the metrics of `recovery_metrics`, `converged`, `rel_change` and `group` (its column in the log).
    """
    from wsae_utils.runlog import log as runlog
    from wsae_utils.toy.data import data_pool

    if not groups:
        return [], TrainLog(), None
    pools: dict[tuple, Tensor] = {}
    for g in groups:
        key = (g["seed"], g["sparsity"])
        if key not in pools:
            pools[key] = data_pool(W_p, pool_rows, g["sparsity"], g["seed"], nonempty=True)
    held = {key: data_pool(W_p, min(1024, pool_rows), key[1], key[0] + 500_009, nonempty=True) for key in pools}
    keys = [(g["seed"], g["sparsity"]) for g in groups]
    dev = torch.device(device)
    pool_keys = list(pools)
    x_pool = torch.stack([pools[k] for k in keys]).to(dev)
    x_held = torch.stack([held[k] for k in keys]).to(dev)
    sae = StackedSAE(cfg, [g["seed"] for g in groups], device=dev)
    for i, g in enumerate(groups):
        if g.get("init") is not None:
            with torch.no_grad():
                sae.W_enc[i].copy_(g["init"].to(sae.W_enc))
                if not cfg.spec["tied"]:
                    sae.W_dec[i].copy_(g["init"].to(sae.W_dec))
    sae.init_b_dec_(x_pool)
    gamma = None
    if any(g.get("gamma") is not None for g in groups):
        gamma = torch.stack([torch.ones(cfg.n_p) if g.get("gamma") is None else torch.as_tensor(g["gamma"]).float()
                             for g in groups]).to(dev)
    t0 = time.time()
    # the toy's optimisation: constant rate, AuxK (topk_auxk only) on latents silent for 50 steps, 50 held-out points
    tcfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, auxk_alpha=TOY_AUXK_ALPHA,
                       dead_window=50 * batch_size, log_every=max(1, steps // 50))
    batch_fn = stacked_batches([pools[k] for k in pool_keys], [pool_keys.index(k) for k in keys],
                               [g["seed"] for g in groups], batch_size, dev)
    log = train_stacked(sae, batch_fn, tcfg, gamma, eval_x=x_held, rule=rule)
    runlog(f"{cfg.kind} n_m={cfg.n_m}: {len(groups)} SAEs x {steps} steps in {time.time() - t0:.1f} s, "
           f"{int(log.converged.sum())} converged")
    rows = []
    splits: dict[tuple, tuple[Tensor, Tensor]] = {}
    for i, g in enumerate(groups):
        key = keys[i]
        if key not in splits:
            splits[key] = eval_split(W_p, key[1], key[0], eval_rows)
        x_fit, x_eval = splits[key]
        m = recovery_metrics(sae.group_weights(i), cfg, W_p, x_fit, x_eval, polysemantic=polysemantic,
                             x_probe=x_probe, **(metric_kwargs or {}))
        meta = {k: v for k, v in g.items() if k not in ("gamma", "init")}
        rows.append({**meta, "kind": cfg.kind, "n_m": cfg.n_m, **m, "converged": bool(log.converged[i]),
                     "rel_change": float(log.rel_change[i]), "group": i})
    return rows, log, sae


def curve_frame(log: TrainLog, rows: list[dict[str, Any]], label_keys: tuple[str, ...]):
    """Long DataFrame (step, objective, converged, and the label keys of each group) for loss-curve plots."""
    import pandas as pd

    curve = log.curve()
    out = []
    for r in rows:
        g = r["group"]
        for step, val in zip(log.steps, curve[:, g], strict=True):
            out.append({"step": step, "objective": float(val), "converged": r["converged"],
                        **{k: r[k] for k in label_keys}})
    return pd.DataFrame(out)
