# Shared helpers: config resolution and validation, source lists (rerun triggers), notebook parameters, registry.
import os
from pathlib import Path
from types import SimpleNamespace

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


def workflow_path(path):
    """A rule input inside the checkout, relative to the working directory, so Snakemake's records (which store
    input paths as written) stay valid when the checkout moves with its results/ and .snakemake/; under
    `--directory` the relative path leads back to the checkout. A file outside the checkout (an installed,
    non-editable package) stays absolute."""
    path = Path(path).resolve()
    if not path.is_relative_to(REPO.resolve()):
        return str(path)
    return os.path.relpath(path, Path.cwd())


def notebook(name):
    """Path of a notebook source (relative to the working directory; `--directory` runs find it too)."""
    return workflow_path(REPO / "notebooks" / f"{name}.py")


def code(name):
    """wsae_utils sources notebook `name` runs (its import closure plus the runner's, read from the sources where the
    package is imported from): editing one reruns exactly the notebooks that use it, and no list can drift."""
    sources = [REPO / "notebooks" / f"{name}.py", REPO / "workflow" / "scripts" / "run_notebook.py"]
    return [workflow_path(f) for f in import_closure(*sources, package_dir=PACKAGE_DIR)]


def section_enabled(section):
    """Whether config[section] exists and is switched on."""
    return section in config and config[section].get("enabled", True)


SECTION_HEADINGS = {"toy": "Toy model", "lm": "Language model", "autointerp": "Auto-interpretability",
                    "vision": "Vision"}


def sections_not_run():
    """Headings of the sections this config switches off (the index says "not run" for them)."""
    off = [s for s in SECTION_HEADINGS if not section_enabled(s)]
    if "lm" in off and "autointerp" not in off:
        off.append("autointerp")  # it scores the lm section's SAEs
    return [SECTION_HEADINGS[s] for s in SECTION_HEADINGS if s in off]


def gpu_jobs():
    """GPU slots a notebook job takes: 1 when the run's (resolved) device is CUDA."""
    return int(config["device"] == "cuda")


def notebook_params(section, unit, out_dir, **extra):
    """The exact parameters of one notebook run: its resolved config block, output folder, device and extras."""
    params = dict(config.get(section, {}).get(unit) or {})
    params.update(out_dir=out_dir, device=config["device"])
    params.update(extra)
    return params


# Stands for a parameter that one unit of a wildcard job lacks (not a built-in value, so Snakemake records nothing).
ABSENT = object()


def nb_params(resolve, examples=(None,)):
    """Parameters of a notebook job, as `nb` (every resolved parameter for the runner; a function of `output`, which
    Snakemake treats as derived and leaves out of its records) and one `(name, value)` item per parameter, which it
    records one by one, so a rerun reason names the keys that changed: `before: ('steps', 3000) now: ('steps', 4000)`
    instead of two whole parameter dicts.

    `resolve` is the parameter dict, or a function of the wildcards returning it; `examples` are wildcard values
    whose parameter names together cover every job of the rule (e.g. each toy unit)."""
    if not callable(resolve):
        fixed = resolve
        resolve = lambda wildcards: fixed
    names = list(dict.fromkeys(k for w in examples for k in resolve(w)))
    items = {"nb": lambda wildcards, output: resolve(wildcards)}
    for name in names:
        items[f"p_{name}"] = lambda wildcards, name=name: (
            (name, resolve(wildcards)[name]) if name in resolve(wildcards) else ABSENT)
    return items


def wildcard_examples(**values):
    """Wildcard objects for `nb_params(examples=...)`: one per value of the one wildcard named."""
    (name, options), = values.items()
    return [SimpleNamespace(**{name: str(v)}) for v in options]


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


def figure_caption_map(metrics_paths):
    """{figure name in results/summary/report_figures: caption} for the captions of `snakemake --report`."""
    from wsae_utils.run.claims_index import figure_captions

    out = {}
    for metrics in metrics_paths:
        unit = Path(metrics).parent
        tag = "_".join(unit.parts[1:])
        out.update({f"{tag}__{Path(f).stem}": c for c, f in figure_captions(unit / "figures")})
    return out


def summary_reports():
    """[section, label, metrics.json] of every report registered by the experiment rule files."""
    return [[s, label, html.replace("report.html", "metrics.json")] for s, label, html in REPORTS]
