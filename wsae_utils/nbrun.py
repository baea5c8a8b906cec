"""Execute a jupytext `py:percent` notebook with papermill and render it to HTML.

The one runner every notebook goes through (Snakemake's `run_notebook.py` and users by hand): parameters
pass as Python objects (no YAML round trip that turns 1e-05 into a string), the kernel is named explicitly,
and the executed .ipynb is written even when a cell fails (papermill marks the failing cell).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

KERNEL = "python3"


def notebook_parameters(source: str | Path) -> dict[str, Any]:
    """Names and default values of the `parameters` cell of a jupytext source (literals only, else an error)."""
    import papermill

    nb = _read(source, KERNEL)
    out = {}
    for name, info in papermill.inspect_notebook(nb).items():
        try:
            out[name] = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError) as err:
            raise ValueError(f"{source}: parameter {name} = {info['default']} is not a literal") from err
    return out


def _read(source: str | Path, kernel_name: str):
    """jupytext source → notebook node with an explicit kernelspec (jupytext sources carry none)."""
    import jupytext

    nb = jupytext.read(source)
    nb.metadata["kernelspec"] = {"name": kernel_name, "display_name": "Python 3", "language": "python"}
    return nb


def execute_notebook(
    source: str | Path,
    output_ipynb: str | Path,
    parameters: dict[str, Any] | None = None,
    output_html: str | Path | None = None,
    kernel_name: str = KERNEL,
    cwd: str | Path | None = None,
    execution_timeout: int | None = None,
    log_output: bool = False,
) -> Path:
    """Run `source` with `parameters`, write the executed notebook (and HTML); raise on a failing cell.

    Parameters unknown to the notebook's `parameters` cell are refused before any execution.
    """
    import papermill

    parameters = dict(parameters or {})
    nb = _read(source, kernel_name)
    declared = set(papermill.inspect_notebook(nb))
    unknown = sorted(set(parameters) - declared)
    if unknown:
        raise ValueError(f"{source}: parameters {unknown} are not declared in its parameters cell {sorted(declared)}")
    output_ipynb = Path(output_ipynb)
    output_ipynb.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        nb,
        str(output_ipynb),
        parameters=parameters,
        kernel_name=kernel_name,
        cwd=str(cwd) if cwd else None,
        execution_timeout=execution_timeout,
        log_output=log_output,
        progress_bar=False,
        start_timeout=180,
    )
    if output_html is not None:
        render_html(output_ipynb, output_html)
    return output_ipynb


def render_html(ipynb: str | Path, html: str | Path) -> Path:
    """Render an executed notebook to a standalone HTML report (written atomically)."""
    import nbformat
    from nbconvert import HTMLExporter

    from .results import atomic_write_text

    nb = nbformat.read(str(ipynb), as_version=4)
    body, _ = HTMLExporter().from_notebook_node(nb)
    return atomic_write_text(html, body)
