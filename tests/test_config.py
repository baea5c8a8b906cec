"""Config resolution and validation: one home per default, checks on resolved values, bad input named."""

import copy
from pathlib import Path

import pytest
import yaml

from wsae_utils.run.config import (
    NOTEBOOK_DIR,
    SCHEMA_DIR,
    SECTIONS,
    WORKFLOW_KEYS,
    ConfigError,
    load_config,
    load_schema,
    notebook_defaults,
    resolve_config,
    section_units,
    value_tag,
)

CONFIGS = ["config", "smoke", "paper"]


def _raw(name="config"):
    with open(f"config/{name}.yaml") as f:
        return yaml.safe_load(f)


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_configs_validate(name):
    load_config(f"config/{name}.yaml")


def test_missing_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("config/nope.yaml")


def _walk(node, path=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield path + (k,), k, v
            yield from _walk(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, path + (i,))


@pytest.mark.parametrize("schema", sorted(p.name for p in SCHEMA_DIR.glob("*.schema.yaml")))
def test_schemas_carry_no_defaults(schema):
    found = [".".join(map(str, p)) for p, k, _ in _walk(yaml.safe_load((SCHEMA_DIR / schema).read_text()))
             if k == "default"]
    assert not found, f"{schema} holds defaults at {found}: defaults live in the notebooks' parameters cells"


def test_every_notebook_parameter_has_a_schema_entry():
    checked = 0
    for section in SECTIONS:
        if not (SCHEMA_DIR / f"{section}.schema.yaml").is_file():
            continue
        schema = load_schema(section)
        for unit in section_units(section, schema):
            props = schema["properties"][unit].get("properties", {})
            for name in notebook_defaults(NOTEBOOK_DIR / f"{section}_{unit}.py"):
                assert name in props or name in schema["properties"] or name in WORKFLOW_KEYS, (
                    f"notebooks/{section}_{unit}.py parameter {name!r} has no entry in {section}.schema.yaml")
                entry = props.get(name) or schema["properties"].get(name) or {}
                if entry:
                    assert entry.get("description") or "$ref" in entry, f"{section}.{unit}.{name}: needs a description"
                checked += 1
    assert checked > 20


@pytest.mark.parametrize("name", CONFIGS)
def test_resolved_values_are_notebook_defaults_unless_the_config_sets_them(name):
    raw, resolved = _raw(name), load_config(f"config/{name}.yaml")
    seen = 0
    for section in SECTIONS:
        if section not in raw:
            continue
        schema = load_schema(section)
        block = raw[section] or {}
        units = section_units(section, schema)
        shared = set(schema["properties"]) - set(units) - {"enabled"}
        for unit in units:
            defaults = notebook_defaults(NOTEBOOK_DIR / f"{section}_{unit}.py")
            for key, default in defaults.items():
                if key in (block.get(unit) or {}):
                    expected = block[unit][key]
                elif key in block and key in shared:
                    expected = block[key]  # a section-wide key (e.g. lm.layers) given once for all notebooks
                else:
                    expected = default
                assert resolved[section][unit][key] == expected, f"{name}: {section}.{unit}.{key}"
                seen += 1
    assert seen > 20


def test_cross_key_checks_see_notebook_defaults(tmp_path):
    """A config that omits k is checked against the notebook's k, and the message names that value."""
    nb = tmp_path / "notebooks"
    nb.mkdir()
    (nb / "demo_sae.py").write_text('# %% tags=["parameters"]\nk = 8\nn_latents = 64\nout_dir = "x"\n')
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    (schemas / "config.schema.yaml").write_text((SCHEMA_DIR / "config.schema.yaml").read_text())
    from wsae_utils.run.config import resolve_section

    schema = {"type": "object", "properties": {"sae": {"type": "object", "properties": {
        "k": {"type": "integer", "description": "k"}, "n_latents": {"type": "integer", "description": "n"},
        "out_dir": {"type": "string", "readOnly": True, "description": "o"}}}}}
    out = resolve_section("demo", {"sae": {"n_latents": 12}}, schema, nb)
    assert out["sae"] == {"k": 8, "n_latents": 12, "out_dir": "x"}


def test_vision_k_default_is_the_notebooks():
    cfg = _raw()
    cfg["vision"]["sae"].pop("k", None)
    k = notebook_defaults(NOTEBOOK_DIR / "vision_sae.py")["k"]
    cfg["vision"]["sae"]["n_latents"] = k - 1
    with pytest.raises(ConfigError, match=rf"vision.sae.k = {k}: must be <= n_latents \({k - 1}\)"):
        resolve_config(cfg)


def _first_unit(cfg, section):
    schema = load_schema(section)
    return section_units(section, schema)[0]


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda c: c.update(device="tpu"), r"device = 'tpu': must be one of \['auto', 'cpu', 'cuda'\]"),
        (lambda c: c.update(devise="cpu"), r"devise: unknown key"),
        (lambda c: c["toy"]["sparsity"].update(sparsities=[0.5, 1.5]), r"toy.sparsity.sparsities\[1\] = 1.5"),
        (lambda c: c["toy"]["wsae"].update(alphas=[0.5, 1.0]), r"toy.wsae.alphas = \[0.5, 1.0\]: must contain 0.0"),
        (lambda c: c["toy"]["wsae"].update(alphas=[0.0, -1.0]), r"toy.wsae.alphas\[1\] = -1.0: must be >= 0"),
        (lambda c: c["toy"]["theory"].update(stepz=3), r"toy.theory.stepz: unknown key"),
        (lambda c: c["toy"].setdefault("theory", {}).update(uniqueness_wp="nope"),
         r"toy.theory.uniqueness_wp = 'nope': must be one of wp_specs"),
        (lambda c: c["toy"].setdefault("ablation", {}).update(latent_ratios=[0.5, 2.0]),
         r"toy.ablation.latent_ratios = \[0.5, 2.0\]: must contain 1.0"),
        (lambda c: c["toy"].setdefault("sparsity", {}).update(probe_active=10_000),
         r"toy.sparsity.probe_active = 10000: must be <= n"),
        (lambda c: c["toy"]["theory"].update(steps=5.0), r"toy.theory.steps = 5.0: must be of type"),
        (lambda c: c["toy"]["theory"].update(lr=float("nan")), r"toy.theory.lr = nan: must be a finite number"),
        (lambda c: c["toy"]["theory"].update(lr=float("inf")), r"toy.theory.lr = inf: must be a finite number"),
        (lambda c: c["toy"]["theory"].update(num_threads=4), r"toy.theory.num_threads: set by the workflow"),
        (lambda c: c["toy"]["theory"].update(out_dir="x"), r"toy.theory.out_dir: set by the workflow"),
        (lambda c: c["lm"].update(alphas=[0, 0.5, 0.5000000000001]), r"lm.alphas = .*share one output folder tag"),
        (lambda c: c["lm"].update(alphas=[0.5, 1.0]), r"lm.alphas = \[0.5, 1.0\]: must contain 0.0"),
        (lambda c: c["lm"].update(layers=[4, 99]), r"lm.layers = \[4, 99\]: .* has layers 0\.\."),
        (lambda c: c["lm"].setdefault("acts", {}).update(heldout_tokens=5), r"lm.acts.heldout_tokens = 5: must be 0"),
        (lambda c: c["lm"].setdefault("train", {}).update(batch_size=10**6),
         r"lm.train.batch_size = 1000000: must be <= the rows of one shuffle chunk"),
        (lambda c: c["vision"]["sae"].update(alphas=[1.0]), r"vision.sae.alphas = \[1.0\]: must contain 0.0"),
        (lambda c: c["autointerp"].update(backend="openai", base_url=""), r"autointerp.backend = 'openai': needs"),
        (lambda c: (c["autointerp"].update(backend="transformers", llm_model="m"),
                    c["autointerp"].setdefault("layer", {}).update(n_latents=5, n_llm_latents=6)),
         r"autointerp.layer.n_llm_latents = 6: must be <= layer.n_latents \(5\)"),
        (lambda c: c["lm"].update(enabled=False), r"autointerp.enabled = True: it scores the lm section"),
        (lambda c: (c["vision"]["backbone"].update(replicates=[0]), c["vision"]["sae"].update(seeds=[0])),
         r"vision.sae.seeds = \[0\]: with backbone.replicates = \[0\], need >= 2 replicates x seeds"),
    ],
)
def test_invalid_values_name_key_value_and_allowed(edit, message):
    cfg = _raw()
    edit(cfg)
    with pytest.raises(ConfigError, match=message):
        resolve_config(cfg)


def test_tiny_alpha_gets_its_own_tag():
    cfg = _raw()
    cfg["lm"]["alphas"] = [0, 1e-5]
    out = resolve_config(cfg)
    assert [value_tag(a) for a in out["lm"]["alphas"]] == ["0", "1e-05"]


def test_cuda_requested_without_cuda_is_refused():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    cfg = _raw()
    cfg["device"] = "cuda"
    with pytest.raises(ConfigError, match="device = 'cuda': this machine has no CUDA device"):
        resolve_config(cfg)
    cfg["device_check"] = "false"  # as a profile's `config: [device_check=false]` passes it
    assert resolve_config(cfg)["device"] == "cuda"


def test_missing_input_paths_are_refused():
    """Every schema entry marked x-existing-path is checked; a missing one names key and value."""
    cfg = _raw()
    marked = []
    for section in SECTIONS:
        if section not in cfg or not (SCHEMA_DIR / f"{section}.schema.yaml").is_file():
            continue
        schema = load_schema(section)
        for unit in section_units(section, schema):
            for name, sub in schema["properties"][unit].get("properties", {}).items():
                if sub.get("x-existing-path"):
                    marked.append((section, unit, name))
    assert marked, "no schema marks its input paths with x-existing-path"
    for section, unit, name in marked:
        bad = copy.deepcopy(cfg)
        bad[section].setdefault(unit, {})[name] = "/nonexistent/wsae/input"
        with pytest.raises(ConfigError, match=rf"{section}.{unit}.{name} = '/nonexistent/wsae/input': no such"):
            resolve_config(bad)


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda c: c["vision"]["backbone"].update(data_root="/nonexistent/fmnist"),
         r"vision.backbone.data_root = '/nonexistent/fmnist': no such folder"),
        (lambda c: c["vision"]["backbone"].update(dataset="imagefolder", data_root="resources"),
         r"vision.backbone.data_root = 'resources': an image-folder root needs train/ and val/"),
        (lambda c: c["lm"].setdefault("acts", {}).update(data_dir="/nonexistent/austen"),
         r"lm.acts.data_dir = '/nonexistent/austen': no such folder"),
        (lambda c: c["lm"].setdefault("acts", {}).update(corpus="/nonexistent/corpus.txt"),
         r"lm.acts.corpus = '/nonexistent/corpus.txt': no such .txt file or folder"),
    ],
)
def test_missing_data_is_refused_before_any_job(edit, message):
    cfg = _raw()
    edit(cfg)
    with pytest.raises(ConfigError, match=message):
        resolve_config(cfg)


def test_disabled_sections_resolve():
    out = resolve_config({"toy": {"enabled": False}, "lm": {"enabled": False}, "vision": {"enabled": False},
                          "autointerp": {"enabled": False}})
    assert out["device"] == "auto" and not out["toy"]["enabled"]


def test_schema_dir_ships_in_package():
    assert Path(SCHEMA_DIR).parent.name == "wsae_utils"


def test_nested_command_line_overrides_read_as_yaml():
    """`--config 'toy={"theory": {"steps": 7}}'` reaches the config as strings; they resolve as numbers."""
    cfg = _raw()
    cfg["toy"]["theory"]["steps"] = "7"
    cfg["toy"]["wsae"]["alphas"] = ["0", "1"]
    out = resolve_config(cfg)
    assert out["toy"]["theory"]["steps"] == 7 and out["toy"]["wsae"]["alphas"] == [0, 1]
    cfg["toy"]["theory"]["steps"] = "seven"
    with pytest.raises(ConfigError, match="toy.theory.steps = 'seven': must be of type"):
        resolve_config(cfg)
