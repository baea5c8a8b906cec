"""Minimum detectable effects and the verdicts a rule may give at its sample size (wsae_utils.core.power)."""

import numpy as np
import pandas as pd

from wsae_utils.core import power as P
from wsae_utils.run.results import claim, claims_table, conclusion_markdown


def test_mde_matches_simulated_power():
    # a true mean equal to the MDE is detected (t-interval above 0) in ~80 % of draws, half of it far less often
    from wsae_utils.core.stats import mean_ci

    sd, n = 0.9, 6
    mde = P.minimum_detectable_effect(sd, n)
    rng = np.random.default_rng(0)

    def rate(mu):
        return np.mean([mean_ci(mu + sd * rng.standard_normal(n))["ci_low"] > 0 for _ in range(4000)])

    assert 0.76 <= rate(mde) <= 0.84
    assert rate(mde / 2) < 0.45
    assert np.isnan(P.minimum_detectable_effect(sd, 1))
    # more units, smaller MDE; replicates_needed is the first n at or under the effect
    assert P.minimum_detectable_effect(sd, 12) < mde
    n_need = P.replicates_needed(sd, 2.0)
    assert P.minimum_detectable_effect(sd, n_need) <= 2.0 < P.minimum_detectable_effect(sd, n_need - 1)


def test_mde_from_interval_recovers_the_design():
    from wsae_utils.core.stats import mean_ci

    d = np.array([-1.2, -0.4, -2.1, -1.5, -0.3])
    e = mean_ci(d)
    assert np.isclose(P.mde_from_interval(e["ci_low"], e["ci_high"], len(d)), P.mde_of_sample(d))
    # a rule that needs two intervals above 0 needs a larger effect than either alone
    assert P.joint_mde([d, d]) > P.mde_of_sample(d)


def test_power_gated_verdict_outcomes():
    # detectable: the rule's verdict stands, both ways
    assert P.power_gated_verdict("reproduced", 1.5, 2.0, 3.0)[0] == "reproduced"
    assert P.power_gated_verdict("not reproduced", 1.5, 2.0, 0.4)[0] == "not reproduced"
    # under-powered: a failure counts only when the interval excludes the paper's effect
    assert P.power_gated_verdict("not reproduced", 2.4, 2.0, 1.1)[0] == "not reproduced"
    v, why = P.power_gated_verdict("not reproduced", 2.4, 2.0, 2.5)
    assert v == "not decidable here" and "does not exclude" in why
    # ... and an under-powered pass is not counted
    assert P.power_gated_verdict("reproduced", 2.4, 2.0, 4.0)[0] == "not decidable here"
    assert P.power_gated_verdict("reproduced", float("nan"), 2.0, 4.0)[0] == "not decidable here"
    # no quantified paper effect: the verdict stands, the MDE is shown for scale
    v, why = P.power_gated_verdict("not reproduced", 0.05, None, 0.0)
    assert v == "not reproduced" and "not quantified" in why


def test_verdict_over_settings_decides_on_decidable_ones_only():
    nd = "not decidable here"
    assert P.verdict_over_settings({"a": "reproduced", "b": nd}) == "reproduced"
    assert P.verdict_over_settings({"a": "reproduced", "b": "not reproduced", "c": nd}) == "not reproduced"
    assert P.verdict_over_settings({"a": nd, "b": nd}) == nd
    assert P.verdict_over_settings({}) == nd
    text = P.decidable_summary({"x": None, "y": "not converged", "z": "not converged", "w": "guard out of reach"})
    assert text.startswith("decided on 1 of 4 settings (x)")
    assert "2 not decidable (not converged): y, z" in text and "1 not decidable (guard out of reach): w" in text


def test_claims_table_has_decidable_column_and_old_claims_render_empty():
    new = claim("vision-wsae", "t", "n", "reproduced", "w", decidable="decided on 5 of 5 replicates; MDE +1.2 pt")
    old = {k: v for k, v in claim("toy-fig2", "t", "n", "not reproduced").items() if k != "decidable"}
    df = claims_table([new, old])
    assert "decidable" in df.columns
    rows = df.set_index("id")
    assert rows.loc["vision-wsae", "decidable"].startswith("decided on 5")
    assert rows.loc["toy-fig2", "decidable"] == "" and rows.loc["lm-table1", "decidable"] == ""
    assert "Decidable / detectable" in conclusion_markdown([new])
    assert "Decidable" not in conclusion_markdown([old])
    assert isinstance(df, pd.DataFrame)
