"""What a notebook's source says without running it (stdlib only): its parameter defaults and the wsae_utils
files it runs (its static import closure).

The workflow lists this closure as each notebook rule's code inputs, so editing a module reruns exactly the
notebooks that import it, directly or through another module, and no hand-written list can drift from the imports.
"""

from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

PACKAGE = "wsae_utils"


def notebook_defaults(source: str | Path) -> dict[str, Any]:
    """Names and literal defaults of the `parameters` cell of a jupytext py:percent notebook (without running it)."""
    source = Path(source)
    text = source.read_text()
    match = re.search(r"^# %%[^\n]*tags=\[[^\]]*\"parameters\"[^\]]*\][^\n]*\n(.*?)(?=^# %%|\Z)", text, re.S | re.M)
    if not match:
        raise ValueError(f"{source}: no cell tagged 'parameters'")
    out: dict[str, Any] = {}
    for node in ast.parse(match.group(1)).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, value = node.targets[0].id, node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            name, value = node.target.id, node.value
        else:
            continue
        try:
            out[name] = ast.literal_eval(value)
        except ValueError as err:
            raise ValueError(f"{source}: parameter {name} = {ast.unparse(value)} is not a literal") from err
    return out


def _module_files(name: str, package_dir: Path) -> list[Path]:
    """Files executed by importing dotted module `name` (every package __init__ on the way, then the module)."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return []
    files, here = [], package_dir
    files.append(here / "__init__.py")
    for i, part in enumerate(parts[1:], start=1):
        if (here / part).is_dir():
            here = here / part
            files.append(here / "__init__.py")
        elif (here / f"{part}.py").is_file():
            files.append(here / f"{part}.py")
            break
        else:
            raise ImportError(f"{'.'.join(parts[: i + 1])} (imported as {name!r}) is not a module of {package_dir}")
    return [f for f in files if f.is_file()]


def imported_modules(source: Path, package_dir: Path) -> set[Path]:
    """wsae_utils files one source file imports directly (any import statement, also inside functions)."""
    source = Path(source)
    return set(_imported_modules(source, Path(package_dir), source.stat().st_mtime_ns))


@lru_cache(maxsize=1024)
def _imported_modules(source: Path, package_dir: Path, _mtime_ns: int) -> frozenset[Path]:
    """`imported_modules`, parsed once per file version: the workflow asks for ~20 notebooks' closures, which share
    most modules (5.6 of a dry run's 7.7 s went into parsing the same files again)."""
    tree = ast.parse(source.read_text(), filename=str(source))
    found: set[Path] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.update(_module_files(alias.name, package_dir))
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.level:  # relative: resolve against the importing file's package
                base = source.parent
                for _ in range(node.level - 1):
                    base = base.parent
                rel = base.relative_to(package_dir.parent).parts
                module = ".".join([*rel, node.module])
            else:
                module = node.module
            found.update(_module_files(module, package_dir))
            for alias in node.names:  # `from pkg import module` imports that module too
                sub = f"{module}.{alias.name}"
                try:
                    found.update(_module_files(sub, package_dir))
                except ImportError:
                    pass  # an attribute, not a module
    return frozenset(found)


def import_closure(*sources: Path, package_dir: Path) -> list[Path]:
    """Every wsae_utils file the sources import, transitively, sorted (the sources themselves excluded)."""
    seen: set[Path] = set()
    todo = [Path(s) for s in sources]
    while todo:
        for f in imported_modules(todo.pop(), package_dir):
            if f not in seen:
                seen.add(f)
                todo.append(f)
    return sorted(seen)
