"""Notebook contract: every notebook has one literal-only `parameters` cell that declares all the workflow passes."""

from pathlib import Path

import jupytext
import pytest
import yaml

from wsae_utils.run.config import validate_config
from wsae_utils.run.nbrun import notebook_parameters

NOTEBOOKS = sorted(Path("notebooks").glob("*.py"))
SECTIONS = ("toy", "lm", "vision")


def _configs():
    for name in ("config", "smoke", "paper"):
        with open(f"config/{name}.yaml") as f:
            yield name, validate_config(yaml.safe_load(f))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_one_parameters_cell_of_literals(path):
    nb = jupytext.read(path)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path} must have exactly one cell tagged 'parameters'"
    params = notebook_parameters(path)  # raises if a default is not a literal
    assert {"out_dir", "device"} <= set(params), f"{path} must declare out_dir and device"
    assert nb.cells[0].cell_type == "markdown", f"{path} must open with a markdown cell saying what it is"


def _units(section_cfg):
    return {k: v for k, v in section_cfg.items() if isinstance(v, dict)}


@pytest.mark.parametrize("config_name,config", list(_configs()), ids=lambda v: v if isinstance(v, str) else "")
def test_config_blocks_match_notebook_parameters(config_name, config):
    declared = {p.stem: set(notebook_parameters(p)) for p in NOTEBOOKS}
    checked = 0
    for section in SECTIONS:
        for unit, block in _units(config.get(section, {})).items():
            name = f"{section}_{unit}"
            if name not in declared:
                continue  # a block that is not a notebook's parameter set (e.g. model settings)
            unknown = set(block) - declared[name]
            assert not unknown, f"config/{config_name}.yaml {section}.{unit}: {sorted(unknown)} not in {name}.py"
            checked += 1
    assert checked > 0
