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
def test_snakemake_report_holds_claims_tables_figures_and_reports(smoke_run):
    smk("--configfile", "config/smoke.yaml", "--report", "report.html", cwd=smoke_run)
    text = (smoke_run / "report.html").read_text()
    assert "1. Claims" in text and "claims.html" in text and "verdicts.png" in text
    assert "2. Tables" in text and "toy_theory.html" in text  # tables as HTML tables, not CSV downloads
    assert "3. Figures" in text and "recovery_vs_sparsity.png" in text
    assert "Fig. 2 analogue" in text, "figures carry the caption their notebook recorded"
    assert "4. Reports" in text and "toy_theory.html" in text and "lm_summary.html" in text
    assets = smoke_run / "results" / "summary"
    assert {p.name for p in (assets / "report_pages").glob("*.html")} >= {"toy_wsae.html", "summary.html"}
    assert "<table" in (assets / "report_tables" / "toy_theory.html").read_text()


@pytest.mark.slow
def test_every_report_reads_as_a_report(smoke_run):
    """One conclusion, not empty, last; no Python reprs or raw TeX; tables scroll; parameters once, folded."""
    from report_checks import check_report

    reports = sorted((smoke_run / "results").glob("**/report.html"))
    assert len(reports) >= 14
    problems = {str(r.relative_to(smoke_run)): check_report(r.read_text()) for r in reports}
    assert not any(problems.values()), {k: v for k, v in problems.items() if v}


@pytest.mark.slow
def test_index_answers_each_claim_on_its_first_row_without_dead_links(smoke_run):
    from report_checks import IndexPage, dead_links

    from wsae_utils.run.results import CLAIMS

    res = smoke_run / "results"
    text = (res / "index.html").read_text()
    page = IndexPage(text)
    assert list(page.rows) == list(CLAIMS)
    for cid, row in page.rows.items():
        assert row["badge"] in ("reproduced", "not reproduced", "not decidable here"), (cid, row)
        assert row["key"].strip() and len(row["key"]) < 400, (cid, row["key"])
    assert dead_links(text, res) == []
    assert "summary/figures/verdicts.png" in text


@pytest.mark.slow
def test_index_first_screen_in_headless_chromium(smoke_run, tmp_path):
    """Every claim row, with its badge and key number, ends within a 1400 x 900 screen; no page wider than it."""
    if not shutil.which("chromium"):
        pytest.skip("no chromium (Debian: apt-get install chromium); workflow/scripts/screenshots.py needs it")
    proc = subprocess.run([sys.executable, str(REPO / "workflow/scripts/screenshots.py"), str(smoke_run / "results"),
                           "--out", str(tmp_path), "--pages", "index.html", "toy/sparsity/report.html"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "index.png").stat().st_size > 10_000


@pytest.mark.slow
def test_a_moved_checkout_reruns_nothing(smoke_run, tmp_path):
    """Rule inputs are recorded relative to the workflow, so a copy with results/ and .snakemake/ is up to date."""
    moved = tmp_path / "elsewhere" / "checkout"
    shutil.copytree(smoke_run, moved, symlinks=True)  # copy2 keeps the mtimes, as `mv` or `cp -a` do
    out = smk("-n", "--configfile", "config/smoke.yaml", cwd=moved).stdout
    assert NOTHING in out, out[-3000:]


@pytest.mark.slow
def test_rerun_reason_names_the_changed_key(smoke_run):
    out = smk("-n", "--configfile", "config/smoke.yaml", "--config", 'toy={"wsae": {"steps": 101}}',
              cwd=smoke_run).stdout
    reasons = [line for line in out.splitlines() if "Params have changed" in line]
    assert reasons and all("('steps', 100)" in r and "('steps', 101)" in r for r in reasons), reasons
    assert all(len(r) < 400 for r in reasons), "the reason names the key, not two whole parameter sets"
    assert "rule toy:" in out and "lm_train" not in out


@pytest.mark.slow
def test_one_notebook_into_its_own_folder_leaves_the_full_run_byte_identical(smoke_run):
    """The README's recipe: `--directory runs/<name>`, the other sections off; the full run's files do not change."""
    import hashlib

    def digest():
        return {str(p.relative_to(smoke_run)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted((smoke_run / "results").rglob("*")) if p.is_file()}

    before = digest()
    try:
        smk("--directory", "runs/toy-wsae", "results/toy/wsae/metrics.json", "--cores", "2",
            "--configfile", "config/smoke.yaml", "--config", 'lm={"enabled": false}', 'vision={"enabled": false}',
            'autointerp={"enabled": false}', cwd=smoke_run)
        part = smoke_run / "runs" / "toy-wsae" / "results" / "toy" / "wsae"
        assert (part / "metrics.json").exists() and "Not finished" not in (part / "report.html").read_text()
        assert digest() == before
    finally:
        shutil.rmtree(smoke_run / "runs", ignore_errors=True)


def test_a_target_after_config_gets_a_clear_message(tmp_path):
    proc = smk("-n", "--config", "device=cpu", "results/tables/toy_wsae.csv", "--directory", str(tmp_path),
               check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "name targets before them" in out and "Traceback" not in out, out[-2000:]


def _declared_memory(dry_run: str) -> dict[str, int]:
    """{job folder: declared mem_mb} from a dry run's job listing (benchmark path and resources of each job)."""
    import re

    out, job = {}, None
    for line in dry_run.splitlines():
        m = re.match(r"\s+benchmark: results/(.+)/benchmark\.tsv", line)
        if m:
            job = m.group(1)
        m = re.match(r"\s+resources: .*\bmem_mb=(\d+)", line)
        if m and job:
            out[job], job = int(m.group(1)), None
    return out


ADDED_SINCE_PEAKS: tuple[str, ...] = ()  # every default job is measured (benchmarks/peak_memory.py)


def test_declared_memory_covers_the_measured_peaks(tmp_path):
    """mem_mb of every default job is at least 1.2 x its measured peak RSS on either CPU class (a cluster kills a
    job that goes over). Jobs added since that measurement (`ADDED_SINCE_PEAKS`: the latent pages, the human
    ratings, the SAEBench-style probes) are checked on the smoke run only
    (`test_smoke_jobs_stay_under_their_declared_memory`) until a default run measures them."""
    declared = _declared_memory(smk("-n", "--configfile", "config/config.yaml", "--directory", str(tmp_path)).stdout)
    peaks = pd.read_csv(REPO / "benchmarks" / "peak_memory.csv")
    assert set(peaks.job) <= set(declared), set(peaks.job) - set(declared)
    unmeasured = {j for j in set(declared) - set(peaks.job) if not j.startswith(ADDED_SINCE_PEAKS)}
    assert not unmeasured, f"jobs with no measured peak: {unmeasured}"
    short = {r.job: (declared[r.job], r.peak_rss_mb) for r in peaks.itertuples()
             if declared[r.job] < 1.2 * r.peak_rss_mb}
    assert not short, f"declared mem_mb below 1.2 x the measured peak: {short}"


@pytest.mark.slow
def test_smoke_jobs_stay_under_their_declared_memory(smoke_run):
    declared = _declared_memory(smk("-n", "--forceall", "--configfile", "config/smoke.yaml", cwd=smoke_run).stdout)
    assert declared
    for job, mem in declared.items():
        peak = pd.read_csv(smoke_run / "results" / job / "benchmark.tsv", sep="\t")["max_rss"].iloc[-1]
        assert peak < mem, (job, peak, mem)


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
