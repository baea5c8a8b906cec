"""Config files are data: refuse a file that would make Snakemake evaluate code, before Snakemake reads it.

Snakemake reads every `--configfile` through YTE (`yte.process_yaml(..., require_use_yte=True)`) with PyYAML's
FullLoader: a file holding `__use_yte__: true` has its `?`-keys, `?`-values and `__definitions__` evaluated as
Python, in the Snakemake process, while the command line is processed — before the Snakefile (and so before
`wsae_utils.run.config`) runs. The only project code that runs earlier is the workflow profile, which Snakemake reads
first (also through YTE): `workflow/profiles/*/config.yaml` calls `refuse_code_in_configfiles()` from its
`__definitions__`, and `profiles/default` (a link to it, next to the Snakefile) is where plain `snakemake` finds
it without `--workflow-profile`. The Snakefile checks the same files again (`check_configfiles`), so a run with
`--workflow-profile none` is still refused, though only after Snakemake has read them.

Only the standard library and PyYAML are imported here: this runs on every `snakemake` command line.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import yaml

TEMPLATE_KEYS = ("__use_yte__", "__definitions__", "__variables__")
"""Top-level keys by which YTE turns a YAML file into a template (Python expressions and statements)."""


class ConfigFileError(ValueError):
    """A config file would run code or is not plain data; the message names the file, the key and what to do."""


def _walk_keys(value: object, path: str = "") -> Iterable[tuple[str, object]]:
    """(dotted key, key) of every mapping key in a parsed YAML document."""
    if isinstance(value, dict):
        for k, v in value.items():
            here = f"{path}.{k}" if path else str(k)
            yield here, k
            yield from _walk_keys(v, here)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk_keys(v, f"{path}[{i}]")


def check_configfile(path: str | Path) -> None:
    """Raise `ConfigFileError` when `path` holds anything but plain YAML/JSON data (a YTE template, a Python tag).

    The file is parsed with `yaml.safe_load` only (it builds plain data and evaluates nothing): a Python tag
    (`!!python/...`) fails there; a template key anywhere, or a `?`-key at all (YTE syntax, and never a config key
    of this project), is refused by name.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return  # Snakemake reports the missing file itself
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigFileError(f"config file {str(path)!r}: cannot be read as UTF-8 text ({err})") from err
    try:
        doc = yaml.safe_load(text)
    except yaml.constructor.ConstructorError as err:
        tag = getattr(err, "problem", "") or str(err)
        raise ConfigFileError(f"config file {str(path)!r}: {tag.strip()}: config files hold plain data (mappings, "
                              "lists, strings, numbers, booleans); remove the tag") from err
    except yaml.YAMLError:
        return  # not YAML: Snakemake's loader fails on it too, and reports it, before evaluating anything
    for dotted, key in _walk_keys(doc):
        if key in TEMPLATE_KEYS:
            raise ConfigFileError(
                f"config file {str(path)!r}: key {dotted!r} = {_value_at(doc, dotted)!r} turns the file into a YTE "
                "template whose expressions Snakemake would evaluate as Python; config files are data here: remove "
                "the key and write plain values")
        if isinstance(key, str) and key.startswith("?"):
            raise ConfigFileError(
                f"config file {str(path)!r}: key {dotted!r} is a YTE expression (Python that Snakemake would "
                "evaluate in a template); config files are data here: write plain keys and values")


def _value_at(doc: object, dotted: str) -> object:
    """The value at a top-level key (template keys are only meaningful there); None elsewhere."""
    return doc.get(dotted) if isinstance(doc, dict) else None


def check_configfiles(paths: Iterable[str | Path]) -> None:
    """`check_configfile` on each path."""
    for p in paths:
        check_configfile(p)


def cli_configfiles(argv: Sequence[str]) -> list[str]:
    """The `--configfile(s)` a Snakemake command line names, parsed by Snakemake's own parser (abbreviations too)."""
    from snakemake.cli import get_argument_parser

    args, _ = get_argument_parser().parse_known_args(list(argv))
    return [str(p) for p in (getattr(args, "configfile", None) or [])]


def refuse_code_in_configfiles(argv: Sequence[str] | None = None) -> None:
    """Exit with the reason when a config file on the command line would run code (called by the workflow profile)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        check_configfiles(cli_configfiles(argv))
    except ConfigFileError as err:
        # SystemExit, not an exception: Snakemake would wrap one as "Couldn't parse config file" of the profile.
        raise SystemExit(f"Error: {err}") from None
    finally:
        # The profile runs before Snakemake puts the workflow's folder on sys.path, so this import found the
        # installed wsae_utils. Forget it: the Snakefile must import the workflow's own copy (its code inputs are
        # that copy's files, so a copied or moved workflow reruns on edits to its own sources).
        for name in [m for m in sys.modules if m == "wsae_utils" or m.startswith("wsae_utils.")]:
            del sys.modules[name]
