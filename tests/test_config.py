"""Typed config: presets as overrides, unknown keys rejected by name."""

import json
from pathlib import Path

import pytest

from switchnerf.config import Config, load_config, parse_set
from switchnerf.errors import SwitchNerfError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["cpu-demo", "switchnerf++", "single-grid", "fixed-grid"])
def test_presets_load(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert isinstance(cfg, Config)


def test_unknown_key_names_key_and_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model:\n  experts:\n    n_expertz: 4\n")
    with pytest.raises(SwitchNerfError, match=r"bad.yaml.*model.experts.n_expertz"):
        load_config(p)


def test_wrong_type_is_named(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train:\n  rays_per_step: lots\n")
    with pytest.raises(SwitchNerfError, match="train.rays_per_step"):
        load_config(p)


def test_set_overrides_and_does_not_mutate_defaults():
    cfg = load_config(None, ["train.rays_per_step=128", "model.routing.capacity_factor=1.25"])
    assert cfg.train.rays_per_step == 128
    assert cfg.model.routing.capacity_factor == 1.25
    assert Config().train.rays_per_step != 128


def test_set_typo_is_error():
    with pytest.raises(SwitchNerfError, match="trian"):
        load_config(None, ["trian.max_steps=3"])


def test_parse_set_nested():
    assert parse_set(["a.b=1", "a.c=[1, 2]"]) == {"a": {"b": 1, "c": [1, 2]}}


def test_fixed_grid_must_match_expert_count():
    with pytest.raises(SwitchNerfError, match="fixed_grid"):
        load_config(None, ["model.routing.kind=fixed", "model.routing.fixed_grid=[3, 3]"])


def test_presets_resolve_to_recorded_values():
    """Every preset resolves to the values recorded before the typed defaults were changed
    (tests/data/presets_resolved.json): moving defaults must not move a preset."""
    want = json.loads((Path(__file__).parent / "data" / "presets_resolved.json").read_text())
    got = {p.stem: load_config(p).to_dict() for p in sorted(CONFIGS.glob("*.yaml"))}
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name] == want[name], name
