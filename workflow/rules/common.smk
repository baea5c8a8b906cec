# Shared helpers: config resolution and validation, source lists (rerun triggers), notebook parameters, registry.
import os
from pathlib import Path

from wsae_utils.hardware import resolve_device
from wsae_utils.run.config import validate_config
from wsae_utils.run.sources import import_closure
from wsae_utils.run.configguard import ConfigFileError, check_configfiles
from wsae_utils.paths import PACKAGE_DIR, REPO_ENV, value_tag

REPO = Path(workflow.basedir)
# Notebooks (kernels inherit the environment) find the checkout's embedded data even under --directory.
os.environ.setdefault(REPO_ENV, str(REPO))

# Config files are data. The workflow profile refuses a templated --configfile before Snakemake reads it
# (wsae_utils.run.configguard); this second check also refuses it under `--workflow-profile none`.
try:
    check_configfiles(workflow.config_settings.configfiles)
except ConfigFileError as err:
    raise WorkflowError(str(err)) from None

# Resolve every notebook's parameters (notebook defaults overlaid with the config) and check them before any job;
# `device: auto` becomes the device it means, so `--config device=cpu` on a CPU machine is the same run.
validate_config(config, notebook_dir=REPO / "notebooks")
config["device"] = resolve_device(config["device"])


wildcard_constraints:
    layer=r"\d+",
    alpha=r"[0-9][0-9.e+-]*",


def notebook(name):
    """Path of a notebook source (absolute, so `--directory` runs find it)."""
    return str(REPO / "notebooks" / f"{name}.py")


def code(name):
    """wsae_utils sources notebook `name` runs (its import closure plus the runner's, read from the sources where the
    package is imported from): editing one reruns exactly the notebooks that use it, and no list can drift."""
    sources = [REPO / "notebooks" / f"{name}.py", REPO / "workflow" / "scripts" / "run_notebook.py"]
    return [str(f) for f in import_closure(*sources, package_dir=PACKAGE_DIR)]


def section_enabled(section):
    """Whether config[section] exists and is switched on."""
    return section in config and config[section].get("enabled", True)


def gpu_jobs():
    """GPU slots a notebook job takes: 1 when the run's (resolved) device is CUDA."""
    return int(config["device"] == "cuda")


def notebook_params(section, unit, out_dir, **extra):
    """The exact parameters of one notebook run: its resolved config block, output folder, device and extras."""
    params = dict(config.get(section, {}).get(unit) or {})
    params.update(out_dir=out_dir, device=config["device"])
    params.update(extra)
    return params


def nb_logs(out_dir):
    """Logs of a notebook rule: the executed notebook and its HTML report (kept on failure) and the text log."""
    return {
        "notebook": f"{out_dir}/report.ipynb",
        "html": f"{out_dir}/report.html",
        "text": f"{out_dir}/run.log",
    }


# Registry filled by the experiment rule files; aggregate.smk turns it into the summary and results/index.html.
REPORTS = []  # (section, label, html path)
TABLES = []  # (caption, csv path)
FIGURES = []  # (caption, png path): the main figures, shown once in the index and tagged for --report
LINKS = []  # (section, label, html path): pages that are not notebook reports (the latent browser), in the index


def summary_reports():
    """[section, label, metrics.json] of every report registered by the experiment rule files."""
    return [[s, label, html.replace("report.html", "metrics.json")] for s, label, html in REPORTS]
