"""A copy of the workflow sources in a temporary folder, so workflow tests can run and edit it freely."""

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("Snakefile", "profiles", "workflow", "config", "notebooks", "wsae_utils", "environment.yml",
           "environment.post-deploy.sh", "pyproject.toml")


def copy_workflow(root: Path) -> Path:
    """Copy the workflow sources into `root` and link the embedded data (resources/ is large and read-only)."""
    for name in SOURCES:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, root / name)
    (root / "resources").symlink_to(REPO / "resources")
    return root
