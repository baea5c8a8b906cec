"""Compare two finished default runs: which verdicts changed, and how far every number in results/tables moved.

Used to show that no verdict depends on the CPU class or precision that ran (AVX2 / fp32 against AVX-512 / bf16),
and that a refactor which only reorders floating-point sums changes no verdict:

    .venv/bin/python benchmarks/compare_runs.py RUN_A/results RUN_B/results --out benchmarks/RESULTS_cpu_classes.md

For each table, rows are matched on their non-numeric columns (plus row order within equal keys); for each numeric
column it reports the largest absolute and relative difference and the row where it happens. The claims table is
compared verdict by verdict. Exit status 1 when a verdict differs (so a script can gate on it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def _keyed(df: pd.DataFrame) -> pd.DataFrame:
    """Index a table by its non-numeric columns plus the occurrence number of each key (stable row matching)."""
    keys = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    df = df.copy()
    df["_occ"] = df.groupby(keys, dropna=False).cumcount() if keys else np.arange(len(df))
    return df.set_index([*keys, "_occ"])


def compare_table(a: pd.DataFrame, b: pd.DataFrame) -> list[dict]:
    """Per numeric column: largest |a - b|, largest relative change, and where (rows matched by their keys)."""
    ka, kb = _keyed(a), _keyed(b)
    common = ka.index.intersection(kb.index)
    rows = []
    for col in ka.columns:
        if col not in kb.columns or not pd.api.types.is_numeric_dtype(ka[col]):
            continue
        x = ka.loc[common, col].astype(float)
        y = kb.loc[common, col].astype(float)
        both_nan = x.isna() & y.isna()
        diff = (x - y).abs().where(~both_nan, 0.0)
        nan_mismatch = int((x.isna() ^ y.isna()).sum())
        rel = diff / np.maximum(x.abs(), y.abs()).replace(0, np.nan)
        if diff.notna().any() and len(diff):
            at = diff.fillna(-1).idxmax()
            rows.append({"column": col, "rows": len(common), "max_abs_diff": float(diff.max()),
                         "max_rel_diff": float(rel.max()) if rel.notna().any() else 0.0,
                         "where": " / ".join(str(v) for v in (at if isinstance(at, tuple) else (at,))[:-1]),
                         "a": float(x[at]), "b": float(y[at]), "nan_mismatch": nan_mismatch})
    return rows


def compare_runs(a: Path, b: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(numbers, verdicts): per table and column the largest change; per claim the two verdicts."""
    numbers = []
    for ta in sorted((a / "tables").glob("*.csv")):
        tb = b / "tables" / ta.name
        if not tb.exists() or ta.name in ("benchmarks.csv", "claims.csv"):
            continue
        for r in compare_table(pd.read_csv(ta), pd.read_csv(tb)):
            numbers.append({"table": ta.stem, **r})
    ca, cb = (pd.read_csv(p / "summary" / "claims.csv") if (p / "summary" / "claims.csv").exists()
              else pd.read_csv(p / "tables" / "claims.csv") for p in (a, b))
    verdicts = ca[["claim", "verdict"]].merge(cb[["claim", "verdict"]], on="claim", how="outer", suffixes=("_a", "_b"))
    verdicts["same"] = verdicts.verdict_a == verdicts.verdict_b
    return pd.DataFrame(numbers), verdicts


def main(argv: list[str] | None = None) -> int:
    """Print (and optionally write) the comparison; exit 1 when a verdict differs."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", type=Path, help="results/ folder of run A")
    p.add_argument("b", type=Path, help="results/ folder of run B")
    p.add_argument("--label-a", default="A")
    p.add_argument("--label-b", default="B")
    p.add_argument("--top", type=int, default=40, help="largest relative changes to list")
    p.add_argument("--out", default="", help="write the markdown here too")
    a = p.parse_args(argv)
    numbers, verdicts = compare_runs(a.a, a.b)
    md = [f"Verdicts ({a.label_a} vs {a.label_b}): {int(verdicts.same.sum())} of {len(verdicts)} identical.", "",
          verdicts.rename(columns={"verdict_a": a.label_a, "verdict_b": a.label_b}).to_markdown(index=False), ""]
    if len(numbers):
        big = numbers.sort_values("max_rel_diff", ascending=False).head(a.top)
        md += [f"Numbers: {len(numbers)} numeric columns in {numbers.table.nunique()} tables; "
               f"{int((numbers.max_abs_diff == 0).sum())} identical. Largest relative changes "
               f"(a = {a.label_a}, b = {a.label_b}):", "", big.to_markdown(index=False, floatfmt=".4g")]
    text = "\n".join(md) + "\n"
    print(text)
    if a.out:
        Path(a.out).write_text(text)
    return 0 if bool(verdicts.same.all()) else 1


if __name__ == "__main__":
    sys.exit(main())
