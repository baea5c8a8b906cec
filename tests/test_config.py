import copy

import pytest
import yaml

from wsae_utils.config import ConfigError, load_config, validate_config


def _default():
    with open("config/config.yaml") as f:
        return yaml.safe_load(f)


@pytest.mark.parametrize("name", ["config", "smoke", "paper"])
def test_shipped_configs_validate(name):
    load_config(f"config/{name}.yaml")


def test_missing_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("config/nope.yaml")


def test_unknown_top_level_key_named():
    cfg = _default()
    cfg["devise"] = "cpu"
    with pytest.raises(ConfigError, match="devise"):
        validate_config(cfg)


def test_bad_enum_names_key_value_and_allowed():
    cfg = _default()
    cfg["device"] = "tpu"
    with pytest.raises(ConfigError, match=r"device = 'tpu': must be one of \['auto', 'cpu', 'cuda'\]"):
        validate_config(cfg)


def test_defaults_filled():
    cfg = {"toy": {"enabled": False}, "lm": {"enabled": False}, "vision": {"enabled": False}}
    out = validate_config(copy.deepcopy(cfg))
    assert out["device"] == "auto"


def _wp(n_p):
    return {"construction": "constructed", "n": 34, "n_p": n_p, "n_mono": 5, "n_digons": 13}


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda c: c["toy"]["sparsity"]["sparsities"].append(1.5), r"toy.sparsity.sparsities\[7\] = 1.5: must be < 1"),
        (lambda c: c["toy"]["sparsity"].update(topk_k=500), r"toy.sparsity.topk_k = 500: must be <= n_m"),
        (lambda c: c["toy"]["ablation"]["activations"].append("gelu"), r"= 'gelu': must be one of"),
        (lambda c: c["toy"]["theory"].update(wp_specs={"exact": _wp(0)}), r"wp_specs.exact.n_p = 0: must be >= 1"),
        (lambda c: c["toy"]["wsae"]["alphas"].append(-1.0), r"toy.wsae.alphas\[3\] = -1.0: must be >= 0"),
        (lambda c: c["lm"]["alphas"].append(-0.5), r"lm.alphas\[3\] = -0.5: must be >= 0"),
        (lambda c: c["lm"]["train"].update(k=5000), r"lm.train.k = 5000: must be <="),
        (lambda c: c["lm"]["layers"].append(99), r"lm.layers"),
        (lambda c: c["toy"]["theory"].update(stepz=3), r"toy.theory.stepz: unknown key"),
    ],
)
def test_invalid_values_name_key_value_and_allowed(edit, message):
    cfg = _default()
    edit(cfg)
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg)
