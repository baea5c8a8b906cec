"""Execute a jupytext `py:percent` notebook with papermill and render it as a report.

The one runner every notebook goes through (Snakemake's `run_notebook.py` and users by hand): parameters
pass as Python objects (no YAML round trip that turns 1e-05 into a string), the kernel is named explicitly,
and the executed .ipynb and its HTML are written even when a cell fails (papermill marks the failing cell).
Console noise stays out of reports: stderr streams (progress bars, library warnings) move from the executed
notebook to the run's text log, and the HTML folds code cells so a report reads as prose, tables and figures.
The resolved parameters (defaults plus injected) reach the kernel through `reportkit.PARAMS_ENV` and the report
header (once, folded, changed values highlighted); the log's progress is echoed to the console at a bounded rate
(`console_tee`). Until the run ends, the HTML report is a page saying it has not finished, and a failed run's
report carries a banner naming the failing cell: no killed or failed job leaves a report that looks finished.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any

from wsae_utils.paths import PACKAGE_DIR, atomic_write_text
from wsae_utils.run.console_tee import CELLS_DESC, ConsoleTee, console_interval
from wsae_utils.run.reportkit import PARAMS_ENV, parameter_rows, parameters_env
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


def _stamp(ipynb: Path, parameters: dict[str, Any], defaults: dict[str, Any], cwd: str | Path | None,
           status: dict[str, str]) -> None:
    """Put the report header's facts into the notebook's metadata: machine, precisions, parameters, run status.

    The machine line and the precisions are the ones the kernel wrote into `{out_dir}/metrics.json`. A job that
    wrote none (a failed cell) gets the runner's machine line: same machine, same environment (this costs a torch
    import, ~2 s, which a finished job saves). The parameters are the resolved ones (defaults plus injected), each
    marked when the run changed it.
    """
    import json

    import nbformat

    nb = nbformat.read(str(ipynb), as_version=4)
    stamp: dict[str, Any] = {"machine": None, "precision": [],
                             "parameters": parameter_rows(defaults, parameters), "status": status}
    if "out_dir" in parameters and status.get("state") == "finished":
        metrics = Path(cwd or ".") / str(parameters["out_dir"]) / "metrics.json"
        try:
            prov = json.loads(metrics.read_text())["provenance"]
            stamp["precision"] = prov.get("precision", [])
            stamp["machine"] = prov.get("machine_summary")
        except (OSError, ValueError, KeyError):
            pass  # a job that wrote no metrics.json: the header shows the machine only
    if stamp["machine"] is None:
        from wsae_utils.hardware import machine_summary

        stamp["machine"] = machine_summary(parameters.get("num_threads"))
    nb.metadata["wsae"] = stamp
    nbformat.write(nb, str(ipynb))


def _placeholder(html: Path, source: str | Path, log: Path | None) -> None:
    """The report page while the notebook runs: says plainly that it has not finished (stays so if killed)."""
    import datetime as dt
    from html import escape

    started = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    where = f" Progress and errors: <code>{escape(log.name)}</code> next to this file." if log is not None else ""
    atomic_write_text(html, (
        "<!doctype html><html><head><meta charset='utf-8'><title>NOT FINISHED: "
        f"{escape(Path(source).stem)}</title></head><body style='font-family:sans-serif;margin:2em'>"
        f"<h1 style='color:#a00'>Not finished</h1><p class='wsae-not-finished'>The notebook "
        f"<code>{escape(str(source))}</code> started at {escape(started)} and has not finished: it is still "
        "running, or it was stopped before it could write its report. Rerun its rule to get the report."
        f"{where}</p></body></html>\n"))


def _error_summary(source: str | Path, err: Exception, ipynb: Path, html: Path | None, max_lines: int = 30) -> str:
    """A short console message for a failed cell: where, what, the tail of the traceback, where the report is."""
    tb = [_ANSI.sub("", line) for line in getattr(err, "traceback", []) or []]
    tail = "\n".join("\n".join(tb).splitlines()[-max_lines:])
    head = f"{getattr(err, 'ename', type(err).__name__)}: {_ANSI.sub('', str(getattr(err, 'evalue', err)))}"
    where = f"cell {getattr(err, 'exec_count', '?')}"
    report = html if html is not None and html.exists() else ipynb
    return f"notebook {source} failed in {where}: {head}\n{tail}\npartial report: {report}"


THREAD_POOLS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                "RAYON_NUM_THREADS")
"""Environment variables that size the thread pools a kernel may start (torch/OpenMP, MKL, OpenBLAS under NumPy,
numexpr, Rust's rayon under HF tokenizers)."""


def thread_env(threads: int | None) -> dict[str, str]:
    """Kernel environment that keeps every thread pool at `threads` (empty for None).

    Without it a 1-thread job's NumPy BLAS or tokenizer pool starts one thread per core: on a 2-core machine
    running two jobs, the jobs then time-share the cores and each sits at ~75-85 % of a core (measured in the
    jobs' benchmark files), which the scheduler cannot see.
    """
    if not threads:
        return {}
    env = {k: str(int(threads)) for k in THREAD_POOLS}
    if threads == 1:
        env["TOKENIZERS_PARALLELISM"] = "false"
    return env


def execute_notebook(
    source: str | Path,
    output_ipynb: str | Path,
    parameters: dict[str, Any] | None = None,
    output_html: str | Path | None = None,
    kernel_name: str = KERNEL,
    cwd: str | Path | None = None,
    execution_timeout: int | None = None,
    log_path: str | Path | None = None,
    threads: int | None = None,
) -> Path:
    """Run `source` with `parameters`, write the executed notebook and its HTML; raise `NotebookError` on failure.

    Parameters unknown to the notebook's `parameters` cell are refused before any execution. With `log_path`,
    progress bars and other stderr output of the run go to that text file instead of the report. `threads` caps
    every thread pool of the kernel (`thread_env`), so a job uses the cores its rule declared and no more.
    """
    import papermill

    parameters = dict(parameters or {})
    defaults = notebook_defaults(source)
    declared = set(defaults)
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
    if html is not None:
        _placeholder(html, source, log)
    env = {PARAMS_ENV: parameters_env(defaults, parameters), **thread_env(threads)}  # the kernel inherits them
    if log is not None:
        env[LOG_ENV] = str(log.resolve())  # progress bars go to the log
    previous = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    failure: Exception | None = None
    label = str(parameters.get("out_dir") or output_ipynb.parent)
    cells_bar: dict[str, Any] | bool = False
    log_handle = None
    if log is not None:
        log_handle = open(log, "a", buffering=1)  # noqa: SIM115 (closed below, after the run)
        cells_bar = {"file": log_handle, "desc": CELLS_DESC, "ascii": True, "mininterval": min(5.0, console_interval())}
    try:
        with ConsoleTee(log, label) if log is not None else contextlib.nullcontext():
            papermill.execute_notebook(
                nb,
                str(output_ipynb),
                parameters=parameters,
                kernel_name=kernel_name,
                cwd=str(cwd) if cwd else None,
                execution_timeout=execution_timeout,
                progress_bar=cells_bar,
                start_timeout=180,
            )
    except papermill.PapermillExecutionError as err:
        failure = err
    finally:
        if log_handle is not None:
            log_handle.close()
        for k, v in previous.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    status = {"state": "finished"}
    if failure is not None:
        status = {"state": "failed", "cell": str(getattr(failure, "exec_count", "?")),
                  "error": f"{getattr(failure, 'ename', type(failure).__name__)}: "
                           f"{_ANSI.sub('', str(getattr(failure, 'evalue', failure)))}"[:500]}
    if output_ipynb.exists():
        _move_stderr(output_ipynb, log)
        _stamp(output_ipynb, parameters, defaults, cwd, status)
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

    nb = nbformat.read(str(ipynb), as_version=4)
    exporter = HTMLExporter(
        template_name="report",
        extra_template_basedirs=[str(TEMPLATE_DIR)],
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    body, _ = exporter.from_notebook_node(nb)
    return atomic_write_text(html, body)
