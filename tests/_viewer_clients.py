"""Browser stand-ins for the viewer load test, run as their own process (as browsers are):
``python tests/_viewer_clients.py WS_URL N SECONDS``. N threads each connect a ProbeClient,
move its camera on an orbit every 0.1 s and read every frame the server sends, for SECONDS;
then they disconnect and one JSON line reports the background images each received."""

from __future__ import annotations

import json
import math
import sys
import threading
import time

from switchnerf.video.paths import look_at
from switchnerf.viewer.probe import ProbeClient
from switchnerf.viewer.viser_cameras import viser_from_c2w


def _client(url: str, k: int, seconds: float, images: list[int]) -> None:
    client = ProbeClient(url)
    try:
        end = time.perf_counter() + seconds
        t = 0
        while time.perf_counter() < end:
            a = 2 * math.pi * (k / 8 + t / 50)
            wxyz, pos = viser_from_c2w(look_at((2.5 * math.cos(a), 2.5 * math.sin(a), 1.6),
                                               (0.0, 0.0, 0.3)))
            client.send_camera(wxyz, pos, fov=0.9, width=640, height=480)
            t += 1
            stop = time.perf_counter() + 0.1
            while (left := stop - time.perf_counter()) > 0:
                for m in client.messages(left):
                    if m.get("type") == "BackgroundImageMessage" and m.get("rgb_data"):
                        images[k] += 1
    finally:
        client.close()


def main(url: str, n: int, seconds: float) -> None:
    images = [0] * n
    threads = [threading.Thread(target=_client, args=(url, k, seconds, images))
               for k in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    print(json.dumps({"images": images}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))
