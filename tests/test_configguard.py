"""Config files are data: a file Snakemake would evaluate as a template is refused before anything runs."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from wsae_utils.run.configguard import ConfigFileError, check_configfile, cli_configfiles

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def _evil(marker: Path) -> str:
    """A YTE template whose `?`-key writes `marker` when evaluated."""
    return (f"__use_yte__: true\n?__import__('pathlib').Path({str(marker)!r}).write_text('ran') or 'title':\n"
            "  x\ndevice: cpu\n")


@pytest.mark.parametrize("text,needle", [
    ("__use_yte__: true\ndevice: cpu\n", "__use_yte__"),
    ("__use_yte__: false\ndevice: cpu\n", "__use_yte__"),  # inert today, but a template switch all the same
    ("__definitions__:\n  - import os\n", "__definitions__"),
    ("__variables__: {a: 1}\n", "__variables__"),
    ("lm:\n  ?if True:\n    layers: [1]\n", "lm.?if True"),
    ("title: !!python/name:os.system\n", "python/name"),
    ("title: !!python/object/apply:os.system ['true']\n", "python/object"),
    ("title: !!python/tuple [1, 2]\n", "python/tuple"),
    ('{"__use_yte__": true, "title": "x"}\n', "__use_yte__"),
])
def test_template_and_python_tags_refused(tmp_path, text, needle):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigFileError) as err:
        check_configfile(path)
    assert needle in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize("name", ["config.yaml", "smoke.yaml", "paper.yaml"])
def test_shipped_configs_pass(name):
    check_configfile(REPO / "config" / name)


def test_configfiles_found_as_snakemake_parses_them():
    assert cli_configfiles(["-n", "--configfile", "a.yaml", "b.yaml", "--cores", "1"]) == ["a.yaml", "b.yaml"]
    assert cli_configfiles(["--configfile=a.yaml"]) == ["a.yaml"]
    assert cli_configfiles(["--configfiles", "a.yaml"]) == ["a.yaml"]
    assert cli_configfiles(["-n"]) == []


@pytest.mark.parametrize("profile", [[], ["--workflow-profile", "workflow/profiles/default"]])
def test_snakemake_never_evaluates_a_templated_configfile(tmp_path, profile):
    """Plain `snakemake -n` (the default profile is found next to the Snakefile) and `make run`'s profile."""
    marker = tmp_path / "MARKER"
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(_evil(marker))
    proc = subprocess.run([SNAKEMAKE, "-n", *profile, "--configfile", str(cfg), "--directory", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ})
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-2000:]
    assert not marker.exists(), "the config file's code ran"
    assert "__use_yte__" in out and str(cfg) in out, out[-2000:]
    assert not (tmp_path / "results").exists()


def test_without_the_profile_the_snakefile_still_refuses(tmp_path):
    """`--workflow-profile none` skips the guard: Snakemake evaluates the template while reading the command line
    (the marker proves the test would see code run), and the Snakefile's own check then refuses the run."""
    marker = tmp_path / "MARKER"
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(_evil(marker))
    proc = subprocess.run([SNAKEMAKE, "-n", "--workflow-profile", "none", "--configfile", str(cfg), "--directory",
                           str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ})
    assert proc.returncode != 0 and marker.exists()
    assert "__use_yte__" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()
