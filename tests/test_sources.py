"""Static reading of sources: notebook parameter defaults, import closures (the rules' code inputs), and config
validation that needs no torch."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from wsae_utils.paths import PACKAGE_DIR
from wsae_utils.run.sources import import_closure, imported_modules

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.py"))
RUNNER = REPO / "workflow" / "scripts" / "run_notebook.py"


def test_closure_follows_imports_transitively_and_through_package_inits(tmp_path):
    pkg = tmp_path / "wsae_utils"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "leaf.py").write_text("X = 1\n")
    (pkg / "sub" / "mid.py").write_text("def f():\n    from wsae_utils.leaf import X  # a function-level edge\n")
    (pkg / "unused.py").write_text("")
    nb = tmp_path / "nb.py"
    nb.write_text("from wsae_utils.sub import mid as M\nimport numpy\n")
    got = {str(f.relative_to(pkg)) for f in import_closure(nb, package_dir=pkg)}
    assert got == {"__init__.py", "sub/__init__.py", "sub/mid.py", "leaf.py"}
    (pkg / "sub" / "mid.py").write_text("from wsae_utils.missing import Y\n")
    with pytest.raises(ImportError, match="wsae_utils.missing"):
        imported_modules(pkg / "sub" / "mid.py", pkg)


_DYNAMIC = textwrap.dedent("""
    import ast, json, sys
    out = {}
    for path in sys.argv[1:]:
        for name in [m for m in sys.modules if m == "wsae_utils" or m.startswith("wsae_utils.")]:
            del sys.modules[name]
        tree = ast.parse(open(path).read())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and "wsae_utils" in ast.unparse(node):
                exec(compile(ast.Module([node], []), path, "exec"), {})
        out[path] = sorted({m.__file__ for n, m in sys.modules.items()
                            if (n == "wsae_utils" or n.startswith("wsae_utils.")) and getattr(m, "__file__", None)})
    print(json.dumps(out))
""")


def test_static_closure_covers_every_module_a_notebook_really_imports():
    """Import each notebook's wsae_utils imports for real: every module loaded must be in its rule's code inputs."""
    sources = [*NOTEBOOKS, RUNNER]
    proc = subprocess.run([sys.executable, "-c", _DYNAMIC, *map(str, sources)], capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    runner = set(import_closure(RUNNER, package_dir=PACKAGE_DIR))
    for nb in NOTEBOOKS:
        static = {str(f) for f in import_closure(nb, package_dir=PACKAGE_DIR)} | {str(f) for f in runner}
        missing = sorted(set(loaded[str(nb)]) - static)
        assert not missing, f"{nb.name} imports {missing}, which its rule's code inputs do not list"


def test_lm_pass_code_holds_no_sae_module():
    """A trainer or SAE edit must not rerun the LM pass: lm_acts's closure holds no core/ module."""
    closure = import_closure(REPO / "notebooks" / "lm_acts.py", RUNNER, package_dir=PACKAGE_DIR)
    names = {str(f.relative_to(PACKAGE_DIR)) for f in closure}
    assert "paths.py" in names and "lm/text.py" in names
    assert not any(n.startswith("core/") for n in names), sorted(names)


_NO_TORCH = textwrap.dedent("""
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "transformers", "numpy", "pandas"):
                raise ImportError(f"blocked in this test: {name}")
    sys.meta_path.insert(0, Block())
    import yaml
    from wsae_utils.run.config import resolve_config
    for path in sys.argv[1:]:
        cfg = yaml.safe_load(open(path)) if path != "-" else {}
        cfg["device"] = "cpu"
        resolve_config(cfg)
    from wsae_utils.run.config import ConfigError
    try:
        resolve_config({"device": "cpu", "lm": {"acts": {"model": "gpt-17"}}})
    except ConfigError as err:
        assert "gpt-17" in str(err), err
    else:
        raise SystemExit("an unknown model was accepted")
    print("validated without torch:", sorted(m for m in sys.modules if m.startswith("wsae_utils")))
""")


def test_config_validation_imports_no_torch():
    configs = ["-", *map(str, sorted((REPO / "config").glob("*.yaml")))]
    proc = subprocess.run([sys.executable, "-c", _NO_TORCH, *configs], capture_output=True, text=True, timeout=120,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "validated without torch" in proc.stdout
