"""Confidence intervals, one home for every experiment: Student-t over seeds or replicates, percentile bootstrap
over latents or contexts, and SAE seeds resampled as clusters on top of a bootstrap over examples.

One NaN rule everywhere: non-finite values are dropped before an interval is formed, and every interval reports
`n`, the number of values it used, so a reader sees when some were dropped. Too few values give NaN bounds
(t: fewer than 2; bootstrap: fewer than 2), never an interval of width 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np


def finite(values: Iterable[float]) -> np.ndarray:
    """The finite values of a sample as a float array (the NaN rule of every interval here)."""
    v = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float).ravel()
    return v[np.isfinite(v)]


def t_half_width(sd: float, n: int, level: float = 0.95) -> float:
    """Half-width t_{(1+level)/2, n−1} · sd / √n of a Student-t interval of a mean; NaN for n < 2."""
    from scipy.stats import t

    if n < 2 or not math.isfinite(sd):
        return float("nan")
    return float(t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n))


def sd_from_interval(lo: float, hi: float, n: int, level: float = 0.95) -> float:
    """The sample sd implied by a reported t-interval [lo, hi] of a mean over `n` units (inverse of the width)."""
    from scipy.stats import t

    if n < 2 or not (math.isfinite(lo) and math.isfinite(hi)):
        return float("nan")
    return float((hi - lo) / 2 / t.ppf(0.5 + level / 2, n - 1) * math.sqrt(n))


def t_interval(values: Iterable[float], level: float = 0.95) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of a Student-t confidence interval of the mean (non-finite values dropped)."""
    v = finite(values)
    n = len(v)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    m = float(v.mean())
    if n < 2:
        return m, float("nan"), float("nan"), 1
    half = t_half_width(float(v.std(ddof=1)), n, level)
    return m, m - half, m + half, n


def mean_ci(values: Iterable[float], level: float = 0.95) -> dict[str, float]:
    """`t_interval` as a dict {mean, ci_low, ci_high, n} (for table rows)."""
    m, lo, hi, n = t_interval(values, level)
    return {"mean": m, "ci_low": lo, "ci_high": hi, "n": n}


def percentile_interval(samples: Iterable[float], level: float = 0.95) -> tuple[float, float]:
    """(low, high) percentiles of resampled statistics (non-finite dropped); NaNs when none is left."""
    v = finite(samples)
    if len(v) == 0:
        return float("nan"), float("nan")
    a = (1 - level) / 2
    return float(np.quantile(v, a)), float(np.quantile(v, 1 - a))


def bootstrap_ci(values: Iterable[float], n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (non-finite dropped); (nan, nan) for fewer than 2 values."""
    v = finite(values)
    if len(v) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), (n_boot, len(v)))].mean(1)
    return percentile_interval(means, level)


def bootstrap_diff_ci(a: Iterable[float], b: Iterable[float], n_boot: int = 2000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float, float]:
    """mean(a) − mean(b) with a percentile CI, a and b resampled independently (unpaired: different latents)."""
    x, y = finite(a), finite(b)
    if len(x) < 2 or len(y) < 2:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    d = x[rng.integers(0, len(x), (n_boot, len(x)))].mean(1) - y[rng.integers(0, len(y), (n_boot, len(y)))].mean(1)
    lo, hi = percentile_interval(d, level)
    return float(x.mean() - y.mean()), lo, hi


def cluster_mean_draws(draws: np.ndarray, rng: np.random.Generator | int = 0) -> np.ndarray:
    """[S, B] bootstrap draws per cluster (e.g. per SAE seed, examples resampled) → [B] draws of the cluster mean,
    the S clusters resampled with replacement in every draw (two-level bootstrap); draws[0] as is when S == 1.

    An int `rng` seeds the cluster picks, so every call with the same (S, B, seed) draws the same clusters: pass one
    seed for every cell of a table to resample seeds the same way for all of them (as their contexts are).
    """
    d = np.atleast_2d(np.asarray(draws, float))
    s, n_boot = d.shape
    if s == 1:
        return d[0]
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    pick = gen.integers(0, s, (n_boot, s))
    return d[pick, np.arange(n_boot)[:, None]].mean(1)


def cluster_diff_draws(a: Mapping[int, np.ndarray], b: Mapping[int, np.ndarray],
                       seed: int = 0) -> tuple[np.ndarray, bool]:
    """(draws, paired) of mean-over-clusters(a) − mean-over-clusters(b), each side {cluster id: [B] draws}.

    Paired when both sides hold the same cluster ids (e.g. SAE seeds sharing init and batch order): per-cluster
    differences, clusters resampled jointly. Otherwise unpaired: each side's clusters resampled independently.
    The draws of both sides must come from the same example resamples (row b of every array = resample b).
    """
    ka, kb = sorted(a), sorted(b)
    if ka == kb:
        return cluster_mean_draws(np.stack([a[k] - b[k] for k in ka]), seed), True
    return (cluster_mean_draws(np.stack([a[k] for k in ka]), seed)
            - cluster_mean_draws(np.stack([b[k] for k in kb]), seed + 1)), False
