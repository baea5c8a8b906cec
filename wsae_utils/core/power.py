"""What a verdict could decide: which settings were decidable, the minimum detectable effect (MDE) at the run's
sample size, and the verdict a rule may give when the paper's effect is smaller than that.

Pure functions on numbers; the verdict rules in `toy_checks` and `vision` and the notebooks call them, and every
claim row carries their text in its `decidable` field (the summary's "decidable / detectable" column).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from wsae_utils.core.stats import sd_from_interval

NOT_DECIDABLE = "not decidable here"
DEFAULT_POWER = 0.8


def minimum_detectable_effect(sd: float, n: int, level: float = 0.95, power: float = DEFAULT_POWER) -> float:
    """Smallest true mean of `n` paired differences (spread `sd`) whose two-sided `level` t-interval lies above 0
    with probability `power`: (t_{1−a/2, n−1} + t_{power, n−1}) · sd / √n; NaN for n < 2 or a non-finite sd."""
    from scipy.stats import t

    if n < 2 or not np.isfinite(sd):
        return float("nan")
    return float((t.ppf(0.5 + level / 2, n - 1) + t.ppf(power, n - 1)) * sd / math.sqrt(n))


def mde_of_sample(d: np.ndarray | list[float], level: float = 0.95, power: float = DEFAULT_POWER) -> float:
    """The MDE of a rule that tests the mean of these paired differences (their sample sd, their count)."""
    v = np.asarray([x for x in d if np.isfinite(x)], dtype=float)
    return minimum_detectable_effect(float(v.std(ddof=1)) if len(v) > 1 else float("nan"), len(v), level, power)


def mde_from_interval(lo: float, hi: float, n: int, level: float = 0.95, power: float = DEFAULT_POWER) -> float:
    """The MDE implied by a reported t-interval [lo, hi] of a mean over `n` units (sd recovered from its width)."""
    return minimum_detectable_effect(sd_from_interval(lo, hi, n, level), n, level, power)


def joint_mde(samples: list[np.ndarray | list[float]], level: float = 0.95, power: float = DEFAULT_POWER) -> float:
    """MDE of a rule that needs *every* interval above 0: each one at power `power`^(1/k), so that (independent or
    positively correlated intervals) all pass together with probability ≥ `power`; the largest of them."""
    each = power ** (1 / max(1, len(samples)))
    vals = [mde_of_sample(s, level, each) for s in samples]
    return float("nan") if not vals or any(not np.isfinite(v) for v in vals) else max(vals)


def replicates_needed(sd: float, effect: float, level: float = 0.95, power: float = DEFAULT_POWER,
                      max_n: int = 1000) -> int | None:
    """Fewest units n whose MDE (spread `sd`) is at most `effect`; None when not within `max_n`."""
    if not (np.isfinite(sd) and effect > 0):
        return None
    return next((n for n in range(2, max_n + 1) if minimum_detectable_effect(sd, n, level, power) <= effect), None)


def power_gated_verdict(verdict: str, mde: float, paper_effect: float | None, ci_high: float,
                        unit: str = "") -> tuple[str, str]:
    """The verdict a rule may give, given what its design can detect; returns (verdict, one sentence why).

    Effects are oriented so that positive is the paper's direction and `ci_high` is the upper end of the interval of
    the measured effect. With the paper's effect quantified and at least the MDE, the rule's verdict stands. When
    the MDE is larger (or unknown), the design could miss the paper's effect: the verdict is "not reproduced" only if
    the interval excludes the paper's effect (ci_high < paper_effect) and the rule failed, else "not decidable here"
    (an under-powered pass is not counted either: a significant effect from such a design is likely inflated). With
    no quantified paper effect the verdict stands and the MDE is reported for scale.
    """
    fmt = f"{{:+.3g}}{unit}"
    m = "unknown" if not np.isfinite(mde) else fmt.format(mde)
    if paper_effect is None or not np.isfinite(paper_effect):
        return verdict, f"MDE {m} (paper's effect not quantified)"
    p = fmt.format(paper_effect)
    if np.isfinite(mde) and mde <= paper_effect:
        return verdict, f"MDE {m} ≤ paper's {p}: detectable"
    if verdict == NOT_DECIDABLE:
        return verdict, f"MDE {m} > paper's {p}"
    if verdict != "reproduced" and np.isfinite(ci_high) and ci_high < paper_effect:
        return "not reproduced", (f"MDE {m} > paper's {p}, but the interval (upper end {fmt.format(ci_high)}) "
                                  "excludes the paper's effect: not reproduced")
    return NOT_DECIDABLE, (f"MDE {m} > paper's {p} and the interval does not exclude the paper's effect: not "
                           "decidable at this sample size")


def decidable_summary(reasons: Mapping[str, str | None], noun: str = "settings") -> str:
    """One line: which settings were decided on, and the others grouped by why not (`reasons[s]` None = decidable)."""
    used = [s for s, r in reasons.items() if r is None]
    why: dict[str, list[str]] = {}
    for s, r in reasons.items():
        if r is not None:
            why.setdefault(r, []).append(s)
    head = f"decided on {len(used)} of {len(reasons)} {noun}" + (f" ({', '.join(used)})" if used else "")
    rest = "; ".join(f"{len(v)} not decidable ({r}): {', '.join(v)}" for r, v in why.items())
    return head + (f"; {rest}" if rest else "")


def verdict_over_settings(verdicts: Mapping[str, str], passing: str = "reproduced") -> str:
    """A rule's verdict from its settings, decided on the decidable ones only: any decidable setting failing fails it,
    all decidable ones passing pass it, and no decidable setting leaves it "not decidable here"."""
    decided = [v for v in verdicts.values() if v != NOT_DECIDABLE]
    if not decided:
        return NOT_DECIDABLE
    return "reproduced" if all(v == passing for v in decided) else "not reproduced"
