"""Typed config: presets as overrides, unknown keys rejected by name."""

import dataclasses
import json
from pathlib import Path

import pytest

from switchnerf.config import Config, ConfigFieldError, load_config, parse_set
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
    (tests/presets_resolved.json): moving defaults must not move a preset."""
    want = json.loads((Path(__file__).parent / "presets_resolved.json").read_text())
    got = {p.stem: load_config(p).to_dict() for p in sorted(CONFIGS.glob("*.yaml"))}
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name] == want[name], name


def test_switchnerf_preset_is_the_typed_defaults():
    assert load_config(CONFIGS / "switchnerf++.yaml") == Config()


def test_sections_are_frozen_and_replace_checks_again():
    cfg = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.max_steps = 3
    short = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=3))
    assert short.train.max_steps == 3 and cfg.train.max_steps == Config().train.max_steps
    with pytest.raises(ConfigFieldError, match=r"TrainConfig\.max_steps: must be >= 1, got 0"):
        dataclasses.replace(cfg.train, max_steps=0)
    assert hash(cfg) == hash(Config())


@pytest.mark.parametrize("assignment, message", [
    ("train.checkpoint_every=0", "train.checkpoint_every: must be >= 1, got 0"),
    ("train.log_every=0", "train.log_every: must be >= 1, got 0"),
    ("train.max_steps=0", "train.max_steps: must be >= 1, got 0"),
    ("train.keep_last=0", "train.keep_last: must be >= 1, got 0"),
    ("train.eval_images=-1", "train.eval_images: must be >= 0, got -1"),
    ("train.rays_per_step=0", "train.rays_per_step: must be >= 1, got 0"),
    ("train.shard_rays=0", "train.shard_rays: must be >= 1, got 0"),
    ("train.time_budget_s=0", "train.time_budget_s: must be > 0.0, got 0.0"),
    ("train.time_budget_s=.inf", "train.time_budget_s: expected a finite number, got inf"),
    ("sampler.update_every=0", "sampler.update_every: must be >= 1, got 0"),
    ("sampler.ema_decay=1.5", r"sampler.ema_decay: must be in \[0.0, 1.0\], got 1.5"),
    ("sampler.alpha_thre=.nan", "sampler.alpha_thre: expected a finite number, got nan"),
    ("optim.lr_tables=0", "optim.lr_tables: must be > 0.0, got 0.0"),
    ("optim.lr_mlps=-.inf", "optim.lr_mlps: expected a finite number, got -inf"),
    ("optim.final_lr_factor=0", "optim.final_lr_factor: must be > 0.0, got 0.0"),
    ("model.routing.kind=moe", "model.routing.kind: expected one of 'gate', 'fixed', 'single'"),
    ("model.routing.capacity_factor=0", "model.routing.capacity_factor: must be > 0.0"),
    ("model.routing.gate.n_features_per_level=3",
     "model.routing.gate.n_features_per_level: expected one of 1, 2, 4, 8, got 3"),
    ("model.experts.n_experts=0", "model.experts.n_experts: must be >= 1, got 0"),
    ("model.experts.log2_hashmap_size=40", r"model.experts.log2_hashmap_size: must be in \[3, 31\]"),
    ("model.head.sh_degree=5", r"model.head.sh_degree: must be in \[1, 4\], got 5"),
    ("model.routing.fixed_grid=[0, 8]", r"model.routing.fixed_grid: must be >= 1, got 0"),
    ("model.experts.n_experts=2.5", "model.experts.n_experts: expected an integer, got 2.5"),
])
def test_set_values_are_checked_next_to_their_fields(assignment, message):
    with pytest.raises(SwitchNerfError, match="^--set: " + message):
        load_config(None, [assignment])


def test_file_errors_name_the_file_and_dotted_key(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("sampler:\n  update_every: 0\n")
    with pytest.raises(SwitchNerfError, match=r"^\S*bad.yaml: sampler.update_every: must be >= 1"):
        load_config(p)
    p.write_text("model:\n  routing:\n    kind: single\n")
    with pytest.raises(SwitchNerfError, match=r"bad.yaml: model.experts.n_experts: routing kind"):
        load_config(p)
    p.write_text("train: 3\n")
    with pytest.raises(SwitchNerfError, match=r"bad.yaml: train: expected a mapping, got 3"):
        load_config(p)


def test_integers_become_floats_and_lists_tuples():
    cfg = load_config(None, ["optim.lr_mlps=1", "model.routing.fixed_grid=[1, 8]",
                             "model.routing.kind=fixed"])
    assert cfg.optim.lr_mlps == 1.0 and isinstance(cfg.optim.lr_mlps, float)
    assert cfg.model.routing.fixed_grid == (1, 8)


@pytest.mark.parametrize("sets, message", [
    (["train=1", "train.seed=2"], "train.seed: train was set to a value"),
    (["a.b=1", "a=2"], "a: has keys set by an earlier --set"),
    (["a=1", "a.b.c=2"], "a.b.c: a was set to a value"),
    (["train..seed=1"], "is not a dotted key"),
    (["train.seed=[1"], "train.seed: value '\\[1' is not valid YAML"),
])
def test_conflicting_set_keys_are_clear_errors(sets, message):
    with pytest.raises(SwitchNerfError, match=message):
        parse_set(sets)


def test_set_repeated_key_keeps_last():
    assert load_config(None, ["train.seed=1", "train.seed=2"]).train.seed == 2
