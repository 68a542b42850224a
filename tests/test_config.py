"""YAML <-> dataclasses: unknown keys are errors that list the allowed ones, overrides parse like YAML."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from robotrl.algos.ppo import PPOConfig
from robotrl.config import ConfigError, apply_overrides, from_dict, load_yaml, to_dict
from robotrl.recipes.quadrotor import DEFAULT_CONFIG, QuadrotorTrainConfig, load_config


@dataclass
class Inner:
    rate: float = 1.0
    sizes: tuple[int, ...] = (1,)


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    name: str = "x"
    count: int = 0


def test_unknown_key_is_an_error_listing_the_allowed_keys() -> None:
    with pytest.raises(ConfigError) as err:
        from_dict(Outer, {"nmae": "y"})
    assert "['nmae']" in str(err.value)
    assert "allowed: ['count', 'inner', 'name']" in str(err.value)


def test_unknown_nested_key_names_its_section() -> None:
    with pytest.raises(
        ConfigError, match=r"cfg\.inner: unknown key\(s\) \['rat'\]; allowed: \['rate', 'sizes'\]"
    ):
        from_dict(Outer, {"inner": {"rat": 2.0}}, where="cfg")


def test_nested_sections_and_tuples_from_lists() -> None:
    config = from_dict(Outer, {"inner": {"sizes": [32, 16]}, "count": 3})
    assert config.inner.sizes == (32, 16)
    assert isinstance(config.inner.sizes, tuple)
    assert config.inner.rate == 1.0  # untouched keys keep their defaults
    assert config.count == 3 and config.name == "x"


@dataclass
class Stages:
    plain: Inner = field(default_factory=Inner)
    tuned: Inner = field(default_factory=lambda: Inner(rate=5.0, sizes=(7,)))


def test_a_partial_section_keeps_its_fields_own_defaults() -> None:
    """A section given in part starts from its field's default_factory, not from a bare Inner()."""
    config = from_dict(Stages, apply_overrides({}, ["tuned.sizes=[3]", "plain.rate=2.0"], Stages))
    assert config.tuned == Inner(rate=5.0, sizes=(3,))
    assert config.plain == Inner(rate=2.0, sizes=(1,))
    assert from_dict(Stages, {}).tuned == Inner(rate=5.0, sizes=(7,))


def test_a_float_field_accepts_yaml_strings_and_ints_as_numbers() -> None:
    assert yaml.safe_load("3e-4") == "3e-4"  # the premise: YAML 1.1 has no float without a dot
    config = from_dict(Outer, {"inner": {"rate": "3e-4"}})
    assert config.inner.rate == 3e-4 and isinstance(config.inner.rate, float)
    assert isinstance(from_dict(Outer, {"inner": {"rate": 2}}).inner.rate, float)
    with pytest.raises(ConfigError, match=r"inner\.rate: expected a number, got 'fast'"):
        from_dict(Outer, {"inner": {"rate": "fast"}})


def test_a_section_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match="expected a mapping"):
        from_dict(Outer, {"inner": [1, 2]})


def test_post_init_errors_become_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"config\.env: num_envs must be >= 1, got 0"):
        from_dict(QuadrotorTrainConfig, {"env": {"num_envs": 0}})


def test_override_learning_rate_parses_to_a_float() -> None:
    data = apply_overrides({}, ["ppo.learning_rate=3e-4", "env.init.tilt_deg=10"], QuadrotorTrainConfig)
    config = from_dict(QuadrotorTrainConfig, data)
    assert config.ppo.learning_rate == 3e-4 and isinstance(config.ppo.learning_rate, float)
    assert config.env.init.tilt_deg == 10.0
    assert config.ppo.gamma == PPOConfig().gamma


def test_overrides_go_on_top_of_the_yaml() -> None:
    config = load_config(None, ["ppo.learning_rate=3e-4", "policy.actor_hidden=[8, 8]"])
    assert config.ppo.learning_rate == 3e-4
    assert config.policy.actor_hidden == (8, 8)
    # the rest comes from the file, not the dataclass defaults (the file weights position 5, the default 1)
    assert config.env.reward.position == load_yaml(DEFAULT_CONFIG)["env"]["reward"]["position"] == 5.0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("ppo.learnin_rate=1", r"unknown key 'learnin_rate'; allowed here: \['clip', .*'learning_rate'"),
        ("pop.learning_rate=1", r"unknown key 'pop'; allowed here: \['env', 'eval', 'policy', 'ppo', "),
        ("ppo.gamma.x=1", "'gamma' is a value, not a section"),
        ("ppo.gamma", "must look like section.key=value"),
    ],
)
def test_bad_overrides_are_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        apply_overrides({}, [override], QuadrotorTrainConfig)


def test_to_dict_round_trips_through_yaml() -> None:
    original = load_config(None, ["ppo.learning_rate=3e-4", "policy.critic_hidden=[32, 16, 8]", "seed=7"])
    text = yaml.safe_dump(to_dict(original), sort_keys=False)
    assert "!!python" not in text  # plain YAML: tuples were written as lists
    restored = from_dict(QuadrotorTrainConfig, yaml.safe_load(text))
    assert restored == original
    assert restored.policy.critic_hidden == (32, 16, 8)


def test_load_yaml_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: expected a mapping"):
        load_yaml(bad)
