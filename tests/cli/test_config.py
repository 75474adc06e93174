"""Configuration: YAML + dotted ``key=value`` overrides into typed dataclasses, refused with a
ConfigError that names the key and the value (tympan/config.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from tympan.config import ConfigError, build, flatten, load, to_dict
from tympan.datasets.frontend import FrontendConfig
from tympan.methods.base import OptimConfig


@dataclass
class RunConfig:
    """A test-local nested config: the shape every command's config has."""
    name: str = "run"
    steps: int = 100
    mode: Literal["fast", "full"] = "fast"
    tags: list[str] = field(default_factory=list)
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


def test_defaults_and_typed_coercion():
    cfg = build(RunConfig, {}, ["steps=250", "mode=full", "tags=a,b", "optim.lr=3e-4",
                                "frontend.log=false"])
    assert cfg.steps == 250 and isinstance(cfg.steps, int)
    assert cfg.mode == "full" and cfg.tags == ["a", "b"]
    assert cfg.optim.lr == pytest.approx(3e-4) and cfg.frontend.log is False
    assert cfg.frontend.n_mels == 64                        # untouched default survives
    assert flatten(to_dict(cfg))["frontend.n_mels"] == 64


def test_unknown_keys_are_named():
    with pytest.raises(ConfigError) as e:
        build(RunConfig, {}, ["stpes=3"])
    assert e.value.key == "stpes" and "unknown key" in str(e.value) and "steps" in str(e.value)
    with pytest.raises(ConfigError) as e:
        build(RunConfig, {"frontend": {"n_mel": 40}})
    assert e.value.key == "frontend.n_mel" and "'frontend.n_mel'" in str(e.value)


@pytest.mark.parametrize("override,key", [("steps=ten", "steps"), ("steps=2.5", "steps"),
                                          ("optim.lr=fast", "optim.lr"),
                                          ("frontend.log=maybe", "frontend.log"),
                                          ("mode=medium", "mode"), ("optim=3", "optim")])
def test_type_errors_are_named(override, key):
    with pytest.raises(ConfigError) as e:
        build(RunConfig, {}, [override])
    assert e.value.key == key
    assert f"'{key}'" in str(e.value) and repr(e.value.value) in str(e.value)


def test_nested_dotted_overrides_merge_with_yaml_values(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("name: from-yaml\nfrontend:\n  n_mels: 128\n  n_fft: 1024\noptim:\n  lr: 0.01\n")
    cfg = load(RunConfig, path, ["frontend.n_mels=96", "optim.name=sgd"])
    assert cfg.name == "from-yaml"
    assert (cfg.frontend.n_mels, cfg.frontend.n_fft) == (96, 1024)     # override wins, rest kept
    assert cfg.optim.lr == 0.01 and cfg.optim.name == "sgd"


@pytest.mark.parametrize("override,key,value", [
    ("frontend.n_mels=300", "frontend.n_mels", 300),            # > n_fft//2+1 = 257
    ("frontend.f_max=9000", "frontend.f_max", 9000.0),          # > sample_rate/2
    ("frontend.hop_length=480", "frontend.hop_length", 480),    # > win_length 400
    ("frontend.win_length=0", "frontend.win_length", 0),        # zero duration
    ("frontend.hop_length=-160", "frontend.hop_length", -160),  # negative duration
    ("frontend.sample_rate=0", "frontend.sample_rate", 0),
    ("optim.lr=0", "optim.lr", 0.0),
])
def test_impossible_values_are_refused_naming_key_and_value(override, key, value):
    with pytest.raises(ConfigError) as e:
        build(RunConfig, {}, [override])
    assert e.value.key == key and e.value.value == value
    assert f"'{key}'" in str(e.value) and str(value) in str(e.value)


def test_impossible_values_relative_to_other_keys():
    # n_mels is checked against n_fft from the same config: fine once n_fft grows.
    cfg = build(RunConfig, {}, ["frontend.n_mels=300", "frontend.n_fft=1024",
                                "frontend.win_length=1024"])
    assert cfg.frontend.n_mels == 300
    with pytest.raises(ConfigError) as e:
        build(RunConfig, {}, ["frontend.sample_rate=8000"])     # default f_max 7800 > 4000
    assert e.value.key == "frontend.f_max" and "8000" in str(e.value)


def test_yaml_file_errors(tmp_path):
    with pytest.raises(ConfigError) as e:
        load(RunConfig, tmp_path / "absent.yaml")
    assert e.value.key == "config" and "absent.yaml" in str(e.value)
    bad = tmp_path / "bad.yaml"
    bad.write_text("frontend: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load(RunConfig, bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load(RunConfig, lst)
    typo = tmp_path / "typo.yaml"
    typo.write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load(RunConfig, typo)
    assert e.value.key == "optim.learning_rate"
    with pytest.raises(ConfigError, match="key=value"):
        build(RunConfig, {}, ["steps"])


def test_fixed_length_tuple_coerces_each_item_to_its_own_type():
    from dataclasses import dataclass

    from tympan.config import ConfigError, build

    @dataclass
    class Pair:
        pair: tuple[int, str] = (1, "a")

    assert build(Pair, {}, ["pair=[3, b]"]).pair == (3, "b")
    with pytest.raises(ConfigError, match=r"pair\[0\]"):
        build(Pair, {"pair": ["x", "b"]})
    with pytest.raises(ConfigError, match="expected 2 items"):
        build(Pair, {"pair": [1, "b", 3]})
