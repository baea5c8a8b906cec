# %% [markdown]
# # Summary: which claims of the paper reproduced?
#
# One row per claim of the paper (arXiv 2506.15963). Each verdict is computed inside the notebook that tests the
# claim, from measured numbers (never typed in), together with the test it applied, the numbers with their seeds and
# confidence intervals, and why. This page only collects them; follow the link in each row for the evidence.
# "not decidable here" means the claim needs something this run does not have (for example an LLM judge for
# auto-interpretability, no converged run, or an effect smaller than the run can detect: the "decidable /
# detectable" column says which); "not run" means no notebook of this run tested the claim (its section is off).

# %% tags=["parameters"]
reports = []  # [section, label, metrics.json path] per report of this run
out_dir = "results/summary"
device = "auto"

# %%
import os
from pathlib import Path

import pandas as pd
from IPython.display import HTML, Markdown, display

from wsae_utils.run.results import CLAIMS, claims_table, read_metrics, write_metrics, write_table

out = Path(out_dir)
out.mkdir(parents=True, exist_ok=True)
found = []
for section, label, path in reports:
    for c in read_metrics(path).get("claims", []):
        report = str(Path(path).with_name("report.html"))
        found.append({**c, "report": os.path.relpath(report, out), "report_label": f"{section}: {label}"})
claims = claims_table(found)
write_table(claims, out / "claims.csv")

# %% [markdown]
# ## Claims table

# %%
def _link(row: pd.Series) -> str:
    links = [f"<a href='{r}'>{lab}</a>" for r, lab in zip(row["report"].split(" | "), row["report_label"].split(" | "),
                                                           strict=False) if r]
    return "<br>".join(links)


view = claims.assign(evidence=claims.apply(_link, axis=1))[["claim", "verdict", "test", "numbers", "why", "decidable",
                                                            "evidence"]]
# "decidable / detectable": the settings each verdict was decided on, why the others were not, and the minimum
# detectable effect at the run's sample size next to the paper's effect.
display(HTML(view.rename(columns={"decidable": "decidable / detectable"}).to_html(index=False, escape=False,
                                                                                   na_rep="")))

# %%
counts = claims["verdict"].value_counts().to_dict()
write_metrics(
    out / "metrics.json",
    {
        "n_claims": len(CLAIMS),
        "n_reproduced": int(counts.get("reproduced", 0)),
        "n_not_reproduced": int(counts.get("not reproduced", 0)),
        "n_undecidable": int(counts.get("not decidable here", 0)),
        "n_not_run": int(counts.get("not run", 0)),
    },
    reports=reports,
)
summary = ", ".join(f"{n} {v}" for v, n in counts.items())
display(Markdown(f"## Conclusion\n\nOf the paper's {len(CLAIMS)} claims checked here: {summary}. "
                 "Each row above links to the report holding its numbers."))
