"""LM SAEs from cached activations: Γ variants, multi-SAE training from shuffled cached batches.

The activation cache itself (writer and readers) lives in `lm_cache`, so editing training code here reruns no LM
pass; its readers (`load_tokens`, `iter_activations`, `read_meta`, `layer_stats`) are re-exported here, the
documented home of the activation contract for later stages. Evaluation: `lm_eval`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from wsae_utils.core.sae import (
    SAEConfig,
    SparseAutoencoder,
    cap_proxy,
    error_weights,
    make_gamma,
    permute_gamma,
)
from wsae_utils.core.train import SAETrainer, TrainConfig
from wsae_utils.lm.cache import (  # noqa: F401 (re-exported: the activation contract of later stages)
    ACTS_DTYPES,
    SPLITS,
    CacheError,
    iter_activations,
    layer_stats,
    load_documents,
    load_shard,
    load_tokens,
    massive_norm_threshold,
    read_meta,
    shard_path,
    write_activation_cache,
)
from wsae_utils.runlog import progress

VARIANTS = ("paper", "mean", "cap", "standardize", "permuted")


class CachedBatches:
    """SAE batches (BOS dropped) from a layer's training shards; batch `step` is a pure function of (seed, step).

    Each epoch visits the shards in a seeded order; `shuffle_shards` consecutive shards form a chunk whose rows
    are permuted (seeded by epoch and chunk) and cut into batches (a chunk's remainder is dropped). Only one
    chunk is in memory, and a resumed run sees exactly the batches an uninterrupted run would have seen.
    """

    def __init__(self, acts_dir: str | Path, layer: int, batch_size: int, seed: int = 0, shuffle_shards: int = 4,
                 max_norm: float = math.inf):
        meta = read_meta(acts_dir)
        self.max_norm = max_norm
        self.meta = meta
        self.acts_dir, self.layer, self.batch_size, self.seed = Path(acts_dir), layer, batch_size, seed
        self.shards = meta["splits"]["train"]["shards"]
        self.rows_per_ctx = meta["context_size"] - 1
        self.shuffle_shards = max(1, shuffle_shards)
        self._key: tuple[int, int] | None = None
        self._rows: Tensor | None = None
        n_chunks = math.ceil(len(self.shards) / self.shuffle_shards)
        smallest = min(
            sum(s["n_contexts"] for s in self.shards[c * self.shuffle_shards:(c + 1) * self.shuffle_shards])
            for c in range(n_chunks))
        # Chunks are formed in a shuffled order, so guard with the smallest possible chunk of any order.
        small = sorted(s["n_contexts"] for s in self.shards)
        smallest = min(smallest, sum(small[: min(self.shuffle_shards, len(small))]) if n_chunks > 1 else smallest)
        # (massive-norm tokens dropped from a chunk are a few per thousand; the guard ignores them)
        if smallest * self.rows_per_ctx < batch_size:
            raise ValueError(f"batch_size = {batch_size}: must be <= the rows of one shuffle chunk "
                             f"({smallest * self.rows_per_ctx})")

    def _epoch_chunks(self, epoch: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 7919 + epoch)
        order = torch.randperm(len(self.shards), generator=g).tolist()
        ss = self.shuffle_shards
        return [order[i:i + ss] for i in range(0, len(order), ss)]

    def _chunk_batches(self, chunk: list[int]) -> int:
        return sum(self.shards[i]["n_contexts"] for i in chunk) * self.rows_per_ctx // self.batch_size

    def _locate(self, step: int) -> tuple[int, int, int]:
        epoch, left = 0, step
        while True:
            for c, chunk in enumerate(self._epoch_chunks(epoch)):
                nb = self._chunk_batches(chunk)
                if left < nb:
                    return epoch, c, left
                left -= nb
            epoch += 1

    def batch(self, step: int) -> Tensor:
        """[batch_size, d] float32 rows for SAE step `step`."""
        epoch, c, off = self._locate(step)
        if self._key != (epoch, c):
            chunk = self._epoch_chunks(epoch)[c]
            parts = [load_shard(self.acts_dir, self.layer, "train", self.shards[i]["index"], self.meta)
                     for i in chunk]
            x = torch.cat(parts)[:, 1:].reshape(-1, parts[0].shape[-1]).float()
            x = x[x.norm(dim=-1) <= self.max_norm]  # massive-activation tokens are left out like BOS
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 10_007 + c)
            self._rows = x[torch.randperm(x.shape[0], generator=g)]
            self._key = (epoch, c)
        return self._rows[off * self.batch_size:(off + 1) * self.batch_size]

    @property
    def epoch_rows(self) -> int:
        """Training rows (tokens without BOS) in one pass over the cache."""
        return sum(s["n_contexts"] for s in self.shards) * self.rows_per_ctx


# -- Γ variants ----------------------------------------------------------------------------------------------
@dataclass
class SAESpec:
    """One SAE of a layer: its Γ variant, α, γ (in the SAE's input space) and its input transform
    x_in = (x − shift) / scale (per-dimension standardisation, or one scalar scale: activation normalisation)."""

    variant: str
    alpha: float
    gamma: Tensor
    shift: Tensor | None = None
    scale: Tensor | None = None
    standardized: bool = False

    @property
    def name(self) -> str:
        """Key `variant/alpha{tag}`."""
        return f"{self.variant}/alpha{alpha_tag(self.alpha)}"

    def to_input(self, x: Tensor) -> Tensor:
        """Raw activations → the SAE's input space (standardised for the 'standardize' variant, else scaled)."""
        if self.scale is None:
            return x
        return (x if self.shift is None else x - self.shift) / self.scale

    def to_raw(self, x_hat: Tensor) -> Tensor:
        """The SAE's output space → raw activations."""
        if self.scale is None:
            return x_hat
        x = x_hat * self.scale
        return x if self.shift is None else x + self.shift


def alpha_tag(alpha: float) -> str:
    """Folder tag of an α (wsae_utils.run.config.value_tag: 0, 0.5, 1, exact to 10 significant digits)."""
    from wsae_utils.paths import value_tag

    return value_tag(alpha)


def check_alpha_tags(alphas: list[float], key: str = "lm.alphas") -> None:
    """Raise ValueError when two α values would share one output folder (e.g. 0.5 and 0.5000001)."""
    seen: dict[str, float] = {}
    for a in alphas:
        tag = alpha_tag(a)
        if tag in seen:
            raise ValueError(f"{key} = {list(alphas)}: {seen[tag]!r} and {a!r} share the folder tag "
                             f"'alpha{tag}' (values must differ within 10 significant digits)")
        seen[tag] = a


def layer_gamma(var: Tensor, alpha: float, variant: str, cap_quantile: float = 0.95,
                permute_seed: int = 0, permuted_of: str = "cap") -> Tensor:
    """γ for one variant, through `make_gamma`: paper Var^α; mean Var^α / mean; cap min(Var, q-quantile)^α / mean;
    standardize Var^α / mean (applied to standardised inputs); permuted: `permuted_of`'s γ on permuted dims."""
    if variant not in VARIANTS:
        raise ValueError(f"variant = {variant!r}: must be one of {VARIANTS}")
    if variant == "permuted":
        return permute_gamma(layer_gamma(var, alpha, permuted_of, cap_quantile), permute_seed)
    var = torch.as_tensor(var, dtype=torch.float32)
    proxy = cap_proxy(var, cap_quantile) if variant == "cap" and alpha != 0 else var
    return make_gamma(proxy, alpha, "none" if variant == "paper" else "mean", min_proxy=1e-12)


def gamma_shares(gamma: Tensor, inside_norm: bool = True, tops: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Share of the squared-error weight (γ² inside the norm, else γ) carried by the top 1/5/10 dimensions."""
    w = gamma.double().pow(2) if inside_norm else gamma.double()
    w = (w / w.sum()).sort(descending=True).values
    out = {f"gamma2_top{t}_share": float(w[:t].sum()) for t in tops}
    out["gamma2_eff_dims"] = float(1 / w.pow(2).sum())
    out["gamma_max_over_min"] = float(gamma.max() / gamma.min().clamp_min(1e-30))
    return out


def activation_scale(stats: dict[str, Tensor]) -> float:
    """The one scalar c with E‖c·x‖² = d_model on the training split (SAELens' `expected_average_only_in`
    normalisation): inputs of every layer on one scale, so one learning rate suits them all."""
    mean_sq = float((stats["var"].double() + stats["mean"].double().pow(2)).sum())
    return math.sqrt(stats["var"].numel() / mean_sq)


def layer_specs(stats: dict[str, Tensor], alphas: list[float], variants: list[str], downstream: str,
                permuted_control: bool = True, cap_quantile: float = 0.95, seed: int = 0,
                normalize_activations: bool = False) -> list[SAESpec]:
    """Every SAE of a layer: paper and `downstream` at every α; the other variants at the largest α only (where
    the outlier problem is worst; standardize also at α = 0, its own baseline); the permuted-γ control of
    `downstream` at the largest α (its permutation drawn from `seed`). With `normalize_activations`, every
    non-standardised SAE sees c·x (`activation_scale`); γ's shape is unchanged by a scalar."""
    var = stats["var"]
    specs: list[SAESpec] = []
    names: set[str] = set()
    norm_scale = (torch.full_like(var, 1 / activation_scale(stats), dtype=torch.float32)
                  if normalize_activations else None)

    def add(variant: str, a: float, of: str = "cap") -> None:
        std = variant == "standardize" or (variant == "permuted" and of == "standardize")
        g = layer_gamma(var, a, variant, cap_quantile, permute_seed=seed + 17, permuted_of=of)
        spec = (SAESpec(variant, float(a), g, stats["mean"], stats["std"].clamp_min(1e-6), standardized=True) if std
                else SAESpec(variant, float(a), g, None, norm_scale))
        if spec.name not in names:
            names.add(spec.name)
            specs.append(spec)

    top = max(alphas)
    for v in dict.fromkeys(["paper", downstream, *variants]):
        for a in alphas:
            if a == 0 and v not in ("paper", "standardize"):
                continue  # γ = 1 at α = 0: the same SAE as the paper variant's α = 0
            if v not in ("paper", downstream) and 0 < a < top:
                continue
            add(v, a)
    if permuted_control and max(alphas) > 0:
        add("permuted", max(alphas), of=downstream)
    return specs


def comparisons(names: list[str], downstream: str) -> list[tuple[str, str]]:
    """(SAE, baseline) pairs: every α > 0 SAE against its α = 0 baseline, and the permuted control against the
    real `downstream` γ at the same α."""
    out = [(n, b) for n in names if (b := baseline_name(n, names, downstream)) is not None]
    for n in names:
        if n.startswith("permuted/") and (real := f"{downstream}/{n.split('/')[1]}") in names:
            out.append((n, real))
    return out


def baseline_name(spec_name: str, names: list[str], downstream: str = "cap") -> str | None:
    """The α = 0 SAE a spec is compared with (its variant's own for standardize, else the plain SAE)."""
    variant, tag = spec_name.split("/")
    if tag == "alpha0":
        return None
    own = f"{variant}/alpha0"
    if variant == "permuted" and downstream == "standardize":
        own = "standardize/alpha0"
    if own in names:
        return own
    return "paper/alpha0" if "paper/alpha0" in names else None


def fold_standardization(sae: SparseAutoencoder, shift: Tensor | None, scale: Tensor) -> SparseAutoencoder:
    """An SAE on raw activations equal to `sae` applied to (x − shift)/scale and mapped back (exact algebra;
    no shift: a pure rescaling, e.g. activation normalisation)."""
    out = SparseAutoencoder(SAEConfig(**{**sae.cfg.to_dict(), "normalize_decoder": False}), device=sae.W_enc.device)
    with torch.no_grad():
        out.W_enc.copy_(sae.W_enc / scale[None, :])
        out.W_dec.copy_(sae.W_dec * scale[None, :])
        out.b_enc.copy_(sae.b_enc)
        out.b_dec.copy_(scale * sae.b_dec + (0 if shift is None else shift))
    return out


# -- training ----------------------------------------------------------------------------------------------
@dataclass
class LayerTrainConfig:
    """Settings of the SAEs of one layer (all specs share them; only Γ and the input transform differ). The
    optimiser settings are one `TrainConfig`, nested, as sparsify nests its SAE config in its train config."""

    n_latents: int
    """Latents per SAE (expansion × d_model)."""
    k: int
    """Active latents per token (Top-k)."""
    train: TrainConfig
    """Optimiser, schedule, AuxK, dead-latent window, Γ placement, seed (+ layer) and selection-GEMM precision."""
    shuffle_shards: int = 4
    """Cache shards mixed per training chunk (`CachedBatches`)."""
    monitor_points: int = 5
    """Held-out FVU, decoder cosine to init and dead fraction are recorded at this many points (incl. 0, end)."""
    monitor_contexts: int = 16
    """Held-out contexts used for the FVU recorded during training (the final evaluation uses all)."""
    unmoved_cos: float = 0.99
    """A decoder row whose cosine to its initial value is at least this has not moved (`untrained_reason`)."""
    max_token_norm: float = math.inf
    """Tokens with a larger activation norm are left out of training and monitoring (`massive_norm_threshold`)."""


@dataclass
class TrainedSAE:
    """A trained SAE (raw activation space), its spec, loss curve and monitored diagnostics."""

    spec: SAESpec
    sae: SparseAutoencoder
    loss_curve: list[tuple[int, float]]
    monitor: list[dict[str, float]] = field(default_factory=list)

    def diagnostics(self, converge_window: float = 0.25, converge_tol: float = 0.02) -> dict[str, float]:
        """Final monitored values, the movement summary (loss_ratio = mean of the last 10 % of logged training
        losses / the first one; objective_ratio = held-out objective at the end / at initialisation) and the
        convergence test (`held_out_convergence`)."""
        last, first = self.monitor[-1], self.monitor[0]
        losses = [v for _, v in self.loss_curve]
        tail = losses[-max(1, len(losses) // 10):]
        rel, converged = held_out_convergence(self.monitor, converge_window, converge_tol)
        return {"dec_cos_to_init": last["dec_cos_to_init"], "frac_rows_unmoved": last["frac_rows_unmoved"],
                "monitor_fvu_init": first["heldout_fvu"], "monitor_fvu_final": last["heldout_fvu"],
                "objective_init": first["heldout_objective"], "objective_final": last["heldout_objective"],
                "objective_ratio": last["heldout_objective"] / first["heldout_objective"],
                "objective_gain_last_window": rel, "converged": converged, "train_dead_frac": last["dead_frac"],
                "loss_ratio": float(np.mean(tail) / losses[0]) if losses and losses[0] > 0 else float("nan")}


def held_out_convergence(monitor: list[dict[str, float]], window: float = 0.25, tol: float = 0.02
                         ) -> tuple[float, bool]:
    """The convergence criterion: the held-out objective (the SAE's own Γ-weighted FVU on held-out contexts) fell
    by less than `tol` (relative) over the last `window` of training tokens. Returns (relative fall, converged)."""
    steps = [m["step"] for m in monitor]
    end = steps[-1]
    ref = max((m for m in monitor if m["step"] <= (1 - window) * end), key=lambda m: m["step"])
    if ref["step"] == end:
        return float("nan"), False  # no monitor point inside the window: convergence cannot be judged
    a, b = ref["heldout_objective"], monitor[-1]["heldout_objective"]
    rel = (a - b) / a if a > 0 else float("nan")
    return float(rel), bool(rel < tol)


def untrained_reason(diag: dict[str, float], max_objective_ratio: float = 0.9, max_unmoved_frac: float = 0.5) -> str:
    """Why an SAE did not learn ('' when it did): its held-out objective (its own Γ-weighted FVU) is not below
    `max_objective_ratio` × its initialisation's, or more than `max_unmoved_frac` of its decoder rows are still
    where they started (cosine to init ≥ the monitor's `unmoved_cos`).

    The unweighted held-out FVU is deliberately not the test: a weighted SAE that learnt its objective but
    reconstructs the unweighted activations worse than its initialisation trained, and is a fidelity finding
    (it is reported, and the fidelity verdict sees it), not an SAE to leave out.
    """
    why = []
    if not diag["objective_ratio"] < max_objective_ratio:
        why.append(f"held-out objective {diag['objective_final']:.3g} not below {max_objective_ratio:g} × its "
                   f"initialisation's {diag['objective_init']:.3g}")
    if diag["frac_rows_unmoved"] > max_unmoved_frac:
        why.append(f"{diag['frac_rows_unmoved']:.0%} of decoder rows unmoved (> {max_unmoved_frac:.0%})")
    return "; ".join(why)


def untrained_flag(diag: dict[str, float], max_objective_ratio: float = 0.9, max_unmoved_frac: float = 0.5) -> bool:
    """`untrained_reason` is not empty: the SAE never enters a verdict."""
    return bool(untrained_reason(diag, max_objective_ratio, max_unmoved_frac))


def _monitor_fvus(sae: SparseAutoencoder, spec: SAESpec, xs: list[Tensor], gamma_inside_norm: bool
                  ) -> tuple[float, float]:
    """(unweighted FVU in raw space, the SAE's own objective: Γ-weighted FVU in its input space) on `xs`."""
    from wsae_utils.core.metrics import FVUAccumulator

    raw, own = FVUAccumulator(), FVUAccumulator(error_weights(spec.gamma, gamma_inside_norm))
    with torch.no_grad():
        for x in xs:
            x_in = spec.to_input(x)
            x_hat = sae(x_in).x_hat
            raw.update(x, spec.to_raw(x_hat))
            own.update(x_in, x_hat)
    return raw.compute(), own.compute()


def train_layer_saes(acts_dir: str | Path, layer: int, specs: list[SAESpec], stats: dict[str, Tensor],
                     cfg: LayerTrainConfig, device: str | torch.device = "cpu") -> dict[str, TrainedSAE]:
    """Train every spec of one layer from the same cached batches; all start from the same seeded init.

    b_dec starts at the training mean (in each SAE's input space). Held-out monitoring uses the first
    `monitor_contexts` held-out contexts. Returned SAEs act on raw activations (input transform folded in).
    """
    device = torch.device(device)
    batches = CachedBatches(acts_dir, layer, cfg.train.batch_size, cfg.train.seed, cfg.shuffle_shards,
                            cfg.max_token_norm)
    tcfg = replace(cfg.train, seed=cfg.train.seed + layer)
    trainers, inits = {}, {}
    for spec in specs:
        sae = SparseAutoencoder(SAEConfig(d_in=stats["mean"].numel(), n_latents=cfg.n_latents, activation="topk",
                                          k=cfg.k), seed=tcfg.seed, device=device)
        sae.init_b_dec_(spec.to_input(stats["mean"][None]).to(device))
        trainers[spec.name] = SAETrainer(sae, tcfg, spec.gamma.to(device))
        inits[spec.name] = sae.W_dec.detach().clone()
    mon_x: list[Tensor] = []
    n_mon = 0
    for _, x in iter_activations(acts_dir, layer, "heldout", batch_contexts=8):
        flat = x[:, 1:].reshape(-1, x.shape[-1])
        mon_x.append(flat[flat.norm(dim=-1) <= cfg.max_token_norm].to(device))
        n_mon += x.shape[0]
        if n_mon >= cfg.monitor_contexts:
            break
    steps = cfg.train.steps
    points = sorted({0, steps, *np.linspace(0, steps, max(2, cfg.monitor_points)).round().astype(int)})
    monitors: dict[str, list[dict[str, float]]] = {s.name: [] for s in specs}
    by_name = {s.name: s for s in specs}

    def record(step: int) -> None:
        for name, tr in trainers.items():
            cos = torch.nn.functional.cosine_similarity(tr.sae.W_dec.detach(), inits[name], dim=1)
            fvu, own = _monitor_fvus(tr.sae, by_name[name], mon_x, tcfg.gamma_inside_norm)
            monitors[name].append({
                "step": step, "tokens": step * tcfg.batch_size, "heldout_fvu": fvu, "heldout_objective": own,
                "dec_cos_to_init": float(cos.mean()),
                "frac_rows_unmoved": float((cos >= cfg.unmoved_cos).float().mean()),
                "dead_frac": float(tr.dead_mask().float().mean()) if step > 0 else float("nan"),
            })

    record(0)
    for step in progress(range(steps), desc=f"layer {layer} seed {cfg.train.seed}: {len(specs)} SAEs"):
        x = batches.batch(step).to(device)
        for spec in specs:
            trainers[spec.name].step(spec.to_input(x))
        if step + 1 in points:
            record(step + 1)
    out = {}
    for spec in specs:
        sae = trainers[spec.name].sae
        if spec.scale is not None:
            sae = fold_standardization(sae, None if spec.shift is None else spec.shift.to(device),
                                       spec.scale.to(device))
        out[spec.name] = TrainedSAE(spec, sae, list(trainers[spec.name].state.loss_curve), monitors[spec.name])
    return out


def spec_to_dict(spec: SAESpec) -> dict[str, Any]:
    """JSON-able description of a spec (no tensors)."""
    return {"variant": spec.variant, "alpha": spec.alpha, "standardized": spec.standardized}


def config_dict(cfg: LayerTrainConfig) -> dict[str, Any]:
    """Plain dict of a LayerTrainConfig (an infinite `max_token_norm`, i.e. no token left out, as None: JSON)."""
    out = asdict(cfg)
    out["max_token_norm"] = None if math.isinf(cfg.max_token_norm) else cfg.max_token_norm
    return out
