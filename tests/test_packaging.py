"""environment.yml and pyproject.toml declare the same dependencies with the same lower bounds."""

import tomllib

import yaml


def test_environment_matches_pyproject():
    with open("pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    declared = set(project["dependencies"])
    for extra in ("workflow", "test"):
        declared |= set(project["optional-dependencies"][extra])
    with open("environment.yml") as f:
        env = yaml.safe_load(f)
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert set(pip) == declared
    assert "python>=3.11" in env["dependencies"] and project["requires-python"] == ">=3.11"


def test_ruff_clean():
    import subprocess
    import sys
    from pathlib import Path

    ruff = Path(sys.executable).parent / "ruff"
    proc = subprocess.run(
        [str(ruff), "check", "wsae_utils", "tests", "notebooks", "benchmarks", "workflow/scripts"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
