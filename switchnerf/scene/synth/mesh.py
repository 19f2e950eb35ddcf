"""Triangle-mesh builder for the synthetic city: boxes, gable roofs, trees, with
per-triangle material attributes (see ``city`` for their meaning). Metres, z up."""

from __future__ import annotations

import numpy as np

GROUND, WALL, ROOF, FOLIAGE, TRUNK, FACADE = range(6)


class MeshBuilder:
    """Accumulates triangles with per-triangle attributes."""

    def __init__(self):
        self.verts: list[np.ndarray] = []
        self.tris: list[np.ndarray] = []
        self.attrs: list[tuple] = []
        self.nv = 0

    def add(
        self,
        verts: np.ndarray,
        tris: np.ndarray,
        kind: int,
        albedo,
        window=(0, 0, 0),
        bay=0.0,
        floor=0.0,
        origin=(0.0, 0.0),
        base=0.0,
        top=0.0,
    ) -> None:
        self.verts.append(np.asarray(verts, dtype=np.float64))
        self.tris.append(np.asarray(tris, dtype=np.int64) + self.nv)
        self.nv += len(verts)
        self.attrs.extend(
            [(kind, tuple(albedo), tuple(window), bay, floor, tuple(origin), base, top)] * len(tris)
        )

    def box(self, lo, hi, wall_kind: int, wall, roof, **facade) -> None:
        (x0, y0, z0), (x1, y1, z1) = lo, hi
        v = np.array(
            [
                [x0, y0, z0],
                [x1, y0, z0],
                [x1, y1, z0],
                [x0, y1, z0],
                [x0, y0, z1],
                [x1, y0, z1],
                [x1, y1, z1],
                [x0, y1, z1],
            ]
        )
        walls = np.array(
            [[0, 1, 5], [0, 5, 4], [1, 2, 6], [1, 6, 5], [2, 3, 7], [2, 7, 6], [3, 0, 4], [3, 4, 7]]
        )
        self.add(v, walls, wall_kind, wall, origin=(x0, y0), base=z0, top=z1, **facade)
        self.add(v, np.array([[4, 5, 6], [4, 6, 7]]), ROOF, roof)

    def gable_roof(self, lo, hi, z, rise, along_x: bool, wall, roof) -> None:
        (x0, y0), (x1, y1) = lo, hi
        if along_x:
            ym = 0.5 * (y0 + y1)
            v = np.array(
                [
                    [x0, y0, z],
                    [x1, y0, z],
                    [x1, y1, z],
                    [x0, y1, z],
                    [x0, ym, z + rise],
                    [x1, ym, z + rise],
                ]
            )
        else:
            xm = 0.5 * (x0 + x1)
            v = np.array(
                [
                    [x0, y0, z],
                    [x0, y1, z],
                    [x1, y1, z],
                    [x1, y0, z],
                    [xm, y0, z + rise],
                    [xm, y1, z + rise],
                ]
            )
        self.add(v, np.array([[0, 1, 5], [0, 5, 4], [2, 3, 4], [2, 4, 5]]), ROOF, roof)
        self.add(v, np.array([[0, 4, 3], [1, 2, 5]]), WALL, wall)

    def tree(self, x, y, height, radius, conifer: bool, leaf) -> None:
        trunk_h = 0.35 * height
        self.box(
            (x - 0.25, y - 0.25, 0.0),
            (x + 0.25, y + 0.25, trunk_h),
            TRUNK,
            (0.40, 0.30, 0.20),
            (0.40, 0.30, 0.20),
        )
        if conifer:
            k = 8
            a = 2 * np.pi * np.arange(k) / k
            ring = np.stack(
                [x + radius * np.cos(a), y + radius * np.sin(a), np.full(k, trunk_h)], 1
            )
            v = np.vstack([ring, [[x, y, height]], [[x, y, trunk_h]]])
            tris = [[i, (i + 1) % k, k] for i in range(k)] + [
                [(i + 1) % k, i, k + 1] for i in range(k)
            ]
            self.add(v, np.array(tris), FOLIAGE, leaf)
            return
        v, tris = _icosahedron()
        centre = np.array([x, y, trunk_h + 0.85 * (height - trunk_h) * 0.5 + radius * 0.3])
        self.add(
            v * np.array([radius, radius, 0.5 * (height - trunk_h) + 0.3]) + centre,
            tris,
            FOLIAGE,
            leaf,
        )


def _icosahedron() -> tuple[np.ndarray, np.ndarray]:
    p = (1 + 5**0.5) / 2
    v = np.array(
        [
            [-1, p, 0],
            [1, p, 0],
            [-1, -p, 0],
            [1, -p, 0],
            [0, -1, p],
            [0, 1, p],
            [0, -1, -p],
            [0, 1, -p],
            [p, 0, -1],
            [p, 0, 1],
            [-p, 0, -1],
            [-p, 0, 1],
        ],
        float,
    )
    t = np.array(
        [
            [0, 11, 5],
            [0, 5, 1],
            [0, 1, 7],
            [0, 7, 10],
            [0, 10, 11],
            [1, 5, 9],
            [5, 11, 4],
            [11, 10, 2],
            [10, 7, 6],
            [7, 1, 8],
            [3, 9, 4],
            [3, 4, 2],
            [3, 2, 6],
            [3, 6, 8],
            [3, 8, 9],
            [4, 9, 5],
            [2, 4, 11],
            [6, 2, 10],
            [8, 6, 7],
            [9, 8, 1],
        ]
    )
    return v / np.linalg.norm(v[0]), t
