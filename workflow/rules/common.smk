# Shared helpers: config validation, source lists (rerun triggers), notebook template rule, report registry.
import sys
from pathlib import Path

from wsae_utils.config import validate_config

validate_config(config)

REPO = Path(workflow.basedir)
CORE_MODULES = ["__init__", "config", "sae", "train", "metrics", "results", "nbrun", "plots"]


wildcard_constraints:
    layer=r"\d+",
    alpha=r"\d+(\.\d+)?",


def notebook(name):
    """Path of a notebook source (absolute, so `--directory` runs find it)."""
    return str(REPO / "notebooks" / f"{name}.py")


def code(*modules):
    """wsae_utils sources a notebook depends on: editing one reruns exactly the notebooks that use it."""
    return [str(REPO / "wsae_utils" / f"{m}.py") for m in CORE_MODULES + list(modules)]


def section_enabled(section):
    """Whether config[section] exists and is switched on."""
    return section in config and config[section].get("enabled", True)


def gpu_jobs():
    """GPU slots a notebook job takes: 1 when it will run on a GPU (device cuda, or auto with CUDA present)."""
    if config["device"] == "cpu":
        return 0
    if config["device"] == "cuda":
        return 1
    import torch

    return int(torch.cuda.is_available())


def notebook_params(section, unit, out_dir, **extra):
    """Parameters for one notebook run: the config block of that unit plus output location and device."""
    params = dict(config[section].get(unit, {}))
    params.update(out_dir=out_dir, device=config["device"])
    params.update(extra)
    return params


# Registry filled by the experiment rule files; aggregate.smk turns it into results/index.html.
REPORTS = []  # (section, label, html path)
TABLES = []  # (caption, csv path)


def summary_reports():
    """[section, label, metrics.json] of every report registered by the experiment rule files."""
    return [[s, label, html.replace("report.html", "metrics.json")] for s, label, html in REPORTS]
