"""``switchnerf train`` / ``demo`` run-folder handling: resume with a new step count,
``--overwrite`` only of switchnerf runs, and every check before anything is deleted."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_train import ROOT, TINY

from switchnerf.cli import main as cli_main
from switchnerf.config import Config
from switchnerf.train.checkpoint import latest_checkpoint, load_checkpoint
from switchnerf.train.run import prepare_run_dir, write_run_header


def _train_args(scene, run: Path, store: Path, *extra: str) -> list[str]:
    args = ["train", "--scene", str(scene), "--output", str(run), "--store", str(store)]
    return args + list(extra)


def _tiny_sets() -> list[str]:
    out = []
    for s in TINY + ["model.experts.n_experts=4"]:
        out += ["--set", s]
    return out


def _fake_run(run: Path) -> None:
    """A run folder as the trainer leaves it before its first checkpoint."""
    write_run_header(run, Config(), ROOT / "scenes" / "minicity.yaml")
    (run / "metrics.jsonl").write_text("")


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_resume_with_a_new_max_steps_continues(tiny_scene, tmp_path, capsys):
    run, store = tmp_path / "run", tmp_path / "store"
    preset = ["--config", str(ROOT / "configs" / "cpu-demo.yaml")]
    assert cli_main(_train_args(tiny_scene, run, store, *preset, "--max-steps", "2",
                                *_tiny_sets())) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["max_steps"] == 2

    code = cli_main(_train_args(tiny_scene, run, store, "--resume", "--max-steps", "4"))
    assert code == 0, capsys.readouterr().err
    state = load_checkpoint(latest_checkpoint(run))
    assert state["step"] == 4 and state["config"]["train"]["max_steps"] == 4
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["max_steps"] == 4
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []  # atomic write

    # a time budget may be changed on resume too; nothing else may
    code = cli_main(_train_args(tiny_scene, run, store, "--resume", "--max-steps", "5",
                                "--set", "train.time_budget_s=600"))
    assert code == 0, capsys.readouterr().err
    saved = yaml.safe_load((run / "config.yaml").read_text())["train"]
    assert (saved["max_steps"], saved["time_budget_s"]) == (5, 600.0)
    assert load_checkpoint(latest_checkpoint(run))["step"] == 5
    capsys.readouterr()
    code = cli_main(_train_args(tiny_scene, run, store, "--resume",
                                "--set", "train.rays_per_step=64"))
    assert code == 2
    assert "train.rays_per_step" in capsys.readouterr().err
    assert load_checkpoint(latest_checkpoint(run))["step"] == 5


def test_overwrite_refuses_a_folder_that_is_not_a_run(tiny_scene, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"not a run")
    (folder / "config.yaml").write_text("mine: true\n")  # a config.yaml alone is not a run
    code = cli_main(["train", "--scene", str(tiny_scene), "--output", str(folder),
                     "--overwrite", "--device", "cpu"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a switchnerf run" in err and str(folder) in err
    assert (folder / "holiday.jpg").read_bytes() == b"not a run"
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    with pytest.raises(Exception, match="not a folder"):
        prepare_run_dir(a_file, resume=False, overwrite=True)
    assert a_file.read_text() == "x"


def test_overwrite_deletes_a_run(tmp_path):
    run = tmp_path / "run"
    _fake_run(run)
    (run / "checkpoints").mkdir()
    prepare_run_dir(run, resume=False, overwrite=True)
    assert not run.exists() or not any(run.iterdir())


@pytest.mark.parametrize("bad", [
    ["--set", "train.rays_per_stepp=4"],
    ["--set", "train.log_every=0"],
    ["--config", "configs/nope.yaml"],
    ["--max-steps", "0"],
    ["--device", "cuda:7"],
    ["--device", "gpu"],
    ["--scene", "scenes/nope.yaml"],
    ["--scene", "no/such/dataset"],
])
def test_train_checks_everything_before_deleting(bad, tiny_scene, tmp_path, capsys,
                                                monkeypatch):
    monkeypatch.chdir(ROOT)
    run = tmp_path / "run"
    _fake_run(run)
    before = _snapshot(run)
    args = ["train", "--output", str(run), "--overwrite", "--device", "cpu",
            "--scene", str(tiny_scene)]
    code = cli_main(args + bad)
    assert code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert _snapshot(run) == before


def test_demo_checks_its_config_before_deleting(tmp_path, capsys, monkeypatch):
    from switchnerf.scene import load

    monkeypatch.setattr(load, "ensure_synth_scene", lambda *a, **k: None)
    run = tmp_path / "demo" / "run"
    _fake_run(run)
    before = _snapshot(run)
    code = cli_main(["demo", "--output", str(tmp_path / "demo"), "--device", "cpu",
                     "--set", "train.max_stepz=3"])
    assert code == 2 and "train.max_stepz" in capsys.readouterr().err
    assert _snapshot(run) == before


@pytest.mark.parametrize("preset", [None, "cpu-demo"])
def test_train_reuses_the_store_scene_prepare_wrote(preset, tiny_scene, tmp_path,
                                                    capsys):
    """The README's `scene prepare SCENE` then `train --scene SCENE` (each with the same
    --config) reads the prepared store instead of calling it stale and rebuilding it."""
    store = tmp_path / "store"
    config = ["--config", str(ROOT / "configs" / f"{preset}.yaml")] if preset else []
    assert cli_main(["scene", "prepare", str(tiny_scene), "--out", str(store), *config]) == 0
    manifest = store / "manifest.json"
    built = (manifest.read_bytes(), manifest.stat().st_mtime_ns)
    model = [s for s in TINY if not s.startswith("train.shard_rays")]
    sets = [a for s in model + ["model.experts.n_experts=4"] for a in ("--set", s)]
    code = cli_main(_train_args(tiny_scene, tmp_path / "run", store, *config, "--max-steps", "1",
                                "--device", "cpu", *sets))
    assert code == 0, capsys.readouterr().err
    assert (manifest.read_bytes(), manifest.stat().st_mtime_ns) == built
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["max_steps"] == 1
