"""Plot helpers shared by the notebooks: one style, figures saved as PNG next to the report."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns

from wsae_utils.paths import atomic_write_text
from wsae_utils.run.reportkit import report_setup


def setup_style() -> None:
    """Seaborn whitegrid, readable sizes; tables print whole (`reportkit.report_setup`)."""
    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.95)
    report_setup()


def save_figure(fig: plt.Figure, out_dir: str | Path, name: str, dpi: int = 110, caption: str = "") -> Path:
    """Save `fig` as {out_dir}/figures/{name}.png (atomically) and return the path.

    `caption` (one sentence: what the figure shows) goes to {out_dir}/figures/captions.json, which the index and the
    `snakemake --report` figures read.
    """
    path = Path(out_dir) / "figures" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    tmp.replace(path)
    if caption:
        store = path.parent / "captions.json"
        captions = json.loads(store.read_text()) if store.is_file() else {}
        captions[name] = caption
        atomic_write_text(store, json.dumps(captions, indent=1, ensure_ascii=False) + "\n")
    return path
