"""Fault injection, resume and logs: a run resumes after its dataset folder was moved,
copied or touched (the ray store is kept and training continues bit-exactly), a store whose
content really changed restarts the ray stream with one warning, and a run is never
resumed on another scene.

Every case checks the exit code, the one-line message naming the file or flag, that no
traceback is printed, and that the files there before are byte-identical where the command
must not change them."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from _faults import one_line_error, snapshot
from PIL import Image
from test_store_scene import make_scene
from test_train import ROOT, TINY

from switchnerf.cli import main as cli_main
from switchnerf.errors import SwitchNerfError
from switchnerf.scene import fingerprint as fingerprint_mod
from switchnerf.scene import store as store_mod
from switchnerf.scene.cameras import CameraTable
from switchnerf.scene.fingerprint import SAMPLE_BYTES, scene_fingerprint
from switchnerf.scene.store import ensure_store, open_store, prepare_store, store_status
from switchnerf.scene.store_reader import RayStream
from switchnerf.train.checkpoint import latest_checkpoint, load_checkpoint
from switchnerf.train.run import check_resume_scene, record_run_scene

RESUME_STEPS = 4  # the reference run's length; the interrupted copy stops at half of it
RESUME_SETS = TINY + ["model.experts.n_experts=4", "train.checkpoint_every=2"]


# ------------------------------------------------------------------ helpers
def _copy_dataset(src: Path, dst: Path, *, with_store: bool = True) -> Path:
    """Copy a dataset folder as `cp -r` does (new mtimes), with or without its store."""
    ignore = None if with_store else shutil.ignore_patterns(".switchnerf")
    shutil.copytree(src, dst, copy_function=shutil.copyfile, ignore=ignore)
    return dst


def _touch_all(folder: Path) -> None:
    """Give every file of ``folder`` a new mtime (and atime), an hour ahead."""
    later = time.time_ns() + 3600 * 10 ** 9
    for p in folder.rglob("*"):
        if p.is_file():
            os.utime(p, ns=(later, later))


def _interrupted_copy(reference: Path, run: Path) -> Path:
    """A copy of the reference run as a kill -9 right after its step-2 checkpoint left it."""
    shutil.copytree(reference, run)
    last = latest_checkpoint(run)
    assert last.name == f"step_{RESUME_STEPS:08d}.pt"
    last.unlink()
    assert load_checkpoint(latest_checkpoint(run))["step"] == RESUME_STEPS // 2
    return run


def _relocated(scene, root: Path):
    """``scene`` as a reader makes it from its dataset folder moved to ``root``."""
    old = Path(scene.root)

    def move(r):
        return dataclasses.replace(r, image_path=root / Path(r.image_path).relative_to(old))

    frames = {s: [move(r) for r in recs] for s, recs in scene.frames.items()}
    return dataclasses.replace(scene, root=root, frames=frames)


def _set_scene_record(run: Path, scene: Path, fingerprint: str) -> None:
    (run / "scene.json").write_text(json.dumps({"path": str(scene.resolve()),
                                                "fingerprint": fingerprint}))


def _resume(scene: Path, run: Path, *extra: str) -> int:
    return cli_main(["train", "--scene", str(scene), "--output", str(run), "--resume",
                     "--device", "cpu", *extra])


def _messages(err: str) -> list[str]:
    """switchnerf's own lines of stderr (progress output left out)."""
    return [line for line in err.splitlines() if line.startswith("switchnerf:")]


def _assert_same_final_state(run: Path, reference: Path) -> None:
    mine = load_checkpoint(latest_checkpoint(run))
    ref = load_checkpoint(latest_checkpoint(reference))
    assert mine["step"] == ref["step"] == RESUME_STEPS
    for part in ("field", "grid"):
        assert mine[part].keys() == ref[part].keys()
        for key, value in ref[part].items():
            assert torch.equal(mine[part][key], value), (part, key)
    assert mine["stream"] == ref["stream"]


@pytest.fixture(scope="module")
def resume_reference_run(tiny_scene, tmp_path_factory):
    """(dataset folder with its default store, a run of RESUME_STEPS straight steps with
    checkpoints every 2 steps, the dataset's fingerprint)."""
    base = tmp_path_factory.mktemp("resume_reference")
    data = _copy_dataset(tiny_scene, base / "data", with_store=False)
    run = base / "run"
    sets = [a for s in RESUME_SETS for a in ("--set", s)]
    code = cli_main(["train", "--scene", str(data), "--output", str(run), "--device", "cpu",
                     "--config", str(ROOT / "configs" / "cpu-demo.yaml"),
                     "--max-steps", str(RESUME_STEPS), *sets])
    assert code == 0
    record = json.loads((run / "scene.json").read_text())
    assert record["path"] == str(data.resolve())
    return data, run, record["fingerprint"]


# ------------------------------------------------------------------ the fingerprint
def _same_size_edit(path: Path, offset: int) -> None:
    blob = bytearray(path.read_bytes())
    blob[offset] ^= 0xFF
    path.write_bytes(bytes(blob))


def test_resume_fingerprint_ignores_location_and_mtime_not_content(tmp_path):
    scene = make_scene(tmp_path / "a" / "scene")
    before = scene_fingerprint(scene)
    _touch_all(scene.root)
    assert scene_fingerprint(scene) == before
    os.rename(tmp_path / "a", tmp_path / "b")
    scene = _relocated(scene, tmp_path / "b" / "scene")
    assert scene_fingerprint(scene) == before

    # a same-size replacement is seen at either end of the file
    path = scene.images("train")[1].image_path
    original = path.read_bytes()
    for offset in (0, len(original) - 1):
        _same_size_edit(path, offset)
        assert scene_fingerprint(scene) != before
        path.write_bytes(original)
    assert scene_fingerprint(scene) == before
    # another size, or another camera
    path.write_bytes(original + b"\0")
    assert scene_fingerprint(scene) != before
    path.write_bytes(original)
    rec = scene.frames["train"][1]
    bumped = dataclasses.replace(rec, fx=rec.fx + 1e-9)
    other = dataclasses.replace(scene, frames={**scene.frames,
                                               "train": [scene.frames["train"][0], bumped,
                                                         *scene.frames["train"][2:]]})
    assert scene_fingerprint(other) != before


def test_resume_fingerprint_reads_only_the_ends_of_a_large_file(tmp_path):
    """The documented rule: size plus the first and last SAMPLE_BYTES bytes; an edit that
    keeps the size and lies wholly in the middle of a large file is not seen."""
    scene = make_scene(tmp_path / "scene")
    path = scene.images("val")[0].image_path
    rng = np.random.default_rng(3)
    path.write_bytes(rng.integers(0, 256, 3 * SAMPLE_BYTES, dtype=np.uint8).tobytes())
    before = scene_fingerprint(scene)
    _same_size_edit(path, SAMPLE_BYTES + 17)  # the middle
    assert scene_fingerprint(scene) == before
    for offset in (SAMPLE_BYTES - 1, 2 * SAMPLE_BYTES):  # the last byte of the head, the tail
        _same_size_edit(path, offset)
        assert scene_fingerprint(scene) != before
        _same_size_edit(path, offset)
    assert scene_fingerprint(scene) == before

    # the per-file digest is SHA-256 of head + tail: checked against hashlib directly
    blob = path.read_bytes()
    want = hashlib.sha256(blob[:SAMPLE_BYTES] + blob[-SAMPLE_BYTES:]).hexdigest()
    assert fingerprint_mod._file_sample_digest(path) == (len(blob), want)
    small = scene.images("val")[1].image_path
    assert fingerprint_mod._file_sample_digest(small) == (small.stat().st_size,
                                                    hashlib.sha256(small.read_bytes()).hexdigest())


def test_resume_fingerprint_missing_image_is_one_error(tmp_path):
    scene = make_scene(tmp_path / "scene")
    path = scene.images("train")[2].image_path
    path.unlink()
    with pytest.raises(SwitchNerfError, match="image file not found") as info:
        scene_fingerprint(scene)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_resume_store_kept_after_dataset_moved_or_touched(tmp_path):
    scene = make_scene(tmp_path / "a" / "scene")
    elsewhere = tmp_path / "stores" / "s"
    for out in (store_mod.default_store_dir(scene), elsewhere):
        ensure_store(scene, out, shard_rays=50, progress=False)
    built = snapshot(store_mod.default_store_dir(scene)).values(), snapshot(elsewhere)
    os.rename(tmp_path / "a", tmp_path / "b")
    _touch_all(tmp_path / "b")
    moved = _relocated(scene, tmp_path / "b" / "scene")
    default = store_mod.default_store_dir(moved)
    assert default == tmp_path / "b" / "scene" / ".switchnerf" / "store"  # moved with it
    for out in (default, elsewhere):
        assert store_status(out, moved, shard_rays=50) == "ok"
        st = ensure_store(moved, out, shard_rays=50, progress=False)
        assert st.manifest["fingerprint"] == scene_fingerprint(moved)
    assert list(snapshot(default).values()) == list(built[0])  # not rebuilt
    assert snapshot(elsewhere) == built[1]


def test_resume_store_of_the_earlier_fingerprint_rule_is_kept_until_moved(tmp_path):
    """A store fingerprinted by rule 1 (absolute paths and mtimes) is used as it is while
    its dataset stays put, and checkpoints made on it keep their stream position."""
    scene = make_scene(tmp_path / "scene")
    out = tmp_path / "store"
    st = prepare_store(scene, out, shard_rays=50, progress=False)
    old = json.loads((out / "manifest.json").read_text())
    old.pop("fingerprint_rule")
    old["fingerprint"] = fingerprint_mod.fingerprint_rule_1(scene)
    (out / "manifest.json").write_text(json.dumps(old))
    before = snapshot(out)
    assert store_status(out, scene, shard_rays=50) == "ok"
    st = ensure_store(scene, out, shard_rays=50, progress=False)
    assert snapshot(out) == before  # kept, not rewritten
    assert st.manifest["fingerprint"] == scene_fingerprint(scene)
    assert st.manifest["fingerprint_rule_1"] == old["fingerprint"]
    assert open_store(out, scene).manifest["fingerprint"] == scene_fingerprint(scene)

    cams = CameraTable.from_scene(scene)
    with RayStream(st, cams, batch_size=7, loop=True) as a:
        for _ in range(5):
            next(a)
        state = a.state_dict()
        want = next(a)
    state["fingerprint"] = old["fingerprint"]  # as a checkpoint of the old store has it
    with RayStream(st, cams, batch_size=7, loop=True) as b:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            b.load_state_dict(state)
        assert torch.equal(next(b).rgb, want.rgb)

    _touch_all(scene.root)  # rule 1 sees the mtimes: the store is rebuilt once
    assert store_status(out, scene, shard_rays=50) == "stale"
    st = ensure_store(scene, out, shard_rays=50, progress=False)
    assert json.loads((out / "manifest.json").read_text())["fingerprint_rule"] == 2


def test_resume_stream_state_of_another_store_restarts_its_epoch(tmp_path):
    scene = make_scene(tmp_path / "scene")
    st = prepare_store(scene, tmp_path / "store", shard_rays=50, progress=False)
    cams = CameraTable.from_scene(scene)
    with RayStream(st, cams, batch_size=40, loop=True) as a:
        for _ in range(6):  # into epoch 1 (144 records)
            next(a)
        state = a.state_dict()
    assert state["epoch"] == 1 and (state["shard"], state["offset"]) != (0, 0)
    state = {**state, "fingerprint": "0" * 64}
    with RayStream(st, cams, batch_size=40, loop=True) as b, \
            RayStream(st, cams, batch_size=40, loop=True) as ref:
        with pytest.warns(UserWarning) as caught:
            b.load_state_dict(state)
        assert len(caught) == 1
        msg = str(caught[0].message)
        assert msg.startswith(f"{st.root}: ") and "position was reset" in msg and "\n" not in msg
        ref.load_state_dict({**ref.state_dict(), "epoch": 1})
        assert b.state_dict() == ref.state_dict()
        assert torch.equal(next(b).rgb, next(ref).rgb)
    with RayStream(st, cams, batch_size=40, seed=5) as c, \
            pytest.raises(ValueError, match="seed"):
        c.load_state_dict(state)


# ------------------------------------------------------------------ scene.json
def test_resume_scene_record_rules(tmp_path):
    from switchnerf.config import Config
    from switchnerf.train.run import write_run_header

    data, moved, other = tmp_path / "data", tmp_path / "moved", tmp_path / "other"
    for p in (data, moved, other):
        p.mkdir()
    run = tmp_path / "run"
    write_run_header(run, Config(), data)
    # a run from before fingerprints were recorded: any scene passes, then it is recorded
    check_resume_scene(run, other, "f" * 64)
    assert record_run_scene(run, data, "a" * 64) is None
    assert json.loads((run / "scene.json").read_text()) == {"path": str(data.resolve()),
                                                            "fingerprint": "a" * 64}
    stamp = (run / "scene.json").stat().st_mtime_ns
    assert record_run_scene(run, data, "a" * 64) is None
    assert (run / "scene.json").stat().st_mtime_ns == stamp  # nothing changed, not rewritten

    check_resume_scene(run, data, "b" * 64)  # same path, content changed in place: allowed
    check_resume_scene(run, moved, "a" * 64)  # moved: same content at another path
    before = snapshot(run)
    with pytest.raises(SwitchNerfError) as info:
        check_resume_scene(run, other, "b" * 64)
    msg = str(info.value)
    assert msg.startswith("--scene: ") and str(other) in msg and str(data) in msg
    assert "\n" not in msg and snapshot(run) == before

    note = record_run_scene(run, moved, "a" * 64)
    assert note == (f"{run / 'scene.json'}: path: now {moved.resolve()} "
                    f"(was {data.resolve()})")
    assert json.loads((run / "scene.json").read_text())["path"] == str(moved.resolve())
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # atomic, no temp left


# ------------------------------------------------------------------ train --resume
def test_resume_after_dataset_moved_and_touched_is_bit_exact(resume_reference_run, tmp_path,
                                                             capsys):
    data, reference, fingerprint = resume_reference_run
    copy = _copy_dataset(data, tmp_path / "a" / "data")  # with its store
    run = _interrupted_copy(reference, tmp_path / "run")
    _set_scene_record(run, copy, fingerprint)  # as if the run was trained on the copy
    moved = tmp_path / "b" / "data-moved"
    moved.parent.mkdir()
    os.rename(copy, moved)
    _touch_all(moved)
    store = moved / ".switchnerf" / "store"
    manifest = (store / "manifest.json").read_bytes()
    stamp = (store / "manifest.json").stat().st_mtime_ns
    capsys.readouterr()

    code = _resume(moved, run)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Traceback" not in err and "scatter pixels" not in out + err  # store not rebuilt
    note = f"{run / 'scene.json'}: path: now {moved.resolve()} (was {copy.resolve()})"
    assert _messages(err) == [f"switchnerf: note: {note}"]
    assert (store / "manifest.json").read_bytes() == manifest
    assert (store / "manifest.json").stat().st_mtime_ns == stamp
    assert json.loads((run / "scene.json").read_text()) == {"path": str(moved.resolve()),
                                                            "fingerprint": fingerprint}
    _assert_same_final_state(run, reference)


def test_resume_with_store_elsewhere_after_dataset_copied_is_bit_exact(resume_reference_run,
                                                                       tmp_path, capsys):
    data, reference, _ = resume_reference_run
    store = tmp_path / "stores" / "tiny"
    shutil.copytree(data / ".switchnerf" / "store", store)  # a store kept outside the data
    before = snapshot(store)
    copy = _copy_dataset(data, tmp_path / "copied", with_store=False)
    run = _interrupted_copy(reference, tmp_path / "run")
    capsys.readouterr()

    code = _resume(copy, run, "--store", str(store))
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Traceback" not in err and "scatter pixels" not in out + err
    note = f"{run / 'scene.json'}: path: now {copy.resolve()} (was {data.resolve()})"
    assert _messages(err) == [f"switchnerf: note: {note}"]
    assert snapshot(store) == before
    assert not (copy / ".switchnerf").exists()
    _assert_same_final_state(run, reference)


def test_resume_after_an_image_changed_warns_and_resets_the_stream(resume_reference_run,
                                                                    tmp_path, capsys):
    data, reference, fingerprint = resume_reference_run
    copy = _copy_dataset(data, tmp_path / "data")
    run = _interrupted_copy(reference, tmp_path / "run")
    _set_scene_record(run, copy, fingerprint)
    image = min((copy / "train" / "rgbs").iterdir())
    pixels = np.asarray(Image.open(image).convert("RGB"))
    Image.fromarray(255 - pixels).save(image, format=Image.open(image).format)
    store = copy / ".switchnerf" / "store"
    capsys.readouterr()

    code = _resume(copy, run)
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Traceback" not in err
    [line] = _messages(err)
    assert line.startswith(f"switchnerf: warning: {store}: ") and "position was reset" in line
    rebuilt = json.loads((store / "manifest.json").read_text())["fingerprint"]
    assert rebuilt != fingerprint
    assert json.loads((run / "scene.json").read_text()) == {"path": str(copy.resolve()),
                                                            "fingerprint": rebuilt}
    state = load_checkpoint(latest_checkpoint(run))
    assert state["step"] == RESUME_STEPS and state["stream"]["fingerprint"] == rebuilt


def test_resume_on_another_scene_is_refused(resume_reference_run, tmp_path, capsys):
    data, reference, _ = resume_reference_run
    other = _copy_dataset(data, tmp_path / "other")  # its store was built from data
    image = sorted((other / "train" / "rgbs").iterdir())[1]
    _same_size_edit(image, 0)
    run = _interrupted_copy(reference, tmp_path / "run")
    before = snapshot(run, other)
    capsys.readouterr()

    line = one_line_error(_resume(other, run), capsys, "--scene", str(other.resolve()),
                          str(data.resolve()))
    assert "not the scene this run was trained on" in line
    assert snapshot(run, other) == before  # nothing written: neither the run nor a store
