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
