"""Verdict rules that decide a paper claim, branch by branch (each is a library function the notebooks call)."""

import math

import pytest

from wsae_utils.lm.fidelity import ce_recovered_call, fidelity_verdict, seeded_ce_call
from wsae_utils.toy.checks import MIN_SEEDS, necessity_verdict
from wsae_utils.vision.saes import ncl_verdict


@pytest.mark.parametrize("lo,hi,call", [(-0.01, 0.02, "comparable"), (-0.09, -0.06, "not comparable"),
                                        (-0.07, -0.01, "undecided"), (-0.05, 0.0, "undecided")])
def test_ce_recovered_call(lo, hi, call):
    assert ce_recovered_call(lo, hi, tolerance=0.05) == call


@pytest.mark.parametrize("calls,verdict", [
    ([], "not decidable here"),
    (["comparable", "comparable"], "reproduced"),
    (["comparable", "not comparable"], "not reproduced"),
    (["comparable", "undecided"], "not decidable here"),
])
def test_fidelity_verdict(calls, verdict):
    assert fidelity_verdict(calls) == verdict


@pytest.mark.parametrize("lo,hi,n_seeds,call", [
    (-0.01, 0.02, 3, "comparable"), (-0.09, -0.06, 3, "not comparable"), (-0.07, -0.01, 3, "undecided"),
    (-0.01, 0.02, 5, "comparable"),
    (-0.01, 0.02, 2, "not decidable here"),  # too few seeds, whatever the CI says
    (-0.09, -0.06, 1, "not decidable here"),
])
def test_seeded_ce_call(lo, hi, n_seeds, call):
    got, why = seeded_ce_call(lo, hi, 0.05, n_seeds, min_seeds=3)
    assert got == call
    if n_seeds < 3:
        assert "does not cover SAE seeds" in why and f"{n_seeds} SAE seed" in why
    else:
        assert f"{n_seeds} SAE seeds" in why


@pytest.mark.parametrize("calls,verdict", [
    (["not decidable here", "not decidable here"], "not decidable here"),  # every cell has too few seeds
    (["comparable", "not decidable here"], "not decidable here"),
    (["not comparable", "not decidable here"], "not reproduced"),  # a decided failing row still fails the claim
])
def test_fidelity_verdict_with_too_few_seeds(calls, verdict):
    assert fidelity_verdict(calls) == verdict


def _e(mean, lo, hi):
    return {"mean": mean, "ci_low": lo, "ci_high": hi, "n": 8}


@pytest.mark.parametrize("effects,n,verdict", [
    ([_e(0.1, 0.05, 0.15), _e(0.2, 0.1, 0.3)], 8, "reproduced"),
    ([_e(0.1, 0.05, 0.15), _e(0.02, -0.01, 0.05)], 8, "not reproduced"),
    ([_e(0.1, math.nan, math.nan), _e(0.2, math.nan, math.nan)], 1, "reproduced"),
    ([_e(0.1, math.nan, math.nan), _e(-0.2, math.nan, math.nan)], 1, "not reproduced"),
    ([_e(0.1, math.nan, math.nan), _e(0.0, math.nan, math.nan)], 1, "not decidable here"),
])
def test_ncl_verdict(effects, n, verdict):
    assert ncl_verdict(effects, n) == verdict


def test_necessity_verdict():
    assert necessity_verdict(0.02, MIN_SEEDS) == "necessary"
    assert necessity_verdict(-0.01, MIN_SEEDS) == "not shown necessary"
    assert necessity_verdict(0.5, MIN_SEEDS - 1) == "not decidable here"
