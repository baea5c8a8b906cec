"""Workflow config: resolve every notebook's parameters (one home per default) and validate them before any job.

Defaults live in exactly one place, the `parameters` cell of each notebook. A config section
(`toy`, `lm`, `vision`, `autointerp`) holds unit blocks, one per notebook `notebooks/<section>_<unit>.py`, plus
section-wide keys shared by several notebooks (e.g. `lm.layers`). `resolve_config` overlays the config on the
notebook defaults, so the parameters a run uses are explicit, and the schema checks (types, ranges, unknown keys)
and the cross-key checks below see exactly those values. The schemas (`wsae_utils/schemas/*.schema.yaml`) carry
types, bounds and descriptions only; properties marked `readOnly: true` are set by the workflow (output folders,
threads, device), never by a config file.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from wsae_utils.autointerp.endpoints import endpoint_errors
from wsae_utils.lm.registry import AUSTEN_NOVELS, MODELS
from wsae_utils.paths import PACKAGE_DIR, REPO_DIR, resolve_data_path, value_tag
from wsae_utils.run.sources import notebook_defaults
from wsae_utils.toy.layout import constructed_layout

SCHEMA_DIR = PACKAGE_DIR / "schemas"
NOTEBOOK_DIR = REPO_DIR / "notebooks"
SECTIONS = ("toy", "lm", "vision", "autointerp")
WORKFLOW_KEYS = ("out_dir", "device", "num_threads")
"""Parameters every notebook may receive from the runner; a config file never sets them."""


class ConfigError(ValueError):
    """A config value is invalid; the message names the key, the value and what is allowed."""


# -- schema checks ---------------------------------------------------------------------------------------------
def _is_int(_checker: Any, value: Any) -> bool:
    # JSON schema counts 5.0 as an integer; a step count of 5.0 is a typo we refuse.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(_checker: Any, value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_TYPES = jsonschema.Draft7Validator.TYPE_CHECKER.redefine_many({"integer": _is_int, "number": _is_number})
Validator = jsonschema.validators.extend(jsonschema.Draft7Validator, type_checker=_TYPES)


def _key(path: list[Any]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<root>"


def _show(value: Any) -> str:
    """repr of a value for a message, shortened when long (a 5,000-character path stays readable)."""
    text = repr(value)
    return text if len(text) <= 120 else f"{text[:80]}… ({len(str(value))} characters)"


def _describe(err: jsonschema.ValidationError, prefix: list[Any]) -> str:
    path = prefix + list(err.absolute_path)
    v, val, inst = err.validator, err.validator_value, err.instance
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
        "minProperties": f"must have at least {val} entr(ies)",
        "maxLength": f"must be at most {val} characters long",
        "minLength": f"must be at least {val} characters long",
    }.get(v, err.message)
    return f"{_key(path)} = {_show(inst)}: {allowed}"


def load_schema(name: str, schema_dir: Path = SCHEMA_DIR) -> dict:
    """Read `wsae_utils/schemas/<name>.schema.yaml`."""
    return yaml.safe_load((schema_dir / f"{name}.schema.yaml").read_text())


def _check(instance: Any, schema: dict, prefix: list[Any]) -> None:
    errors = sorted(Validator(schema).iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ConfigError("invalid config: " + "; ".join(_describe(e, prefix) for e in errors[:5]))


def _non_finite(value: Any, path: list[Any]) -> list[str]:
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{_key(path)} = {value!r}: must be a finite number"]
    if isinstance(value, dict):
        return [e for k, v in value.items() for e in _non_finite(v, path + [k])]
    if isinstance(value, list):
        return [e for i, v in enumerate(value) for e in _non_finite(v, path + [i])]
    return []


def _zero_signs(value: Any) -> Any:
    """−0.0 → 0.0 everywhere: the same number must give the same folder tag and the same checks."""
    if isinstance(value, float) and value == 0.0:
        return 0.0
    if isinstance(value, dict):
        return {k: _zero_signs(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_zero_signs(v) for v in value]
    return value


def _read_only(block: dict, schema: dict, prefix: list[Any]) -> list[str]:
    props = schema.get("properties", {})
    return [
        f"{_key(prefix + [k])}: set by the workflow (output folder, threads or device), not by a config file"
        for k in block
        if k in WORKFLOW_KEYS or props.get(k, {}).get("readOnly")
    ]


def _coerce(value: Any, schema: dict, definitions: dict) -> Any:
    """Strings where the schema wants numbers, booleans or lists, read as YAML.

    Snakemake passes values nested inside a `--config key={...}` override as strings ('16', ['0', '1']); reading
    them back as YAML makes such overrides behave like the same values in a config file.
    """
    if "$ref" in schema:
        schema = definitions.get(schema["$ref"].rsplit("/", 1)[-1], {})
    types = schema.get("type")
    types = set(types) if isinstance(types, list) else {types}
    if isinstance(value, str) and types & {"integer", "number", "boolean", "array"} and "string" not in types:
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        return _coerce(parsed, schema, definitions) if not isinstance(parsed, str) else value
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_coerce(v, schema["items"], definitions) for v in value]
    if isinstance(value, dict):
        props = schema.get("properties", {})
        return {k: _coerce(v, props[k], definitions) if k in props else v for k, v in value.items()}
    return value


# -- resolution ------------------------------------------------------------------------------------------------
def section_units(section: str, schema: dict, notebook_dir: Path = NOTEBOOK_DIR) -> list[str]:
    """Unit blocks of a section: object properties of its schema that name a notebook `<section>_<unit>.py`."""
    return [
        name
        for name, sub in schema.get("properties", {}).items()
        if sub.get("type") == "object" and (notebook_dir / f"{section}_{name}.py").is_file()
    ]


def resolve_section(
    section: str, block: dict, schema: dict, notebook_dir: Path = NOTEBOOK_DIR
) -> dict[str, Any]:
    """The section with every unit's parameters resolved: notebook defaults, then shared keys, then the block.

    A section-wide key (e.g. `lm.layers`) takes its default from the notebooks that declare it (they must agree)
    and is passed to each of them.
    """
    units = section_units(section, schema, notebook_dir)
    defaults = {u: notebook_defaults(notebook_dir / f"{section}_{u}.py") for u in units}
    shared_names = [k for k in schema.get("properties", {}) if k not in units and k != "enabled"]
    out: dict[str, Any] = {"enabled": block.get("enabled", True)}
    for name in shared_names:
        declared = {u: d[name] for u, d in defaults.items() if name in d}
        if len(set(map(repr, declared.values()))) > 1:
            raise ConfigError(f"{section}.{name}: notebooks disagree on its default ({declared}); give it one home")
        if name in block:
            out[name] = copy.deepcopy(block[name])
        elif declared:
            out[name] = copy.deepcopy(next(iter(declared.values())))
    for unit in units:
        params = copy.deepcopy(defaults[unit])
        params.update({k: copy.deepcopy(out[k]) for k in shared_names if k in params and k in out})
        params.update(copy.deepcopy(block.get(unit) or {}))
        out[unit] = params
    return out


def resolve_config(config: dict, schema_dir: Path = SCHEMA_DIR, notebook_dir: Path = NOTEBOOK_DIR) -> dict:
    """Validate `config` and return it resolved: every unit's exact notebook parameters, checks on those.

    Raises `ConfigError` naming the key, the value and what is allowed, before any job runs.
    """
    config = _zero_signs(copy.deepcopy(config))
    problems = _non_finite(config, [])
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems[:5]))
    top = load_schema("config", schema_dir)
    config = _coerce(config, top, {})
    _check(config, top, [])
    config.setdefault("device", "auto")
    config.setdefault("title", "wsae results")
    for section in SECTIONS:
        if section not in config:
            continue
        if not (schema_dir / f"{section}.schema.yaml").is_file():
            raise ConfigError(f"invalid config: {section}: no schema {section}.schema.yaml for this section")
        schema = load_schema(section, schema_dir)
        block = _zero_signs(_coerce(config[section] or {}, schema, schema.get("definitions", {})))
        units = section_units(section, schema, notebook_dir)
        ro = [e for u in units if isinstance(block.get(u), dict)
              for e in _read_only(block[u], schema["properties"][u], [section, u])]
        if ro:
            raise ConfigError("invalid config: " + "; ".join(ro[:5]))
        _check(block, schema, [section])
        resolved = resolve_section(section, block, schema, notebook_dir)
        for unit in units:
            unit_schema = {k: v for k, v in schema["properties"][unit].items() if k != "additionalProperties"}
            unit_schema["definitions"] = schema.get("definitions", {})
            # Defaults are checked like config values (a notebook default can be out of range too); the workflow
            # keys are allowed here because the notebooks declare them.
            _check({k: v for k, v in resolved[unit].items() if k not in WORKFLOW_KEYS}, unit_schema, [section, unit])
            undeclared = sorted(set(resolved[unit]) - set(schema["properties"][unit].get("properties", {}))
                                - set(schema["properties"]) - set(WORKFLOW_KEYS))
            if undeclared:
                raise ConfigError(f"invalid config: {section}.{unit}: notebook parameters {undeclared} have no "
                                  f"entry in {section}.schema.yaml")
        errors = CROSS_CHECKS.get(section, lambda s: [])(resolved) if resolved["enabled"] else []
        errors += _path_errors(section, resolved, schema, units)
        errors += _written_path_errors(resolved, schema, units)
        if section == "autointerp":  # also when disabled: a pasted key must not reach Snakemake's records
            errors += endpoint_errors(resolved.get("base_url") or "", resolved.get("api_key_env") or "",
                                      bool(resolved.get("allow_plain_http_key")))
        if errors:
            raise ConfigError("invalid config: " + "; ".join(f"{section}.{e}" for e in errors))
        config[section] = resolved
    ai, lm = config.get("autointerp"), config.get("lm")
    if isinstance(ai, dict) and ai.get("enabled") and not (isinstance(lm, dict) and lm.get("enabled")):
        raise ConfigError("invalid config: autointerp.enabled = True: it scores the lm section's SAEs, which is "
                          "missing or disabled; enable lm or set autointerp.enabled: false")
    if config["device"] == "cuda" and config.get("device_check", True):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("invalid config: device = 'cuda': this machine has no CUDA device "
                              "(torch.cuda.is_available() is False); use 'auto' or 'cpu' (a cluster whose login "
                              "node has no GPU: device_check=false)")
    return config


def validate_config(config: dict, schema_dir: Path = SCHEMA_DIR, notebook_dir: Path = NOTEBOOK_DIR) -> dict:
    """Resolve and validate `config` in place (Snakemake's config object); return it."""
    resolved = resolve_config(config, schema_dir, notebook_dir)
    config.clear()
    config.update(resolved)
    return config


def load_config(path: str | Path, schema_dir: Path = SCHEMA_DIR) -> dict:
    """Read a YAML config file, resolve and validate it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    config = yaml.safe_load(path.read_text()) or {}
    if not isinstance(config, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at top level")
    return resolve_config(config, schema_dir)


# -- paths that must exist -------------------------------------------------------------------------------------
def _exists(key: str, value: str, kind: str = "any") -> str | None:
    """None when `value` (a data path) exists as `kind` ('any', 'file', 'dir'); else '<key> = <value>: why'."""
    try:
        path = resolve_data_path(value)
        ok = path.is_dir() if kind == "dir" else path.is_file() if kind == "file" else path.exists()
    except (OSError, ValueError) as err:  # a name too long for the file system, a NUL byte
        return f"{key} = {_show(value)}: not a usable path ({getattr(err, 'strerror', None) or err})"
    return None if ok else f"{key} = {_show(value)}: no such {'folder' if kind == 'dir' else 'file or folder'}"


def _path_errors(section: str, resolved: dict, schema: dict, units: list[str]) -> list[str]:
    """Unit parameters marked `x-existing-path: true` in the schema must name an existing file or folder."""
    if not resolved["enabled"]:
        return []
    errors = []
    for unit in units:
        for name, sub in schema["properties"][unit].get("properties", {}).items():
            value = resolved[unit].get(name)
            if sub.get("x-existing-path") and value:
                err = _exists(f"{unit}.{name}", value)
                errors += [err] if err else []
    return errors


def _written_path_errors(resolved: dict, schema: dict, units: list[str]) -> list[str]:
    """Parameters marked `x-written-path: true` stay inside the project unless given as an absolute path.

    A relative path is taken from the working directory (the project, or Snakemake's --directory): one that climbs
    out of it with `..` writes where nobody asked. An absolute path is an explicit choice, recorded by the notebook.
    """
    errors = []
    for unit in units:
        for name, sub in schema["properties"][unit].get("properties", {}).items():
            value = resolved[unit].get(name)
            if sub.get("x-written-path") and isinstance(value, str) and value:
                if "\0" in value:
                    errors.append(f"{unit}.{name} = {_show(value)}: holds a NUL byte")
                elif not Path(value).is_absolute() and os.path.normpath(value).split(os.sep)[0] == "..":
                    errors.append(f"{unit}.{name} = {_show(value)}: a relative path must stay inside the project "
                                  "(no leading ..); give an absolute path to write elsewhere on purpose")
    return errors


# -- cross-key checks, on resolved values ----------------------------------------------------------------------
def _tag_collisions(key: str, values: list[float]) -> list[str]:
    tags = [value_tag(v) for v in values]
    dup = sorted({t for t in tags if tags.count(t) > 1})
    return [f"{key} = {values}: values {dup} share one output folder tag; make them differ"] if dup else []


def _must_hold_zero(key: str, values: list[float]) -> list[str]:
    return [] if 0.0 in [float(v) for v in values] else [f"{key} = {values}: must contain 0.0 (the plain SAE)"]


def _toy_spec_errors(key: str, spec: dict) -> list[str]:

    errs = []
    if spec.get("construction") == "constructed":
        try:
            constructed_layout(int(spec["n"]), int(spec["n_p"]), int(spec.get("n_mono", 0)),
                               int(spec.get("n_digons", 0)), spec.get("polygons"))
        except ValueError as err:
            errs.append(f"{key} = {spec!r}: {err}")
    if int(spec.get("n_p", 1)) >= int(spec.get("n", 2)):
        errs.append(f"{key}.n_p = {spec.get('n_p')}: must be < n ({spec.get('n')}) for superposition")
    return errs


def _toy_errors(section: dict) -> list[str]:
    errors: list[str] = []
    for unit, block in section.items():
        if not isinstance(block, dict):
            continue
        specs = block.get("wp_specs") or {}
        for name, spec in specs.items():
            errors += _toy_spec_errors(f"{unit}.wp_specs.{name}", spec)
        for key in ("wp_names", "train_wp", "theorem1_wp", "trained_wp", "uniqueness_wp"):
            names = block.get(key) or []
            for name in [names] if isinstance(names, str) else names:
                if specs and name not in specs:
                    errors.append(f"{unit}.{key} = {name!r}: must be one of wp_specs ({', '.join(specs)})")
        probe = block.get("probe_active")
        for name in block.get("wp_names") or []:
            n = int((specs.get(name) or {}).get("n", 0))
            if isinstance(probe, int) and n and probe > n:
                errors.append(f"{unit}.probe_active = {probe}: must be <= n ({n}) of W_p {name}")
        if unit == "ablation" and "latent_ratios" in block and 1.0 not in [float(r) for r in block["latent_ratios"]]:
            errors.append(f"{unit}.latent_ratios = {block['latent_ratios']}: must contain 1.0 (n_m = n, the "
                          "all-conditions cell)")
        ratios = block.get("latent_ratios") or [block.get("latent_ratio", 1.0)]
        sizes = [int(round(r * int(s.get("n", 0)))) for s in specs.values() for r in ratios]
        for kkey in ("k",):
            k = block.get(kkey)
            if isinstance(k, int) and sizes and k > min(sizes):
                errors.append(f"{unit}.{kkey} = {k}: must be <= n_m ({min(sizes)}, the smallest SAE)")
        if "alphas" in block:
            errors += _must_hold_zero(f"{unit}.alphas", block["alphas"])
            errors += _tag_collisions(f"{unit}.alphas", block["alphas"])
        if "seeds" in block and len(set(block["seeds"])) != len(block["seeds"]):
            errors.append(f"{unit}.seeds = {block['seeds']}: seeds must be distinct")
    return errors


def _lm_errors(section: dict) -> list[str]:

    errors: list[str] = []
    units = {u: b for u, b in section.items() if isinstance(b, dict)}
    model = next((b["model"] for b in units.values() if "model" in b), None)
    if model is not None and model not in MODELS:
        return [f"model = {model!r}: must be one of {sorted(MODELS)}"]
    facts = MODELS.get(model, {}) if model else {}
    n_layers = facts.get("n_layers")
    layers = section.get("layers", [])
    if n_layers is not None and any(layer >= n_layers for layer in layers):
        errors.append(f"layers = {layers}: {model} has layers 0..{n_layers - 1}")
    if "alphas" in section:
        errors += _must_hold_zero("alphas", section["alphas"])
        errors += _tag_collisions("alphas", section["alphas"])
    acts, train = units.get("acts") or {}, units.get("train") or {}
    ctx, n_tok, shard = acts.get("context_size"), acts.get("train_tokens"), acts.get("shard_contexts")
    bs, shuffle = train.get("batch_size"), train.get("shuffle_shards")
    if all(isinstance(v, int) for v in (ctx, n_tok, shard, bs, shuffle)) and ctx > 1:
        rows = min(shuffle * shard, max(1, n_tok // ctx)) * (ctx - 1)
        if bs > rows:
            errors.append(f"train.batch_size = {bs}: must be <= the rows of one shuffle chunk ({rows} = "
                          "min(shuffle_shards × acts.shard_contexts, train contexts) × (context_size − 1))")
    if isinstance(ctx, int) and isinstance(n_tok, int) and acts.get("corpus") == "austen" and n_tok // ctx < 5:
        errors.append(f"acts.train_tokens = {n_tok}: must give >= 5 contexts of {ctx} tokens (one per training "
                      "novel)")
    corpus = acts.get("corpus")
    if corpus == "austen":
        errors += _austen_errors(acts)
    elif isinstance(corpus, str) and not corpus.startswith("hf:"):
        errors += _text_corpus_errors(corpus, n_tok, ctx)
    held = acts.get("heldout_tokens")
    if isinstance(held, int) and isinstance(ctx, int) and 0 < held < ctx:
        errors.append(f"acts.heldout_tokens = {held}: must be 0 (the whole held-out text) or >= context_size ({ctx})")
    sb = units.get("saebench") or {}
    for key in ("tpp_ns", "scr_ns"):
        if isinstance(sb.get("headline_n"), int) and isinstance(sb.get(key), list) and sb["headline_n"] not in sb[key]:
            errors.append(f"saebench.headline_n = {sb['headline_n']}: must be one of saebench.{key} ({sb[key]})")
    width = facts.get("d_model")
    for unit, block in units.items():
        k, expansion = block.get("k"), block.get("expansion")
        if width and isinstance(k, int) and expansion and k > expansion * width:
            errors.append(f"{unit}.k = {k}: must be <= the number of latents (expansion × d_model = "
                          f"{expansion * width})")
    return errors


AUSTEN_FILES = ("Rdata.rdx", "Rdata.rdb")
"""The janeaustenr R lazy-load database (wsae_utils.lm.text.read_austen)."""
FASHION_MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                       "t10k-labels-idx1-ubyte.gz")
TEXT_SNIFF_BYTES = 1 << 20
"""Bytes of each corpus file decoded at validation (the whole file is read by lm_acts; this catches binaries)."""


def _austen_errors(acts: dict) -> list[str]:

    errors = []
    data_dir, eval_doc = acts.get("data_dir"), acts.get("eval_doc")
    if data_dir:
        err = _exists("acts.data_dir", data_dir, "dir")
        if err:
            errors.append(err + " (the janeaustenr data; `make data` unpacks it)")
        else:
            missing = [f for f in AUSTEN_FILES if not (resolve_data_path(data_dir) / f).is_file()]
            if missing:
                errors.append(f"acts.data_dir = {_show(data_dir)}: not the janeaustenr data folder (missing "
                              f"{', '.join(missing)}; `make data` unpacks it)")
    if isinstance(eval_doc, str) and eval_doc not in AUSTEN_NOVELS:
        errors.append(f"acts.eval_doc = {_show(eval_doc)}: must be one of {list(AUSTEN_NOVELS)} (corpus austen)")
    return errors


def _text_corpus_errors(corpus: str, n_tok: Any, ctx: Any) -> list[str]:
    """A user's corpus may live anywhere, but must be UTF-8 text with enough bytes for the token budget."""
    err = _exists("acts.corpus", corpus)
    if err:
        err = err.replace("no such file or folder", "no such .txt file or folder")
        return [err + " (or use 'austen' / 'hf:<name>')"]
    path = resolve_data_path(corpus)
    files = sorted(path.rglob("*.txt")) if path.is_dir() else [path]
    if not files:
        return [f"acts.corpus = {_show(corpus)}: the folder holds no .txt file"]
    size = 0
    for f in files:
        try:
            with f.open("rb") as fh:
                head = fh.read(TEXT_SNIFF_BYTES)
            size += f.stat().st_size
        except OSError as e:
            return [f"acts.corpus = {_show(corpus)}: {f} cannot be read ({e.strerror or e})"]
        try:
            # A multi-byte character cut at the sniff boundary is not an error: drop up to 3 trailing bytes.
            head.decode("utf-8") if len(head) < TEXT_SNIFF_BYTES else _decode_prefix(head)
        except UnicodeDecodeError as e:
            return [f"acts.corpus = {_show(corpus)}: {f} is not UTF-8 text (byte {e.start}: {e.reason})"]
        if b"\0" in head:
            return [f"acts.corpus = {_show(corpus)}: {f} holds NUL bytes (a binary file, not text)"]
    need = (n_tok + ctx) if isinstance(n_tok, int) and isinstance(ctx, int) else 0
    if size < need:
        return [f"acts.corpus = {_show(corpus)}: {size} bytes of text, fewer than the {need} tokens asked for "
                f"(train_tokens + context_size; a token spans at least one byte): use a larger corpus or lower "
                "acts.train_tokens"]
    return []


def _decode_prefix(head: bytes) -> str:
    for cut in range(4):
        try:
            return head[: len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            if cut == 3:
                raise
    raise AssertionError("unreachable")


def _vision_errors(section: dict) -> list[str]:
    errs: list[str] = []
    bb, sae = section.get("backbone") or {}, section.get("sae") or {}
    source = bb.get("source")
    if source == "checkpoint" and not bb.get("checkpoint_path"):
        errs.append("backbone.checkpoint_path = '': required when source is 'checkpoint'")
    if source in ("pretrain", "checkpoint") and bb.get("backbone") not in (None, "resnet18"):
        errs.append(f"backbone.backbone = {bb.get('backbone')!r}: must be 'resnet18' when source is {source!r}")
    if source == "frozen" and isinstance(bb.get("n_views"), int) and bb["n_views"] < 2:
        errs.append(f"backbone.n_views = {bb['n_views']}: must be >= 2 for the frozen source")
    root = bb.get("data_root")
    if root:
        err = _exists("backbone.data_root", root, "dir")
        path = resolve_data_path(root)
        if err:
            errs.append(err + (" (`make data` unpacks Fashion-MNIST)" if bb.get("dataset") == "fashion-mnist" else ""))
        elif bb.get("dataset") == "imagefolder" and not all((path / d).is_dir() for d in ("train", "val")):
            errs.append(f"backbone.data_root = {_show(root)}: an image-folder root needs train/ and val/ inside")
        elif bb.get("dataset") == "fashion-mnist" and not all((path / f).is_file() for f in FASHION_MNIST_FILES):
            missing = [f for f in FASHION_MNIST_FILES if not (path / f).is_file()]
            errs.append(f"backbone.data_root = {_show(root)}: not a Fashion-MNIST folder (missing "
                        f"{', '.join(missing)}; `make data` unpacks it)")
    if "methods" in bb and "ncl" not in bb["methods"]:
        errs.append(f"backbone.methods = {bb['methods']}: must contain 'ncl' (its features feed the SAE)")
    k, n = sae.get("k"), sae.get("n_latents")
    if isinstance(k, int) and isinstance(n, int) and k > n:
        errs.append(f"sae.k = {k}: must be <= n_latents ({n})")
    if "alphas" in sae:
        errs += _must_hold_zero("sae.alphas", sae["alphas"])
        errs += _tag_collisions("sae.alphas", sae["alphas"])
    # The vision intervals are over backbone replicates (SAE seeds averaged within one), or over SAE seeds when
    # there is a single replicate: either way at least two paired units are needed.
    reps = bb.get("replicates", [0])
    if "seeds" in sae and len(reps) * len(sae["seeds"]) < 2:
        errs.append(f"sae.seeds = {sae['seeds']}: with backbone.replicates = {reps}, need >= 2 replicates x seeds "
                    "for a confidence interval")
    return errs


def _autointerp_errors(section: dict) -> list[str]:
    errs: list[str] = []
    backend, model, url = section.get("backend"), section.get("llm_model"), section.get("base_url")
    if backend == "openai" and not (url and model):
        errs.append(f"backend = 'openai': needs base_url and llm_model (base_url = {url!r}, llm_model = {model!r})")
    if backend == "transformers" and not model:
        errs.append("backend = 'transformers': needs llm_model (a local path or hub name)")
    checks, layer = section.get("checks") or {}, section.get("layer") or {}
    q = checks.get("n_quantiles")
    for key in ("n_explain", "n_test_act"):
        if isinstance(q, int) and isinstance(checks.get(key), int) and q > checks[key]:
            errs.append(f"checks.n_quantiles = {q}: must be <= checks.{key} ({checks[key]})")
    if "serve" in section:  # the workflow starts a llama.cpp server at base_url: it must be a port of this machine
        from wsae_utils.autointerp.llm_server import serve_errors

        errs += serve_errors(section["serve"], backend, url, model)
    n, n_llm = layer.get("n_latents"), layer.get("n_llm_latents")
    if backend != "offline" and isinstance(n, int) and isinstance(n_llm, int) and n_llm > n:
        errs.append(f"layer.n_llm_latents = {n_llm}: must be <= layer.n_latents ({n})")
    return errs


CROSS_CHECKS: dict[str, Callable[[dict], list[str]]] = {
    "toy": _toy_errors, "lm": _lm_errors, "vision": _vision_errors, "autointerp": _autointerp_errors,
}
"""Checks that relate several keys of a resolved section; messages '<key> = <value>: <what is allowed>'."""
