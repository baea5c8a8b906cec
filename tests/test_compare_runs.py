"""benchmarks/compare_runs.py: verdict changes are caught, numeric drift is measured on matched rows."""

import importlib.util
from pathlib import Path

import pandas as pd

spec = importlib.util.spec_from_file_location(
    "compare_runs", Path(__file__).parent.parent / "benchmarks" / "compare_runs.py")
compare_runs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_runs)


def _run(root: Path, fvu: float, verdict: str) -> Path:
    (root / "tables").mkdir(parents=True)
    (root / "summary").mkdir()
    pd.DataFrame({"layer": [4, 12], "sae": ["a0", "a1"], "fvu": [0.2, fvu]}).to_csv(root / "tables" / "lm.csv",
                                                                                  index=False)
    pd.DataFrame({"claim": ["x", "y"], "verdict": ["reproduced", verdict]}).to_csv(root / "summary" / "claims.csv",
                                                                                 index=False)
    return root


def test_same_verdicts_and_drift_measured(tmp_path):
    a, b = _run(tmp_path / "a", 0.40, "not decidable here"), _run(tmp_path / "b", 0.44, "not decidable here")
    numbers, verdicts = compare_runs.compare_runs(a, b)
    assert verdicts.same.all()
    fvu = numbers.set_index("column").loc["fvu"]
    assert abs(fvu.max_abs_diff - 0.04) < 1e-12 and abs(fvu.max_rel_diff - 0.04 / 0.44) < 1e-12
    assert fvu["where"] == "a1"
    assert compare_runs.main([str(a), str(b)]) == 0


def test_changed_verdict_fails(tmp_path):
    a, b = _run(tmp_path / "a", 0.4, "reproduced"), _run(tmp_path / "b", 0.4, "not reproduced")
    _, verdicts = compare_runs.compare_runs(a, b)
    assert not verdicts.same.all()
    assert compare_runs.main([str(a), str(b)]) == 1
