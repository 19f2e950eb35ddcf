"""Thumbnails of a scene's images on their camera frustums, loaded in the background.

Thumbnails are read from the image files the dataset holds (the distorted source for an
undistorted record: nothing is written, no undistortion cache is made), decoded at reduced
size where the format allows (JPEG draft mode), longer side at most ``side`` pixels.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from switchnerf.errors import SwitchNerfError, input_error

__all__ = ["ThumbnailLoader", "read_thumbnail"]


def read_thumbnail(record, side: int) -> np.ndarray:
    """uint8 [h, w, 3] of ``record``'s image file, longer side <= ``side`` (never upscaled).

    Raises ``SwitchNerfError`` naming the file when it cannot be read as an image.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(record.undistort.source_path if record.undistort is not None
                else record.image_path)
    try:
        with Image.open(path) as im:
            im.draft("RGB", (side, side))  # JPEG: decode at 1/2, 1/4 or 1/8 scale
            im = im.convert("RGB")
            im.thumbnail((side, side), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8).copy()
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise input_error(path, "image", f"cannot be read ({exc})") from None


class ThumbnailLoader:
    """A daemon thread reading thumbnails one by one and handing each to ``show``.

    Args:
        jobs: (key, record) pairs, in the order to load.
        show: ``show(key, uint8 [h, w, 3])`` (sets a frustum's image).
        side: longer side of a thumbnail in pixels.
        report: called with a one-line message for an image that cannot be read.
    """

    def __init__(self, jobs, show: Callable[[object, np.ndarray], None], *, side: int,
                 report: Callable[[str], None] = print) -> None:
        self._jobs, self._show, self._side, self._report = list(jobs), show, side, report
        self._stop = threading.Event()
        self.loaded = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name="switchnerf-view-thumbnails",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for key, record in self._jobs:
            if self._stop.is_set():
                return
            try:
                image = read_thumbnail(record, self._side)
            except SwitchNerfError as exc:
                self.failed += 1
                self._report(f"viewer: no thumbnail: {exc}")
                continue
            if self._stop.is_set():
                return
            try:
                self._show(key, image)
            except Exception:  # the server stopped under us
                if self._stop.is_set():
                    return
                raise
            self.loaded += 1

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every thumbnail was tried; returns whether that happened."""
        self._thread.join(timeout)
        return self.done

    def close(self, timeout: float = 5.0) -> None:
        """Stop after the current image and join."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
