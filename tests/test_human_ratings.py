"""Human ratings: a ratings file is refused with a clear error when it does not belong to the session; planted
ratings that favour one SAE give a human Table-1 row whose CI excludes 0 in that direction, random ratings a CI
that covers 0; agreement between raters on planted cases."""

import json

import numpy as np
import pytest

from wsae_utils.autointerp import human_ratings as H

SAES = {"paper/alpha0": 0.0, "cap/alpha1": 1.0, "random": None}


def make_key(n_per_sae: int = 40, layers=(2, 5), seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    cards = {}
    for layer in layers:
        for sae, a in SAES.items():
            for lat in rng.choice(1000, n_per_sae, replace=False):
                cards["c" + rng.bytes(4).hex()] = {"layer": layer, "sae": sae, "latent": int(lat), "alpha": a,
                                                   "variant": sae.split("/")[0]}
    return {"schema": "wsae-rating-key/1", "key_id": "0123456789abcdef", "seed": seed, "cards": cards}


def export(path, key, who, answers, **over):
    doc = {"schema": "wsae-ratings/1", "key_id": key["key_id"], "rater": who, "created": "2026-12-02T10:00:00Z",
           "ratings": [{"card": c, "rating": r, "label": ""} for c, r in answers.items()], **over}
    path.write_text(json.dumps(doc))
    return path


def rate(key, p_one: dict, seed: int) -> dict:
    """Ratings where a card of SAE s is 'one meaning' with probability p_one[s], else 'several' or 'none'."""
    rng = np.random.default_rng(seed)
    out = {}
    for cid, t in key["cards"].items():
        out[cid] = "one" if rng.random() < p_one[t["sae"]] else str(rng.choice(["several", "none"]))
    return out


def mean_row(rows, alpha=1.0):
    return rows[(rows.layer.astype(str) == "mean") & (rows.alpha == alpha)].iloc[0]


@pytest.mark.parametrize("favoured, sign", [("cap/alpha1", 1), ("paper/alpha0", -1)])
def test_ratings_that_favour_one_sae_give_a_ci_excluding_zero_that_way(tmp_path, favoured, sign):
    key = make_key()
    p = {"paper/alpha0": 0.45, "cap/alpha1": 0.45, "random": 0.05}
    p[favoured] = 0.9
    files = [export(tmp_path / f"r{i}.json", key, f"rater{i}", rate(key, p, i)) for i in range(2)]
    ratings = H.read_ratings(files, key)
    assert len(ratings) == 2 * len(key["cards"]) and set(ratings.sae) == set(SAES)
    rows, per_sae = H.human_rows(ratings, n_boot=500, seed=0)
    m = mean_row(rows)
    assert sign * m.gain_ci_lo > 0 if sign > 0 else m.gain_ci_hi < 0
    assert bool(rows.validated.iloc[0])  # the plain SAE beats the random one at both layers
    assert set(rows.backend) == {"human"} and {"gain_vs_alpha0", "gain_ci_lo", "gain_ci_hi"} <= set(rows.columns)
    verdict, _ = H.human_verdict(rows, 1.0)
    assert verdict == ("reproduced" if sign > 0 else "not reproduced")
    rand = per_sae[per_sae.sae == "random"]
    assert (rand["mean"] < 0.2).all() and per_sae[per_sae.sae != "random"].margin_lo.gt(0).all()


def test_random_ratings_give_a_ci_covering_zero_and_decide_nothing(tmp_path):
    covered, decided = 0, 0
    for seed in range(12):
        key = make_key(seed=seed)
        f = export(tmp_path / f"r{seed}.json", key, "r", rate(key, dict.fromkeys(SAES, 0.4), 100 + seed))
        rows, _ = H.human_rows(H.read_ratings([f], key), n_boot=500, seed=seed)
        m = mean_row(rows)
        covered += m.gain_ci_lo <= 0 <= m.gain_ci_hi
        decided += H.human_verdict(rows, 1.0)[0] != "not decidable here"
    # A 95 % CI covers the true gain 0 in ~11 of 12 draws; raters who cannot tell trained from random decide nothing.
    assert covered >= 10 and decided <= 1


def test_no_ratings_is_reported_not_a_number(tmp_path):
    key = make_key(4)
    ratings = H.read_ratings([], key)
    rows, per_sae = H.human_rows(ratings)
    assert len(rows) == 1 and rows.scorer.iloc[0] == H.NO_RATINGS and len(per_sae) == 0
    assert rows[["mean", "gain_vs_alpha0", "gain_ci_lo", "gain_ci_hi"]].isna().all().all()
    assert H.human_verdict(rows, 1.0) == ("not decidable here", H.NO_RATINGS)


@pytest.mark.parametrize("change, message", [
    ({"schema": "wsae-ratings/2"}, "schema"),
    ({"extra": 1}, "Additional properties"),
    ({"rater": ""}, "rater"),
    ({"ratings": [{"card": "c00000000", "rating": "maybe"}]}, "ratings/0/rating"),
    ({"ratings": [{"card": "c00000000", "rating": "one", "sae": "cap/alpha1"}]}, "ratings/0"),
    ({"ratings": [{"card": "card-1", "rating": "one"}]}, "ratings/0/card"),
    ({"key_id": "ffffffffffffffff"}, "not this run's rating session"),
    ({"ratings": [{"card": "c00000000", "rating": "one"}]}, "not in the rating key: c00000000"),
])
def test_tampered_or_foreign_files_are_refused_naming_file_and_problem(tmp_path, change, message):
    key = make_key(3)
    f = export(tmp_path / "bad.json", key, "r", {next(iter(key["cards"])): "one"}, **change)
    with pytest.raises(H.RatingsError, match="bad.json") as err:
        H.read_ratings([f], key)
    assert message in str(err.value)


def test_duplicates_and_unreadable_files_are_refused(tmp_path):
    key = make_key(3)
    cid = next(iter(key["cards"]))
    f = export(tmp_path / "dup.json", key, "r", {})
    doc = json.loads(f.read_text())
    doc["ratings"] = [{"card": cid, "rating": "one"}, {"card": cid, "rating": "none"}]
    f.write_text(json.dumps(doc))
    with pytest.raises(H.RatingsError, match="rated twice"):
        H.read_ratings([f], key)
    a = export(tmp_path / "a.json", key, "same", {cid: "one"})
    b = export(tmp_path / "b.json", key, "same", {cid: "none"})
    with pytest.raises(H.RatingsError, match="already rated in"):
        H.read_ratings([a, b], key)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(H.RatingsError, match="broken.json: not a readable JSON"):
        H.read_ratings([tmp_path / "broken.json"], key)


def test_cohen_kappa_on_planted_cases():
    assert H.cohen_kappa(["one", "one", "none", "none"], ["one", "none", "none", "none"]) == pytest.approx(0.5)
    assert H.cohen_kappa(["one", "several", "none"] * 5, ["one", "several", "none"] * 5) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    a, b = rng.choice(["one", "several", "none"], 400), rng.choice(["one", "several", "none"], 400)
    assert abs(H.cohen_kappa(a, b)) < 0.1


def test_agreement_only_for_raters_who_share_cards(tmp_path):
    key = make_key(10, layers=(2,))
    ids = list(key["cards"])
    same = rate(key, dict.fromkeys(SAES, 0.5), 7)
    files = [export(tmp_path / "a.json", key, "a", same), export(tmp_path / "b.json", key, "b", same),
             export(tmp_path / "c.json", key, "c", {i: "one" for i in ids[:1]})]
    agree = H.agreement(H.read_ratings(files, key), min_overlap=2, n_boot=200)
    assert agree[["rater_a", "rater_b"]].values.tolist() == [["a", "b"]]  # c shares one card only
    r = agree.iloc[0]
    assert r.n_common == len(ids) and r.agreement == 1.0 and r.kappa == pytest.approx(1.0)
