"""Execute a jupytext `py:percent` notebook with papermill and render it as a report.

The one runner every notebook goes through (Snakemake's `run_notebook.py` and users by hand): parameters
pass as Python objects (no YAML round trip that turns 1e-05 into a string), the kernel is named explicitly,
and the executed .ipynb and its HTML are written even when a cell fails (papermill marks the failing cell).
Console noise stays out of reports: stderr streams (progress bars, library warnings) move from the executed
notebook to the run's text log, and the HTML folds code cells so a report reads as prose, tables and figures.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from wsae_utils.paths import PACKAGE_DIR
from wsae_utils.run.sources import notebook_defaults
from wsae_utils.runlog import LOG_ENV

KERNEL = "python3"
TEMPLATE_DIR = PACKAGE_DIR / "templates"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class NotebookError(RuntimeError):
    """A notebook cell failed; the message is short (the cell's error), the partial report is on disk."""


def notebook_parameters(source: str | Path) -> dict[str, Any]:
    """Names and default values of the `parameters` cell of a jupytext source (literals only, else an error)."""
    return notebook_defaults(source)


def _read(source: str | Path, kernel_name: str):
    """jupytext source → notebook node with an explicit kernelspec (jupytext sources carry none)."""
    import jupytext

    nb = jupytext.read(source)
    nb.metadata["kernelspec"] = {"name": kernel_name, "display_name": "Python 3", "language": "python"}
    return nb


def _move_stderr(ipynb: Path, log_path: Path | None) -> None:
    """Drop stderr stream outputs from the executed notebook, appending their text to the run log."""
    import nbformat

    nb = nbformat.read(str(ipynb), as_version=4)
    moved = []
    for cell in nb.cells:
        keep = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                moved.append(out.get("text", ""))
            else:
                keep.append(out)
        if "outputs" in cell:
            cell["outputs"] = keep
    if moved:
        nbformat.write(nb, str(ipynb))
        if log_path is not None:
            with open(log_path, "a") as f:
                f.write("".join(moved))


def _stamp_machine(ipynb: Path, parameters: dict[str, Any], cwd: str | Path | None) -> None:
    """Put the machine line and the job's resolved precisions into the notebook's metadata (the report header).

    The precisions are the ones the kernel wrote into `{out_dir}/metrics.json`; the runner is on the same machine
    with the same environment, so its CPU line is the kernel's.
    """
    import json

    import nbformat

    from wsae_utils.hardware import machine_summary

    nb = nbformat.read(str(ipynb), as_version=4)
    stamp: dict[str, Any] = {"machine": machine_summary(parameters.get("num_threads")), "precision": []}
    if "out_dir" in parameters:
        metrics = Path(cwd or ".") / str(parameters["out_dir"]) / "metrics.json"
        try:
            stamp["precision"] = json.loads(metrics.read_text())["provenance"].get("precision", [])
        except (OSError, ValueError, KeyError):
            pass  # a failed job has no metrics.json: the header shows the machine only
    nb.metadata["wsae"] = stamp
    nbformat.write(nb, str(ipynb))


def _error_summary(source: str | Path, err: Exception, ipynb: Path, html: Path | None, max_lines: int = 30) -> str:
    """A short console message for a failed cell: where, what, the tail of the traceback, where the report is."""
    tb = [_ANSI.sub("", line) for line in getattr(err, "traceback", []) or []]
    tail = "\n".join("\n".join(tb).splitlines()[-max_lines:])
    head = f"{getattr(err, 'ename', type(err).__name__)}: {_ANSI.sub('', str(getattr(err, 'evalue', err)))}"
    where = f"cell {getattr(err, 'exec_count', '?')}"
    report = html if html is not None and html.exists() else ipynb
    return f"notebook {source} failed in {where}: {head}\n{tail}\npartial report: {report}"


def execute_notebook(
    source: str | Path,
    output_ipynb: str | Path,
    parameters: dict[str, Any] | None = None,
    output_html: str | Path | None = None,
    kernel_name: str = KERNEL,
    cwd: str | Path | None = None,
    execution_timeout: int | None = None,
    log_path: str | Path | None = None,
) -> Path:
    """Run `source` with `parameters`, write the executed notebook and its HTML; raise `NotebookError` on failure.

    Parameters unknown to the notebook's `parameters` cell are refused before any execution. With `log_path`,
    progress bars and other stderr output of the run go to that text file instead of the report.
    """
    import papermill

    parameters = dict(parameters or {})
    declared = set(notebook_defaults(source))
    unknown = sorted(set(parameters) - declared)
    if unknown:
        raise ValueError(f"{source}: parameters {unknown} are not declared in its parameters cell {sorted(declared)}")
    nb = _read(source, kernel_name)
    output_ipynb = Path(output_ipynb)
    output_ipynb.parent.mkdir(parents=True, exist_ok=True)
    html = Path(output_html) if output_html is not None else None
    log = Path(log_path) if log_path is not None else None
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"executing {source} → {output_ipynb}\n")
    previous = os.environ.get(LOG_ENV)
    if log is not None:
        os.environ[LOG_ENV] = str(log.resolve())  # the kernel inherits it: progress bars go to the log
    failure: Exception | None = None
    try:
        papermill.execute_notebook(
            nb,
            str(output_ipynb),
            parameters=parameters,
            kernel_name=kernel_name,
            cwd=str(cwd) if cwd else None,
            execution_timeout=execution_timeout,
            progress_bar=False,
            start_timeout=180,
        )
    except papermill.PapermillExecutionError as err:
        failure = err
    finally:
        if log is not None:
            if previous is None:
                os.environ.pop(LOG_ENV, None)
            else:
                os.environ[LOG_ENV] = previous
    if output_ipynb.exists():
        _move_stderr(output_ipynb, log)
        _stamp_machine(output_ipynb, parameters, cwd)
        if html is not None:
            render_html(output_ipynb, html)
    if failure is not None:
        message = _error_summary(source, failure, output_ipynb, html)
        if log is not None:
            with open(log, "a") as f:
                f.write(message + "\n")
        raise NotebookError(message) from None
    return output_ipynb


def render_html(ipynb: str | Path, html: str | Path) -> Path:
    """Render an executed notebook to a standalone HTML report (code folded, no prompts; written atomically)."""
    import nbformat
    from nbconvert import HTMLExporter

    from wsae_utils.paths import atomic_write_text

    nb = nbformat.read(str(ipynb), as_version=4)
    exporter = HTMLExporter(
        template_name="report",
        extra_template_basedirs=[str(TEMPLATE_DIR)],
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    body, _ = exporter.from_notebook_node(nb)
    return atomic_write_text(html, body)
