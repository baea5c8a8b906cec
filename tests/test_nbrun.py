import json

import nbformat
import pytest

from wsae_utils.nbrun import execute_notebook, notebook_parameters

NB = '''# %% [markdown]
# # tiny

# %% tags=["parameters"]
lr = 1.0e-3
name = "a"
out_dir = "results/dev/tiny"

# %%
import json, pathlib
pathlib.Path(out_dir).mkdir(parents=True, exist_ok=True)
assert isinstance(lr, float)
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


def test_failed_notebook_keeps_executed_ipynb(source, tmp_path):
    from papermill.exceptions import PapermillExecutionError

    with pytest.raises(PapermillExecutionError):
        execute_notebook(source, tmp_path / "f.ipynb", {"name": "boom", "out_dir": str(tmp_path)})
    nb = nbformat.read(tmp_path / "f.ipynb", as_version=4)
    assert any("boom requested" in json.dumps(c.get("outputs", [])) for c in nb.cells)
