# %% [markdown]
# # Summary: which claims of the paper reproduced?
#
# Collects the `claim_reproduced` verdict and the provenance of every report of this run (toy model, language
# model, vision), and shows each report's figures. Each verdict is computed inside its own notebook from measured
# numbers (never typed in); `null` means the notebook measured what it could but the claim needs something this run
# does not have (e.g. an LLM judge for auto-interpretability). Open the linked report for the numbers behind a verdict.

# %% tags=["parameters"]
reports = []  # [section, label, metrics.json path] per report
out_dir = "results/summary"
device = "auto"

# %%
from pathlib import Path

import pandas as pd
from IPython.display import Image, Markdown, display

from wsae_utils.results import read_metrics, write_metrics, write_table

rows = []
for section, label, path in reports:
    m = read_metrics(path)
    prov = m.get("provenance", {})
    rows.append(
        {
            "section": section,
            "report": label,
            "claim_reproduced": m.get("claim_reproduced"),
            "git_commit": prov.get("git_commit"),
            "metrics": path,
        }
    )
claims = pd.DataFrame(rows, columns=["section", "report", "claim_reproduced", "git_commit", "metrics"])
Path(out_dir).mkdir(parents=True, exist_ok=True)
write_table(claims, Path(out_dir) / "claims.csv")


def verdict(v):
    """Readable verdict for a claim_reproduced value."""
    return {True: "reproduced", False: "NOT reproduced"}.get(v, "not decidable here")


claims["verdict"] = claims["claim_reproduced"].map(verdict)
display(claims[["section", "report", "verdict"]])

# %% [markdown]
# ## Figures of every report
# The figures below are the ones each notebook saved under its `figures/` folder; the reports explain them.

# %%
for section, label, path in reports:
    figs = sorted((Path(path).parent / "figures").glob("*.png"))
    if figs:
        display(Markdown(f"### {section}: {label}"))
        for fig in figs:
            display(Image(filename=str(fig), width=720))

# %%
counts = claims["verdict"].value_counts().to_dict()
write_metrics(
    Path(out_dir) / "metrics.json",
    {
        "n_reports": len(claims),
        "n_reproduced": int(counts.get("reproduced", 0)),
        "n_not_reproduced": int(counts.get("NOT reproduced", 0)),
        "n_undecidable": int(counts.get("not decidable here", 0)),
    },
    reports=reports,
)
print(counts)
