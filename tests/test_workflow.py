"""The workflow as a user drives it: lint, dry runs, an end-to-end smoke run, rerun triggers, bad configs."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from workflow_copy import copy_workflow

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
NOTHING = "Nothing to be done"


def smk(*args, cwd=REPO, check=True, timeout=1800):
    """Run snakemake, return the completed process (output merged)."""
    proc = subprocess.run(
        [SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def test_lint_is_clean():
    proc = smk("--lint", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("config", ["config/config.yaml", "config/paper.yaml", "config/smoke.yaml"])
def test_dry_run(config, tmp_path):
    proc = smk("-n", "--configfile", config, "--directory", str(tmp_path))
    assert "results/index.html" in proc.stdout + proc.stderr or "index" in proc.stdout


@pytest.mark.parametrize(
    "override,message",
    [
        ("device=tpu", "device = 'tpu'"),
        ("devise=cpu", "devise"),
    ],
)
def test_invalid_config_refused_before_any_job(override, message, tmp_path):
    proc = smk("-n", "--config", override, "--directory", str(tmp_path), check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_missing_config_file(tmp_path):
    proc = smk("-n", "--configfile", "config/does_not_exist.yaml", check=False)
    assert proc.returncode != 0 and "does_not_exist.yaml" in proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """A copy of the workflow sources, run end to end on the smoke config (resources/ linked, not copied)."""
    root = tmp_path_factory.mktemp("wf")
    copy_workflow(root)
    smk("--cores", "2", "--configfile", "config/smoke.yaml", cwd=root)
    return root


@pytest.mark.slow
def test_smoke_dag_produces_reports_tables_and_index(smoke_run):
    index = (smoke_run / "results" / "index.html").read_text()
    reports = sorted(smoke_run.glob("results/**/report.html"))
    assert reports, "no report was produced"
    for rep in reports:
        assert os.path.relpath(rep, smoke_run / "results") in index
        assert (rep.parent / "metrics.json").exists() and (rep.parent / "report.ipynb").exists()
        assert (rep.parent / "benchmark.tsv").exists() and (rep.parent / "run.log").exists()
        text = rep.read_text()
        for noise in ("TqdmWarning", "it/s]", "IProgress"):
            assert noise not in text, f"{rep} carries progress-bar output ({noise!r})"
    claims = pd.read_csv(smoke_run / "results" / "summary" / "claims.csv")
    from wsae_utils.run.results import CLAIMS

    assert list(claims["id"]) == list(CLAIMS), "the summary must hold one row per paper claim"
    assert claims["verdict"].ne("not run").all(), claims[["id", "verdict"]]
    assert (smoke_run / "results" / "tables" / "benchmarks.csv").exists()
    tables = sorted((smoke_run / "results" / "tables").glob("*.csv"))
    assert {t.stem.split("_")[0] for t in tables} >= {"toy", "lm", "vision"}
    for t in tables:
        assert len(pd.read_csv(t)) > 0, t


@pytest.mark.slow
def test_resolved_device_reruns_nothing(smoke_run):
    """`device: auto` is resolved before the DAG is built: naming the device it means changes no job."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    run = ("-n", "--configfile", "config/smoke.yaml")

    plain = smk(*run, cwd=smoke_run).stdout
    named = smk(*run, "--config", f"device={device}", cwd=smoke_run).stdout
    assert NOTHING in plain and NOTHING in named, "naming the resolved device must not rerun anything"


@pytest.mark.slow
@pytest.mark.parametrize("deleted,rules", [
    ("results/lm/train/layer2/metrics.json", ["lm_train", "summary", "index"]),
    ("results/summary/claims.csv", ["summary", "index"]),
])
def test_deleted_intermediate_is_rebuilt_before_the_summary(smoke_run, deleted, rules):
    """The summary and index never stand on a file that is gone: the default command rebuilds it, then them."""
    path = smoke_run / deleted
    kept, st = path.read_bytes(), path.stat()
    path.unlink()
    try:
        out = smk("-n", "--configfile", "config/smoke.yaml", cwd=smoke_run).stdout
        assert NOTHING not in out
        for rule in rules:
            assert f"rule {rule}:" in out, (rule, out[-3000:])
    finally:
        path.write_bytes(kept)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # as it was: later tests expect nothing to do


@pytest.mark.slow
def test_snakemake_report_holds_claims_tables_and_figures(smoke_run):
    smk("--configfile", "config/smoke.yaml", "--report", "report.html", cwd=smoke_run)
    text = (smoke_run / "report.html").read_text()
    assert "claims.csv" in text and "1. Claims" in text
    assert "2. Tables" in text and "toy_theory.csv" in text
    assert "3. Figures" in text and ".png" in text


@pytest.mark.slow
def test_failing_notebook_leaves_html_and_a_short_error(smoke_run, tmp_path):
    """A cell that raises: the console shows that error briefly, and the partial report can be opened."""
    root = tmp_path / "fail"
    shutil.copytree(smoke_run, root, symlinks=True, ignore=shutil.ignore_patterns(".snakemake"))
    nb = root / "notebooks" / "toy_theory.py"
    nb.write_text(nb.read_text() + "\n# %%\nraise RuntimeError('planted failure for the test')\n")
    # targets before --configfile, which takes several files
    proc = smk("results/toy/theory/metrics.json", "--cores", "1", "--configfile", "config/smoke.yaml", cwd=root,
               check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "RuntimeError: planted failure for the test" in out
    assert len(out.splitlines()) < 80, out  # Snakemake's own job lines plus our < 50-line error
    assert '"cell_type"' not in out, "the raw notebook JSON must not be printed"
    html = root / "results" / "toy" / "theory" / "report.html"
    assert html.exists() and "planted failure for the test" in html.read_text()


@pytest.mark.slow
def test_rerun_triggers(smoke_run):
    run = ("--configfile", "config/smoke.yaml", "--cores", "2")
    assert NOTHING in smk("-n", *run, cwd=smoke_run).stdout
    # touching without a content change reruns nothing (Snakemake compares checksums of small inputs)
    for f in (smoke_run / "wsae_utils").rglob("*.py"):
        f.touch()
    assert NOTHING in smk("-n", *run, cwd=smoke_run).stdout
    # a real edit of the toy module reruns the toy notebooks (and what aggregates them), nothing else
    toy = smoke_run / "wsae_utils" / "toy" / "data.py"
    toy.write_text(toy.read_text() + "\n# edited\n")
    out = smk("-n", *run, cwd=smoke_run).stdout
    assert "toy_theory" in out
    assert "lm_train" not in out and "vision_backbone" not in out
