"""SAEBench-style interpretability metrics (Karvonen et al. 2025) as pure functions, with statistics and verdicts.

The protocols are SAEBench 0.6's (sae_bench.evals.*), re-implemented on tensors because its entry points load the
model and data sets from the Hugging Face hub through TransformerLens (not possible offline, and the embedded LM is
not in TransformerLens's list); `benchmarks/saebench_crosscheck.py` runs both on the same inputs. Every metric
takes activations, latent codes and a decoder, never a model:

- **k-sparse probing** (`sparse_probing.probe_training`): per task class, a balanced one-vs-rest set; the k latents
  with the largest |mean difference| between the classes on the training split; an L2 logistic regression
  (sklearn's objective, C = 1, fitted here by Newton's method) on them; test accuracy. The same probe on the LM's
  own activations (all dimensions) is the dense ceiling.
- **first-letter absorption** (`absorption.*`, Chanin et al. 2024): a one-vs-rest letter probe on the LM; per SAE an
  L1-regularised probe on the latents, k-sparse probes (k = 1..10) on its top latents per letter, the feature split
  (k grows while F1 rises by more than 0.03); on test words the probe calls positive, the share of the probe
  projection carried by other latents aligned with the probe while the split latents stay short (absorption
  fraction), and whether one such latent carries it while the split latents are silent (full absorption).
- **TPP** (`scr_and_tpp`, perform_scr = False): per class, the N latents with the largest positive
  (mean difference × probe·decoder) effect are zero-ablated (x − Σ f_j d_j, the SAE error kept) in the mean-pooled
  activations; the class's probe should lose accuracy, the other classes' probes not.
- **SCR** (perform_scr = True): a probe trained where two attributes are perfectly correlated; ablating the
  latents of the spurious attribute should recover its accuracy on the other attribute, normalised by the gap to a
  probe trained on that attribute alone.

Each metric returns per-example *contributions* whose sum is the metric, on examples shared by every SAE of a layer
(same test sets, same words), so differences between SAEs are paired by example and, across SAE seeds, by seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..core.stats import cluster_mean_draws
from ..core.stats import percentile_interval as interval  # noqa: F401 (re-exported: the one percentile rule)

# ---------------------------------------------------------------------------------------------------------------
# logistic regression: sklearn's L2 objective, solved by (batched) Newton steps


@torch.no_grad()
def fit_logistic(X: Tensor, y: Tensor, C: float = 1.0, balanced: bool = False, max_iter: int = 100,
                 tol: float = 1e-10) -> tuple[Tensor, Tensor]:
    """(w [P, d], b [P]) minimising ½‖w‖² + C Σ s_i logloss_i for P problems X [P, n, d], y [P, n] in {0, 1}.

    sklearn's `LogisticRegression(C=C)` objective (intercept not penalised); `balanced` weighs samples like its
    `class_weight="balanced"` (s_i = n / (2 n_class)). 2-D X / 1-D y fit one problem and return w [d], b [].
    Float64 Newton steps with a backtracking line search: the optimum sklearn's lbfgs approaches, to tolerance.
    """
    single = X.dim() == 2
    X = (X[None] if single else X).double()
    y = (y[None] if single else y).double()
    P, n, d = X.shape
    s = torch.ones_like(y)
    if balanced:
        pos = y.sum(1, keepdim=True).clamp_min(1)
        neg = (n - y.sum(1, keepdim=True)).clamp_min(1)
        s = torch.where(y > 0, n / (2 * pos), n / (2 * neg))
    Xt = torch.cat([X, torch.ones(P, n, 1, dtype=X.dtype)], 2)
    theta = torch.zeros(P, d + 1, dtype=X.dtype)
    reg = torch.ones(d + 1, dtype=X.dtype)
    reg[-1] = 0.0

    def objective(th: Tensor) -> Tensor:
        z = torch.einsum("pnd,pd->pn", Xt, th)
        loss = torch.nn.functional.softplus(z) - y * z  # −log σ(z) for y=1, −log(1−σ(z)) for y=0
        return 0.5 * (th[:, :-1] ** 2).sum(1) + C * (s * loss).sum(1)

    f = objective(theta)
    for _ in range(max_iter):
        z = torch.einsum("pnd,pd->pn", Xt, theta)
        p = torch.sigmoid(z)
        grad = reg * theta + C * torch.einsum("pnd,pn->pd", Xt, s * (p - y))
        wts = C * s * p * (1 - p)
        H = (Xt * wts[..., None]).transpose(1, 2) @ Xt + torch.diag_embed(reg.expand(P, -1))
        H = H + 1e-10 * torch.eye(d + 1, dtype=X.dtype)  # the intercept row may be flat for separable data
        step = torch.linalg.solve(H, grad)
        dec = (grad * step).sum(1)
        t = torch.ones(P, dtype=X.dtype)
        new = theta - t[:, None] * step
        f_new = objective(new)
        for _ls in range(30):  # backtracking (Armijo) per problem
            bad = f_new > f - 1e-4 * t * dec
            if not bad.any():
                break
            t = torch.where(bad, t / 2, t)
            new = theta - t[:, None] * step
            f_new = objective(new)
        theta, f = new, f_new
        if bool((dec <= tol * (1 + f.abs())).all()):  # Newton decrement: quadratic convergence from here on
            break
    w, b = theta[:, :-1].float(), theta[:, -1].float()
    return (w[0], b[0]) if single else (w, b)


def logistic_predict(X: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """Logits X w + b (X [n, d] or [P, n, d] with w [P, d])."""
    return X @ w + b if X.dim() == 2 else torch.einsum("pnd,pd->pn", X, w) + b[:, None]


def f1_score(y: np.ndarray, pred: np.ndarray) -> float:
    """Binary F1 (0 when there is no true and no predicted positive, like sklearn's zero_division=0)."""
    y, pred = np.asarray(y, bool), np.asarray(pred, bool)
    tp = float((y & pred).sum())
    denom = float(y.sum() + pred.sum())
    return 2 * tp / denom if denom > 0 else 0.0


# ---------------------------------------------------------------------------------------------------------------
# balanced probe sets (SAEBench's prepare_probe_data)


def balanced_one_vs_rest(labels: np.ndarray, positive: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(indices, 0/1 labels): every example of class `positive` and as many negatives, drawn evenly from the other
    classes (labels < 0 are never used); fewer positives are kept when the negatives run short."""
    labels = np.asarray(labels)
    pos = np.flatnonzero(labels == positive)
    others = [c for c in np.unique(labels) if c >= 0 and c != positive]
    if not others or len(pos) == 0:
        raise ValueError(f"class {positive}: needs examples of it and of at least one other class")
    per = math.ceil(len(pos) / len(others))
    neg = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per] for c in others])
    neg = rng.permutation(neg)[:len(pos)]
    pos = rng.permutation(pos)[:len(neg)]
    idx = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(len(pos), np.int64), np.zeros(len(neg), np.int64)])
    order = rng.permutation(len(idx))
    return idx[order], y[order]


@dataclass
class ProbeUnit:
    """One binary probing problem: train and test indices into the examples, with 0/1 labels."""

    task: str
    cls: str
    train_idx: np.ndarray
    train_y: np.ndarray
    test_idx: np.ndarray
    test_y: np.ndarray


def probe_units(task: str, labels: np.ndarray, test: np.ndarray, class_names: Sequence[str],
                seed: int = 0) -> list[ProbeUnit]:
    """Balanced one-vs-rest units of a task (one per class; a two-class task gives one unit, class 1 positive).

    Seeded per task, so every SAE of a run sees the same sets. A class without examples of it and of another class
    in both splits gives no unit (a small corpus or config; the caller reports what is missing).
    """
    rng = np.random.default_rng([seed, sum(map(ord, task))])
    classes = [c for c in np.unique(labels) if c >= 0]
    positives = [1] if len(classes) == 2 and set(classes) == {0, 1} else classes
    units = []
    for c in positives:
        tr = np.flatnonzero(~test)
        te = np.flatnonzero(test)
        try:
            i_tr, y_tr = balanced_one_vs_rest(labels[tr], int(c), rng)
            i_te, y_te = balanced_one_vs_rest(labels[te], int(c), rng)
        except ValueError:
            continue
        units.append(ProbeUnit(task, str(class_names[int(c)]), tr[i_tr], y_tr, te[i_te], y_te))
    return units


# ---------------------------------------------------------------------------------------------------------------
# k-sparse probing


def mean_diff_top_k(X: Tensor, y: np.ndarray, k: int) -> Tensor:
    """Indices of the k features with the largest |mean(X | y=1) − mean(X | y=0)| (SAEBench's selection)."""
    yy = torch.as_tensor(np.asarray(y, bool))
    diff = (X[yy].mean(0) - X[~yy].mean(0)).abs()
    return torch.argsort(diff, descending=True, stable=True)[:k]


def sparse_probe_correct(X: Tensor, unit: ProbeUnit, ks: Sequence[int], C: float = 1.0,
                         permute_labels: np.random.Generator | None = None) -> dict[int, np.ndarray]:
    """Per k: whether each test example of `unit` is classified right by the k-sparse probe on features X [n, F].

    k = 0 means every feature (the dense probe). `permute_labels` shuffles the training labels (the chance control).
    """
    ytr = unit.train_y if permute_labels is None else permute_labels.permutation(unit.train_y)
    Xtr, Xte = X[unit.train_idx].float(), X[unit.test_idx].float()
    out = {}
    for k in ks:
        feats = torch.arange(X.shape[1]) if k == 0 else mean_diff_top_k(Xtr, ytr, k)
        w, b = fit_logistic(Xtr[:, feats], torch.as_tensor(ytr), C)
        pred = (logistic_predict(Xte[:, feats], w, b) > 0).numpy()
        out[int(k)] = pred == unit.test_y.astype(bool)
    return out


def sparse_probing_contrib(correct: dict[tuple[str, str], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Contributions (sum = mean over tasks of the mean over their classes of test accuracy) and strata ids."""
    tasks = sorted({t for t, _ in correct})
    per_task = {t: [c for tt, c in correct if tt == t] for t in tasks}
    contrib, group = [], []
    for g, key in enumerate(sorted(correct)):
        t = key[0]
        v = correct[key].astype(float)
        contrib.append(v / (len(v) * len(per_task[t]) * len(tasks)))
        group.append(np.full(len(v), g))
    return np.concatenate(contrib), np.concatenate(group)


# ---------------------------------------------------------------------------------------------------------------
# first-letter probes and absorption


def _exp_decay(opt: torch.optim.Optimizer, start: float, end: float, steps: int) -> Any:
    return torch.optim.lr_scheduler.ExponentialLR(opt, gamma=math.exp(math.log(end / start) / steps))


def train_multi_probe(X: Tensor, y: Tensor, n_classes: int, epochs: int = 50, lr: float = 1e-2, end_lr: float = 1e-5,
                      weight_decay: float = 1e-4, batch_size: int = 4096, l1: float = 0.0, seed: int = 0
                      ) -> tuple[Tensor, Tensor]:
    """SAEBench's `train_multi_probe`: n_classes one-vs-rest logistic probes, BCE with pos_weight = n_neg / n_pos,
    Adam with weight decay, learning rate decayed exponentially to `end_lr`; `l1` adds l1 · mean_c Σ|w_c| (the
    sparse probe on SAE latents). Returns (weight [n_classes, d], bias [n_classes]).

    Rows with few non-zeros (SAE latents) run as weighted bags of weight rows: the same sums, the FLOPs of the
    non-zeros only.
    """
    g = torch.Generator().manual_seed(seed)
    X = X.float()
    onehot = torch.nn.functional.one_hot(y.long(), n_classes).float()
    pos = onehot.sum(0)
    pos_weight = (len(y) - pos) / pos.clamp_min(1)
    d = X.shape[1]
    bound = 1 / math.sqrt(d)  # nn.Linear's default initialisation, from our generator
    Wt = torch.nn.Parameter(torch.empty(n_classes, d).uniform_(-bound, bound, generator=g).T.contiguous())
    b = torch.nn.Parameter(torch.empty(n_classes).uniform_(-bound, bound, generator=g))
    nnz = int((X != 0).sum(1).max()) if len(X) else 0
    bags = None
    if 0 < nnz <= d // 8:
        _, idx = X.abs().topk(nnz, dim=1)
        bags = (idx, X.gather(1, idx))
    opt = torch.optim.Adam([Wt, b], lr=lr, weight_decay=weight_decay)
    sched = _exp_decay(opt, lr, end_lr, epochs)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(len(y), generator=g)
            for s in range(0, len(y), batch_size):
                i = order[s:s + batch_size]
                if bags is not None:
                    z = torch.nn.functional.embedding_bag(bags[0][i], Wt, per_sample_weights=bags[1][i], mode="sum")
                else:
                    z = X[i] @ Wt
                loss = loss_fn(z + b, onehot[i])
                if l1 > 0:
                    loss = loss + l1 * Wt.abs().sum(0).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            sched.step()
    return Wt.detach().T.contiguous(), b.detach().clone()


@dataclass
class LetterProbe:
    """The LM's first-letter probe: weights, biases and test F1 per letter (which letters can be evaluated)."""

    weight: Tensor
    bias: Tensor
    f1: np.ndarray
    used: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))


def letter_probe(x_train: Tensor, y_train: np.ndarray, x_test: Tensor, y_test: np.ndarray, min_f1: float = 0.6,
                 n_classes: int = 26, seed: int = 0, **kw: Any) -> LetterProbe:
    """Train the letter probe on the LM activations; letters with test F1 > `min_f1` are evaluated (SAEBench 0.6)."""
    w, b = train_multi_probe(x_train.float(), torch.as_tensor(y_train), n_classes, seed=seed, **kw)
    scores = (x_test.float() @ w.T + b).numpy()
    f1 = np.array([f1_score(y_test == c, scores[:, c] > 0) for c in range(n_classes)])
    return LetterProbe(w, b, f1, f1 > min_f1)


@dataclass
class KSparseLetters:
    """Per letter and k: the latents of the k-sparse probe and its test F1; the feature split per letter."""

    feats: dict[int, dict[int, np.ndarray]]
    f1: np.ndarray
    """[n_classes, max_k] test F1 of the k-sparse probe (score > 0)."""
    split: dict[int, np.ndarray]


def k_sparse_letter_probes(codes_train: Tensor, y_train: np.ndarray, codes_test: Tensor, y_test: np.ndarray,
                           max_k: int = 10, n_classes: int = 26, l1: float = 0.01, jump: float = 0.03,
                           seed: int = 0, **kw: Any) -> KSparseLetters:
    """SAEBench's k-sparse letter probes on SAE latents and the feature splits (`add_feature_splits_to_metrics_df`).

    An L1 probe on all latents ranks them per letter (largest positive weight first); for k = 1..max_k a balanced
    logistic regression on the top-k latents; a letter's split is the top-k latents at the last k whose F1 rose by
    more than `jump` over the previous best.
    """
    W, _ = train_multi_probe(codes_train.float(), torch.as_tensor(y_train), n_classes, l1=l1, weight_decay=1e-6,
                             seed=seed, **kw)
    ks = list(range(1, max_k + 1))
    feats: dict[int, dict[int, np.ndarray]] = {c: {} for c in range(n_classes)}
    f1 = np.zeros((n_classes, max_k))
    ytr, yte = np.asarray(y_train), np.asarray(y_test)
    for k in ks:
        top = W.topk(k, dim=1).indices  # [n_classes, k]
        Xtr = codes_train.float()[:, top].permute(1, 0, 2)  # [n_classes, n, k]
        Ytr = torch.as_tensor(np.stack([(ytr == c) for c in range(n_classes)]), dtype=torch.float64)
        w, b = fit_logistic(Xtr, Ytr, C=1.0, balanced=True)
        Xte = codes_test.float()[:, top].permute(1, 0, 2)
        s = logistic_predict(Xte, w, b).numpy()
        for c in range(n_classes):
            feats[c][k] = top[c].numpy()
            f1[c, k - 1] = f1_score(yte == c, s[c] > 0)
    split = {}
    for c in range(n_classes):
        prev, chosen = -100.0, np.zeros(0, np.int64)
        for k in ks:
            if f1[c, k - 1] > prev + jump:
                prev, chosen = f1[c, k - 1], feats[c][k]
            else:
                break
        split[c] = chosen
    return KSparseLetters(feats, f1, split)


@dataclass(frozen=True)
class AbsorptionThresholds:
    """SAEBench 0.6's constants (evals/absorption/feature_absorption.py)."""

    full_cos: float = 0.025
    fraction_cos: float = 0.1
    projection_share: float = 0.4
    max_absorbers: int = 3
    eps: float = 1e-8


def absorption_scores(x: Tensor, codes: Tensor, W_dec: Tensor, probe_w: Tensor, main: np.ndarray,
                      th: AbsorptionThresholds = AbsorptionThresholds()) -> tuple[np.ndarray, np.ndarray]:
    """(absorption fraction, full absorption) per word, for one letter (`FeatureAbsorptionCalculator`).

    x [n, d]: LM activations of the words (probe true positives of the letter); codes [n, F]: their latents;
    main: the letter's split latents. Projections are latent activation × cos(decoder row, probe direction).
    """
    u = probe_w.float() / probe_w.float().norm()
    cos = torch.nn.functional.cosine_similarity(u[None, :], W_dec.float(), dim=-1)  # [F]
    act_proj = (x.float() @ u).double()  # [n]
    proj = (codes.float() * cos[None, :]).double()  # [n, F]
    main_t = torch.as_tensor(main, dtype=torch.long)
    main_proj = proj[:, main_t].sum(1)
    cand = torch.ones(proj.shape[1], dtype=torch.bool)
    cand[main_t] = False
    cand &= cos >= th.fraction_cos
    pot = torch.where(cand[None, :] & (proj > 0), proj, torch.zeros_like(proj))
    top_abs = pot.topk(min(th.max_absorbers, pot.shape[1]), dim=1).values.clamp_min(0).sum(1)
    share = top_abs / act_proj
    fraction = torch.zeros_like(act_proj)
    zero = (main_proj >= act_proj) | (share < th.projection_share)
    one = ~zero & (main_proj <= 0)
    mid = ~zero & ~one
    absorbed = torch.minimum(top_abs, act_proj - main_proj)
    fraction = torch.where(one, torch.ones_like(fraction), fraction)
    fraction = torch.where(mid, (absorbed / (absorbed + main_proj)).clamp(0, 1), fraction)
    # full absorption: the split latents silent, the top-projecting latent aligned and carrying the projection
    main_silent = (codes.float()[:, main_t] < th.eps).all(1) if len(main) else torch.ones(len(x), dtype=torch.bool)
    top_val, top_idx = proj.max(1)
    full = main_silent & (cos[top_idx] >= th.full_cos) & (act_proj >= 0) & (top_val / act_proj >= th.projection_share)
    return fraction.numpy(), full.numpy()


@dataclass
class AbsorptionResult:
    """Per letter: mean absorption fraction and full-absorption rate over the probe's true positives; and the
    per-word contributions (sums = the two means over the evaluated letters)."""

    per_letter: list[dict[str, Any]]
    fraction_contrib: np.ndarray
    full_contrib: np.ndarray
    group: np.ndarray
    words: np.ndarray
    """Index (into the test words) of each contribution."""

    @property
    def mean_fraction(self) -> float:
        """Mean absorption fraction over evaluated letters."""
        return float(self.fraction_contrib.sum())

    @property
    def full_rate(self) -> float:
        """Mean full-absorption rate over evaluated letters."""
        return float(self.full_contrib.sum())


def true_positive_words(probe: LetterProbe, x_test: Tensor, y_test: np.ndarray) -> dict[int, np.ndarray]:
    """Per evaluated letter: test words of that letter that the LM probe calls positive (SAEBench's candidates)."""
    scores = (x_test.float() @ probe.weight.T + probe.bias).numpy()
    return {c: np.flatnonzero((np.asarray(y_test) == c) & (scores[:, c] > 0))
            for c in np.flatnonzero(probe.used)}


def absorption(x_test: Tensor, codes_test: Tensor, W_dec: Tensor, probe: LetterProbe, y_test: np.ndarray,
               split: dict[int, np.ndarray], th: AbsorptionThresholds = AbsorptionThresholds()) -> AbsorptionResult:
    """Mean absorption fraction and full-absorption rate over the letters the LM probe can read (F1 > min)."""
    tps = true_positive_words(probe, x_test, y_test)
    tps = {c: i for c, i in tps.items() if len(i)}
    rows, fc, uc, gc, wc = [], [], [], [], []
    for g, (c, idx) in enumerate(sorted(tps.items())):
        frac, full = absorption_scores(x_test[idx], codes_test[idx], W_dec, probe.weight[c], split[c], th)
        rows.append({"letter": "abcdefghijklmnopqrstuvwxyz"[c], "probe_f1": float(probe.f1[c]),
                     "true_positives": len(idx), "split_latents": len(split[c]),
                     "absorption_fraction": float(frac.mean()), "full_absorption_rate": float(full.mean())})
        fc.append(frac / (len(idx) * len(tps)))
        uc.append(full.astype(float) / (len(idx) * len(tps)))
        gc.append(np.full(len(idx), g))
        wc.append(idx)
    cat = (lambda v: np.concatenate(v) if v else np.zeros(0))  # noqa: E731
    return AbsorptionResult(rows, cat(fc), cat(uc), cat(gc).astype(np.int64), cat(wc).astype(np.int64))


# ---------------------------------------------------------------------------------------------------------------
# TPP and SCR on mean-pooled activations (zero-ablating latents keeps the SAE error: x − Σ_j f_j d_j)


@dataclass
class LinearProbe:
    """A probe on the LM's mean-pooled activations and the balanced sets it was fitted and tested on."""

    name: str
    w: Tensor
    b: Tensor
    unit: ProbeUnit


def fit_probe(X: Tensor, unit: ProbeUnit, C: float = 1.0) -> LinearProbe:
    """L2 logistic probe (C) on the unit's training examples of X [n, d]."""
    w, b = fit_logistic(X[unit.train_idx].float(), torch.as_tensor(unit.train_y), C)
    return LinearProbe(f"{unit.task}:{unit.cls}", w, b, unit)


def _correct(probe: LinearProbe, X: Tensor) -> np.ndarray:
    pred = (logistic_predict(X[probe.unit.test_idx].float(), probe.w, probe.b) > 0).numpy()
    return pred == probe.unit.test_y.astype(bool)


def latent_effects(codes_mean: Tensor, W_dec: Tensor, probe: LinearProbe, unit: ProbeUnit, scr: bool) -> Tensor:
    """SAEBench's node effects: (mean latent activation on positives − on negatives) × probe·decoder, over the
    unit's training set; TPP keeps positive differences only, SCR takes the absolute effect."""
    c = codes_mean[unit.train_idx].float()
    y = torch.as_tensor(unit.train_y.astype(bool))
    diff = c[y].mean(0) - c[~y].mean(0)
    if not scr:
        diff = diff.clamp_min(0)
    eff = diff * (W_dec.float() @ probe.w.float())
    return eff.abs() if scr else eff


def top_n_latents(effects: Tensor, n: int) -> Tensor:
    """The n latents with the largest effect among those with a non-zero effect (fewer when fewer are non-zero)."""
    nz = int((effects != 0).sum())
    k = min(n, nz)
    return effects.topk(k).indices if k > 0 else torch.zeros(0, dtype=torch.long)


def ablate(x_mean: Tensor, codes_mean: Tensor, W_dec: Tensor, latents: Tensor) -> Tensor:
    """Mean-pooled activations with `latents` zero-ablated: x̄ − Σ_j f̄_j d_j (mean pooling is linear)."""
    if len(latents) == 0:
        return x_mean
    return x_mean - codes_mean[:, latents].float() @ W_dec[latents].float()


def tpp(x_mean: Tensor, codes_mean: Tensor, W_dec: Tensor, probes: list[LinearProbe], ns: Sequence[int],
        ablate_codes: Tensor | None = None) -> dict[int, dict[str, Any]]:
    """Targeted probe perturbation per N: mean over classes of (intended accuracy drop − mean unintended drop).

    Returns per N: value, intended, unintended, and per-example contributions over the probes' test sets (the
    clean accuracies cancel in the mean over classes, so the contributions are those of the ablated accuracies).
    `ablate_codes` (default `codes_mean`) are the means removed by the ablation (the cross-check passes sae-bench's,
    which also count the latents of its zeroed BOS positions).
    """
    ablate_codes = codes_mean if ablate_codes is None else ablate_codes
    m = len(probes)
    if m < 2:
        raise ValueError(f"TPP needs at least 2 classes, got {m}")
    clean = [_correct(p, x_mean) for p in probes]
    effects = [latent_effects(codes_mean, W_dec, p, p.unit, scr=False) for p in probes]
    out = {}
    for n in ns:
        abl = [[_correct(pj, ablate(x_mean, ablate_codes, W_dec, top_n_latents(effects[c], n))) for pj in probes]
               for c in range(m)]
        intended = np.mean([clean[c].mean() - abl[c][c].mean() for c in range(m)])
        unintended = np.mean([np.mean([clean[j].mean() - abl[c][j].mean() for j in range(m) if j != c])
                              for c in range(m)])
        contrib = []
        for j in range(m):
            v = np.zeros(len(clean[j]))
            for c in range(m):
                wcj = -1.0 if c == j else 1.0 / (m - 1)
                v += wcj * abl[c][j] / (m * len(clean[j]))
            contrib.append(v)
        out[int(n)] = {"value": float(intended - unintended), "intended": float(intended),
                       "unintended": float(unintended), "contrib": np.concatenate(contrib),
                       "group": np.concatenate([np.full(len(clean[j]), j) for j in range(m)])}
    return out


@dataclass
class SCRSets:
    """One SCR case: attribute A (e.g. novel X vs Y), attribute B (e.g. dialogue vs narration), and the biased set
    where they coincide (X ∧ dialogue vs Y ∧ narration)."""

    name: str
    a: ProbeUnit
    b: ProbeUnit
    biased: ProbeUnit


def scr_sets(name: str, attr_a: np.ndarray, attr_b: np.ndarray, test: np.ndarray, seed: int = 0) -> SCRSets | None:
    """Balanced SCR sets from two binary attributes (−1 = left out), SAEBench's `get_spurious_corr_data`: per split,
    m = min(|A∧B|/2, |¬A∧¬B|/2, |A∧¬B|, |¬A∧B|); A set = (A∧B + A∧¬B) vs (¬A∧B + ¬A∧¬B), B set = (A∧B + ¬A∧B) vs
    (A∧¬B + ¬A∧¬B), biased = A∧B vs ¬A∧¬B, m examples per quadrant (2m per side). None when a quadrant is empty."""
    rng = np.random.default_rng([seed, sum(map(ord, name))])
    sets: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {"a": {}, "b": {}, "biased": {}}
    for split, mask in (("train", ~test), ("test", test)):
        q = {(i, j): rng.permutation(np.flatnonzero(mask & (attr_a == i) & (attr_b == j))) for i in (0, 1)
             for j in (0, 1)}
        m = min(len(q[1, 1]) // 2, len(q[0, 0]) // 2, len(q[1, 0]), len(q[0, 1]))
        if m < 1:
            return None

        def pair(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            idx = np.concatenate([pos, neg])
            y = np.concatenate([np.ones(len(pos), np.int64), np.zeros(len(neg), np.int64)])
            o = rng.permutation(len(idx))
            return idx[o], y[o]

        sets["a"][split] = pair(np.r_[q[1, 1][:m], q[1, 0][:m]], np.r_[q[0, 1][:m], q[0, 0][:m]])
        sets["b"][split] = pair(np.r_[q[1, 1][:m], q[0, 1][:m]], np.r_[q[1, 0][:m], q[0, 0][:m]])
        sets["biased"][split] = pair(q[1, 1][:2 * m], q[0, 0][:2 * m])
    units = {k: ProbeUnit(name, k, *v["train"], *v["test"]) for k, v in sets.items()}
    return SCRSets(name, units["a"], units["b"], units["biased"])


@dataclass
class SCRProbes:
    """LM probes of one SCR case and the accuracies that do not depend on the SAE."""

    sets: SCRSets
    a: LinearProbe
    b: LinearProbe
    biased: LinearProbe
    direction: int
    """1: ablate B's latents, read the biased probe on A's data; 2: the reverse (the attribute it learned less)."""
    orig: float
    clean: float


def scr_probes(x_mean: Tensor, sets: SCRSets, C: float = 1.0) -> SCRProbes:
    """Fit the three probes and choose SAEBench's direction: recover the attribute the biased probe reads worse."""
    pa, pb, pz = fit_probe(x_mean, sets.a, C), fit_probe(x_mean, sets.b, C), fit_probe(x_mean, sets.biased, C)

    def acc_on(probe: LinearProbe, unit: ProbeUnit) -> float:
        pred = (logistic_predict(x_mean[unit.test_idx].float(), probe.w, probe.b) > 0).numpy()
        return float((pred == unit.test_y.astype(bool)).mean())

    on_a, on_b = acc_on(pz, sets.a), acc_on(pz, sets.b)
    if on_a < on_b:
        return SCRProbes(sets, pa, pb, pz, 1, on_a, acc_on(pa, sets.a))
    return SCRProbes(sets, pa, pb, pz, 2, on_b, acc_on(pb, sets.b))


def scr(x_mean: Tensor, codes_mean: Tensor, W_dec: Tensor, probes: SCRProbes, ns: Sequence[int],
        min_gap: float = 0.001) -> dict[int, dict[str, Any]]:
    """SCR per N: (accuracy of the biased probe on the target attribute after ablating the spurious attribute's N
    latents − before) / (accuracy of the target attribute's own probe − before); 0 when that gap is < min_gap.

    Contributions are per target test example (the LM-only denominator held fixed)."""
    spurious = probes.b if probes.direction == 1 else probes.a
    target = probes.sets.a if probes.direction == 1 else probes.sets.b
    effects = latent_effects(codes_mean, W_dec, spurious, spurious.unit, scr=True)
    gap = probes.clean - probes.orig
    y = target.test_y.astype(bool)
    before = (logistic_predict(x_mean[target.test_idx].float(), probes.biased.w, probes.biased.b) > 0).numpy() == y
    out = {}
    for n in ns:
        xa = ablate(x_mean, codes_mean, W_dec, top_n_latents(effects, n))
        after = (logistic_predict(xa[target.test_idx].float(), probes.biased.w, probes.biased.b) > 0).numpy() == y
        contrib = (after.astype(float) - before) / (len(y) * gap) if gap >= min_gap else np.zeros(len(y))
        out[int(n)] = {"value": float(contrib.sum()), "changed": float(after.mean()), "contrib": contrib}
    return out


# ---------------------------------------------------------------------------------------------------------------
# planted dictionaries (validity checks)


def dictionary(W_enc: Tensor, b_enc: Tensor, W_dec: Tensor) -> Any:
    """A Top-k SAE with the given rows and k = its number of latents (every latent always selected, then ReLU)."""
    from ..core.sae import SAEConfig, SparseAutoencoder

    m, d = W_enc.shape
    sae = SparseAutoencoder(SAEConfig(d_in=d, n_latents=m, activation="topk", k=m, normalize_decoder=False))
    with torch.no_grad():
        sae.W_enc.copy_(W_enc.float())
        sae.b_enc.copy_(b_enc.float())
        sae.W_dec.copy_(W_dec.float())
        sae.b_dec.zero_()
    return sae.eval()


def projection_dictionary(directions: Tensor, offsets: Tensor | None = None) -> Any:
    """Latent j = ReLU(d̂_j · x + offset_j), decoder row d̂_j (unit directions [m, d]).

    Offset 0: the probe projection itself (the best case of absorption: the letter latent carries all of the
    probe's direction). An offset larger than any negative projection never clips, so the latent's mean over a
    passage is the probe's projection of the mean-pooled activation (the best case of 1-sparse probing).
    """
    unit = directions.float() / directions.float().norm(dim=1, keepdim=True).clamp_min(1e-12)
    return dictionary(unit, offsets if offsets is not None else torch.zeros(len(unit)), unit)


def logit_dictionary(w: Tensor, b: Tensor) -> Any:
    """Latent j = ReLU(w_j · x + b_j), the positive part of probe j's logit, with decoder row w_j / ‖w_j‖².

    Silent where the concept is absent, and ablating it (x − f_j d_j) moves probe j's logit to at most 0 where it
    fired: one latent per concept, the best case of TPP and SCR (with N = 1 latent ablated).
    """
    w = w.float()
    return dictionary(w, b.float(), w / (w.norm(dim=1, keepdim=True) ** 2).clamp_min(1e-12))


# ---------------------------------------------------------------------------------------------------------------
# statistics: stratified bootstrap over examples, clustered over SAE seeds; verdicts


def _strata_index(group: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """[n_boot, n] resampled example indices, each stratum resampled within itself (sizes kept)."""
    group = np.asarray(group)
    idx = np.empty((n_boot, len(group)), np.int64)
    for g in np.unique(group):
        pos = np.flatnonzero(group == g)
        idx[:, pos] = pos[rng.integers(0, len(pos), (n_boot, len(pos)))]
    return idx


def bootstrap_draws(contrib: np.ndarray, group: np.ndarray, n_boot: int = 2000, seed: int = 0,
                    minus: np.ndarray | None = None, paired_seeds: bool = True) -> np.ndarray:
    """Bootstrap draws of mean-over-seeds(Σ contributions) [− the same of `minus`].

    contrib [S, n] (S SAE seeds, n examples shared by all rows); examples resampled within strata, the same
    indices for both sides (paired by example); seeds resampled as clusters when S > 1, jointly (paired by seed,
    rows matched) when `paired_seeds` and both sides have the same rows, else independently.
    """
    rng = np.random.default_rng(seed)
    a = np.atleast_2d(np.asarray(contrib, float))
    b = None if minus is None else np.atleast_2d(np.asarray(minus, float))
    idx = _strata_index(group, n_boot, rng)
    if b is not None and paired_seeds and b.shape == a.shape:
        a, b = a - b, None
    out = cluster_mean_draws(np.take(a, idx, axis=1).sum(-1), rng)  # sums [S, n_boot], seeds as clusters
    if b is not None:
        out = out - cluster_mean_draws(np.take(b, idx, axis=1).sum(-1), rng)
    return out


@dataclass(frozen=True)
class MetricSpec:
    """A metric's name, its pre-stated direction for "more interpretable" and its smallest gain of interest."""

    name: str
    label: str
    direction: int
    min_gain: float


METRICS: dict[str, MetricSpec] = {
    "absorption": MetricSpec("absorption", "mean absorption fraction (first letter)", -1, 0.01),
    "full_absorption": MetricSpec("full_absorption", "full-absorption rate (first letter)", -1, 0.01),
    "sparse_probing": MetricSpec("sparse_probing", "1-sparse probing accuracy", +1, 0.01),
    "tpp": MetricSpec("tpp", "targeted probe perturbation (TPP)", +1, 0.01),
    "scr": MetricSpec("scr", "spurious-correlation removal (SCR)", +1, 0.02),
}
"""Defaults; the summary notebook's parameters can change the smallest gains (stated before any result)."""


def metric_verdict(gain_ci: tuple[float, float], control_ci: tuple[float, float] | None, min_gain: float,
                   usable: bool = True) -> tuple[str, str]:
    """Verdict of one metric from the CI of the oriented gain (α − 0, positive = more interpretable) and the CI of the
    oriented gain over the permuted-γ control at the same α.

    - not usable (failed its validity checks): "not decidable here";
    - gain CI entirely below `min_gain`: "not reproduced" (no gain of the smallest size of interest);
    - gain CI above 0 and control CI above 0: "reproduced";
    - gain CI above 0 but the control CI below `min_gain`: "not reproduced" (the permuted γ gets the gain too);
    - otherwise (or no control): "not decidable here".
    """
    lo, hi = gain_ci
    if not usable:
        return "not decidable here", "the metric failed its validity checks (planted cases or random-SAE floor)"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "not decidable here", "no interval (too few examples or SAEs)"
    if hi < min_gain:
        return "not reproduced", f"the gain's CI lies below the smallest gain of interest ({min_gain:g})"
    if lo > 0:
        if control_ci is None or not all(np.isfinite(control_ci)):
            return "not decidable here", "a gain, but no permuted-γ control to tell it from any reweighting"
        if control_ci[0] > 0:
            return "reproduced", "the gain's CI is above 0 and above the permuted-γ control's"
        if control_ci[1] < min_gain:
            return "not reproduced", "the permuted-γ control gets the same gain (not the paper's mechanism)"
        return "not decidable here", "a gain, but its difference from the permuted-γ control is undecided"
    return "not decidable here", "the gain's CI includes 0 and the smallest gain of interest"
