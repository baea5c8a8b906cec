"""Auto-interpretability data: windows, sparse latent activations, latent records, planted latents, statistics.

Data flow: held-out tokens [n_ctx, ctx] (position 0 = BOS) are cut into non-overlapping windows of
`window` tokens (BOS excluded); an SAE pass gives every latent's sparse activations; N alive latents are
sampled (seeded, the same procedure for every SAE) among those active in at least `min_windows` windows;
each gets disjoint explanation and test windows sampled across activation quantiles, plus non-activating
test windows (delphi's protocol, arXiv 2410.13928). Records hold window ids only, so scoring reruns need no
SAE pass. The offline (non-LLM) proxies that score records are in `wsae_utils.autointerp.proxies`; the LLM
backends and the MiniLM sentence encoder in `wsae_utils.autointerp.llm_client`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.numpy import load_file, save_file

from wsae_utils.core.stats import cluster_diff_draws
from wsae_utils.paths import atomic_write_text

# ---------------------------------------------------------------------------------------------------------
# statistics


def balanced_accuracy(y_true: Iterable[bool], y_pred: Iterable[bool]) -> float:
    """(TPR + TNR) / 2; NaN when either class is absent from y_true."""
    t, p = np.asarray(list(y_true), bool), np.asarray(list(y_pred), bool)
    if t.shape != p.shape:
        raise ValueError(f"y_true {t.shape} and y_pred {p.shape} differ in shape")
    if t.all() or not t.any():
        return float("nan")
    return float(0.5 * (p[t].mean() + (~p[~t]).mean()))


def auc(scores: Iterable[float], labels: Iterable[bool]) -> float:
    """ROC AUC (Mann-Whitney U with ties counted half); NaN when a class is absent."""
    s, y = np.asarray(list(scores), float), np.asarray(list(labels), bool)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation without fixed points (the shuffled-explanation control); identity for n < 2."""
    if n < 2:
        return np.arange(n)
    while True:
        p = rng.permutation(n)
        if not (p == np.arange(n)).any():
            return p


# ---------------------------------------------------------------------------------------------------------
# windows and sparse activations


@dataclass(frozen=True)
class Windows:
    """Non-overlapping windows over held-out contexts (BOS at position 0 excluded)."""

    n_ctx: int
    ctx_len: int
    window: int

    @property
    def per_ctx(self) -> int:
        """Windows per context (the last one may be shorter)."""
        return -(-(self.ctx_len - 1) // self.window)

    @property
    def n(self) -> int:
        """Number of windows."""
        return self.n_ctx * self.per_ctx

    def of_flat(self, flat: np.ndarray) -> np.ndarray:
        """Window id of flat token indices (ctx * ctx_len + pos); −1 for BOS positions."""
        flat = np.asarray(flat, np.int64)
        ctx, pos = flat // self.ctx_len, flat % self.ctx_len
        return np.where(pos > 0, ctx * self.per_ctx + (pos - 1) // self.window, -1)

    def positions(self, win: int) -> np.ndarray:
        """Flat token indices of one window."""
        ctx, j = divmod(int(win), self.per_ctx)
        start = 1 + j * self.window
        stop = min(start + self.window, self.ctx_len)
        return ctx * self.ctx_len + np.arange(start, stop)


@dataclass
class SparseActs:
    """Activations of some latents over the flat held-out tokens, CSR by latent (values > 0 only)."""

    latents: np.ndarray  # [m] latent ids
    indptr: np.ndarray  # [m + 1]
    flat: np.ndarray  # [nnz] flat token index (ctx * ctx_len + pos)
    vals: np.ndarray  # [nnz] float32

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(flat indices, values) of the i-th stored latent."""
        a, b = self.indptr[i], self.indptr[i + 1]
        return self.flat[a:b], self.vals[a:b]

    def subset(self, rows: np.ndarray) -> SparseActs:
        """The stored latents at positions `rows`, as a new CSR."""
        parts = [self.row(int(r)) for r in rows]
        lens = np.array([len(f) for f, _ in parts], np.int64)
        return SparseActs(self.latents[rows].copy(), np.concatenate([[0], np.cumsum(lens)]),
                          np.concatenate([f for f, _ in parts]) if parts else np.zeros(0, np.int64),
                          np.concatenate([v for _, v in parts]) if parts else np.zeros(0, np.float32))

    @classmethod
    def from_dense_rows(cls, latents: list[int], dense: np.ndarray) -> SparseActs:
        """From dense [m, n_tokens] activation rows (planted latents, tests)."""
        flats, vals, ptr = [], [], [0]
        for r in dense:
            nz = np.flatnonzero(r > 0)
            flats.append(nz)
            vals.append(r[nz].astype(np.float32))
            ptr.append(ptr[-1] + len(nz))
        return cls(np.asarray(latents, np.int64), np.asarray(ptr, np.int64), np.concatenate(flats).astype(np.int64),
                   np.concatenate(vals).astype(np.float32))


@torch.no_grad()
def encode_topk(sae: torch.nn.Module, batches: Iterable[tuple[int, torch.Tensor]], n_ctx: int, ctx_len: int,
                device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Top-k (indices, values) of every held-out token: int32 / float32 [n_ctx * ctx_len, k]; BOS rows zeroed."""
    k = int(sae.cfg.k)
    idx = np.zeros((n_ctx * ctx_len, k), np.int32)
    val = np.zeros((n_ctx * ctx_len, k), np.float32)
    for c0, x in batches:
        n = x.shape[0]
        pre = sae.pre_activations(x.reshape(-1, x.shape[-1]).to(device).float())
        v, i = pre.topk(k, dim=-1)
        rows = slice(c0 * ctx_len, (c0 + n) * ctx_len)
        idx[rows], val[rows] = i.int().cpu().numpy(), v.relu().cpu().numpy()
    val[::ctx_len] = 0.0  # BOS is an attention sink with huge norm in most LMs: never a record
    return idx, val


def topk_to_sparse(idx: np.ndarray, val: np.ndarray, n_latents: int) -> SparseActs:
    """CSR by latent of all latents from per-token top-k (indices, values)."""
    flat = np.repeat(np.arange(idx.shape[0], dtype=np.int64), idx.shape[1])
    lat, v = idx.reshape(-1).astype(np.int64), val.reshape(-1)
    keep = v > 0
    flat, lat, v = flat[keep], lat[keep], v[keep]
    order = np.lexsort((flat, lat))
    counts = np.bincount(lat, minlength=n_latents)
    return SparseActs(np.arange(n_latents, dtype=np.int64), np.concatenate([[0], np.cumsum(counts)]),
                      flat[order], v[order].astype(np.float32))


def window_counts(acts: SparseActs, windows: Windows) -> np.ndarray:
    """Number of distinct windows in which each stored latent fires."""
    row = np.repeat(np.arange(len(acts.latents)), np.diff(acts.indptr))
    w = windows.of_flat(acts.flat)
    key = np.sort(row[w >= 0] * windows.n + w[w >= 0])  # rows are sorted by token already: a cheap sort
    first = np.r_[True, key[1:] != key[:-1]] if len(key) else np.zeros(0, bool)
    return np.bincount(key[first] // windows.n, minlength=len(acts.latents))


# ---------------------------------------------------------------------------------------------------------
# latent records


@dataclass
class RecordConfig:
    """Example sampling (delphi's defaults: 40 explanation examples over 10 quantiles, 50 + 50 test)."""

    n_latents: int = 100
    min_windows: int = 60
    n_explain: int = 40
    n_test_act: int = 50
    n_test_non: int = 50
    n_explain_non: int = 40
    n_quantiles: int = 10
    highlight_frac: float = 0.3
    seed: int = 0


@dataclass
class Records:
    """Sampled latents with their explanation / test window ids (−1 = padding) and sparse activations."""

    windows: Windows
    acts: SparseActs  # rows aligned with the records
    explain: np.ndarray  # [m, n_explain]
    test_act: np.ndarray  # [m, n_test_act]
    test_non: np.ndarray  # [m, n_test_non]
    explain_non: np.ndarray  # [m, n_explain_non] silent windows shown to a contrastive explainer
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.acts.latents)

    def window_acts(self, i: int, win: int) -> np.ndarray:
        """Activation of record i's latent on each token of window `win`."""
        pos = self.windows.positions(win)
        f, v = self.acts.row(i)
        out = np.zeros(len(pos), np.float32)
        if len(f):
            j = np.minimum(np.searchsorted(f, pos), len(f) - 1)
            hit = f[j] == pos
            out[hit] = v[j[hit]]
        return out

    def save(self, path: str | Path) -> None:
        """Write records.safetensors + records.json (atomic enough: json last, readers check it)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"latents": self.acts.latents, "indptr": self.acts.indptr, "flat": self.acts.flat,
                   "vals": self.acts.vals, "explain": self.explain, "test_act": self.test_act,
                   "test_non": self.test_non, "explain_non": self.explain_non}, str(path.with_suffix(".safetensors")))
        atomic_write_text(path.with_suffix(".json"), json.dumps({"windows": asdict(self.windows), **self.meta},
                                                                indent=1))

    @classmethod
    def load(cls, path: str | Path) -> Records:
        """Read records written by `save`."""
        path = Path(path)
        t = load_file(str(path.with_suffix(".safetensors")))
        meta = json.loads(path.with_suffix(".json").read_text())
        return cls(Windows(**meta.pop("windows")), SparseActs(t["latents"], t["indptr"], t["flat"], t["vals"]),
                   t["explain"], t["test_act"], t["test_non"], t["explain_non"], meta)


def fingerprint(*parts: object) -> str:
    """sha256 of the given parts: file contents for existing paths, JSON (or str) for anything else."""
    import hashlib

    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path) and part.is_file():
            h.update(part.read_bytes())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()


def load_records_if(path: str | Path, fp: str) -> Records | None:
    """Records saved at `path` when their stored fingerprint is `fp`, else None (they must be rebuilt)."""
    path = Path(path)
    if not (path.with_suffix(".json").exists() and path.with_suffix(".safetensors").exists()):
        return None
    rec = Records.load(path)
    return rec if rec.meta.get("fingerprint") == fp else None


def _pad(rows: list[np.ndarray], width: int) -> np.ndarray:
    out = np.full((len(rows), width), -1, np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r[:width]
    return out


def sample_latents(counts: np.ndarray, cfg: RecordConfig) -> np.ndarray:
    """Seeded sample of up to cfg.n_latents latent positions among those in ≥ cfg.min_windows windows (sorted)."""
    eligible = np.flatnonzero(counts >= cfg.min_windows)
    rng = np.random.default_rng(cfg.seed)
    return np.sort(rng.choice(eligible, size=min(cfg.n_latents, len(eligible)), replace=False))


def build_records(acts: SparseActs, windows: Windows, cfg: RecordConfig, rows: np.ndarray | None = None) -> Records:
    """Records for the stored latents at `rows` (default: a seeded sample of the eligible ones)."""
    counts = window_counts(acts, windows)
    if rows is None:
        rows = sample_latents(counts, cfg)
    sub = acts.subset(np.asarray(rows, np.int64))
    rng = np.random.default_rng(cfg.seed + 1)
    ex, ta, tn, en = [], [], [], []
    for i in range(len(sub.latents)):
        f, v = sub.row(i)
        w = windows.of_flat(f)
        ok = w >= 0
        wmax = np.zeros(windows.n, np.float32)
        np.maximum.at(wmax, w[ok], v[ok])
        active = np.flatnonzero(wmax > 0)
        active = active[np.argsort(wmax[active], kind="stable")]
        # Quantile strata by max activation; each stratum split between explanation and test, disjoint.
        n_ex, n_te = cfg.n_explain, cfg.n_test_act
        share = n_ex / max(n_ex + n_te, 1)
        e_i, t_i = [], []
        for stratum in np.array_split(active, cfg.n_quantiles):
            s = rng.permutation(stratum)
            want_e, want_t = n_ex // cfg.n_quantiles, n_te // cfg.n_quantiles
            if len(s) < want_e + want_t:  # thin stratum: split it in the same proportion
                want_e = int(round(len(s) * share))
                want_t = len(s) - want_e
            e_i.append(s[:want_e])
            t_i.append(s[want_e: want_e + want_t])
        ex.append(np.concatenate(e_i))
        ta.append(np.concatenate(t_i))
        silent = rng.permutation(np.flatnonzero(wmax == 0))
        tn.append(silent[: cfg.n_test_non])
        en.append(silent[cfg.n_test_non: cfg.n_test_non + cfg.n_explain_non])
    meta = {"config": asdict(cfg), "window_counts": counts[np.asarray(rows, np.int64)].tolist(),
            "n_eligible": int((counts >= cfg.min_windows).sum()), "n_stored": int(len(acts.latents))}
    return Records(windows, sub, _pad(ex, cfg.n_explain), _pad(ta, cfg.n_test_act), _pad(tn, cfg.n_test_non),
                   _pad(en, cfg.n_explain_non), meta)


# ---------------------------------------------------------------------------------------------------------
# detection and fuzzing test sets, scored by a rule explanation


@dataclass
class FuzzItem:
    """One fuzzing example: a window with some highlighted tokens; label = highlights are the real ones."""

    win: int
    highlight: np.ndarray  # bool [len(window)]
    label: bool


def fuzz_items(records: Records, i: int, seed: int = 0) -> list[FuzzItem]:
    """Activating test windows with their real highlights (label 1); non-activating ones with as many random
    highlights as a random activating example has (label 0) — delphi's default fuzzing."""
    rng = np.random.default_rng(seed * 1_000_003 + i)
    thr = records.meta.get("config", {}).get("highlight_frac", 0.3)
    items, counts = [], []
    for w in records.test_act[i]:
        if w < 0:
            continue
        a = records.window_acts(i, w)
        hl = a > thr * a.max() if a.max() > 0 else np.zeros(len(a), bool)
        items.append(FuzzItem(int(w), hl, True))
        counts.append(max(int(hl.sum()), 1))
    for w in records.test_non[i]:
        if w < 0:
            continue
        n = len(records.windows.positions(w))
        c = min(int(rng.choice(counts)) if counts else 1, n)
        hl = np.zeros(n, bool)
        hl[rng.choice(n, size=c, replace=False)] = True
        items.append(FuzzItem(int(w), hl, False))
    return items


def detection_items(records: Records, i: int) -> tuple[np.ndarray, np.ndarray]:
    """(window ids, labels) of record i's detection test set."""
    a = [int(w) for w in records.test_act[i] if w >= 0]
    n = [int(w) for w in records.test_non[i] if w >= 0]
    return np.asarray(a + n, np.int64), np.asarray([True] * len(a) + [False] * len(n))


# ---------------------------------------------------------------------------------------------------------
# planted latents with known meaning (validity checks of every scorer)

PLANTED = ("digit", "comma", "after_mr", "in_quotes", "random")


def planted_latents(tokens: np.ndarray, token_str: Callable[[int], str], seed: int = 0,
                    random_density: float = 0.02) -> tuple[list[str], np.ndarray]:
    """Dense [len(PLANTED), n_tokens] activations of latents with known meaning on these tokens.

    digit: tokens containing a digit; comma: the ',' token; after_mr: the word after "Mr." / "Mr";
    in_quotes: tokens strictly inside a pair of double quotes (straight or curly) of one context;
    random: a random `random_density` of tokens. Values are uniform in [0.5, 1.5] so quantiles exist.
    """
    rng = np.random.default_rng(seed)
    n_ctx, ctx_len = tokens.shape
    strs = {int(t): token_str(int(t)) for t in np.unique(tokens)}
    s = np.vectorize(lambda t: strs[int(t)], otypes=[object])(tokens)
    flat_s = s.reshape(-1)
    out = np.zeros((len(PLANTED), tokens.size), np.float32)
    out[0] = [any(c.isdigit() for c in x) for x in flat_s]
    out[1] = [x.strip() == "," for x in flat_s]
    for c in range(n_ctx):
        row = [x.strip() for x in s[c]]
        inside = False
        for p in range(1, ctx_len):
            x = row[p]
            after_mr = row[p - 1] in ("Mr", "Mr.") or (p >= 2 and row[p - 1] == "." and row[p - 2] == "Mr")
            if after_mr and x.isalpha():
                out[2, c * ctx_len + p] = 1
            n_q = sum(x.count(q) for q in '"“”')
            if n_q == 0 and inside:
                out[3, c * ctx_len + p] = 1
            if n_q % 2 == 1:
                inside = not inside
    out[4] = rng.random(tokens.size) < random_density
    out[:, ::ctx_len] = 0
    out *= rng.uniform(0.5, 1.5, out.shape).astype(np.float32)
    return list(PLANTED), out


def random_sae_like(sae: torch.nn.Module, center: torch.Tensor, seed: int = 0) -> torch.nn.Module:
    """A random-weight SAE of the same shape and k (the training initialisation), centred at `center` (the
    held-out mean), so its latents are random directions of the centred stream: the floor of every proxy."""
    from wsae_utils.core.sae import SparseAutoencoder

    rand = SparseAutoencoder(sae.cfg, seed=seed)
    with torch.no_grad():
        rand.b_dec.copy_(center.to(rand.b_dec))
    return rand.eval()


def token_decoder(tokenizer: object) -> Callable[[int], str]:
    """token id → its text (memoised `tokenizer.decode([id])`)."""
    from functools import cache

    @cache
    def decode(i: int) -> str:
        return str(tokenizer.decode([int(i)]))  # type: ignore[attr-defined]

    return decode


def window_texts(tokens: np.ndarray, windows: Windows, token_str: Callable[[int], str]) -> list[str]:
    """The text of every window (token strings joined), in window-id order."""
    flat = tokens.reshape(-1)
    return ["".join(token_str(int(t)) for t in flat[windows.positions(w)]) for w in range(windows.n)]


# ---------------------------------------------------------------------------------------------------------
# Table 1 (layers × α)


def table1(scores: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 1 from per-latent scores (columns layer, alpha, score, optionally seed) of one scorer.

    Returns (pivot: layers × α of mean scores plus a 'mean' row over layers; gains: per layer and for the mean
    over layers, mean(α) − mean(α = 0) with a 95 % bootstrap CI, latents resampled within each SAE). With several
    SAE seeds in a cell (a `seed` column), see `_table1_seeds`.
    """
    s = scores.dropna(subset=["score"])
    if "seed" in s and len(s) and s.groupby(["layer", "alpha"]).seed.nunique().max() > 1:
        return _table1_seeds(s, n_boot, seed)
    piv = s.groupby(["layer", "alpha"]).score.mean().unstack("alpha")
    piv.loc["mean"] = piv.mean(0)
    rng = np.random.default_rng(seed)
    layers = sorted(s.layer.unique())
    alphas = sorted(a for a in s.alpha.unique() if a != 0)
    gains = []
    for a in alphas:
        boots = []
        for layer in layers:
            x = s[(s.layer == layer) & (s.alpha == a)].score.to_numpy(float)
            y = s[(s.layer == layer) & (s.alpha == 0)].score.to_numpy(float)
            if len(x) < 2 or len(y) < 2:
                continue
            b = (x[rng.integers(0, len(x), (n_boot, len(x)))].mean(1)
                 - y[rng.integers(0, len(y), (n_boot, len(y)))].mean(1))
            boots.append(b)
            gains.append({"layer": layer, "alpha": a, "gain": float(x.mean() - y.mean()),
                          "ci_lo": float(np.quantile(b, 0.025)), "ci_hi": float(np.quantile(b, 0.975))})
        if boots:
            m = np.mean(boots, 0)
            point = float(np.mean([g["gain"] for g in gains if g["alpha"] == a]))
            gains.append({"layer": "mean", "alpha": a, "gain": point, "ci_lo": float(np.quantile(m, 0.025)),
                          "ci_hi": float(np.quantile(m, 0.975))})
    return piv, pd.DataFrame(gains, columns=["layer", "alpha", "gain", "ci_lo", "ci_hi"])


def _table1_seeds(s: pd.DataFrame, n_boot: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`table1` over several SAE seeds: a cell is the mean over its seeds of each seed's mean score; a gain's CI
    resamples latents within each SAE and, in each resample, the seeds as clusters, paired by seed (α and α = 0 of
    one seed share init and batches) when both cells hold the same seeds, else independently. Seeds with fewer
    than 2 scored latents are left out; gains carry n_seeds (of the thinner side) and paired_by_seed."""
    per_seed = s.groupby(["layer", "alpha", "seed"]).score.mean()
    piv = per_seed.groupby(["layer", "alpha"]).mean().unstack("alpha")
    piv.loc["mean"] = piv.mean(0)
    rng = np.random.default_rng(seed)
    layers = sorted(s.layer.unique())
    alphas = sorted(a for a in s.alpha.unique() if a != 0)

    def draws(layer: object, a: float) -> tuple[dict[int, np.ndarray], dict[int, float]]:
        out, means = {}, {}
        for sd, g in s[(s.layer == layer) & (s.alpha == a)].groupby("seed"):
            x = g.score.to_numpy(float)
            if len(x) >= 2:
                out[int(sd)] = x[rng.integers(0, len(x), (n_boot, len(x)))].mean(1)
                means[int(sd)] = float(x.mean())
        return out, means

    gains = []
    for a in alphas:
        boots = []
        for layer in layers:
            (dx, mx), (dy, my) = draws(layer, a), draws(layer, 0)
            if not dx or not dy:
                continue
            b, paired = cluster_diff_draws(dx, dy, int(rng.integers(2**31)))
            boots.append(b)
            gain = float(np.mean(list(mx.values())) - np.mean(list(my.values())))
            gains.append({"layer": layer, "alpha": a, "gain": gain,
                          "ci_lo": float(np.quantile(b, 0.025)), "ci_hi": float(np.quantile(b, 0.975)),
                          "n_seeds": min(len(dx), len(dy)), "paired_by_seed": paired})
        if boots:
            m = np.mean(boots, 0)
            mine = [g for g in gains if g["alpha"] == a]
            gains.append({"layer": "mean", "alpha": a, "gain": float(np.mean([g["gain"] for g in mine])),
                          "ci_lo": float(np.quantile(m, 0.025)), "ci_hi": float(np.quantile(m, 0.975)),
                          "n_seeds": min(g["n_seeds"] for g in mine),
                          "paired_by_seed": all(g["paired_by_seed"] for g in mine)})
    return piv, pd.DataFrame(gains, columns=["layer", "alpha", "gain", "ci_lo", "ci_hi", "n_seeds", "paired_by_seed"])


def table1_verdict(backend: str, model: str, ci_lo: float, ci_hi: float, paper_gain: float) -> tuple[str, str]:
    """(verdict, why) of the paper's Table-1 claim from one LLM backend's α_max − α=0 gain CI [ci_lo, ci_hi].

    Only an OpenAI-compatible server can hold a capable judge: other backends (the small local model) are a
    plumbing check and never decide. Reproduced when the CI lies above 0; not reproduced when it lies below the
    paper's gain (`paper_gain`, same units as the CI); otherwise (or a NaN CI) not decidable.
    """
    if backend != "openai":
        return "not decidable here", f"{backend} backend ({model}) is a plumbing check, not a capable judge."
    if not (math.isfinite(ci_lo) and math.isfinite(ci_hi)):
        return "not decidable here", "no CI: too few judged latents."
    if ci_lo > 0:
        return "reproduced", "the mean gain's CI is above 0."
    if ci_hi < paper_gain:
        return "not reproduced", f"the CI excludes the paper's +{100 * paper_gain:g} points."
    return "not decidable here", "the CI includes both 0 and the paper's gain: more latents needed."
