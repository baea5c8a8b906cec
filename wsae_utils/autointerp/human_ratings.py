"""Human ratings from the blind rating page: ingest (checked against the session's key), per-card scores, the
`human` backend of Table 1 with bootstrap CIs, and agreement between raters who rated the same cards.

A ratings file is what the page exports: `{"schema": "wsae-ratings/1", "key_id", "rater", "created",
"ratings": [{"card", "rating", "label"}]}` with card ids that only the key (written by the workflow next to the
browser, never shown to a rater) maps to (layer, SAE, latent). A file with another schema, another key, unknown
or repeated card ids is refused with an error that names the file and what is wrong. A card's human score is
the share of its raters who answered "one meaning".
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pandas as pd

from ..core.stats import bootstrap_ci, bootstrap_diff_ci
from .latent_pages import RATING_SCHEMA_ID, RATINGS
from .scoring import table1

RATINGS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["schema", "key_id", "rater", "created", "ratings"],
    "properties": {
        "schema": {"const": RATING_SCHEMA_ID},
        "key_id": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
        "rater": {"type": "string", "minLength": 1, "maxLength": 60},
        "created": {"type": "string", "maxLength": 40},
        "ratings": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["card", "rating"],
                "properties": {
                    "card": {"type": "string", "pattern": "^c[0-9a-f]{8}$"},
                    "rating": {"enum": list(RATINGS)},
                    "label": {"type": "string", "maxLength": 200},
                },
            },
        },
    },
}
NO_RATINGS = "no human ratings yet"
SCORER = "human: share rating 'one meaning'"
COLUMNS = ["file", "rater", "card", "layer", "sae", "alpha", "variant", "latent", "rating", "label", "score"]


class RatingsError(ValueError):
    """A ratings file that cannot be ingested; the message names the file and the problem."""


def load_key(path: str | Path) -> dict[str, Any]:
    """The blind session's key (card id -> layer, SAE, latent), as written by `latent_pages.write_pages`."""
    key = json.loads(Path(path).read_text())
    if key.get("schema") != "wsae-rating-key/1" or "cards" not in key:
        raise RatingsError(f"{path}: not a rating key (schema {key.get('schema')!r})")
    return key


def read_ratings(paths: Iterable[str | Path], key: dict[str, Any]) -> pd.DataFrame:
    """One row per (rater, card) from every ratings file; refuses a bad file naming it and the problem."""
    rows, seen_raters = [], {}
    for path in sorted(Path(p) for p in paths):
        try:
            doc = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise RatingsError(f"{path}: not a readable JSON file ({err})") from None
        errs = sorted(jsonschema.Draft7Validator(RATINGS_SCHEMA).iter_errors(doc), key=lambda e: list(e.path))
        if errs:
            e = errs[0]
            where = "/".join(str(x) for x in e.path) or "(top level)"
            raise RatingsError(f"{path}: does not follow the {RATING_SCHEMA_ID} schema at {where}: {e.message}"
                               + (f" (and {len(errs) - 1} more problems)" if len(errs) > 1 else ""))
        if doc["key_id"] != key["key_id"]:
            raise RatingsError(f"{path}: key_id {doc['key_id']!r} is not this run's rating session "
                               f"({key['key_id']!r}): the cards were rated on another build of rate.html")
        cards = [r["card"] for r in doc["ratings"]]
        unknown = sorted(set(cards) - set(key["cards"]))
        if unknown:
            raise RatingsError(f"{path}: {len(unknown)} card id(s) not in the rating key: {', '.join(unknown[:5])}")
        dup = sorted({c for c in cards if cards.count(c) > 1})
        if dup:
            raise RatingsError(f"{path}: card id(s) rated twice: {', '.join(dup[:5])}")
        if doc["rater"] in seen_raters:
            raise RatingsError(f"{path}: rater {doc['rater']!r} already rated in {seen_raters[doc['rater']]}; keep "
                               "one file per rater (the newest export holds all of that rater's answers)")
        seen_raters[doc["rater"]] = str(path)
        for r in doc["ratings"]:
            truth = key["cards"][r["card"]]
            rows.append({"file": path.name, "rater": doc["rater"], "card": r["card"], "layer": truth["layer"],
                         "sae": truth["sae"], "alpha": truth["alpha"], "variant": truth["variant"],
                         "latent": truth["latent"], "rating": r["rating"], "label": r.get("label", ""),
                         "score": float(r["rating"] == "one")})
    return pd.DataFrame(rows, columns=COLUMNS)


def card_scores(ratings: pd.DataFrame) -> pd.DataFrame:
    """Per card: layer, SAE, α, latent, raters, and the share of its raters who said 'one meaning'."""
    g = ratings.groupby(["card", "layer", "sae", "latent"], as_index=False, dropna=False)
    out = g.agg(score=("score", "mean"), n_raters=("rater", "nunique"))
    alpha = ratings.drop_duplicates("card").set_index("card")["alpha"]
    out["alpha"] = out.card.map(alpha).astype(float)
    return out


def human_rows(ratings: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(Table-1 rows of the `human` backend, per-SAE rows with the random-SAE floor).

    Table-1 rows have the columns of results/tables/autointerp_table1.csv: per layer and α (and a 'mean' row) the
    mean card score, and the gain over α = 0 with a 95 % bootstrap CI over cards (`autointerp.table1`). Without
    ratings of a trained SAE, one row whose scorer reads "no human ratings yet" and whose numbers are empty.
    `validated` is whether, at every rated layer, the plain SAE beats the random-weight SAE with a CI above 0:
    raters who cannot tell a trained SAE from a random one cannot rank α either. Per-SAE rows: mean, CI, cards,
    raters, and the margin over the random SAE of the same layer with its CI.
    """
    cards = card_scores(ratings)
    per_sae = []
    for (layer, sae), g in cards.groupby(["layer", "sae"]):
        lo, hi = bootstrap_ci(g.score, n_boot, seed)
        floor = cards[(cards.layer == layer) & (cards.sae == "random")].score
        m, mlo, mhi = bootstrap_diff_ci(g.score, floor, n_boot, seed) if sae != "random" else (np.nan,) * 3
        per_sae.append({"layer": layer, "sae": sae, "alpha": g.alpha.iloc[0], "n_cards": len(g),
                        "n_raters": int(ratings[(ratings.layer == layer) & (ratings.sae == sae)].rater.nunique()),
                        "mean": g.score.mean(), "ci_lo": lo, "ci_hi": hi, "margin_vs_random": m, "margin_lo": mlo,
                        "margin_hi": mhi})
    per_sae = pd.DataFrame(per_sae, columns=["layer", "sae", "alpha", "n_cards", "n_raters", "mean", "ci_lo",
                                             "ci_hi", "margin_vs_random", "margin_lo", "margin_hi"])
    base = per_sae[(per_sae.alpha == 0) & (per_sae.sae != "random")]
    validated = bool(len(base)) and bool((base.margin_lo > 0).all())
    trained = cards[cards.sae != "random"]
    cols = ["backend", "scorer", "validated", "layer", "alpha", "mean", "gain_vs_alpha0", "gain_ci_lo", "gain_ci_hi"]
    if not len(trained):  # one row that says so, with no number in it
        return pd.DataFrame([{"backend": "human", "scorer": NO_RATINGS, "validated": False, "layer": "mean"}],
                            columns=cols), per_sae
    piv, gains = table1(trained[["layer", "alpha", "score"]], n_boot, seed)
    out = []
    for layer, r in piv.iterrows():
        for a, v in r.items():
            g = gains[(gains.layer.astype(str) == str(layer)) & (gains.alpha == a)]
            out.append({"backend": "human", "scorer": SCORER, "validated": validated, "layer": layer, "alpha": a,
                        "mean": v, "gain_vs_alpha0": g.gain.iloc[0] if len(g) else np.nan,
                        "gain_ci_lo": g.ci_lo.iloc[0] if len(g) else np.nan,
                        "gain_ci_hi": g.ci_hi.iloc[0] if len(g) else np.nan})
    return pd.DataFrame(out, columns=cols), per_sae


def cohen_kappa(a: Iterable[str], b: Iterable[str], labels: Iterable[str] = RATINGS) -> float:
    """Cohen's kappa of two raters' labels on the same items; NaN when chance agreement is 1 (no variation)."""
    a, b, labels = list(a), list(b), list(labels)
    if len(a) != len(b) or not a:
        raise ValueError(f"kappa needs two equally long, non-empty label lists (got {len(a)} and {len(b)})")
    idx = {lab: i for i, lab in enumerate(labels)}
    m = np.zeros((len(labels), len(labels)))
    for x, y in zip(a, b, strict=True):
        m[idx[x], idx[y]] += 1
    m /= m.sum()
    p_o, p_e = float(np.trace(m)), float(m.sum(1) @ m.sum(0))
    return float("nan") if p_e >= 1 else (p_o - p_e) / (1 - p_e)


def agreement(ratings: pd.DataFrame, min_overlap: int = 2, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per pair of raters with at least `min_overlap` cards in common: overlap, raw agreement, Cohen's kappa on
    the three answers with a 95 % bootstrap CI over the shared cards, and kappa on 'one meaning' vs not."""
    raters = sorted(ratings.rater.unique())
    by = {r: ratings[ratings.rater == r].set_index("card").rating for r in raters}
    rng = np.random.default_rng(seed)
    rows = []
    for i, r1 in enumerate(raters):
        for r2 in raters[i + 1:]:
            common = sorted(set(by[r1].index) & set(by[r2].index))
            if len(common) < min_overlap:
                continue
            a, b = by[r1][common].to_numpy(), by[r2][common].to_numpy()
            boots = [cohen_kappa(a[s], b[s]) for s in rng.integers(0, len(common), (n_boot, len(common)))]
            boots = np.asarray(boots, float)
            boots = boots[np.isfinite(boots)]
            one_a, one_b = np.where(a == "one", "one", "none"), np.where(b == "one", "one", "none")
            rows.append({"rater_a": r1, "rater_b": r2, "n_common": len(common), "agreement": float((a == b).mean()),
                         "kappa": cohen_kappa(a, b),
                         "kappa_lo": float(np.quantile(boots, 0.025)) if len(boots) else np.nan,
                         "kappa_hi": float(np.quantile(boots, 0.975)) if len(boots) else np.nan,
                         "kappa_one_vs_not": cohen_kappa(one_a, one_b, ("one", "none"))})
    return pd.DataFrame(rows, columns=["rater_a", "rater_b", "n_common", "agreement", "kappa", "kappa_lo", "kappa_hi",
                                       "kappa_one_vs_not"])


def human_verdict(rows: pd.DataFrame, alpha: float) -> tuple[str, str]:
    """Verdict on 'WSAE latents are more interpretable' from the human rows: (verdict, why).

    Decided only when the raters are validated (plain SAE above the random one at every rated layer): reproduced
    when the mean-over-layers gain of α over α = 0 has a CI above 0, not reproduced when below 0.
    """
    if not len(rows) or (rows.scorer == NO_RATINGS).all():
        return "not decidable here", NO_RATINGS
    g = rows[(rows.layer.astype(str) == "mean") & (rows.alpha == alpha)]
    if not len(g) or not np.isfinite(g.gain_ci_lo.iloc[0]):
        return "not decidable here", f"too few rated cards at α = {alpha:g} and α = 0 for a confidence interval"
    if not bool(rows.validated.iloc[0]):
        return "not decidable here", ("the raters did not rate the plain SAE above the random-weight SAE (CI above "
                                      "0) at every rated layer, so their ratings cannot rank α")
    lo, hi = float(g.gain_ci_lo.iloc[0]), float(g.gain_ci_hi.iloc[0])
    if lo > 0:
        return "reproduced", "the human gain's CI is above 0"
    if hi < 0:
        return "not reproduced", "the human gain's CI is below 0: raters found fewer one-meaning latents"
    return "not decidable here", "the human gain's CI covers 0: more ratings needed"
