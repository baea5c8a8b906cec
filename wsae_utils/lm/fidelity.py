"""Held-out evaluation of LM SAEs from the activation cache: per-context sums, CE/KL splices, bootstrap CIs.

One pass over a layer's cached held-out activations gives, per context, the sums every metric needs (FVU overall,
without outlier dimensions and per dimension, L0, which latents fired) for every SAE of the layer; CE and KL
splice each SAE into the LM on a seeded subset of contexts, running only the blocks after the layer from the
cached residual. Metrics and their 95 % bootstrap CIs (and paired α − 0 differences) are ratios of resampled
sums, so every CI resamples whole contexts; over several SAE seeds (`seed_layer_metrics`), the seeds are resampled
as clusters on top, paired by seed where both sides share them. `FaithfulnessRule` is the one faithfulness rule of
every LM report; `seeded_ce_call` and `fidelity_verdict` decide the lm-fidelity claim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from wsae_utils.core.sae import SparseAutoencoder
from wsae_utils.core.stats import cluster_diff_draws, cluster_mean_draws, percentile_interval
from wsae_utils.lm.cache import iter_activations, load_tokens, read_meta
from wsae_utils.runlog import progress


# -- evaluation --------------------------------------------------------------------------------------------
@dataclass
class PerContext:
    """Per-context sums on the held-out window, from which every metric and its bootstrap CI is computed."""

    n_rows: Tensor
    """[N] non-BOS tokens per context."""
    x_sum: Tensor
    """[N, d] Σ x per context (float64)."""
    x_sumsq: Tensor
    """[N, d] Σ x² per context."""
    sse: dict[str, Tensor] = field(default_factory=dict)
    """name → [N, d] Σ (x − x̂)² per context and dimension."""
    l0: dict[str, Tensor] = field(default_factory=dict)
    """name → [N] Σ active latents per context."""
    fired: dict[str, Tensor] = field(default_factory=dict)
    """name → [N, n_latents] bool, the latent fired somewhere in the context."""
    ce_index: Tensor | None = None
    """[M] contexts of the CE/KL subset."""
    n_pred: Tensor | None = None
    """[M] predicted tokens per subset context."""
    ce: dict[str, Tensor] = field(default_factory=dict)
    """'clean', 'zero' and each SAE name → [M] summed next-token NLL per subset context."""
    kl: dict[str, Tensor] = field(default_factory=dict)
    """name → [M] summed KL(clean ‖ spliced) per subset context."""


def _ce_and_kl(logits: Tensor, ids: Tensor, clean_logp: Tensor | None) -> tuple[Tensor, Tensor | None, Tensor]:
    """Per-context NLL sums (predictions from position 1 on), KL(clean‖this) sums, and the log-probs."""
    lp = logits[:, 1:-1].log_softmax(-1)
    target = ids[:, 2:].to(lp.device)
    nll = -lp.gather(-1, target[..., None]).squeeze(-1).sum(1)
    kl = None if clean_logp is None else (clean_logp.exp() * (clean_logp - lp)).sum(-1).sum(1)
    return nll.double().cpu(), None if kl is None else kl.double().cpu(), lp


@torch.no_grad()
def evaluate_layer(acts_dir: str | Path, layer: int, saes: dict[str, SparseAutoencoder], lm: Any | None = None,
                   ce_contexts: int = 32, ce_seed: int = 0, batch_contexts: int = 4,
                   max_contexts: int = 0, max_token_norm: float = math.inf) -> PerContext:
    """Held-out per-context sums for every SAE of a layer (one pass over the cached held-out activations).

    FVU, L0 and dead fraction use every held-out context (`max_contexts` > 0 keeps the first ones). CE and KL
    splice each SAE's reconstruction into the LM at positions >= 1 of a seeded subset of `ce_contexts` contexts
    and run only the blocks after `layer` (`lm.logits_from_layer`); clean and zero-ablation losses are computed
    once per batch and shared by every SAE. `lm=None` skips CE/KL.

    Tokens with an activation norm above `max_token_norm` (massive activations, left out of SAE training) are
    treated like BOS: out of FVU, L0 and dead-fraction sums, and passed through unchanged by every splice (the
    SAE's, and zero ablation's), so CE recovered measures the SAE on the tokens it was trained for.
    """
    from wsae_utils.lm.model import logits_from_layer

    tokens = load_tokens(acts_dir, "heldout")
    n_total = tokens.shape[0] if max_contexts <= 0 else min(max_contexts, tokens.shape[0])
    d = read_meta(acts_dir)["d_model"]
    m = min(ce_contexts, n_total) if lm is not None else 0
    ce_idx = torch.randperm(n_total, generator=torch.Generator().manual_seed(ce_seed))[:m].sort().values
    in_subset = torch.zeros(n_total, dtype=torch.bool)
    in_subset[ce_idx] = True
    pc = PerContext(torch.zeros(n_total, dtype=torch.float64), torch.zeros(n_total, d, dtype=torch.float64),
                    torch.zeros(n_total, d, dtype=torch.float64), ce_index=ce_idx)
    for name, sae in saes.items():
        pc.sse[name] = torch.zeros(n_total, d, dtype=torch.float64)
        pc.l0[name] = torch.zeros(n_total, dtype=torch.float64)
        pc.fired[name] = torch.zeros(n_total, sae.cfg.n_latents, dtype=torch.bool)
    ce_rows: dict[str, list[Tensor]] = {k: [] for k in ["clean", "zero", *saes]}
    kl_rows: dict[str, list[Tensor]] = {k: [] for k in saes}
    n_pred: list[Tensor] = []
    bar = progress(total=n_total, desc=f"eval layer {layer}")
    for start, x in iter_activations(acts_dir, layer, "heldout", batch_contexts):
        if start >= n_total:
            break
        x = x[: n_total - start]
        B, T, _ = x.shape
        sl = slice(start, start + B)
        keep = (x[:, 1:].float().norm(dim=-1) <= max_token_norm)  # [B, T-1]
        body = x[:, 1:].double() * keep[..., None]
        pc.n_rows[sl] = keep.sum(1).double()
        pc.x_sum[sl] = body.sum(1)
        pc.x_sumsq[sl] = body.pow(2).sum(1)
        flat = x[:, 1:].reshape(-1, x.shape[-1])
        keep_flat = keep.reshape(-1)
        sub = in_subset[sl]
        recon: dict[str, Tensor] = {}
        for name, sae in saes.items():
            out = sae(flat.to(sae.W_enc.device))
            # a left-out token is reconstructed as itself: no error, no latents, unchanged in the splice
            x_hat = torch.where(keep_flat[:, None], out.x_hat.float().cpu(), flat.float())
            pc.sse[name][sl] = (flat.double() - x_hat.double()).pow(2).view(B, T - 1, -1).sum(1)
            live = (out.top_vals > 0).cpu() & keep_flat[:, None]
            pc.l0[name][sl] = live.view(B, -1).sum(1).double()
            idx = out.top_idx.cpu().view(B, -1)
            hits = torch.zeros(B, sae.cfg.n_latents, dtype=torch.int32).scatter_add_(1, idx, live.view(B, -1).int())
            pc.fired[name][sl] = hits > 0
            if sub.any():
                recon[name] = x_hat.view(B, T - 1, -1)[sub]
        if sub.any():
            xs = x[sub]
            ids = tokens[start:start + B][sub]
            n_pred.append(torch.full((xs.shape[0],), T - 2, dtype=torch.float64))
            clean_nll, _, clean_lp = _ce_and_kl(logits_from_layer(lm, xs, layer), ids, None)
            ce_rows["clean"].append(clean_nll)
            zero = torch.cat([xs[:, :1], torch.where(keep[sub][..., None], 0, xs[:, 1:])], 1)
            ce_rows["zero"].append(_ce_and_kl(logits_from_layer(lm, zero, layer), ids, None)[0])
            for name, r in recon.items():
                spliced = torch.cat([xs[:, :1], r], 1)
                nll, kl, _ = _ce_and_kl(logits_from_layer(lm, spliced, layer), ids, clean_lp)
                ce_rows[name].append(nll)
                kl_rows[name].append(kl)
        bar.update(B)
    bar.close()
    if m > 0:
        pc.n_pred = torch.cat(n_pred)
        pc.ce = {k: torch.cat(v) for k, v in ce_rows.items()}
        pc.kl = {k: torch.cat(v) for k, v in kl_rows.items()}
    return pc


# -- metrics with bootstrap CIs -------------------------------------------------------------------------------
@dataclass
class FaithfulnessRule:
    """The one faithfulness rule every LM report uses.

    CE recovered = (CE_zero − CE_sae) / (CE_zero − CE_clean). The zero-ablation baseline is **degenerate** when
    CE_zero − CE_clean < `min_baseline_gap` nats/token (ablating the layer barely hurts, e.g. a random model):
    then CE recovered is undefined and the SAE is not called faithful. Otherwise an SAE is faithful when its
    held-out FVU < `max_fvu` and the lower end of the CE-recovered 95 % CI ≥ `min_ce_recovered`.
    """

    min_ce_recovered: float = 0.5
    max_fvu: float = 1.0
    min_baseline_gap: float = 0.1

    def verdict(self, fvu: float, ce_rec_lo: float, baseline_gap: float) -> str:
        """'faithful', 'not faithful' or 'undefined (degenerate zero-ablation baseline)'."""
        if not baseline_gap >= self.min_baseline_gap:
            return "undefined (degenerate zero-ablation baseline)"
        return "faithful" if fvu < self.max_fvu and ce_rec_lo >= self.min_ce_recovered else "not faithful"


def bootstrap_weights(n: int, n_boot: int, seed: int) -> Tensor:
    """[n_boot, n] multinomial resampling counts of n contexts (row b = how often each context is drawn)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (n_boot, n), generator=g)
    return torch.zeros(n_boot, n, dtype=torch.float64).scatter_add_(1, idx, torch.ones(n_boot, n, dtype=torch.float64))


def _fvu_from(w: Tensor, sse: Tensor, pc: PerContext, dims: Tensor) -> Tensor:
    """FVU for weights w [B, N] (or [N]) over dimension mask `dims`."""
    n = w @ pc.n_rows
    s = (w @ pc.x_sum[:, dims])
    q = (w @ pc.x_sumsq[:, dims])
    tv = (q - s.pow(2) / n[..., None]).sum(-1)
    return (w @ sse[:, dims]).sum(-1) / tv


def sae_key(name: str, seed: int) -> str:
    """The evaluation key of one trained SAE: its name `variant/alphaX` and its SAE seed (`paper/alpha1@seed2`)."""
    return f"{name}@seed{int(seed)}"


_NO_CI = (float("nan"), float("nan"))


def _ci(metric: str, draws: np.ndarray) -> tuple[float, float]:
    """95 % percentile interval of a metric's draws; none for the dead fraction."""
    # "Never fired in the window" is biased upwards under resampling (a resample holds ~63 % of the distinct
    # contexts), so the dead fraction gets no bootstrap CI.
    return _NO_CI if metric == "dead_frac" else percentile_interval(draws)


def metric_draws(pc: PerContext, var: Tensor, n_outlier_dims: int = 5, n_boot: int = 1000, seed: int = 0
                 ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, np.ndarray]]]:
    """(point, draws) of every metric of every SAE key of `pc`: draws [n_boot] over resampled contexts, the same
    resampling weights for every key (so differences between keys are paired by context)."""
    N = pc.n_rows.numel()
    w_all = torch.ones(1, N, dtype=torch.float64)
    W = bootstrap_weights(N, n_boot, seed)
    all_dims = torch.ones(var.numel(), dtype=torch.bool)
    keep = torch.ones(var.numel(), dtype=torch.bool)
    keep[var.topk(min(n_outlier_dims, var.numel() - 1)).indices] = False
    M = 0 if pc.ce_index is None else pc.ce_index.numel()
    Wc = bootstrap_weights(M, n_boot, seed + 1) if M > 0 else None
    one_c = torch.ones(1, M, dtype=torch.float64) if M > 0 else None

    def per_name(name: str, w: Tensor, wc: Tensor | None) -> dict[str, Tensor]:
        out = {
            "fvu": _fvu_from(w, pc.sse[name], pc, all_dims),
            "fvu_excl_outliers": _fvu_from(w, pc.sse[name], pc, keep),
            "l0": (w @ pc.l0[name]) / (w @ pc.n_rows),
            "dead_frac": ((w.float() @ pc.fired[name].float()) == 0).double().mean(-1),
        }
        if wc is not None and name in pc.ce:
            npred = wc @ pc.n_pred
            clean, zero, ce = (wc @ pc.ce[k] / npred for k in ("clean", "zero", name))
            out["ce_sae"] = ce
            out["ce_recovered"] = (zero - ce) / (zero - clean)
            out["kl"] = wc @ pc.kl[name] / npred
        return out

    point = {k: {m: float(v[0]) for m, v in per_name(k, w_all, one_c).items()} for k in pc.sse}
    draws = {k: {m: v.numpy() for m, v in per_name(k, W, Wc).items()} for k in pc.sse}
    return point, draws


def layer_metrics(pc: PerContext, var: Tensor, n_outlier_dims: int = 5, n_boot: int = 1000, seed: int = 0,
                  comparisons: list[tuple[str, str | None]] | None = None) -> list[dict[str, Any]]:
    """Long table rows (sae, metric, value, ci_lo, ci_hi, kind) with 95 % bootstrap CIs over contexts.

    Metrics: fvu, fvu_excl_outliers (top `n_outlier_dims` training-variance dims left out), l0, dead_frac
    (never fired in the window; no CI), ce_recovered, kl (nats/token), ce_sae; kind 'diff' rows are paired
    differences name − base for each (name, base) of `comparisons`, resampled with the same contexts. Each key of
    `pc` is one SAE; `seed_layer_metrics` adds the cells over SAE seeds.
    """
    point, draws = metric_draws(pc, var, n_outlier_dims, n_boot, seed)
    rows: list[dict[str, Any]] = []
    for name in point:
        for metric, v in point[name].items():
            lo, hi = _ci(metric, draws[name][metric])
            rows.append({"sae": name, "metric": metric, "value": v, "ci_lo": lo, "ci_hi": hi, "kind": "value",
                         "baseline": ""})
    for name, base in comparisons or []:
        if base is None or base not in point or name not in point:
            continue
        for metric in point[name]:
            lo, hi = _ci(metric, draws[name][metric] - draws[base][metric])
            rows.append({"sae": name, "metric": metric, "value": point[name][metric] - point[base][metric],
                         "ci_lo": lo, "ci_hi": hi, "kind": "diff", "baseline": base})
    return rows


def seed_layer_metrics(pc: PerContext, var: Tensor, members: dict[str, dict[int, str]], n_outlier_dims: int = 5,
                       n_boot: int = 1000, seed: int = 0, comparisons: list[tuple[str, str | None]] | None = None
                       ) -> list[dict[str, Any]]:
    """Long rows per (SAE, seed) and per cell (SAE name, all its seeds), with 95 % CIs over contexts × SAE seeds.

    `members` maps each SAE name (`variant/alphaX`) to {SAE seed: key of `pc`}; `comparisons` are (name, baseline)
    pairs of names. Rows carry sae (the name), seed, level, metric, value, ci_lo, ci_hi, kind ('value' / 'diff'),
    baseline, n_seeds, paired_by_seed:

    - level 'seed' (seed = the SAE seed, n_seeds 1): each SAE alone, CI over contexts (as `layer_metrics`), and
      per-seed differences name − baseline of the same seed, paired by context;
    - level 'cell' (seed −1): the mean over the name's seeds, CI from a two-level bootstrap: contexts resampled
      (the same weights for every SAE) and, in each resample, the seeds resampled as clusters (the same seed draws
      for every cell with as many seeds). Diff rows: per seed s, value(name, s) − value(base, s), the seeds
      resampled jointly (paired by seed, they share init and batch order) when both hold the same seeds; else each
      side's seeds resampled independently (paired_by_seed False). n_seeds: the seeds of the cell (for a diff,
      of its thinner side).

    With one seed per name the cell rows equal `layer_metrics`' rows (context-only bootstrap). dead_frac: no CI.
    """
    point, draws = metric_draws(pc, var, n_outlier_dims, n_boot, seed)
    seed_draws = seed + 2  # cluster picks: after the context weights (seed) and the CE-subset weights (seed + 1)
    base_row = {"kind": "value", "baseline": "", "paired_by_seed": None}
    rows: list[dict[str, Any]] = []
    for name, by_seed in members.items():
        for s, key in sorted(by_seed.items()):
            for metric, v in point[key].items():
                lo, hi = _ci(metric, draws[key][metric])
                rows.append({**base_row, "sae": name, "seed": int(s), "level": "seed", "metric": metric, "value": v,
                             "ci_lo": lo, "ci_hi": hi, "n_seeds": 1})
    for name, base in comparisons or []:
        if base is None or name not in members or base not in members:
            continue
        for s in sorted(set(members[name]) & set(members[base])):
            a, b = members[name][s], members[base][s]
            for metric in point[a]:
                lo, hi = _ci(metric, draws[a][metric] - draws[b][metric])
                rows.append({"sae": name, "seed": int(s), "level": "seed", "metric": metric,
                             "value": point[a][metric] - point[b][metric], "ci_lo": lo, "ci_hi": hi, "kind": "diff",
                             "baseline": base, "n_seeds": 1, "paired_by_seed": True})

    def metrics_of(name: str) -> list[str]:
        keys = list(members[name].values())
        return [m for m in point[keys[0]] if all(m in point[k] for k in keys)]

    for name, by_seed in members.items():
        seeds = sorted(by_seed)
        for metric in metrics_of(name):
            v = float(np.mean([point[by_seed[s]][metric] for s in seeds]))
            d = cluster_mean_draws(np.stack([draws[by_seed[s]][metric] for s in seeds]), seed_draws)
            lo, hi = _ci(metric, d)
            rows.append({**base_row, "sae": name, "seed": -1, "level": "cell", "metric": metric, "value": v,
                         "ci_lo": lo, "ci_hi": hi, "n_seeds": len(seeds)})
    for name, base in comparisons or []:
        if base is None or name not in members or base not in members:
            continue
        ma, mb = members[name], members[base]
        for metric in [m for m in metrics_of(name) if m in metrics_of(base)]:
            v = (float(np.mean([point[k][metric] for k in ma.values()]))
                 - float(np.mean([point[k][metric] for k in mb.values()])))
            d, paired = cluster_diff_draws({s: draws[k][metric] for s, k in ma.items()},
                                           {s: draws[k][metric] for s, k in mb.items()}, seed_draws)
            lo, hi = _ci(metric, d)
            rows.append({"sae": name, "seed": -1, "level": "cell", "metric": metric, "value": v, "ci_lo": lo,
                         "ci_hi": hi, "kind": "diff", "baseline": base, "n_seeds": min(len(ma), len(mb)),
                         "paired_by_seed": paired})
    return rows


def ce_baselines(pc: PerContext) -> dict[str, float]:
    """Clean and zero-ablation CE (nats/token) on the CE subset, and their gap (the faithfulness guard)."""
    if not pc.ce:
        return {"ce_clean": float("nan"), "ce_zero": float("nan"), "baseline_gap": float("nan"), "ce_contexts": 0}
    n = float(pc.n_pred.sum())
    clean, zero = float(pc.ce["clean"].sum()) / n, float(pc.ce["zero"].sum()) / n
    return {"ce_clean": clean, "ce_zero": zero, "baseline_gap": zero - clean, "ce_contexts": int(pc.ce_index.numel())}


def per_dim_fvu(pc: PerContext, name: str) -> Tensor:
    """[d] per-dimension FVU Σ(x_i − x̂_i)² / Σ(x_i − x̄_i)² over the whole window."""
    n = pc.n_rows.sum()
    tv = pc.x_sumsq.sum(0) - pc.x_sum.sum(0).pow(2) / n
    return pc.sse[name].sum(0) / tv.clamp_min(1e-30)


def ce_recovered_call(ci_lo: float, ci_hi: float, tolerance: float) -> str:
    """One (layer, α) row of the fidelity claim from the 95 % CI of ΔCE-recovered (α − 0): 'comparable' when the
    CI lies above −tolerance, 'not comparable' when it lies below, else 'undecided'."""
    if ci_lo > -tolerance:
        return "comparable"
    if ci_hi < -tolerance:
        return "not comparable"
    return "undecided"


def seeded_ce_call(ci_lo: float, ci_hi: float, tolerance: float, n_seeds: int, min_seeds: int = 3
                   ) -> tuple[str, str]:
    """(call, reason) of one (layer, α) row from its cell-level 95 % CI of ΔCE-recovered over contexts × SAE seeds.

    With fewer than `min_seeds` SAE seeds in the compared cells the call is 'not decidable here': the CI then
    covers held-out contexts (and too few seeds), not the spread between SAE seeds, so it cannot carry a claim
    about the method. Otherwise the call of `ce_recovered_call`.
    """
    if n_seeds < min_seeds:
        return "not decidable here", (f"{n_seeds} SAE seed(s) < min_seeds {min_seeds}: the CI does not cover SAE "
                                      "seeds")
    call = ce_recovered_call(ci_lo, ci_hi, tolerance)
    where = {"comparable": "lies above", "not comparable": "lies below"}.get(call, "straddles")
    return call, f"CI over held-out contexts × {n_seeds} SAE seeds {where} −{tolerance:g}"


def fidelity_verdict(calls: list[str]) -> str:
    """The paper's fidelity claim ("WSAE keeps reconstruction comparable") over the usable rows' calls: not
    reproduced if any row is not comparable, reproduced if every row is comparable, else (or with no usable
    row) not decidable here. A row 'not decidable here' (too few SAE seeds) keeps the claim undecided unless
    another row is not comparable."""
    if not calls:
        return "not decidable here"
    if "not comparable" in calls:
        return "not reproduced"
    return "reproduced" if all(c == "comparable" for c in calls) else "not decidable here"
