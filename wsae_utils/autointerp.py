"""Auto-interpretability of SAE latents: latent records, offline (non-LLM) proxies, statistics, planted latents.

Data flow: held-out tokens [n_ctx, ctx] (position 0 = BOS) are cut into non-overlapping windows of
`window` tokens (BOS excluded); an SAE pass gives every latent's sparse activations; N alive latents are
sampled (seeded, the same procedure for every SAE) among those active in at least `min_windows` windows;
each gets disjoint explanation and test windows sampled across activation quantiles, plus non-activating
test windows (delphi's protocol, arXiv 2410.13928). Records hold window ids only, so scoring reruns need no
SAE pass.

The offline proxies here are **not** the paper's LLM metric. They explain a latent by rules over token
features of the explanation windows (token identity; or the token with its preceding context) and score the
explanation with the same detection / fuzzing protocol and balanced accuracy an LLM judge would get.
LLM backends and the MiniLM sentence encoder live in `wsae_utils.llm_client`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.numpy import load_file, save_file

from wsae_utils.results import atomic_write_text

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


def bootstrap_ci(values: Iterable[float], n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (NaNs dropped); (nan, nan) for fewer than 2 values."""
    v = np.asarray(list(values), float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), (n_boot, len(v)))].mean(1)
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def bootstrap_diff_ci(a: Iterable[float], b: Iterable[float], n_boot: int = 2000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float, float]:
    """mean(a) − mean(b) with a percentile CI, a and b resampled independently (different latents)."""
    x, y = np.asarray(list(a), float), np.asarray(list(b), float)
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if len(x) < 2 or len(y) < 2:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    d = x[rng.integers(0, len(x), (n_boot, len(x)))].mean(1) - y[rng.integers(0, len(y), (n_boot, len(y)))].mean(1)
    q = (1 - level) / 2
    return float(x.mean() - y.mean()), float(np.quantile(d, q)), float(np.quantile(d, 1 - q))


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
# offline explainers: rules over token features (token identity, or the token with its preceding context)

FAMILIES = ("tok", "prev", "bigram", "after2", "near")
_SHIFT = 40
_W = 1 << 20  # token ids < 2^20


def feature_keys(tokens: np.ndarray, flat: np.ndarray, families: tuple[str, ...], near: int = 4) -> np.ndarray:
    """int64 feature keys [len(flat), F] of token positions; −1 where a feature is undefined (before BOS).

    tok = the token; prev = the token before; bigram = (previous, this); after2 = the two tokens before;
    near = a token among the `near` tokens before (one column each).
    """
    ctx_len = tokens.shape[1]
    t = tokens.reshape(-1).astype(np.int64)
    pos = flat % ctx_len

    def at(back: int) -> np.ndarray:
        return np.where(pos - back >= 0, t[np.maximum(flat - back, 0)], -1)

    cols = []
    for fam in families:
        code = (FAMILIES.index(fam) + 1) << _SHIFT
        if fam == "tok":
            cols.append(code | at(0))
        elif fam == "prev":
            p = at(1)
            cols.append(np.where(p >= 0, code | p, -1))
        elif fam == "bigram":
            p = at(1)
            cols.append(np.where(p >= 0, code | (p * _W) | at(0), -1))
        elif fam == "after2":
            p1, p2 = at(1), at(2)
            cols.append(np.where(p2 >= 0, code | (p2 * _W) | p1, -1))
        elif fam == "near":
            for b in range(1, near + 1):
                p = at(b)
                cols.append(np.where(p >= 0, code | p, -1))
        else:
            raise ValueError(f"unknown feature family {fam!r} (known: {FAMILIES})")
    return np.stack(cols, 1) if cols else np.zeros((len(flat), 0), np.int64)


def describe_key(key: int, token_str: Callable[[int], str]) -> str:
    """Human-readable form of a feature key."""
    fam = FAMILIES[(key >> _SHIFT) - 1]
    body = key & ((1 << _SHIFT) - 1)
    a, b = divmod(body, _W)
    s = token_str
    return {"tok": lambda: f"{s(b)!r}", "prev": lambda: f"the token after {s(b)!r}",
            "bigram": lambda: f"{s(b)!r} after {s(a)!r}", "after2": lambda: f"the token after {s(a) + s(b)!r}",
            "near": lambda: f"tokens shortly after {s(b)!r}"}[fam]()


@dataclass
class RuleExplanation:
    """A rule explanation: a set of feature keys; a token matches if it has any of them."""

    keys: np.ndarray
    text: str
    families: tuple[str, ...]
    near: int = 4

    def match(self, tokens: np.ndarray, flat: np.ndarray) -> np.ndarray:
        """Whether each token position matches the explanation."""
        if len(self.keys) == 0:
            return np.zeros(len(flat), bool)
        return np.isin(feature_keys(tokens, flat, self.families, self.near), self.keys).any(1)


@dataclass
class ExplainerConfig:
    """Rule explainer settings: which feature families, how many rules, how precise each must be."""

    families: tuple[str, ...] = ("tok",)
    max_rules: int = 8
    min_precision: float = 0.5
    min_support: int = 2
    coverage: float = 0.9
    near: int = 4


def explain_rules(records: Records, i: int, tokens: np.ndarray, cfg: ExplainerConfig,
                  token_str: Callable[[int], str] = str) -> RuleExplanation:
    """Greedy rule cover of the highlighted tokens of record i's explanation windows.

    Highlighted = activation > highlight_frac × the latent's max over its explanation windows. The explainer
    sees the activating explanation windows and as many silent ones (delphi's contrastive explainer), nothing
    else. A feature's precision is highlighted / all its occurrences in those windows; rules are added by
    most newly covered highlighted tokens among features with precision ≥ min_precision, until `coverage` of
    the highlighted tokens is covered or `max_rules` are chosen.
    """
    act_w = [int(w) for w in records.explain[i] if w >= 0]
    non_w = [int(w) for w in records.explain_non[i] if w >= 0]
    if not act_w:
        return RuleExplanation(np.zeros(0, np.int64), "(no examples)", tuple(cfg.families), cfg.near)
    flat = np.concatenate([records.windows.positions(w) for w in act_w + non_w])
    acts = np.concatenate([records.window_acts(i, w) for w in act_w]
                          + [np.zeros(len(records.windows.positions(w)), np.float32) for w in non_w])
    if acts.max() <= 0:
        return RuleExplanation(np.zeros(0, np.int64), "(no examples)", tuple(cfg.families), cfg.near)
    hl = acts > records.meta.get("config", {}).get("highlight_frac", 0.3) * acts.max()
    keys = feature_keys(tokens, flat, tuple(cfg.families), cfg.near)
    uniq, inv = np.unique(keys, return_inverse=True)
    n_u = len(uniq)
    # (position, key) pairs, each counted once (the `near` columns can repeat a key); −1 keys are undefined
    pairs = np.unique(np.repeat(np.arange(len(flat), dtype=np.int64), keys.shape[1]) * n_u + inv.reshape(-1))
    p_idx, k_idx = pairs // n_u, pairs % n_u
    keep = uniq[k_idx] >= 0
    p_idx, k_idx = p_idx[keep], k_idx[keep]
    all_n = np.bincount(k_idx, minlength=n_u)
    pos_n = np.bincount(k_idx[hl[p_idx]], minlength=n_u)
    prec = pos_n / (all_n + 1.0)  # +1: one unseen counter-example, so 2/2 does not beat 40/45
    cand = np.flatnonzero((pos_n >= cfg.min_support) & (prec >= cfg.min_precision))
    row_of = np.cumsum(hl) - 1
    col_of = np.full(n_u, -1)
    col_of[cand] = np.arange(len(cand))
    sel = hl[p_idx] & (col_of[k_idx] >= 0)
    hl_occ = np.zeros((int(hl.sum()), len(cand)), bool)
    hl_occ[row_of[p_idx[sel]], col_of[k_idx[sel]]] = True
    covered = np.zeros(hl.sum(), bool)
    chosen: list[int] = []
    while cand.size and len(chosen) < cfg.max_rules and covered.mean() < cfg.coverage:
        gain = (hl_occ & ~covered[:, None]).sum(0)
        best = int(np.lexsort((-prec[cand], -gain))[0])
        if gain[best] == 0:
            break
        chosen.append(int(cand[best]))
        covered |= hl_occ[:, best]
    chosen_keys = uniq[chosen]
    text = "; ".join(describe_key(int(k), token_str) for k in chosen_keys) or "(no rule)"
    return RuleExplanation(chosen_keys.astype(np.int64), text, tuple(cfg.families), cfg.near)


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


@dataclass
class RuleTestSet:
    """Record i's detection / fuzzing examples with the feature keys of their tokens, built once and scored
    against any rule explanation (the real one and the shuffled control)."""

    det_labels: np.ndarray  # [n_windows] activating?
    starts: np.ndarray  # [n_windows] offsets of each window in the concatenated tokens
    keys: np.ndarray  # [n_tokens, F] feature keys
    fz_labels: np.ndarray  # [n_windows] real highlights?
    fz_hl: np.ndarray  # [n_tokens] highlighted in the fuzzing version of the window

    @classmethod
    def build(cls, records: Records, i: int, tokens: np.ndarray, families: tuple[str, ...], near: int = 4,
              seed: int = 0, items: list[FuzzItem] | None = None) -> RuleTestSet:
        """Keys of the test windows (activating first, then silent: the order of both test sets)."""
        wins, labels = detection_items(records, i)
        items = fuzz_items(records, i, seed) if items is None else items
        assert [it.win for it in items] == wins.tolist()
        pos = [records.windows.positions(w) for w in wins]
        flat = np.concatenate(pos) if pos else np.zeros(0, np.int64)
        starts = np.concatenate([[0], np.cumsum([len(p) for p in pos])[:-1]]).astype(np.int64) if pos else flat
        hl = np.concatenate([it.highlight for it in items]) if items else np.zeros(0, bool)
        return cls(labels, starts, feature_keys(tokens, flat, families, near),
                   np.asarray([it.label for it in items], bool), hl)

    def scores(self, expl: RuleExplanation) -> tuple[float, float]:
        """(detection, fuzzing) balanced accuracy of a rule explanation.

        Detection: the window contains a matching token. Fuzzing: at least half its highlighted tokens match.
        """
        if len(self.starts) == 0:
            return float("nan"), float("nan")
        m = np.isin(self.keys, expl.keys).any(1) if len(expl.keys) else np.zeros(len(self.keys), bool)
        det = np.logical_or.reduceat(m, self.starts)
        n_hl = np.add.reduceat(self.fz_hl.astype(np.int64), self.starts)
        n_match = np.add.reduceat((m & self.fz_hl).astype(np.int64), self.starts)
        fuzz = n_match >= 0.5 * np.maximum(n_hl, 1)
        return balanced_accuracy(self.det_labels, det), balanced_accuracy(self.fz_labels, fuzz)


def rule_detection(expl: RuleExplanation, records: Records, i: int, tokens: np.ndarray) -> float:
    """Balanced accuracy of 'the window contains a token matching the explanation'."""
    return RuleTestSet.build(records, i, tokens, expl.families, expl.near).scores(expl)[0]


def rule_fuzzing(expl: RuleExplanation, records: Records, i: int, tokens: np.ndarray, seed: int = 0) -> float:
    """Balanced accuracy of 'most highlighted tokens match the explanation' on the fuzzing set."""
    return RuleTestSet.build(records, i, tokens, expl.families, expl.near, seed).scores(expl)[1]


# ---------------------------------------------------------------------------------------------------------
# embedding scorers (MiniLM vectors of windows and explanations, computed by wsae_utils.llm_client)


def embedding_auc(expl_vec: np.ndarray, win_vecs: dict[int, np.ndarray], records: Records, i: int) -> float:
    """delphi's embedding scorer: AUC of cos(explanation, window) separating activating from silent windows."""
    wins, labels = detection_items(records, i)
    return auc([float(win_vecs[w] @ expl_vec) for w in wins], labels)


def intruder_accuracy(win_vecs: dict[int, np.ndarray], records: Records, i: int, n_trials: int = 20,
                      group: int = 4, seed: int = 0) -> float:
    """Explanation-free: among `group` activating windows and one silent window, is the silent one the window
    least similar to the rest? Fraction of trials right (chance = 1 / (group + 1))."""
    rng = np.random.default_rng(seed * 1_000_003 + i)
    act = [int(w) for w in records.test_act[i] if w >= 0]
    non = [int(w) for w in records.test_non[i] if w >= 0]
    if len(act) < group or not non:
        return float("nan")
    hits = 0
    for _ in range(n_trials):
        ws = [*rng.choice(act, size=group, replace=False), int(rng.choice(non))]
        v = np.stack([win_vecs[w] for w in ws])
        sim = v @ v.T
        np.fill_diagonal(sim, np.nan)
        hits += int(np.nanargmin(np.nanmean(sim, 1)) == group)
    return hits / n_trials


def coherence_gap(win_vecs: dict[int, np.ndarray], records: Records, i: int) -> float:
    """Explanation-free: mean cos among activating windows minus mean cos activating vs silent (chance 0)."""
    act_w = [int(w) for w in records.test_act[i] if w >= 0]
    non_w = [int(w) for w in records.test_non[i] if w >= 0]
    if len(act_w) < 2 or not non_w:
        return float("nan")
    act = np.stack([win_vecs[w] for w in act_w]).astype(np.float64)
    non = np.stack([win_vecs[w] for w in non_w]).astype(np.float64)
    # sums instead of Gram matrices: the same means in O(n·d) (tiny BLAS calls are slow on a loaded machine)
    sa, n = act.sum(0), len(act)
    within = (sa @ sa - (act * act).sum()) / (n * (n - 1))
    return float(within - sa @ non.sum(0) / (n * len(non)))


def type_vectors(tokens: np.ndarray, token_str: Callable[[int], str],
                 encode_text: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    """Unit MiniLM vectors of every token type in `tokens` (its text, stripped), [max id + 1, dim]; zeros elsewhere."""
    types = np.unique(tokens)
    vecs = encode_text([token_str(int(t)).strip() or token_str(int(t)) for t in types])
    out = np.zeros((int(types.max()) + 1, vecs.shape[1]), np.float32)
    out[types] = vecs
    return out


def word_intrusion(records: Records, i: int, tokens: np.ndarray, type_vecs: np.ndarray, n_top: int = 50,
                   n_types: int = 10, group: int = 4, n_trials: int = 30, seed: int = 0) -> float:
    """Explanation-free word intrusion (Chang et al. 2009, "Reading tea leaves") on a latent's top activations.

    The latent's `n_top` strongest activations give its token types (ranked by summed activation, the first
    `n_types` kept). Each trial shows `group` of them plus one intruder: a type the latent fires on at most half
    as often as on its own types, matched in corpus frequency to a random group member (so frequency cannot give
    it away); the guess is the type least similar (MiniLM) to the others. Accuracy; chance = 1 / (group + 1);
    NaN when the latent has fewer than `group` types (a single-token latent) or no intruder exists.
    """
    flat_tok = tokens.reshape(-1)
    f, v = records.acts.row(i)
    if len(f) == 0:
        return float("nan")
    top = np.argsort(-v, kind="stable")[:n_top]
    mass = np.bincount(flat_tok[f[top]], weights=v[top], minlength=len(type_vecs))
    types = np.argsort(-mass, kind="stable")[: min(n_types, int((mass > 0).sum()))]
    if len(types) < group:
        return float("nan")
    freq = np.bincount(flat_tok, minlength=len(type_vecs)).astype(float)
    rate = np.bincount(flat_tok[f], minlength=len(type_vecs)) / np.maximum(freq, 1)
    pool = np.flatnonzero((freq > 0) & (rate <= 0.5 * np.median(rate[types])))
    pool = np.setdiff1d(pool, types)
    if len(pool) == 0:
        return float("nan")
    logf = np.log(freq[pool])
    rng = np.random.default_rng(seed * 1_000_003 + i)
    hits = 0
    for _ in range(n_trials):
        g = list(rng.choice(types, size=group, replace=False))
        near = np.argsort(np.abs(logf - np.log(freq[rng.choice(g)])), kind="stable")[:5]
        vv = type_vecs[[*g, int(pool[rng.choice(near)])]]
        sim = vv @ vv.T
        np.fill_diagonal(sim, np.nan)
        hits += int(np.nanargmin(np.nanmean(sim, 1)) == group)
    return hits / n_trials


# ---------------------------------------------------------------------------------------------------------
# planted latents with known meaning (validity checks of every scorer)

PLANTED = ("digit", "comma", "after_mr", "in_quotes", "random")
# Expected [lo, hi] score of a planted latent under each explanation-based proxy, from what each rule family
# can express (a first look on Persuasion agreed; ranges are wide on purpose). Token classes are exact for
# token rules. "The word after Mr" needs the preceding token (context rules); token rules catch it partly
# through the names that follow Mr. "Inside quotes" is detectable from the quote characters in the window,
# but its highlighted tokens are ordinary words, which token rules cannot tell apart (context rules can when
# quotes are short). Random firing is at chance for every proxy (checked against its CI in the tests).
PLANTED_EXPECTED: dict[str, dict[str, tuple[float, float]]] = {
    "digit": {"lexical-detection": (0.9, 1.0), "lexical-fuzzing": (0.9, 1.0), "context-detection": (0.85, 1.0),
              "context-fuzzing": (0.85, 1.0)},
    "comma": {"lexical-detection": (0.9, 1.0), "lexical-fuzzing": (0.9, 1.0), "context-detection": (0.9, 1.0),
              "context-fuzzing": (0.9, 1.0)},
    "after_mr": {"lexical-detection": (0.6, 1.0), "lexical-fuzzing": (0.6, 1.0), "context-detection": (0.85, 1.0),
                 "context-fuzzing": (0.85, 1.0)},
    "in_quotes": {"lexical-detection": (0.4, 0.8), "lexical-fuzzing": (0.4, 0.7), "context-detection": (0.6, 1.0),
                  "context-fuzzing": (0.45, 1.0)},
    "random": {**{p: (0.4, 0.6) for p in ("lexical-detection", "lexical-fuzzing", "context-detection",
                                          "context-fuzzing")}, "word-intruder": (0.0, 0.4)},
}
PLANTED_EXPECTED["digit"]["word-intruder"] = (0.8, 1.0)  # ten digit types, close in MiniLM space


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


# ---------------------------------------------------------------------------------------------------------
# the offline proxies side by side, and their summary rows

# name: (what it is, chance level)
OFFLINE_PROXIES: dict[str, tuple[str, float]] = {
    "lexical-detection": ("token-identity rules; does the window contain one (balanced accuracy)", 0.5),
    "lexical-fuzzing": ("token-identity rules; are the highlighted tokens matched (balanced accuracy)", 0.5),
    "context-detection": ("rules over the token and its preceding context; detection (balanced accuracy)", 0.5),
    "context-fuzzing": ("rules over the token and its preceding context; fuzzing (balanced accuracy)", 0.5),
    "embedding": ("MiniLM cos(explanation text, window), AUC activating vs silent (delphi's embedding scorer)", 0.5),
    "intruder": ("MiniLM, no explanation: spot the silent window among 4 activating ones (accuracy)", 0.2),
    "coherence": ("MiniLM, no explanation: mean cos within activating windows minus activating-vs-silent", 0.0),
    "word-intruder": ("MiniLM token vectors, no explanation: spot the intruding token type among 4 of the latent's "
                      "top-activation types (accuracy, Chang et al. 2009)", 0.2),
}
EXPLANATION_FREE = ("intruder", "coherence", "word-intruder")


def score_offline(records: Records, tokens: np.ndarray, token_str: Callable[[int], str],
                  win_vecs: np.ndarray | None = None, encode_text: Callable[[list[str]], np.ndarray] | None = None,
                  lexical: ExplainerConfig | None = None, context: ExplainerConfig | None = None,
                  seed: int = 0, type_vecs: np.ndarray | None = None) -> tuple[list[dict], list[dict]]:
    """Every offline proxy for every record, with the shuffled-explanation control.

    Returns (score rows {row, latent, proxy, score, shuffled}, explanation rows {row, latent, lexical, context}).
    `win_vecs` [n_windows, dim] (unit-norm MiniLM vectors of the window texts) and `encode_text` enable the
    embedding-based proxies, `type_vecs` (see `type_vectors`) the word-intrusion proxy. The shuffled control
    scores record i with record perm[i]'s explanation (perm a seeded derangement); explanation-free proxies have
    no shuffled score.
    """
    lexical = lexical or ExplainerConfig(families=("tok",))
    context = context or ExplainerConfig(families=FAMILIES)
    m = len(records)
    perm = derangement(m, np.random.default_rng(seed))
    lex = [explain_rules(records, i, tokens, lexical, token_str) for i in range(m)]
    ctx = [explain_rules(records, i, tokens, context, token_str) for i in range(m)]
    vecs = encode_text([e.text for e in ctx]) if (encode_text is not None and win_vecs is not None and m) else None
    rows, expl = [], []
    for i in range(m):
        lat = int(records.acts.latents[i])
        j = int(perm[i])
        expl.append({"row": i, "latent": lat, "lexical": lex[i].text, "context": ctx[i].text})
        items = fuzz_items(records, i, seed)
        for name, ex, cfg in (("lexical", lex, lexical), ("context", ctx, context)):
            test = RuleTestSet.build(records, i, tokens, tuple(cfg.families), cfg.near, seed, items)
            (d, f), (ds, fs) = test.scores(ex[i]), test.scores(ex[j])
            rows.append({"row": i, "latent": lat, "proxy": f"{name}-detection", "score": d, "shuffled": ds})
            rows.append({"row": i, "latent": lat, "proxy": f"{name}-fuzzing", "score": f, "shuffled": fs})
        if vecs is not None and win_vecs is not None:
            wv = {int(w): win_vecs[int(w)] for w in detection_items(records, i)[0]}
            base = {"row": i, "latent": lat}
            rows.append({**base, "proxy": "embedding", "score": embedding_auc(vecs[i], wv, records, i),
                         "shuffled": embedding_auc(vecs[j], wv, records, i)})
            rows.append({**base, "proxy": "intruder", "score": intruder_accuracy(wv, records, i, seed=seed),
                         "shuffled": float("nan")})
            rows.append({**base, "proxy": "coherence", "score": coherence_gap(wv, records, i),
                         "shuffled": float("nan")})
        if type_vecs is not None:
            rows.append({"row": i, "latent": lat, "proxy": "word-intruder",
                         "score": word_intrusion(records, i, tokens, type_vecs, seed=seed), "shuffled": float("nan")})
    return rows, expl


def summarize(scores: list[dict] | None, floor: list[dict] | None = None, n_boot: int = 2000,
              seed: int = 0) -> list[dict]:
    """Per proxy: n_latents, mean with a 95 % bootstrap CI over latents, shuffled mean, and, given the random-SAE
    scores `floor`, the random-SAE mean and the margin over it with a 95 % bootstrap CI (latents resampled
    independently in both SAEs)."""
    df = pd.DataFrame(scores or [], columns=["row", "latent", "proxy", "score", "shuffled"])
    fl = pd.DataFrame(floor or [], columns=["row", "latent", "proxy", "score", "shuffled"])
    out = []
    for proxy, g in df.groupby("proxy", sort=False):
        v = g.score.to_numpy(float)
        lo, hi = bootstrap_ci(v, n_boot, seed)
        f = fl[fl.proxy == proxy].score.to_numpy(float)
        margin, m_lo, m_hi = bootstrap_diff_ci(v, f, n_boot, seed) if len(f) else (float("nan"),) * 3
        out.append({"proxy": proxy, "n_latents": int(np.isfinite(v).sum()), "mean": float(np.nanmean(v)),
                    "ci_lo": lo, "ci_hi": hi, "shuffled_mean": float(np.nanmean(g.shuffled)) if g.shuffled.notna().any()
                    else float("nan"), "random_sae_mean": float(np.nanmean(f)) if len(f) else float("nan"),
                    "margin": margin, "margin_lo": m_lo, "margin_hi": m_hi,
                    "chance": OFFLINE_PROXIES.get(str(proxy), ("", 0.5))[1]})
    return out


def random_sae_like(sae: torch.nn.Module, center: torch.Tensor, seed: int = 0) -> torch.nn.Module:
    """A random-weight SAE of the same shape and k (the training initialisation), centred at `center` (the
    held-out mean), so its latents are random directions of the centred stream: the floor of every proxy."""
    from wsae_utils.sae import SparseAutoencoder

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
# choosing the proxy and building Table 1 (layers × α)


def choose_proxy(rows: pd.DataFrame, planted_ok: dict[str, bool]) -> tuple[str | None, pd.DataFrame]:
    """The offline proxy for the Table-1 verdict, by measurement.

    Candidates: offline proxies on a bounded scale that pass the planted-latent checks. Each needs, for every
    layer, the plain SAE (α = 0, main) above the random-weight SAE with a margin CI excluding 0. Among those, the
    largest mean normalised margin (margin / (1 − chance): the fraction of the way from chance to perfect) wins.
    Returns (proxy or None, the candidates table).
    """
    base = rows[(rows.alpha == 0) & rows["main"].astype(bool) & rows.scorer.isin(list(OFFLINE_PROXIES))]
    out = []
    for proxy, g in base.groupby("scorer"):
        chance = OFFLINE_PROXIES[str(proxy)][1]
        bounded = str(proxy) != "coherence"
        norm = g.margin / (1 - chance) if bounded else g.margin * np.nan
        out.append({"proxy": proxy, "planted_ok": bool(planted_ok.get(str(proxy), False)),
                    "layers": len(g), "min_margin_lo": float(g.margin_lo.min()), "mean_margin": float(g.margin.mean()),
                    "mean_norm_margin": float(norm.mean()), "bounded": bounded,
                    "all_layers_clear": bool((g.margin_lo > 0).all())})
    cand = pd.DataFrame(out, columns=["proxy", "planted_ok", "layers", "min_margin_lo", "mean_margin",
                                      "mean_norm_margin", "bounded", "all_layers_clear"])
    ok = cand[cand.planted_ok & cand.bounded & cand.all_layers_clear]
    cand = cand.sort_values("mean_norm_margin", ascending=False, na_position="last").reset_index(drop=True)
    if ok.empty:
        return None, cand
    return str(ok.sort_values("mean_norm_margin", ascending=False).proxy.iloc[0]), cand


def table1(scores: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 1 from per-latent scores (columns layer, alpha, score) of one scorer.

    Returns (pivot: layers × α of mean scores plus a 'mean' row over layers; gains: per layer and for the mean
    over layers, mean(α) − mean(α = 0) with a 95 % bootstrap CI, latents resampled within each SAE).
    """
    s = scores.dropna(subset=["score"])
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
