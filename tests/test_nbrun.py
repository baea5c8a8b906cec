import json

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
