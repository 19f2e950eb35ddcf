"""Helpers of the fault-injection tests (tests/test_faults_*.py): snapshots of folders that
must come out of a failed command byte-identical, and the one-line error check."""

from __future__ import annotations

from pathlib import Path


def snapshot(*folders: Path) -> dict[str, bytes]:
    """Every file under ``folders`` (hidden ones too): path -> bytes."""
    out = {}
    for folder in folders:
        for p in sorted(Path(folder).rglob("*")):
            if p.is_file():
                out[str(p)] = p.read_bytes()
    return out


def one_line_error(rc: int, capsys, *needles: str) -> str:
    """Assert exit code 2 and stderr of exactly one line, ``switchnerf: error: ...``,
    holding every needle and no traceback; returns the line."""
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("switchnerf: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]
