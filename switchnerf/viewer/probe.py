"""A headless viser client speaking the wire protocol, for tests and benchmarks.

Protocol (viser 1.x): a websocket with subprotocol ``viser-v<viser version>``; the client
sends msgpack maps ``{"type": <message class name>, ...fields}``; the server sends binary
frames ``[u64 msgpack size][u64 zstd size][zstd(msgpack {"messages": [...], ...})]``
followed by 8-byte aligned raw buffers that ``{"__binary_index": i}`` placeholders point
to. A client counts as connected after its first ``ViewerCameraMessage``.

Cameras are sent as viser holds them: ``wxyz`` of R_world_camera_cv (OpenCV axes),
``position`` in the world frame, vertical ``fov`` in radians (see ``viser_cameras.py``).
"""

from __future__ import annotations

import io
import time

import numpy as np

__all__ = ["ProbeClient", "decode_frame"]


def _resolve(obj, buffers: list[bytes]):
    if isinstance(obj, dict):
        if "__binary_index" in obj:
            return buffers[obj["__binary_index"]]
        return {k: _resolve(v, buffers) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_resolve(v, buffers) for v in obj]
    return obj


def decode_frame(data: bytes) -> list[dict]:
    """The messages (dicts with a ``type``) of one server frame, binary buffers inlined."""
    import msgpack
    import zstandard

    n_inner = int.from_bytes(data[0:8], "little")
    n_comp = int.from_bytes(data[8:16], "little")
    inner = zstandard.ZstdDecompressor().decompress(data[16:16 + n_comp], max_output_size=n_inner)
    payload = msgpack.unpackb(inner, raw=False)
    offset = 16 + n_comp
    buffers = []
    for length in payload.get("binaryBufferLengths", []):
        offset += (8 - offset % 8) % 8
        buffers.append(data[offset:offset + length])
        offset += length
    return [_resolve(m, buffers) for m in payload["messages"]]


class ProbeClient:
    """A synchronous client: send cameras, wait for background images.

    Args:
        url: ``ws://host:port``.
        timeout: connect timeout in seconds.
    """

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        import viser
        from websockets.sync.client import connect

        self.ws = connect(url, subprotocols=[f"viser-v{viser.__version__}"],
                          open_timeout=timeout, max_size=64 * 1024 * 1024)

    def send_camera(self, wxyz, position, *, fov: float, width: int, height: int,
                    look_at=None, up=(0.0, 0.0, 1.0)) -> None:
        import msgpack

        position = [float(v) for v in position]
        if look_at is None:
            from viser import transforms as vtf

            forward = vtf.SO3(np.asarray(wxyz, dtype=np.float64)).as_matrix()[:, 2]
            look_at = np.asarray(position) + forward
        self.ws.send(msgpack.packb({
            "type": "ViewerCameraMessage", "wxyz": [float(v) for v in wxyz],
            "position": position, "fov": float(fov), "near": 0.01, "far": 1000.0,
            "image_height": int(height), "image_width": int(width),
            "look_at": [float(v) for v in look_at], "up_direction": [float(v) for v in up]}))

    def messages(self, timeout: float) -> list[dict]:
        """Messages of the next frame (empty when none arrives within ``timeout``)."""
        try:
            data = self.ws.recv(timeout=timeout)
        except TimeoutError:
            return []
        return decode_frame(data) if isinstance(data, bytes) else []

    def wait_background(self, timeout: float):
        """The next background image as uint8 [H, W, 3], or None on timeout."""
        from PIL import Image

        deadline = time.perf_counter() + timeout
        while (left := deadline - time.perf_counter()) > 0:
            for m in self.messages(left):
                if m.get("type") == "BackgroundImageMessage" and m.get("rgb_data"):
                    img = Image.open(io.BytesIO(bytes(m["rgb_data"]))).convert("RGB")
                    return np.asarray(img)
        return None

    def wait_background_size(self, timeout: float) -> tuple[int, int] | None:
        """(width, height) of the next background image (header only, no decode), or None
        on timeout."""
        from PIL import Image

        deadline = time.perf_counter() + timeout
        while (left := deadline - time.perf_counter()) > 0:
            for m in self.messages(left):
                if m.get("type") == "BackgroundImageMessage" and m.get("rgb_data"):
                    return Image.open(io.BytesIO(bytes(m["rgb_data"]))).size
        return None

    def close(self) -> None:
        self.ws.close()
