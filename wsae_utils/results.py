"""Writing and collecting results: atomic files, metrics.json with provenance, tables, the HTML index."""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
import os
import platform
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write text through a temporary file and a rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if hasattr(obj, "tolist") and not isinstance(obj, str | bytes):
        return _jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, Path):
        return str(obj)
    return obj


def git_commit() -> str | None:
    """Commit of the working tree the code runs from, if any."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(**settings: Any) -> dict[str, Any]:
    """Who produced a result: settings given, code version, library versions, machine."""
    import torch

    return {
        "settings": settings,
        "git_commit": git_commit(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "written_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def write_metrics(path: str | Path, metrics: dict[str, Any], **settings: Any) -> Path:
    """Write a flat `metrics.json` (atomically) with a `provenance` block holding `settings`."""
    payload = dict(_jsonable(metrics))
    payload["provenance"] = _jsonable(provenance(**settings))
    return atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def read_metrics(path: str | Path) -> dict[str, Any]:
    """Load a metrics.json written by `write_metrics`."""
    return json.loads(Path(path).read_text())


def metrics_table(paths: Iterable[str | Path], keys: list[str] | None = None) -> pd.DataFrame:
    """One row per metrics.json: its scalar entries (or `keys`), plus the file it came from."""
    rows = []
    for p in paths:
        m = read_metrics(p)
        row = {k: v for k, v in m.items() if k != "provenance" and not isinstance(v, dict | list)}
        if keys is not None:
            row = {k: m.get(k) for k in keys}
        row["source"] = str(p)
        rows.append(row)
    return pd.DataFrame(rows)


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a CSV atomically."""
    return atomic_write_text(path, df.to_csv(index=False))


def write_index_html(
    path: str | Path,
    title: str,
    sections: list[tuple[str, list[tuple[str, str]]]],
    figures: list[tuple[str, str]] | None = None,
    tables: list[tuple[str, pd.DataFrame]] | None = None,
    preamble: str = "",
    max_table_rows: int = 40,
) -> Path:
    """A single HTML page: report links, tables (first `max_table_rows` rows) and inline figures."""
    base = Path(path).parent
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
        "table{border-collapse:collapse;font-size:0.85em}td,th{border:1px solid #ccc;padding:2px 6px}"
        "img{max-width:100%;border:1px solid #eee}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        preamble,
    ]
    for heading, links in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2><ul>")
        for label, target in links:
            rel = os.path.relpath(target, base)
            parts.append(f"<li><a href='{html.escape(rel)}'>{html.escape(label)}</a></li>")
        parts.append("</ul>")
    for caption, df in tables or []:
        parts.append(f"<h3>{html.escape(caption)}</h3>")
        parts.append(df.head(max_table_rows).to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="–"))
        if len(df) > max_table_rows:
            parts.append(f"<p>… {len(df) - max_table_rows} more rows in the CSV.</p>")
    if figures:
        parts.append("<h2>Figures</h2>")
    for caption, fig in figures or []:
        rel = os.path.relpath(fig, base)
        parts.append(f"<figure><img src='{html.escape(rel)}'><figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return atomic_write_text(path, "\n".join(parts))


# The paper's claims, one row each in the summary's claims table. A notebook that tests one writes a `claims`
# list into its metrics.json (see `claim`); the summary joins them by id.
CLAIMS: dict[str, str] = {
    "toy-theory": "Closed-form optimum W_m = W_pᵀ, shrinking/vanishing (Example 1), loss-gap identities (Thm 1-3)",
    "toy-fig2": "Features per latent fall, and recovery rises, as sparsity S → 1 (Fig. 2)",
    "toy-conditions": "Full recovery needs extreme sparsity, a sparse activation and n_m ≥ n",
    "toy-wsae": "The weighted SAE lowers the ground-truth loss L_GT in the toy model",
    "lm-fidelity": "WSAE keeps reconstruction comparable on an LM residual stream (FVU, CE recovered)",
    "lm-table1": "WSAE latents are more interpretable (auto-interp, Table 1: 76.4 → 80.2 % at α = 1)",
    "vision-ncl": "NCL features are more semantically consistent than CL features",
    "vision-wsae": "WSAE raises the semantic consistency of SAE latents on NCL features",
}
VERDICTS = ("reproduced", "not reproduced", "not decidable here")


def claim(claim_id: str, test: str, numbers: str, verdict: str, why: str = "") -> dict[str, str]:
    """One claims-table row: the test applied, the numbers (seeds, CIs), the verdict and why."""
    if claim_id not in CLAIMS:
        raise ValueError(f"claim id {claim_id!r} is not one of {sorted(CLAIMS)}")
    if verdict not in VERDICTS:
        raise ValueError(f"verdict {verdict!r} is not one of {VERDICTS}")
    return {"id": claim_id, "claim": CLAIMS[claim_id], "test": test, "numbers": numbers, "verdict": verdict, "why": why}


def conclusion_markdown(claims: list[dict[str, str]]) -> str:
    """The closing cell of a report: per claim, the claim, the test, the numbers and the verdict."""
    parts = ["## Conclusion"]
    for c in claims:
        parts.append(
            f"**{c['claim']}** — **{c['verdict']}**.\n\n"
            f"- *Test:* {c['test']}\n- *Numbers:* {c['numbers']}" + (f"\n- *Why:* {c['why']}" if c["why"] else "")
        )
    return "\n\n".join(parts)
