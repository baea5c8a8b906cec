# %% [markdown]
# # Auto-interpretability, part 5: human ratings from the blind page (the `human` backend of Table 1)
#
# Every auto-interp score is a proxy for one judgement: does a person see one meaning in a latent? The blind
# rating page of the latent browser (`results/latents/rate.html`) shows latents of the plain SAE (α = 0), of the
# largest-α weighted SAE and of a random-weight SAE, shuffled and with the SAE hidden, and asks "one meaning /
# several / none". Each rater exports a JSON file into `ratings_dir`; this report reads all of them, checks each
# against the session's key (unknown card ids, another session, a changed schema are refused with the file named),
# unblinds them, and gives:
#
# - per card, the share of its raters who answered "one meaning";
# - Table-1 rows of the `human` backend: per layer and α the mean card score, and the gain over α = 0 with a 95 %
#   bootstrap CI over cards (the same `autointerp.table1` as every backend), appended to Table 1 by
#   `autointerp_summary`;
# - the random-weight SAE's floor and each SAE's margin over it: raters who do not rate the plain SAE above a
#   random one (CI above 0) at every rated layer are not validated, and then their ratings decide nothing;
# - agreement (Cohen's kappa with a bootstrap CI) for every pair of raters who rated the same cards.
#
# With no ratings file the report says "no human ratings yet" and writes no number.

# %% tags=["parameters"]
out_dir = "results/dev/autointerp/human"
device = "cpu"
ratings_dir = "ratings"
rating_key = "results/autointerp/latents/rating_key.json"
table = "results/tables/autointerp_human.csv"
min_overlap = 2
n_boot = 2000
seed = 0

# %%
import time
from pathlib import Path

from IPython.display import Markdown, display

from wsae_utils.autointerp import human_ratings as H
from wsae_utils.run.reportkit import conclusion, report_setup
from wsae_utils.run.results import claim, write_metrics, write_table

t_start = time.time()
report_setup()
out = Path(out_dir)
out.mkdir(parents=True, exist_ok=True)
key = H.load_key(rating_key)
files = sorted(Path(ratings_dir).glob("*.json")) if Path(ratings_dir).is_dir() else []
ratings = H.read_ratings(files, key)  # a bad file stops here, naming the file and the problem
write_table(ratings, out / "ratings.csv")
display(Markdown(f"Rating session `{key['key_id']}`: {len(key['cards'])} cards. Ratings files in `{ratings_dir}`: "
                 + (", ".join(f"`{f.name}`" for f in files) if files else "none") + "."))

# %% [markdown]
# ## Ratings per SAE: the share of "one meaning", and the random-weight floor

# %%
rows, per_sae = H.human_rows(ratings, n_boot, seed)
write_table(rows, table)
write_table(per_sae, out / "per_sae.csv")
if len(ratings):
    display(ratings.groupby(["layer", "sae", "rating"]).size().unstack("rating", fill_value=0))
    display(per_sae.round(3))
    display(Markdown("**Table 1, human backend** (share of cards rated 'one meaning'; gain over α = 0 with a 95 % "
                     "bootstrap CI over cards):"))
    display(rows.round(3))
else:
    display(Markdown(f"**{H.NO_RATINGS}.** Open the blind rating page, rate some cards, export, and put the JSON "
                     f"file into `{ratings_dir}/`."))

# %% [markdown]
# ## Agreement between raters who rated the same cards

# %%
agree = H.agreement(ratings, min_overlap, n_boot, seed)
write_table(agree, out / "agreement.csv")
display(agree.round(3) if len(agree) else Markdown(
    "No two raters share enough cards for an agreement measure." if len(ratings) else H.NO_RATINGS + "."))

# %% [markdown]
# ## The lm-table1 verdict from the human ratings

# %%
rated = len(ratings) > 0
alphas = sorted(a for a in rows.alpha.dropna().unique() if a != 0)
amax = alphas[-1] if alphas else 1.0
verdict, why = H.human_verdict(rows, amax)
metrics = {"status": "ok" if len(ratings) else H.NO_RATINGS, "n_files": len(files), "n_ratings": len(ratings),
           "n_raters": int(ratings.rater.nunique()), "n_cards_rated": int(ratings.card.nunique()),
           "key_id": key["key_id"], "validated": bool(rows.validated.iloc[0]) if rated else None}
if rated:
    g = rows[(rows.layer.astype(str) == "mean") & (rows.alpha == amax)]
    if len(g):
        metrics.update(human_gain=float(g.gain_vs_alpha0.iloc[0]), human_gain_lo=float(g.gain_ci_lo.iloc[0]),
                       human_gain_hi=float(g.gain_ci_hi.iloc[0]))
    numbers = (f"{len(ratings)} ratings of {ratings.card.nunique()} cards by {ratings.rater.nunique()} rater(s); "
               + "; ".join(f"layer {r.layer} {r.sae}: {r.mean:.2f} [{r.ci_lo:.2f}, {r.ci_hi:.2f}] (n = {r.n_cards})"
                           for r in per_sae.itertuples())
               + (f"; gain α = {amax:g} − α = 0 (mean over layers): {metrics['human_gain']:+.3f} "
                  f"[{metrics['human_gain_lo']:+.3f}, {metrics['human_gain_hi']:+.3f}]" if "human_gain" in metrics
                  else "")
               + (f"; kappa {', '.join(f'{r.rater_a}/{r.rater_b} {r.kappa:.2f}' for r in agree.itertuples())}"
                  if len(agree) else ""))
else:
    numbers = H.NO_RATINGS
claims = [claim(
    "lm-table1",
    f"Blind human ratings (share of latents rated 'one meaning', SAE hidden and shuffled): gain of α = {amax:g} over "
    "α = 0, mean over layers, 95 % bootstrap CI over cards; decided only when the raters put the plain SAE above the "
    "random-weight SAE (CI above 0) at every rated layer. Reproduced if the CI is above 0, not reproduced if below.",
    numbers, verdict, why,
    key_number=(f"human raters, α = {amax:g} − α = 0: {metrics['human_gain']:+.3f} [{metrics['human_gain_lo']:+.3f}, "
                f"{metrics['human_gain_hi']:+.3f}] (mean over layers)" if "human_gain" in metrics else H.NO_RATINGS),
    paper="+3.8 points (76.4 → 80.2 %, Llama-3.1-8B judge)",
    effect={"name": f"human 'one meaning' share, α = {amax:g} − α = 0", "paper": 0.038,
            "points": [{"label": "mean over layers", "value": metrics["human_gain"], "lo": metrics["human_gain_lo"],
                        "hi": metrics["human_gain_hi"]}] if "human_gain" in metrics else []},
    precedence=2 if rated and metrics["validated"] else 0)]  # validated raters decide, like an LLM judge
display(Markdown(conclusion(claims)))
metrics["claims"] = claims
metrics["total_seconds"] = time.time() - t_start
metrics_path = write_metrics(out / "metrics.json", metrics)
