"""What every report shares: the run's resolved parameters, the one conclusion, and how tables print.

The notebook runner (`wsae_utils.run.nbrun`) resolves a notebook's parameters (the `parameters` cell's defaults
overlaid with what the run injects) and hands them to the kernel in `WSAE_PARAMETERS`; `run_parameters()` reads
them back, so no notebook lists its parameters by hand, and `write_metrics` records them as the provenance
settings. The report header shows them once, folded, with the values that differ from the defaults highlighted
(`parameter_rows`). `conclusion()` owns the closing heading: exactly one per report, never empty.

Only the standard library is imported at module level (the runner imports this before any kernel starts).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

PARAMS_ENV = "WSAE_PARAMETERS"
"""Environment variable through which the runner passes the resolved parameters (JSON) to the kernel."""
CONCLUSION = "## Conclusion"
WORKFLOW_KEYS = ("out_dir", "device", "num_threads")
"""Parameters the workflow sets on every job (not a user's choice): marked as such in the header."""


def plain(value: Any) -> Any:
    """A JSON-able copy of a parameter value (tuples become lists, non-finite floats strings)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def show_value(value: Any) -> str:
    """A parameter value as a reader writes it: strings bare, numbers short, lists and mappings as JSON."""
    value = plain(value)
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return format(value, ".6g")
    return json.dumps(value, ensure_ascii=False)


def resolved_parameters(defaults: Mapping[str, Any], injected: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters a run executes with: the notebook's defaults overlaid with the injected values."""
    return {**plain(dict(defaults)), **plain(dict(injected))}


def parameter_rows(defaults: Mapping[str, Any], injected: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows of the report header's parameter table: name, value, default, whether it differs, who set it."""
    rows = []
    for name, value in resolved_parameters(defaults, injected).items():
        default = plain(defaults.get(name))
        changed = name in injected and plain(injected[name]) != default
        rows.append({
            "name": name, "value": show_value(value), "default": show_value(default) if name in defaults else "",
            "changed": bool(changed), "workflow": name in WORKFLOW_KEYS,
        })
    return rows


def parameters_env(defaults: Mapping[str, Any], injected: Mapping[str, Any]) -> str:
    """The `WSAE_PARAMETERS` value for a run (JSON of the resolved parameters)."""
    return json.dumps(resolved_parameters(defaults, injected), ensure_ascii=False)


def run_parameters() -> dict[str, Any]:
    """The resolved parameters of the running notebook, as the runner recorded them ({} outside the runner)."""
    text = os.environ.get(PARAMS_ENV)
    return json.loads(text) if text else {}


def conclusion(claims: Iterable[Mapping[str, str]] = (), summary: str = "") -> str:
    """The closing Markdown of a report: one `## Conclusion` heading, then `summary` and one block per claim.

    A report that tests no claim of the paper passes `summary` (what the job produced and what to read from it);
    a conclusion with neither is refused, so no report ends on an empty heading.
    """
    claims = list(claims)
    if not claims and not summary.strip():
        raise ValueError("a conclusion needs a claim or a summary: no report ends on an empty heading")
    parts = [CONCLUSION]
    if summary.strip():
        parts.append(summary.strip())
    for c in claims:
        parts.append(
            f"**{c['claim']}** — **{c['verdict']}**.\n\n"
            f"- *Test:* {c['test']}\n- *Numbers:* {c['numbers']}" + (f"\n- *Why:* {c['why']}" if c.get("why") else "")
            + (f"\n- *Decidable / detectable:* {c['decidable']}" if c.get("decidable") else "")
        )
    return "\n\n".join(parts)


def report_setup() -> None:
    """Table printing for reports: no cell cut with '…' and no column left out (wide tables scroll in the page)."""
    import pandas as pd

    pd.set_option("display.max_colwidth", None)
    pd.set_option("display.max_columns", None)
    pd.set_option("display.width", None)
