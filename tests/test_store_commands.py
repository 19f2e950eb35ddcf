"""``scene prepare`` and ``scene partition`` commands on a tiny scene."""

from __future__ import annotations

import argparse
import json
import sys
import types

import numpy as np
import pytest
from test_store_scene import make_scene

from switchnerf.cli.scene_store import add_partition_parser, add_prepare_parser
from switchnerf.errors import SwitchNerfError
from switchnerf.scene.partition import Partition
from switchnerf.scene.store import open_store


@pytest.fixture
def cli(tmp_path, monkeypatch):
    scene = make_scene(tmp_path / "scene", n_train=4)
    fake = types.ModuleType("switchnerf.scene.load")
    fake.load_scene = lambda path: scene
    monkeypatch.setitem(sys.modules, "switchnerf.scene.load", fake)
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    add_prepare_parser(sub)
    add_partition_parser(sub)

    def run(*argv):
        args = parser.parse_args(list(argv))
        return args.func(args)

    return scene, run, parser


def test_prepare_default_dir_and_up_to_date(cli, capsys):
    scene, run, _ = cli
    assert run("prepare", "x", "--shard-rays", "40") == 0
    store_dir = scene.root / ".switchnerf" / "store"
    st = open_store(store_dir, scene)
    assert st.n_records == 4 * 48 and st.partition is None
    mtime = (store_dir / "manifest.json").stat().st_mtime_ns
    assert run("prepare", "x", "--shard-rays", "40") == 0
    assert "up to date" in capsys.readouterr().err
    assert (store_dir / "manifest.json").stat().st_mtime_ns == mtime
    assert run("prepare", "x", "--shard-rays", "40", "--force") == 0
    assert (store_dir / "manifest.json").stat().st_mtime_ns != mtime


def test_partition_then_prepare_with_cells(cli, tmp_path):
    scene, run, _ = cli
    assert run("partition", "x", "--grid", "1x2", "--samples", "32") == 0
    pdir = scene.root / ".switchnerf" / "partition"
    part = Partition.load(pdir / "partition.json")
    counts = json.loads((pdir / "cell_counts.json").read_text())
    assert part.grid == (1, 2) and counts["rays"] == 4 * 48 and len(counts["cells"]) == 2
    assert sum(counts["cells"]) >= counts["rays"] and counts["none"] == 0
    assert (pdir / "partition_map.png").stat().st_size > 0
    out = tmp_path / "st"
    assert run("prepare", "x", "--out", str(out), "--partition", "--samples", "32",
               "--val-left-halves") == 0
    st = open_store(out, scene)
    assert st.partition.grid == (1, 2)
    assert st.manifest["config"]["val_left_halves"] is True
    # same partition and samples as the command: same train-ray counts
    train = [0, 0]
    for i in range(len(st.shards)):
        rec = np.asarray(st.load_records(i))
        bits = np.unpackbits(np.asarray(st.load_cells(i)), axis=1, count=2)[rec["image_index"] < 4]
        train = [a + int(b) for a, b in zip(train, bits.sum(0))]
    assert train == counts["cells"]


def test_bad_arguments(cli):
    _, run, parser = cli
    with pytest.raises(SystemExit):
        parser.parse_args(["partition", "x", "--grid", "2by2"])
    with pytest.raises(SwitchNerfError, match="margin"):
        run("partition", "x", "--margin", "0.9")
    with pytest.raises(SwitchNerfError, match="nope.json"):
        run("prepare", "x", "--partition", "nope.json")
