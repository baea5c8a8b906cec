"""Plot helpers shared by the notebooks: one style, figures saved as PNG next to the report."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns


def setup_style() -> None:
    """Seaborn whitegrid, readable sizes."""
    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.95)


def save_figure(fig: plt.Figure, out_dir: str | Path, name: str, dpi: int = 110) -> Path:
    """Save `fig` as {out_dir}/figures/{name}.png (atomically) and return the path."""
    path = Path(out_dir) / "figures" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    tmp.replace(path)
    return path
