import json
import os

import nbformat
import pytest

from wsae_utils.run.nbrun import NotebookError, execute_notebook, notebook_parameters

NB = '''# %% [markdown]
# # tiny

# %% tags=["parameters"]
lr = 1.0e-3
name = "a"
out_dir = "results/dev/tiny"

# %%
import json, pathlib, sys, warnings
from wsae_utils.runlog import progress
pathlib.Path(out_dir).mkdir(parents=True, exist_ok=True)
assert isinstance(lr, float)
for _ in progress(range(3), desc="st" + "eps-bar"):
    pass
print("shown in" + " the report")
print("noise for" + " the log", file=sys.stderr)
warnings.warn("a library" + " warning")
if name == "boom":
    raise RuntimeError("boom requested")
pathlib.Path(out_dir, "metrics.json").write_text(json.dumps({"lr": lr, "name": name}))
'''


@pytest.fixture
def source(tmp_path):
    p = tmp_path / "tiny.py"
    p.write_text(NB)
    return p


def test_parameters_pass_as_python_objects(source, tmp_path):
    assert notebook_parameters(source) == {"lr": 1e-3, "name": "a", "out_dir": "results/dev/tiny"}
    out = tmp_path / "run"
    execute_notebook(source, out / "report.ipynb", {"lr": 1e-05, "out_dir": str(out)}, out / "report.html")
    assert json.loads((out / "metrics.json").read_text()) == {"lr": 1e-05, "name": "a"}
    assert (out / "report.html").read_text().count("tiny") > 0


def test_unknown_parameter_refused_before_running(source, tmp_path):
    with pytest.raises(ValueError, match="not declared"):
        execute_notebook(source, tmp_path / "x.ipynb", {"learning_rate": 1})
    assert not (tmp_path / "x.ipynb").exists()


def test_progress_and_stderr_go_to_the_log_not_the_report(source, tmp_path):
    out = tmp_path / "run"
    execute_notebook(source, out / "report.ipynb", {"out_dir": str(out)}, out / "report.html", log_path=out / "run.log")
    report = (out / "report.html").read_text()
    nb = json.dumps(nbformat.read(out / "report.ipynb", as_version=4).cells)
    for text in (report, nb):
        assert "shown in the report" in text
        assert "noise for the log" not in text and "steps-bar" not in text and "a library warning" not in text
    log = (out / "run.log").read_text()
    assert "noise for the log" in log and "steps-bar" in log and "a library warning" in log
    assert "<details" in report  # code cells are folded


def test_failed_notebook_leaves_html_and_a_short_error(source, tmp_path):
    out = tmp_path / "f"
    with pytest.raises(NotebookError) as err:
        execute_notebook(source, out / "report.ipynb", {"name": "boom", "out_dir": str(out)}, out / "report.html",
                         log_path=out / "run.log")
    message = str(err.value)
    assert "RuntimeError: boom requested" in message and len(message.splitlines()) < 50
    assert "report.html" in message
    assert "boom requested" in (out / "report.html").read_text()
    nb = nbformat.read(out / "report.ipynb", as_version=4)
    assert any("boom requested" in json.dumps(c.get("outputs", [])) for c in nb.cells)
    assert "boom requested" in (out / "run.log").read_text()


PRECISION_NB = '''# %% tags=["parameters"]
out_dir = "results/dev/precision"
lm_dtype = "bfloat16"

# %%
from wsae_utils.hardware import resolve_precision
from wsae_utils.run.results import write_metrics
p = resolve_precision(lm_dtype, "cpu", "LM forward", cpu_verdict=(False, "AVX2 only (forced)"))
write_metrics(out_dir + "/metrics.json", {"dtype": p.dtype})
'''


def test_report_header_shows_machine_and_resolved_precision(tmp_path):
    src = tmp_path / "prec.py"
    src.write_text(PRECISION_NB)
    out = tmp_path / "run"
    execute_notebook(src, out / "report.ipynb", {"out_dir": str(out)}, out / "report.html")
    html = (out / "report.html").read_text()
    assert "Ran on:" in html and "torch " in html
    assert "LM forward: <b>bfloat16</b>" in html and "slow on this CPU, asked for explicitly" in html
    nb = nbformat.read(str(out / "report.ipynb"), as_version=4)
    assert nb.metadata["wsae"]["precision"][0]["slow_explicit"] is True


def test_report_shows_the_resolved_parameters_once_folded_with_changes_highlighted(source, tmp_path):
    from report_checks import header_rows

    out = tmp_path / "run"
    execute_notebook(source, out / "report.ipynb", {"lr": 1e-05, "out_dir": str(out)}, out / "report.html")
    html = (out / "report.html").read_text()
    assert html.count('class="wsae-params"') == 1 and '<details class="wsae-params">' in html  # folded
    assert header_rows(html) == (3, 2)  # lr, name, out_dir; lr and out_dir changed
    assert "1e-05" in html and "0.001" in html  # the run's value next to the default
    assert "lr = 1.0e-3" not in html, "the parameters cell itself is not rendered (shown once, in the header)"
    stamp = nbformat.read(out / "report.ipynb", as_version=4).metadata["wsae"]
    assert {p["name"]: p["changed"] for p in stamp["parameters"]} == {"lr": True, "name": False, "out_dir": True}
    assert stamp["status"] == {"state": "finished"}


def test_the_kernel_sees_the_resolved_parameters_and_metrics_record_them(tmp_path):
    src = tmp_path / "rec.py"
    src.write_text('''# %% tags=["parameters"]
out_dir = "results/dev/rec"
steps = 3
alphas = [0.0, 1.0]

# %%
from wsae_utils.run.reportkit import run_parameters
from wsae_utils.run.results import write_metrics
assert run_parameters() == {"out_dir": out_dir, "steps": 5, "alphas": [0.0, 1.0]}, run_parameters()
write_metrics(out_dir + "/metrics.json", {"x": 1})
''')
    out = tmp_path / "run"
    execute_notebook(src, out / "report.ipynb", {"out_dir": str(out), "steps": 5})
    settings = json.loads((out / "metrics.json").read_text())["provenance"]["settings"]
    assert settings == {"out_dir": str(out), "steps": 5, "alphas": [0.0, 1.0]}


def test_the_kernel_thread_pools_follow_the_rules_threads(tmp_path, monkeypatch):
    """A 1-thread job's kernel starts no extra BLAS/OpenMP/tokenizer threads (they would time-share a busy core);
    the runner's own environment is left as it was."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    src = tmp_path / "thr.py"
    src.write_text('''# %% tags=["parameters"]
out_dir = "results/dev/thr"

# %%
import os
import torch
from wsae_utils.run.results import write_metrics
env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                      "TOKENIZERS_PARALLELISM")}
write_metrics(out_dir + "/metrics.json", {"env": env, "torch_threads": torch.get_num_threads()})
''')
    out = tmp_path / "run"
    execute_notebook(src, out / "report.ipynb", {"out_dir": str(out)}, threads=1)
    got = json.loads((out / "metrics.json").read_text())
    assert got["env"] == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                          "TOKENIZERS_PARALLELISM": "false"}
    assert got["torch_threads"] == 1
    assert "OMP_NUM_THREADS" not in os.environ


def test_a_report_says_not_finished_until_the_run_ends(source, tmp_path, monkeypatch):
    """A job killed mid-run (here: interrupted) leaves a page that says so, never an empty or finished-looking one."""
    import papermill

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(papermill, "execute_notebook", killed)
    out = tmp_path / "k"
    with pytest.raises(KeyboardInterrupt):
        execute_notebook(source, out / "report.ipynb", {"out_dir": str(out)}, out / "report.html",
                         log_path=out / "run.log")
    html = (out / "report.html").read_text()
    assert "Not finished" in html and "has not finished" in html and "run.log" in html


def test_a_failed_report_carries_a_banner(source, tmp_path):
    out = tmp_path / "f"
    with pytest.raises(NotebookError):
        execute_notebook(source, out / "report.ipynb", {"name": "boom", "out_dir": str(out)}, out / "report.html")
    html = (out / "report.html").read_text()
    assert "Incomplete report: the notebook failed in cell" in html and "boom requested" in html


def test_progress_reaches_the_console_while_bars_stay_out_of_the_report(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("WSAE_CONSOLE_INTERVAL", "0.2")
    src = tmp_path / "slow.py"
    src.write_text('''# %% tags=["parameters"]
out_dir = "results/dev/slow"

# %%
import time
from wsae_utils.runlog import progress
for _ in progress(range(4), desc="slow" + "-steps"):
    time.sleep(0.4)
''')
    out = tmp_path / "run"
    execute_notebook(src, out / "report.ipynb", {"out_dir": str(out)}, out / "report.html", log_path=out / "run.log")
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(f"[{out}]")]
    assert lines and any("slow-steps" in line for line in lines), err
    assert any("cells" in line for line in lines), err
    assert len(lines) <= 12, "at most one line per interval"
    assert "slow-steps" not in (out / "report.html").read_text()
