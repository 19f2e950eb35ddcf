"""A folder of rendered video frames that lets an interrupted render resume.

Layout of DIR::

    render.json      manifest: fingerprint of the render settings, resolved depth range
    00000.png ...    frame i as ``{i:05d}.png``, uint8 RGB [H, W_total, 3], written atomically

A frame counts as done when its PNG decodes to the expected shape; anything else (a
missing, truncated or foreign file) is rendered again. A folder whose manifest belongs to
different settings (path, size, outputs, checkpoint) is refused rather than mixed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from switchnerf.errors import SwitchNerfError
from switchnerf.io_utils import atomic_path, write_json_atomic

MANIFEST = "render.json"


def fingerprint(settings: dict) -> str:
    """sha256 of the canonical JSON of ``settings`` (plain JSON values)."""
    blob = json.dumps(settings, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


class FramesDir:
    """Frames of one render in ``folder``; ``shape`` = (H, W_total, 3) of every frame."""

    def __init__(self, folder: Path, settings: dict, shape: tuple[int, int, int]):
        self.folder = Path(folder)
        self.shape = tuple(shape)
        self.key = fingerprint(settings)
        self.manifest: dict = {}
        path = self.folder / MANIFEST
        if path.is_file():
            try:
                self.manifest = json.loads(path.read_text())
            except ValueError:
                raise SwitchNerfError(f"{path}: unreadable manifest; delete the folder to "
                                      "start the frames again") from None
            if self.manifest.get("fingerprint") != self.key:
                raise SwitchNerfError(
                    f"{self.folder}: --frames-dir holds frames of a different render (path, "
                    "size, outputs or checkpoint differ); use another folder or delete it")
        elif self.folder.is_dir() and any(self.folder.glob("*.png")):
            raise SwitchNerfError(f"{self.folder}: --frames-dir has PNGs but no {MANIFEST}; "
                                  "use an empty folder")

    def open(self, extra: dict) -> dict:
        """Create the folder and write the manifest (settings fingerprint plus ``extra``,
        e.g. the resolved depth range); returns the manifest. An existing manifest wins:
        its ``extra`` values are kept so a resumed render colours frames identically."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if not self.manifest:
            self.manifest = {"fingerprint": self.key, **extra}
            write_json_atomic(self.folder / MANIFEST, self.manifest)
        return self.manifest

    def frame_path(self, i: int) -> Path:
        return self.folder / f"{i:05d}.png"

    def read(self, i: int) -> np.ndarray | None:
        """Frame i as uint8 [H, W_total, 3] if its PNG is complete, else None."""
        import imageio.v3 as iio

        path = self.frame_path(i)
        if not path.is_file():
            return None
        try:
            img = np.asarray(iio.imread(path))
        except Exception:  # noqa: BLE001 - truncated or foreign file: render it again
            return None
        if img.shape != self.shape or img.dtype != np.uint8:
            return None
        return img

    def write(self, i: int, frame: np.ndarray) -> None:
        """Write frame i (uint8 [H, W_total, 3]) under a temporary name, then rename."""
        import imageio.v3 as iio

        with atomic_path(self.frame_path(i)) as tmp:
            iio.imwrite(tmp, frame, extension=".png")
