"""Workflow config validation: JSON schemas (with defaults) plus cross-field checks, with readable errors.

`validate_config` runs when the Snakefile is parsed, so a bad value stops the run before any job starts,
with a message naming the key, the value and what is allowed. Each section (`toy`, `lm`, `vision`) has its
own schema file `workflow/schemas/<section>.schema.yaml`, and its module may define
`config_errors(section: dict) -> list[str]` for checks that relate several keys (e.g. k ≤ n_latents).
"""

from __future__ import annotations

import copy
import importlib
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
SECTIONS = ("toy", "lm", "vision")


class ConfigError(ValueError):
    """A config value is invalid; the message names the key, the value and what is allowed."""


def _key(path: list[Any]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<root>"


def _describe(err: jsonschema.ValidationError, prefix: list[Any]) -> str:
    path = prefix + list(err.absolute_path)
    v, val = err.validator, err.validator_value
    inst = err.instance
    if v == "required":
        missing = [r for r in val if r not in inst]
        return f"{_key(path)}: missing required key {missing[0]!r}"
    if v == "additionalProperties":
        extra = sorted(set(inst) - set(err.schema.get("properties", {})))
        allowed = sorted(err.schema.get("properties", {}))
        return f"{_key(path + [extra[0]])}: unknown key (allowed keys here: {', '.join(allowed)})"
    allowed = {
        "minimum": f"must be >= {val}",
        "maximum": f"must be <= {val}",
        "exclusiveMinimum": f"must be > {val}",
        "exclusiveMaximum": f"must be < {val}",
        "enum": f"must be one of {val}",
        "type": f"must be of type {val}",
        "minItems": f"must have at least {val} item(s)",
        "maxItems": f"must have at most {val} item(s)",
        "uniqueItems": "items must be unique",
        "const": f"must be {val!r}",
        "pattern": f"must match {val!r}",
    }.get(v, err.message)
    return f"{_key(path)} = {inst!r}: {allowed}"


def _fill_defaults(instance: Any, schema: dict) -> None:
    """Insert `default` values of the schema's properties that the instance lacks (recursively)."""
    if not isinstance(instance, dict):
        return
    for name, sub in schema.get("properties", {}).items():
        if name not in instance and "default" in sub:
            instance[name] = copy.deepcopy(sub["default"])
        if name in instance:
            _fill_defaults(instance[name], sub)


def load_schema(name: str, schema_dir: Path = SCHEMA_DIR) -> dict:
    """Read `workflow/schemas/<name>.schema.yaml`."""
    return yaml.safe_load((schema_dir / f"{name}.schema.yaml").read_text())


def _check(instance: Any, schema: dict, prefix: list[Any]) -> None:
    errors = sorted(
        jsonschema.Draft7Validator(schema).iter_errors(instance), key=lambda e: list(map(str, e.absolute_path))
    )
    if errors:
        raise ConfigError("invalid config: " + "; ".join(_describe(e, prefix) for e in errors[:5]))


def validate_config(config: dict, schema_dir: Path = SCHEMA_DIR) -> dict:
    """Validate (and fill defaults into) `config` in place; raise `ConfigError` on the first problems."""
    top = load_schema("config", schema_dir)
    _fill_defaults(config, top)
    _check(config, top, [])
    for section in SECTIONS:
        if section not in config:
            continue
        schema = load_schema(section, schema_dir)
        _fill_defaults(config[section], schema)
        _check(config[section], schema, [section])
        try:
            module = importlib.import_module(f"wsae_utils.{section}")
        except ImportError:
            continue
        check = getattr(module, "config_errors", None)
        problems = check(config[section]) if check else []
        if problems:
            raise ConfigError("invalid config: " + "; ".join(f"{section}.{p}" for p in problems))
    return config


def resolve_data_path(path: str | Path) -> Path:
    """A relative data path as given when it exists from the cwd, else relative to the repository root.

    Snakemake `--directory` runs start notebooks in another working directory; the embedded data stays in the
    checkout's resources/.
    """
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    repo_path = SCHEMA_DIR.parent.parent / path
    return repo_path if repo_path.exists() else path


def load_config(path: str | Path, schema_dir: Path = SCHEMA_DIR) -> dict:
    """Read a YAML config file and validate it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    config = yaml.safe_load(path.read_text()) or {}
    if not isinstance(config, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at top level")
    return validate_config(config, schema_dir)
