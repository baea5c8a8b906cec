"""Collect every job's peak RSS (Snakemake's benchmark.tsv max_rss) of a finished run into peak_memory.csv rows.

    python benchmarks/peak_memory.py RESULTS_DIR "CPU class" "source" [--out benchmarks/peak_memory.csv]

Rows of the same CPU class already in --out are replaced; other classes are kept. tests/test_workflow.py checks the
declared mem_mb of every default job against these peaks (≥ 1.2 ×).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def collect(results: Path) -> pd.DataFrame:
    """job (folder under results/) and peak_rss_mb of every benchmark.tsv below `results`."""
    rows = []
    for tsv in sorted(results.rglob("benchmark.tsv")):
        b = pd.read_csv(tsv, sep="\t")
        rows.append({"job": str(tsv.parent.relative_to(results)), "peak_rss_mb": int(round(float(b.max_rss.max())))})
    return pd.DataFrame(rows)


def main() -> None:
    """Merge one run's peaks into the CSV."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("cpu_class")
    ap.add_argument("source")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("peak_memory.csv"))
    a = ap.parse_args()
    new = collect(a.results).assign(cpu_class=a.cpu_class, source=a.source)
    old = pd.read_csv(a.out) if a.out.exists() else pd.DataFrame(columns=new.columns)
    out = pd.concat([old[old.cpu_class != a.cpu_class], new], ignore_index=True)
    out[["job", "cpu_class", "peak_rss_mb", "source"]].sort_values(["job", "cpu_class"]).to_csv(a.out, index=False)
    print(f"{len(new)} jobs of {a.cpu_class} written to {a.out}")


if __name__ == "__main__":
    main()
