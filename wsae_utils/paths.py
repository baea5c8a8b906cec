"""Where the project's files are and how they are written: the checkout, embedded data found from any working
directory, output-folder tags, atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
"""The checkout when the package is installed editable (`make setup`); site-packages otherwise."""
REPO_ENV = "WSAE_REPO"
"""Set by the workflow to its checkout, so an installed (non-editable) package finds the embedded data too."""


def resolve_data_path(path: str | Path) -> Path:
    """A relative data path as given when it exists from the cwd, else relative to the checkout.

    Snakemake `--directory` runs start notebooks in another working directory; the embedded data stays in the
    checkout's resources/.
    """
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    for root in (os.environ.get(REPO_ENV), REPO_DIR):
        if root and (Path(root) / path).exists():
            return Path(root) / path
    return path


def value_tag(value: float) -> str:
    """Folder tag of a swept number (α etc.): exact to 10 significant digits, so distinct values never collide."""
    return format(float(value) + 0.0, ".10g")  # + 0.0: −0.0 is 0, and gets the folder tag "0", not "-0"


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write text through a temporary file and a rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path
