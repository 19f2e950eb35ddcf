"""Presets of the built-in synthetic city: layout, cameras and image size, in metres.

The city is a square of half-size ``half_extent`` centred on the origin of a z-up world,
cut into blocks by a grid of roads. A block is *core* (tall buildings with window grids)
when its centre is within the radius of one of the ``cores``, *suburb* (low houses, trees)
within ``suburb_radius`` of the origin, else *field* (coloured patches, tree clusters).
Optional features override that: a *plaza* (paved, a fountain) or a *park* (lawn, paths,
trees) where a block's centre is within the radius of one, and *riverside* (lawn, trees)
where a block reaches the river, a band of water whose centre line is
``x = x0 + amplitude * sin(2 pi y / wavelength)``; roads cross it as bridges.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class CityPreset:
    """Everything that defines a synthetic scene apart from the seed."""

    name: str
    half_extent: float  # m; the road grid covers [-half_extent, half_extent]^2
    block: float  # m between road centre lines
    road_width: float  # m
    cores: tuple[tuple[float, float, float], ...]  # (x, y, radius) of dense cores, m
    suburb_radius: float  # m from the origin
    tower_height: tuple[float, float]  # m, (low, high) of core buildings
    image_size: tuple[int, int]  # (width, height) in pixels
    hfov_deg: float  # horizontal field of view
    altitude: float  # m above ground of the lawnmower passes
    pitch_deg: float  # lawnmower cameras look this far below the horizon
    rows: int  # lawnmower passes per direction (passes run along y, then along x)
    per_row: int  # cameras per pass
    orbits: tuple[tuple[float, float, int], ...] = field(default=())  # (radius, altitude, views)
    # (x, y, look_z, radius, altitude, views): orbits around (x, y), looking at (x, y, look_z);
    # close views of one place (a downtown) after the orbits around the origin
    close_orbits: tuple[tuple[float, float, float, float, float, int], ...] = field(default=())
    val_every: int = 8  # view k is val when k % val_every == val_every // 2
    supersample: int = 2  # samples per pixel per axis (anti-aliasing)
    sun_elevation_deg: float = 50.0
    sun_azimuth_deg: float = 35.0  # from +x towards +y
    partition_grid: tuple[int, int] = (2, 2)
    facade_bay: tuple[float, float] = (2.3, 2.9)  # m, range of core facades' window bays
    facade_floor: tuple[float, float] = (3.0, 3.4)  # m, range of core buildings' floor heights
    parks: tuple[tuple[float, float, float], ...] = field(default=())  # (x, y, radius), m
    plazas: tuple[tuple[float, float, float], ...] = field(default=())  # (x, y, radius), m
    river: tuple[float, float, float, float] | None = None  # (x0, width, amplitude, wavelength)
    region_labels: bool = False  # write val/regions/<stem>.png (255: downtown, see regions.py)

    @property
    def num_views(self) -> int:
        return (2 * self.rows * self.per_row + sum(n for _, _, n in self.orbits)
                + sum(o[-1] for o in self.close_orbits))


# Scale matters here: 4x minicity's ground, with detail concentrated in one place. A
# downtown of tall, finely windowed towers west of the centre, a plaza beside it, a ring
# of suburb, a park to the south-west, a river with bridges to the east, fields in the
# corners. 216 views (192 train, 24 val) at 200x150 over a 480 m square.
MIDCITY = CityPreset(
    name="midcity",
    half_extent=240.0,
    block=40.0,
    road_width=8.0,
    cores=((-60.0, 20.0, 100.0),),
    suburb_radius=215.0,
    tower_height=(18.0, 100.0),
    image_size=(200, 150),
    hfov_deg=60.0,
    altitude=170.0,
    pitch_deg=50.0,
    rows=8,
    per_row=11,
    orbits=((340.0, 180.0, 20), (220.0, 200.0, 20)),
    val_every=9,
    partition_grid=(2, 2),
    facade_bay=(1.9, 2.5),
    facade_floor=(2.9, 3.3),
    parks=((-140.0, -140.0, 60.0),),
    plazas=((60.0, 20.0, 10.0),),
    river=(140.0, 18.0, 6.0, 160.0),
    region_labels=True,
)

PRESETS: dict[str, CityPreset] = {
    # CPU demo: 56 views (48 train, 8 val) at 200x150 over a 240 m square.
    "minicity": CityPreset(
        name="minicity",
        half_extent=120.0,
        block=40.0,
        road_width=8.0,
        cores=((0.0, 0.0, 70.0),),
        suburb_radius=110.0,
        tower_height=(12.0, 55.0),
        image_size=(200, 150),
        hfov_deg=60.0,
        altitude=100.0,
        pitch_deg=50.0,
        rows=4,
        per_row=5,
        orbits=((150.0, 90.0, 16),),
        val_every=7,
        partition_grid=(2, 2),
    ),
    # Tests: 16 views (12 train, 4 val) at 48x36 over a 120 m square; under a second.
    "tinycity": CityPreset(
        name="tinycity",
        half_extent=60.0,
        block=30.0,
        road_width=6.0,
        cores=((0.0, 0.0, 35.0),),
        suburb_radius=55.0,
        tower_height=(10.0, 30.0),
        image_size=(48, 36),
        hfov_deg=60.0,
        altitude=60.0,
        pitch_deg=50.0,
        rows=2,
        per_row=3,
        orbits=((80.0, 50.0, 4),),
        val_every=4,
        supersample=1,
        partition_grid=(2, 2),
    ),
    # GPU scale: 1.44 km^2, 1644 views (1562 train, 82 val) at 400x300, two dense cores.
    "bigcity": CityPreset(
        name="bigcity",
        half_extent=600.0,
        block=50.0,
        road_width=9.0,
        cores=((0.0, 0.0, 260.0), (380.0, -320.0, 140.0)),
        suburb_radius=520.0,
        tower_height=(15.0, 120.0),
        image_size=(400, 300),
        hfov_deg=60.0,
        altitude=180.0,
        pitch_deg=50.0,
        rows=16,
        per_row=42,
        orbits=((700.0, 260.0, 100), (450.0, 200.0, 100), (250.0, 160.0, 100)),
        val_every=20,
        partition_grid=(4, 4),
    ),
    "midcity": MIDCITY,
    # Tests and bench smoke runs: midcity's city seen by 16 views (12 train, 4 val) at 48x36.
    "tinymidcity": replace(
        MIDCITY,
        name="tinymidcity",
        image_size=(48, 36),
        rows=2,
        per_row=3,
        orbits=((340.0, 180.0, 4),),
        val_every=4,
        supersample=1,
    ),
}


def get_preset(name: str) -> CityPreset:
    from switchnerf.errors import input_error

    if name not in PRESETS:
        raise input_error(
            None,
            "preset",
            f"unknown synthetic preset {name!r} (known: {', '.join(sorted(PRESETS))})",
        )
    return PRESETS[name]
