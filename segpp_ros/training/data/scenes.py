"""Deterministic synthetic street scenes: RGB image, Cityscapes train-ID labels, person instances
and COCO-17 keypoints.

No pretrained weights can be downloaded, so the shipped models learn this task. A scene is first
planned in world units (a pinhole camera looking down a street, metres) from one random stream,
then rasterised; the plan does not depend on the image size, so ``render_scene(s, 512, 1024)`` is
the same scene as ``render_scene(s, 1024, 2048)`` at half the resolution. Textures come from noise
grids with a fixed number of cells per image height, so they scale with the image as well.

Conventions
- Image coordinates: pixel centres at integer coordinates; pixel (i, j) covers
  [j - 0.5, j + 0.5] x [i - 0.5, i + 0.5]. Geometry is planned in *image heights* (u, v with
  v in [0, 1] top to bottom and u in [0, width / height]); pixel = u * height - 0.5.
- World: X right, Y up, Z forward (metres); the camera sits at X = 0, Y = camera height, Z = 0.

Determinism: every random number comes from one ``np.random.Generator(PCG64(seed))``, drawn in
an order that does not depend on the image size (the size-dependent pixel noise is drawn last).
Geometry is rounded to OpenCV's fixed point (1/16 px) and drawn with its integer rasteriser; the
per-pixel work uses OpenCV's bit-exact 8-bit paths (LUT, INTER_LINEAR_EXACT, 8-bit GaussianBlur)
and integer numpy arithmetic. Nothing depends on thread count, hash seed or SIMD level, so with
the same numpy/OpenCV versions the bytes match across machines. (The few transcendental values
of the layout come from scalar libm calls, never numpy's CPU-dispatched vector kernels.)
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numpy as np

from .classes import IGNORE_INDEX, TRAIN_ID

__all__ = ["Person", "Scene", "render_scene"]

SHIFT = 4                       # OpenCV fixed-point bits: geometry is drawn at 1/16 px
_FP = float(1 << SHIFT)
EMPTY = 255                     # material index of "nothing drawn" in person canvases
TEX_ROWS = 256                  # noise-grid rows per image height: textures live in scene units
_GUARD = 64.0                   # px outside the canvas that polygons are clipped to
_ROAD_Z_NEAR = 0.5              # m: ground polygons start here (below the image for any camera)
_FAR_Z = 2000.0                 # m: "infinitely" far ground
# 12-gon for elliptic shadows; scalar libm rather than numpy's vectorised (CPU-dependent) sin/cos
_CIRCLE = np.array([(math.cos(math.pi * k / 6), math.sin(math.pi * k / 6)) for k in range(12)])


@dataclass
class Person:
    """One person of a scene.

    keypoints:   [17, 3] float32, COCO order: x, y in pixels (pixel centres at integer
                 coordinates); v: 0 = outside the image, 1 = inside but covered, 2 = visible
                 (the joint's pixel belongs to this person in ``Scene.instances``).
    box:         [4] float32 x0, y0, x1, y1: tight box of the whole (unoccluded) figure, pixel
                 edges (the figure's extreme pixels +- 0.5), clipped to [-0.5, W - 0.5] x
                 [-0.5, H - 0.5].
    instance_id: value of this person in ``Scene.instances``.
    """

    keypoints: np.ndarray
    box: np.ndarray
    instance_id: int


@dataclass
class Scene:
    """image [H, W, 3] uint8 RGB; labels [H, W] uint8 Cityscapes train IDs; instances [H, W] int32
    (0 = no person, k = ``Person.instance_id``, visible pixels only); persons with >= 1 visible pixel."""

    image: np.ndarray
    labels: np.ndarray
    instances: np.ndarray
    persons: list[Person]


# --------------------------------------------------------------------------- geometry and raster
@dataclass(frozen=True)
class _Camera:
    horizon: float   # image v of the horizon (image heights)
    cx: float        # image u of the vanishing point (image heights)
    focal: float     # focal length (image heights)
    height: float    # camera height above the road (m)

    def project(self, pts: np.ndarray) -> np.ndarray:
        """World points [..., 3] (Z > 0) -> image points [..., 2] in image heights."""
        pts = np.asarray(pts, dtype=np.float64)
        out = np.empty(pts.shape[:-1] + (2,))
        s = self.focal / pts[..., 2]
        out[..., 0] = pts[..., 0] * s + self.cx
        out[..., 1] = (self.height - pts[..., 1]) * s + self.horizon
        return out


def _clip_polygon(poly: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Sutherland-Hodgman clip of a polygon [n, 2] to a rectangle; keeps fixed-point coordinates
    small for geometry that projects far outside the image (ground near the camera)."""
    for axis, bound, keep_above in ((0, x0, True), (0, x1, False), (1, y0, True), (1, y1, False)):
        if len(poly) == 0:
            break
        out = []
        for i in range(len(poly)):
            p, q = poly[i - 1], poly[i]
            p_in = p[axis] >= bound if keep_above else p[axis] <= bound
            q_in = q[axis] >= bound if keep_above else q[axis] <= bound
            if p_in != q_in:
                t = (bound - p[axis]) / (q[axis] - p[axis])
                out.append(p + t * (q - p))
            if q_in:
                out.append(q)
        poly = np.asarray(out, dtype=np.float64).reshape(-1, 2)
    return poly


class _Raster:
    """A uint8 map drawn in scene units (image heights); ``origin`` offsets sub-canvases (px)."""

    def __init__(self, img: np.ndarray, scale: float, origin: tuple[int, int] = (0, 0)) -> None:
        self.img, self.scale = img, float(scale)
        self.off = np.array([origin[0] + 0.5, origin[1] + 0.5])   # pixel = u * scale - 0.5 - origin
        self.h, self.w = img.shape[:2]

    def px(self, pts: np.ndarray) -> np.ndarray:
        return np.asarray(pts, dtype=np.float64) * self.scale - self.off

    def _fixed(self, pts_px: np.ndarray) -> np.ndarray:
        return np.round(pts_px * _FP).astype(np.int32)

    def fill(self, polys: np.ndarray | Sequence[np.ndarray], value: int) -> None:
        """Fill polygons given in image heights: [N, k, 2] or a sequence of [k_i, 2]. Polygons of
        one call must not overlap (OpenCV fills them with the even-odd rule)."""
        if isinstance(polys, np.ndarray) and polys.ndim == 2:
            polys = polys[None]
        w, h, g = self.w, self.h, _GUARD
        if isinstance(polys, np.ndarray):               # many polygons of one size: vectorised tests
            px = self.px(polys)
            lo, hi = px.min(1), px.max(1)
            seen = (hi[:, 0] >= -0.5) & (hi[:, 1] >= -0.5) & (lo[:, 0] <= w - 0.5) & (lo[:, 1] <= h - 0.5)
            safe = (lo[:, 0] >= -g) & (lo[:, 1] >= -g) & (hi[:, 0] <= w + g) & (hi[:, 1] <= h + g)
            out = list(self._fixed(px[seen & safe]))
            big = list(px[seen & ~safe])
        else:
            out, big = [], [self.px(p) for p in polys]
        for p in big:                                   # far outside the canvas: clip first
            lo, hi = p.min(0), p.max(0)
            if hi[0] < -0.5 or hi[1] < -0.5 or lo[0] > w - 0.5 or lo[1] > h - 0.5:
                continue
            p = _clip_polygon(p, -g, -g, w + g, h + g)
            if len(p) >= 3:
                out.append(self._fixed(p))
        if out:
            cv2.fillPoly(self.img, out, int(value), cv2.LINE_8, SHIFT)

    def ellipse(self, centre: np.ndarray, axes: tuple[float, float], value: int, angle: float = 0.0) -> None:
        """Filled ellipse; centre [2] and semi-axes in image heights; angle in degrees."""
        c = self.px(centre)
        ax, ay = axes[0] * self.scale, axes[1] * self.scale
        r = max(ax, ay)
        if c[0] + r < -0.5 or c[1] + r < -0.5 or c[0] - r > self.w - 0.5 or c[1] - r > self.h - 0.5:
            return
        ci = self._fixed(c)
        cv2.ellipse(self.img, (int(ci[0]), int(ci[1])), (max(1, round(ax * _FP)), max(1, round(ay * _FP))),
                    float(angle), 0.0, 360.0, int(value), -1, cv2.LINE_8, SHIFT)

    def capsule(self, p0: np.ndarray, p1: np.ndarray, radius: float, value: int) -> None:
        """Thick line with round caps (OpenCV's thick lines); radius in image heights."""
        a, b = self._fixed(self.px(p0)), self._fixed(self.px(p1))
        thick = max(1, int(round(2.0 * radius * self.scale)))
        cv2.line(self.img, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), int(value), thick, cv2.LINE_8, SHIFT)


def _hull(pts: np.ndarray) -> np.ndarray:
    """Convex hull [m, 2] of points [n, 2] (image heights); the silhouette of a convex solid."""
    idx = cv2.convexHull(np.asarray(pts, dtype=np.float32), returnPoints=False).ravel()
    return np.asarray(pts)[idx]


def _quads(*corners: tuple) -> np.ndarray:
    """Quads [..., 4, 3] from four (x, y, z) corners of scalars or broadcastable arrays. Scalars
    take a fast path: the planners build thousands of single quads per scene."""
    flat = [c for corner in corners for c in corner]
    if all(isinstance(c, (int, float, np.number)) for c in flat):
        return np.array(flat, dtype=np.float64).reshape(4, 3)
    arrays = np.broadcast_arrays(*(np.asarray(c, dtype=np.float64) for c in flat))
    out = np.empty(arrays[0].shape + (12,))
    for i, a in enumerate(arrays):
        out[..., i] = a
    return out.reshape(arrays[0].shape + (4, 3))


def _ground(x0, x1, z0, z1) -> np.ndarray:
    """Ground quads [..., 4, 3] between X in [x0, x1] and Z in [z0, z1]."""
    return _quads((x0, 0.0, z0), (x1, 0.0, z0), (x1, 0.0, z1), (x0, 0.0, z1))


def _xplane(x, y0, y1, z0, z1) -> np.ndarray:
    """Quads [..., 4, 3] in the plane X = x (a facade along the street)."""
    return _quads((x, y0, z0), (x, y0, z1), (x, y1, z1), (x, y1, z0))


def _zplane(z, x0, x1, y0, y1) -> np.ndarray:
    """Quads [..., 4, 3] in the plane Z = z (facing the camera)."""
    return _quads((x0, y0, z), (x1, y0, z), (x1, y1, z), (x0, y1, z))


# --------------------------------------------------------------------------- materials
class _Materials:
    """Per-scene table: material index -> train ID, colour, texture amplitudes, person instance.

    The rasteriser draws material indices only; labels, instances and colours are lookups, so
    every object is drawn once and the three outputs agree by construction."""

    def __init__(self) -> None:
        self.label: list[int] = []
        self.rgb: list[np.ndarray] = []
        self.params: list[tuple[int, int, int]] = []
        self.instance: list[int] = []

    def add(self, cls: str, rgb: np.ndarray, lo: float = 0.08, hi: float = 0.04,
            ground: bool = False, instance: int = 0) -> int:
        """lo/hi: relative amplitude of coarse / fine texture; ground: receives cast shadows."""
        if len(self.label) >= EMPTY:
            raise RuntimeError("scene uses more than 255 materials")
        self.label.append(TRAIN_ID[cls])
        self.rgb.append(np.asarray(rgb, dtype=np.float64))
        self.params.append((round(min(lo, 1.0) * 255), round(min(hi, 1.0) * 255), 255 if ground else 0))
        self.instance.append(instance)
        return len(self.label) - 1

    def luts(self, light: Callable[[np.ndarray], np.ndarray]) -> dict[str, np.ndarray]:
        """One [256] uint8 table per output, for cv2.LUT (fast and exact): 'rgb' [3, 256] lit
        colours, 'lo', 'hi' texture amplitudes, 'gate' 255 on ground, 'label', 'instance'."""
        n = len(self.label)
        luts = {k: np.zeros(256, np.uint8) for k in ("lo", "hi", "gate", "instance")}
        luts["rgb"] = np.zeros((3, 256), np.uint8)
        rgb = np.clip(np.stack(self.rgb), 0, 255)
        luts["rgb"][:, :n] = np.clip(np.round(light(rgb)), 0, 255).astype(np.uint8).T
        params = np.asarray(self.params, dtype=np.uint8)
        luts["lo"][:n], luts["hi"][:n], luts["gate"][:n] = params.T
        luts["label"] = np.full(256, IGNORE_INDEX, np.uint8)
        luts["label"][:n] = self.label
        luts["instance"][:n] = self.instance             # <= 8 persons: fits uint8
        return luts


def _jitter(rng: np.random.Generator, rgb: Sequence[float], amount: float) -> np.ndarray:
    return np.asarray(rgb, dtype=np.float64) + rng.uniform(-amount, amount, 3)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.asarray(colorsys.hsv_to_rgb(h % 1.0, s, v)) * 255.0


# --------------------------------------------------------------------------- painter
class _Painter:
    """Draws world geometry into the material map and soft shadows into the low-res shade grid."""

    def __init__(self, cam: _Camera, height: int, width: int, tex_shape: tuple[int, int]) -> None:
        self.cam, self.height, self.width = cam, height, width
        self.mat = _Raster(np.zeros((height, width), np.uint8), height)
        self.shade = _Raster(np.zeros(tex_shape, np.uint8), tex_shape[0])
        self.figures: list[tuple[int, np.ndarray, np.ndarray]] = []   # (instance, keypoints px [17, 2], box)

    def fill(self, quads: np.ndarray, value: int, raster: _Raster | None = None) -> None:
        """World polygons [N, k, 3] or [k, 3]."""
        (raster or self.mat).fill(self.cam.project(quads), value)

    def fill_hull(self, pts: np.ndarray, value: int, raster: _Raster | None = None) -> None:
        (raster or self.mat).fill(_hull(self.cam.project(pts)), value)

    def ellipse(self, centre: np.ndarray, radii: tuple[float, float], value: int, raster: _Raster | None = None) -> None:
        """Camera-facing ellipse around a world point; radii in metres at the point's depth."""
        s = self.cam.focal / centre[2]
        (raster or self.mat).ellipse(self.cam.project(centre), (radii[0] * s, radii[1] * s), value)

    def shadow(self, quads: np.ndarray, strength: float) -> None:
        self.fill(quads, int(round(255 * strength)), self.shade)

    def ground_ellipse_shadow(self, x: float, z: float, rx: float, rz: float, strength: float) -> None:
        """Elliptic shadow on the ground (radii rx across, rz along the street, metres)."""
        pts = np.stack([x + rx * _CIRCLE[:, 0], np.zeros(len(_CIRCLE)), np.maximum(z + rz * _CIRCLE[:, 1], 0.3)], -1)
        self.shadow(pts, strength)


Draw = Callable[[_Painter], None]


@dataclass
class _Actor:
    """Something standing on the ground, drawn far to near (painter's algorithm) by ``depth``."""

    depth: float
    draw: Draw


# --------------------------------------------------------------------------- the street plan
@dataclass
class _Street:
    cam: _Camera
    aspect: float
    x_left: float            # road edges (X), x_left < 0 < x_right
    x_right: float
    terrain: tuple[float, float]   # grass strip width between curb and sidewalk, (left, right)
    front: tuple[float, float]     # |X| of the building line, (left, right)
    z_end: float             # depth of the backdrop that closes the street
    sun: int                 # -1: light from the left, +1: from the right
    shadow: float            # cast-shadow strength 0..1

    def edge(self, side: int) -> float:
        return self.x_right if side > 0 else self.x_left

    def walk(self, side: int) -> tuple[float, float]:
        """|X| range of the sidewalk on a side."""
        i = int(side > 0)
        return abs(self.edge(side)) + self.terrain[i], self.front[i]

    def visible_x(self, z: float) -> tuple[float, float]:
        """World X range seen at depth z."""
        return (0.0 - self.cam.cx) * z / self.cam.focal, (self.aspect - self.cam.cx) * z / self.cam.focal


def _plan_street(rng: np.random.Generator, aspect: float) -> _Street:
    cam = _Camera(horizon=rng.uniform(0.36, 0.5), cx=aspect * rng.uniform(0.42, 0.58),
                  focal=rng.uniform(1.7, 2.3), height=rng.uniform(1.2, 1.7))
    lanes = int(rng.integers(2, 5))
    road = lanes * rng.uniform(3.0, 3.6)
    left_share = rng.uniform(0.45, 0.75)          # the camera drives in a right-hand lane
    terrain = tuple(float(rng.uniform(1.0, 3.0)) if rng.random() < 0.3 else 0.0 for _ in range(2))
    walks = rng.uniform(2.0, 5.0, 2)
    x_left, x_right = -road * left_share, road * (1 - left_share)
    front = (abs(x_left) + terrain[0] + walks[0], x_right + terrain[1] + walks[1])
    z_end = math.exp(rng.uniform(math.log(70.0), math.log(600.0)))
    return _Street(cam, aspect, x_left, x_right, terrain, front, z_end,
                   sun=1 if rng.random() < 0.5 else -1, shadow=rng.uniform(0.15, 0.5))


def _plan_ground(rng: np.random.Generator, st: _Street, mats: _Materials) -> list[Draw]:
    """Road, markings, terrain and sidewalks, and the shadow the buildings cast on them."""
    grey = rng.uniform(70, 110)
    road = mats.add("road", _jitter(rng, (grey, grey, grey * rng.uniform(0.98, 1.08)), 6), lo=0.10, hi=0.10, ground=True)
    patch = mats.add("road", _jitter(rng, (grey * 0.8,) * 3, 4), lo=0.1, hi=0.1, ground=True)
    paint = mats.add("road", _jitter(rng, (220, 220, 215), 15), lo=0.05, hi=0.08, ground=True)
    pink = rng.uniform(0, 1)
    walk_rgb = _jitter(rng, (150 + 60 * pink, 140, 145 + 40 * pink), 12)
    walk = mats.add("sidewalk", walk_rgb, lo=0.08, hi=0.06, ground=True)
    joint = mats.add("sidewalk", walk_rgb * 0.78, lo=0.05, hi=0.05, ground=True)
    curb = mats.add("sidewalk", walk_rgb * 1.08, lo=0.05, hi=0.03, ground=True)
    grass = mats.add("terrain", _jitter(rng, (120, 150, 70), 20), lo=0.15, hi=0.22, ground=True)
    z0, z1 = _ROAD_Z_NEAR, st.z_end
    lanes = int(round((st.x_right - st.x_left) / 3.3))
    dividers = [st.x_left + (st.x_right - st.x_left) * k / lanes for k in range(1, lanes)]
    dash, gap = rng.uniform(2.0, 4.0), rng.uniform(4.0, 8.0)
    dash_phase = rng.uniform(0, dash + gap)
    edge_lines = rng.random() < 0.5
    n_patches = int(rng.integers(0, 4))
    patches = [(rng.uniform(st.x_left, st.x_right), rng.uniform(1.0, 4.0), rng.uniform(6, 60), rng.uniform(2, 12))
               for _ in range(n_patches)]
    cross = rng.uniform(9.0, 35.0) if rng.random() < 0.3 else None
    tile = rng.uniform(1.0, 3.0, 2)
    # buildings on the sun side shade part of the street (pre-drawn as ground shadow)
    cast = rng.uniform(0.0, 0.6) * (st.x_right - st.x_left)

    def draw(p: _Painter) -> None:
        p.fill(_ground(-3000, 3000, z0, _FAR_Z), grass)                        # beyond everything
        for side in (-1, 1):
            s_in, s_out = st.walk(side)
            edge = abs(st.edge(side))
            p.fill(_ground(*sorted((side * s_in, side * (s_out + 40))), z0, z1), walk)
            if s_in > edge:
                p.fill(_ground(*sorted((side * edge, side * s_in)), z0, z1), grass)
            p.fill(_xplane(st.edge(side), 0.0, 0.13, z0, z1), curb)
            p.fill(_ground(*sorted((side * edge, side * (edge + 0.25))), z0, z1), curb)
            # paving joints across the walk; only where they are >= 3 px apart (size-dependent
            # detail, no random numbers involved)
            zs = np.arange(z0 + tile[int(side > 0)], z1, tile[int(side > 0)])
            gap_px = p.cam.focal * p.cam.height * p.height * (1 / zs - 1 / (zs + tile[int(side > 0)]))
            zs = zs[gap_px >= 3.0]
            if len(zs):
                p.fill(_ground(side * s_in, side * s_out, zs, zs + 0.06), joint)
        p.fill(_ground(st.x_left, st.x_right, z0, z1), road)
        for x, w, z, length in patches:
            p.fill(_ground(x - w / 2, x + w / 2, z, z + length), patch)
        for x in dividers:
            zs = np.arange(z0 + dash_phase - dash - gap, z1, dash + gap)
            zs = zs[zs + dash > z0 + 0.1]                  # never behind the camera (Z <= 0 flips)
            p.fill(_ground(x - 0.07, x + 0.07, np.maximum(zs, z0), zs + dash), paint)
        if edge_lines:
            for x in (st.x_left + 0.35, st.x_right - 0.35):
                p.fill(_ground(x - 0.08, x + 0.08, z0, z1), paint)
        if cross is not None:
            xs = np.arange(st.x_left + 0.5, st.x_right - 0.5, 1.0)
            p.fill(_ground(xs, xs + 0.5, cross, cross + 3.0), paint)
        x_sun = st.edge(st.sun)
        p.shadow(_ground(*sorted((x_sun - st.sun * cast, x_sun + st.sun * 40)), z0, z1), st.shadow)

    return [draw]


def _window_grid(rng: np.random.Generator, length: float, height: float) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Window positions on a facade: along-facade starts [nz], heights [ny], window width, height."""
    floor = rng.uniform(2.8, 3.6)
    pitch = rng.uniform(2.2, 4.0)
    ww, wh = pitch * rng.uniform(0.35, 0.7), floor * rng.uniform(0.4, 0.6)
    nz = max(int((length - 1.0) // pitch), 0)
    margin = (length - nz * pitch) / 2 + (pitch - ww) / 2
    along = margin + pitch * np.arange(nz)
    ground_floor = rng.uniform(3.0, 4.5)
    ups = ground_floor + floor * np.arange(max(int((height - ground_floor - 0.8) // floor), 0)) + (floor - wh) / 2
    return along, ups, ww, wh


def _facade_colour(rng: np.random.Generator) -> np.ndarray:
    kind = rng.random()
    if kind < 0.35:                                   # plaster: beige, ochre, pastel
        return _hsv(rng.uniform(0.05, 0.16), rng.uniform(0.1, 0.4), rng.uniform(0.55, 0.9))
    if kind < 0.6:                                    # concrete / grey
        g = rng.uniform(90, 190)
        return _jitter(rng, (g, g, g), 8)
    if kind < 0.8:                                    # brick
        return _hsv(rng.uniform(0.0, 0.05), rng.uniform(0.4, 0.7), rng.uniform(0.4, 0.7))
    return _hsv(rng.uniform(0.0, 1.0), rng.uniform(0.1, 0.35), rng.uniform(0.45, 0.85))


def _plan_buildings(rng: np.random.Generator, st: _Street, mats: _Materials) -> list[Draw]:
    """The backdrop closing the street and both rows of buildings, drawn far to near."""
    draws: list[Draw] = []
    veg = [mats.add("vegetation", _jitter(rng, (60, 100, 40), 18), lo=0.25, hi=0.45) for _ in range(2)]
    trunk = mats.add("vegetation", _jitter(rng, (85, 65, 45), 12), lo=0.1, hi=0.2)
    wall = mats.add("wall", _jitter(rng, (150, 140, 125), 25), lo=0.15, hi=0.1)
    fence = mats.add("fence", _jitter(rng, (130, 120, 105), 25), lo=0.1, hi=0.08)
    lit = rng.uniform(1.0, 1.1)
    dark = rng.uniform(0.62, 0.85)

    # backdrop: a fixed number of segments so the number of random draws never depends on the aspect
    n_back = 8
    widths = rng.uniform(0.5, 1.5, n_back)
    heights = rng.uniform(6.0, 40.0, n_back)
    is_tree = rng.random(n_back) < 0.25
    back_mats, back_windows = [], []
    for i in range(n_back):
        col = _facade_colour(rng)
        back_mats.append(mats.add("building", col * rng.uniform(0.85, 1.0), lo=0.12, hi=0.06))
        back_windows.append(_window_grid(rng, 30.0, heights[i]))
    back_win = mats.add("building", _jitter(rng, (60, 70, 85), 15), lo=0.1, hi=0.05)
    bumps = rng.uniform(0.7, 1.0, (n_back, 6))

    def draw_backdrop(p: _Painter) -> None:
        z = st.z_end
        lo, hi = st.visible_x(z)
        xs = lo - 5 + np.concatenate([[0], np.cumsum(widths)]) / widths.sum() * (hi - lo + 10)
        for i in range(n_back):
            x0, x1, h = xs[i], xs[i + 1], heights[i]
            if is_tree[i]:
                tops = np.linspace(x0, x1, 6)
                crown = [(x, h * 0.5 * b, z) for x, b in zip(tops, bumps[i])]
                p.fill(np.array([(x0, 0, z)] + crown + [(x1, 0, z)]), veg[i % 2])
                continue
            p.fill(_zplane(z, x0, x1, 0.0, h), back_mats[i])
            along, ups, ww, wh = back_windows[i]
            along = along[along + ww < (x1 - x0)] if len(along) else along
            if len(along) and len(ups):
                a, u = np.meshgrid(x0 + along, ups)
                p.fill(_zplane(z, a, a + ww, u, u + wh).reshape(-1, 4, 3), back_win)
    draws.append(draw_backdrop)

    for side in (-1, 1):
        front = st.front[int(side > 0)]
        blocks: list[Draw] = []
        z = rng.uniform(0.0, 12.0)
        for _ in range(12):
            if z >= st.z_end:
                break
            length = rng.uniform(8.0, 35.0)
            if rng.random() < 0.22:                                # a gap: trees, a wall or a fence
                z1 = min(z + rng.uniform(4.0, 15.0), st.z_end)
                blocks.append(_gap(rng, side, front, z, z1, veg, trunk, wall, fence))
                z = z1
                continue
            z1 = min(z + length, st.z_end)
            blocks.append(_building(rng, st, mats, side, front, z, z1, lit, dark, veg))
            z = z1
        draws.extend(reversed(blocks))                              # far to near
    return draws


def _gap(rng: np.random.Generator, side: int, front: float, z0: float, z1: float,
         veg: list[int], trunk: int, wall: int, fence: int) -> Draw:
    """Between two buildings: trees behind the building line, then a wall or fence or nothing."""
    n = int(rng.integers(0, 4))
    trees = [(side * (front + rng.uniform(2, 10)), rng.uniform(z0, z1), rng.uniform(2.0, 4.5), rng.uniform(4, 12),
              veg[int(rng.integers(0, 2))]) for _ in range(n)]
    kind = rng.random()
    h = rng.uniform(1.2, 2.4)

    def draw(p: _Painter) -> None:
        for x, z, r, h_t, m in trees:
            p.fill(_zplane(z, x - 0.2, x + 0.2, 0.0, h_t), trunk)
            p.ellipse(np.array([x, h_t + r * 0.6, z]), (r, r * 1.1), m)
        if kind < 0.35:
            p.fill(_xplane(side * front, 0.0, h, z0, z1), wall)
        elif kind < 0.65:
            posts = np.arange(z0, z1, 2.0)
            p.fill(_xplane(side * front, 0.0, h, posts, posts + 0.12), fence)
            p.fill(_xplane(side * front, np.array([h * 0.3, h - 0.1]), np.array([h * 0.3 + 0.1, h]), z0, z1), fence)
    return draw


def _building(rng: np.random.Generator, st: _Street, mats: _Materials, side: int, front: float, z0: float,
              z1: float, lit: float, dark: float, veg: list[int]) -> Draw:
    setback = rng.uniform(0.0, 2.0) if rng.random() < 0.4 else 0.0
    x = side * (front + setback)
    height = rng.uniform(4.0, 10.0) if rng.random() < 0.15 else rng.uniform(9.0, 30.0)
    col = _facade_colour(rng) * (dark if side == st.sun else lit)
    facade = mats.add("building", col, lo=0.15, hi=0.08)
    side_face = mats.add("building", col * 0.8, lo=0.15, hi=0.08)
    win = mats.add("building", _jitter(rng, (55, 65, 80), 20) * rng.uniform(0.7, 1.3), lo=0.1, hi=0.06)
    along, ups, ww, wh = _window_grid(rng, z1 - z0, height)
    shop = rng.random() < 0.5
    hedge = veg[int(rng.integers(0, 2))] if rng.random() < 0.25 else None
    hedge_h = rng.uniform(0.6, 1.3)
    hedge_bumps = rng.uniform(0.8, 1.0, 8)

    def draw(p: _Painter) -> None:
        p.fill(_zplane(z0, *sorted((x, x + side * 20.0)), 0.0, height), side_face)
        p.fill(_xplane(x, 0.0, height, z0, z1), facade)
        if len(along) and len(ups):
            a, u = np.meshgrid(z0 + along, ups)
            p.fill(_xplane(x, u, u + wh, a, a + ww).reshape(-1, 4, 3), win)
        if shop and z1 - z0 > 4:
            p.fill(_xplane(x, 0.3, 2.6, np.array([z0 + 1.0]), np.array([z1 - 1.0])), win)
        if hedge is not None:
            zs = np.linspace(z0, z1, 8)
            hx = x - side * 0.7
            top = [(hx, hedge_h * b, zz) for zz, b in zip(zs[::-1], hedge_bumps)]
            p.fill(np.array([(hx, 0.0, z0), (hx, 0.0, z1)] + top), hedge)
    return draw


# --------------------------------------------------------------------------- street furniture
def _plan_furniture(rng: np.random.Generator, st: _Street, mats: _Materials) -> list[_Actor]:
    """Trees along the curb, street lights, traffic signs and traffic lights."""
    actors: list[_Actor] = []
    veg = [mats.add("vegetation", _jitter(rng, (55 + 20 * k, 95 + 25 * k, 35), 15), lo=0.3, hi=0.5) for k in range(2)]
    trunk = mats.add("vegetation", _jitter(rng, (80, 60, 45), 12), lo=0.1, hi=0.25)
    pole = mats.add("pole", _jitter(rng, (120, 122, 125), 25), lo=0.06, hi=0.05)
    sign_cols = [(200, 30, 30), (30, 70, 170), (230, 190, 30), (235, 235, 235)]
    sign_mats = [mats.add("traffic sign", _jitter(rng, c, 15), lo=0.05, hi=0.04) for c in sign_cols]
    tl_box = mats.add("traffic light", _jitter(rng, (40, 40, 40), 10), lo=0.05, hi=0.04)
    tl_on = [mats.add("traffic light", c, lo=0.02, hi=0.02) for c in ((240, 60, 40), (250, 200, 50), (60, 230, 120))]
    tl_off = mats.add("traffic light", (70, 70, 60), lo=0.02, hi=0.02)

    for side in (-1, 1):
        curb_x = side * (abs(st.edge(side)) + 0.9)
        if rng.random() < 0.55:                                         # a row of trees
            z = rng.uniform(4.0, 14.0)
            spacing = rng.uniform(8.0, 16.0)
            while z < min(st.z_end - 2, 140.0):
                actors.append(_tree(rng, curb_x + side * rng.uniform(0, 0.6), z, veg, trunk, st))
                z += spacing * rng.uniform(0.8, 1.2)
        if rng.random() < 0.6:                                          # street lights
            z = rng.uniform(5.0, 20.0)
            spacing = rng.uniform(20.0, 35.0)
            while z < min(st.z_end - 2, 160.0):
                actors.append(_street_light(rng, side, st.edge(side) + side * 0.45, z, pole))
                z += spacing
    for _ in range(int(rng.integers(0, 4))):                            # traffic signs
        side = 1 if rng.random() < 0.6 else -1
        x = st.edge(side) + side * rng.uniform(0.4, 1.2)
        z = rng.uniform(6.0, min(st.z_end - 2, 80.0))
        actors.append(_sign(rng, x, z, pole, sign_mats))
    for _ in range(int(rng.integers(0, 3))):                            # traffic lights
        side = 1 if rng.random() < 0.5 else -1
        x = st.edge(side) + side * rng.uniform(0.3, 0.8)
        z = rng.uniform(10.0, min(st.z_end - 2, 90.0))
        actors.append(_traffic_light(rng, x, z, pole, tl_box, tl_on, tl_off))
    return actors


def _tree(rng: np.random.Generator, x: float, z: float, veg: list[int], trunk: int, st: _Street) -> _Actor:
    h = rng.uniform(2.0, 3.5)
    r = rng.uniform(1.5, 3.0)
    k = int(rng.integers(3, 7))
    blobs = [(rng.uniform(-0.7, 0.7) * r, rng.uniform(-0.4, 0.6) * r, rng.uniform(-0.5, 0.5) * r,
              rng.uniform(0.45, 0.75) * r, veg[int(rng.integers(0, 2))]) for _ in range(k)]
    radius = rng.uniform(0.12, 0.2)

    def draw(p: _Painter) -> None:
        p.fill(_zplane(z, x - radius, x + radius, 0.0, h + r * 0.5), trunk)
        for dx, dy, dz, rr, m in blobs:
            p.ellipse(np.array([x + dx, h + r + dy, max(z + dz, 1.0)]), (rr, rr * 0.9), m)
        p.ground_ellipse_shadow(x + st.sun * -0.8 * r, z, r, r * 0.8, st.shadow * 0.8)
    return _Actor(z - 0.2, draw)


def _street_light(rng: np.random.Generator, side: int, x: float, z: float, pole: int) -> _Actor:
    h = rng.uniform(6.0, 9.0)
    arm = rng.uniform(0.8, 2.0)

    def draw(p: _Painter) -> None:
        p.fill(_zplane(z, x - 0.08, x + 0.08, 0.0, h), pole)
        p.fill(_zplane(z, *sorted((x, x - side * arm)), h - 0.12, h), pole)
        p.fill(_zplane(z, *sorted((x - side * arm, x - side * (arm + 0.5))), h - 0.25, h), pole)
    return _Actor(z, draw)


def _sign(rng: np.random.Generator, x: float, z: float, pole: int, faces: list[int]) -> _Actor:
    h = rng.uniform(2.0, 2.8)
    size = rng.uniform(0.5, 0.9)
    shape = int(rng.integers(0, 3))                      # disc, triangle, rectangle
    face, inner = faces[int(rng.integers(0, 4))], faces[int(rng.integers(0, 4))]

    def draw(p: _Painter) -> None:
        p.fill(_zplane(z, x - 0.04, x + 0.04, 0.0, h), pole)
        c = np.array([x, h + size / 2, z])
        if shape == 0:
            p.ellipse(c, (size / 2, size / 2), face)
            p.ellipse(c, (size / 3.2, size / 3.2), inner)
        elif shape == 1:
            tri = np.array([(x - size / 2, h, z), (x + size / 2, h, z), (x, h + size * 0.87, z)])
            p.fill(tri, face)
            p.fill((tri - c) * 0.55 + c + np.array([0, -0.05 * size, 0]), inner)
        else:
            p.fill(_zplane(z, x - size / 2, x + size / 2, h, h + size * 0.7), face)
            p.fill(_zplane(z, x - size / 3, x + size / 3, h + size * 0.15, h + size * 0.55), inner)
    return _Actor(z, draw)


def _traffic_light(rng: np.random.Generator, x: float, z: float, pole: int, box: int,
                   on: list[int], off: int) -> _Actor:
    h = rng.uniform(2.4, 3.5)
    state = int(rng.integers(0, 3))

    def draw(p: _Painter) -> None:
        p.fill(_zplane(z, x - 0.06, x + 0.06, 0.0, h), pole)
        p.fill(_zplane(z, x - 0.17, x + 0.17, h, h + 0.9), box)
        for k in range(3):
            p.ellipse(np.array([x, h + 0.75 - 0.3 * k, z - 0.01]), (0.1, 0.1), on[k] if k == state else off)
    return _Actor(z, draw)


# --------------------------------------------------------------------------- cars
def _plan_cars(rng: np.random.Generator, st: _Street, mats: _Materials) -> list[tuple[float, float, float, float, _Actor]]:
    """Parked cars along both curbs and traffic in the lanes. Returns (x0, x1, z0, z1, actor)."""
    window = mats.add("car", _jitter(rng, (45, 55, 65), 12), lo=0.1, hi=0.05)
    tyre = mats.add("car", _jitter(rng, (25, 25, 25), 5), lo=0.05, hi=0.05)
    rim = mats.add("car", _jitter(rng, (150, 150, 150), 20), lo=0.05, hi=0.05)
    tail = mats.add("car", _jitter(rng, (200, 30, 30), 20), lo=0.05, hi=0.03)
    head = mats.add("car", _jitter(rng, (235, 235, 210), 15), lo=0.05, hi=0.03)
    plate = mats.add("car", _jitter(rng, (225, 225, 225), 10), lo=0.03, hi=0.03)
    shared = (window, tyre, rim, tail, head, plate)
    cars = []
    slots: list[tuple[float, float, bool]] = []                  # (x centre, z near, front visible)
    for side in (-1, 1):
        if rng.random() < 0.7:                                   # parked row
            z = rng.uniform(4.0, 15.0)
            for _ in range(int(rng.integers(1, 5))):
                slots.append((st.edge(side) - side * rng.uniform(1.0, 1.3), z, side < 0 and rng.random() < 0.5))
                z += rng.uniform(5.2, 12.0)                      # > the longest car: no overlap
    lanes = max(int(round((st.x_right - st.x_left) / 3.3)), 1)
    lane_w = (st.x_right - st.x_left) / lanes
    for _ in range(int(rng.integers(0, 5))):                     # traffic
        k = int(rng.integers(0, lanes))
        x = st.x_left + lane_w * (k + 0.5) + rng.uniform(-0.4, 0.4)
        oncoming = x < st.x_left + 0.45 * (st.x_right - st.x_left) and lanes > 1
        z = rng.uniform(6.0, 90.0)
        if all(abs(x - xs) > 2.0 or abs(z - zs) > 5.5 for xs, zs, _ in slots):    # no two cars in one place
            slots.append((x, z, oncoming))
    for x, z, front_visible in slots:
        if z >= st.z_end - 5:
            continue
        body = mats.add("car", _car_colour(rng), lo=0.06, hi=0.03)
        spec = _car_spec(rng, x, z, front_visible)
        actor = _Actor(z, _car_draw(spec, body, shared, st))
        cars.append((x - spec["width"] / 2, x + spec["width"] / 2, z, z + spec["length"], actor))
    return cars


def _car_colour(rng: np.random.Generator) -> np.ndarray:
    r = rng.random()
    if r < 0.45:
        return _hsv(rng.uniform(0, 1), rng.uniform(0.55, 0.95), rng.uniform(0.35, 0.9))
    g = rng.uniform(20, 235) if r < 0.9 else rng.uniform(140, 200)           # black/grey/white, silver
    return _jitter(rng, (g, g, g), 6)


def _car_spec(rng: np.random.Generator, x: float, z: float, front_visible: bool) -> dict[str, float]:
    tall = rng.random() < 0.3                                                  # SUV / van
    height = rng.uniform(1.7, 2.1) if tall else rng.uniform(1.35, 1.55)
    length = rng.uniform(4.2, 5.0) if tall else rng.uniform(3.8, 4.8)
    hood, deck = (rng.uniform(0.7, 1.0), rng.uniform(0.1, 0.4)) if tall else (rng.uniform(1.0, 1.4), rng.uniform(0.6, 1.0))
    return dict(x=x, z=z, width=rng.uniform(1.65, 1.95), length=length, height=height,
                belt=rng.uniform(0.85, 1.05) if not tall else rng.uniform(1.0, 1.2), wheel=rng.uniform(0.3, 0.36),
                near_gap=hood if front_visible else deck, far_gap=deck if front_visible else hood,
                front=float(front_visible))


def _car_draw(c: dict[str, float], body: int, shared: tuple[int, ...], st: _Street) -> Draw:
    window, tyre, rim, tail, head, plate = shared
    x0, x1 = c["x"] - c["width"] / 2, c["x"] + c["width"] / 2
    z0, z1 = c["z"], c["z"] + c["length"]
    belt, top, r = c["belt"], c["height"], c["wheel"]
    cz0, cz1 = z0 + c["near_gap"], z1 - c["far_gap"]                  # cabin footprint (Z)
    rz0, rz1 = cz0 + 0.45, cz1 - 0.3                                  # roof (Z)
    lights = head if c["front"] else tail

    def corners(xa, xb, ya, yb, za, zb):
        return np.array([(x, y, z) for x in (xa, xb) for y in (ya, yb) for z in (za, zb)])

    def draw(p: _Painter) -> None:
        for xa in (x0 + 0.06, x1 - 0.31):                            # tyres under the near bumper
            p.fill(_zplane(z0 + 0.8, xa, xa + 0.25, 0.0, 2 * r), tyre)
        p.fill_hull(corners(x0, x1, 0.25, belt, z0, z1), body)
        cabin = np.concatenate([corners(x0 + 0.08, x1 - 0.08, belt - 0.01, belt, cz0, cz1),
                                corners(x0 + 0.2, x1 - 0.2, top - 0.01, top, rz0, rz1)])
        p.fill_hull(cabin, body)
        p.fill(np.array([(x0 + 0.16, belt + 0.05, cz0 + 0.03), (x1 - 0.16, belt + 0.05, cz0 + 0.03),
                         (x1 - 0.27, top - 0.07, rz0 - 0.03), (x0 + 0.27, top - 0.07, rz0 - 0.03)]), window)
        sx = x0 if x0 > 0.05 else x1 if x1 < -0.05 else None          # the side facing the camera
        if sx is not None:
            inward = 1.0 if sx == x0 else -1.0
            xb, xt = sx + inward * 0.08, sx + inward * 0.2
            p.fill(np.array([(xb, belt + 0.05, cz0 + 0.1), (xb, belt + 0.05, cz1 - 0.1),
                             (xt, top - 0.07, rz1 - 0.05), (xt, top - 0.07, rz0 + 0.05)]), window)
            for zc in (z0 + 0.85, z1 - 0.85):
                e = p.cam.project(np.array([(sx, r, zc), (sx, r, zc - r), (sx, r, zc + r), (sx, 0.0, zc)]))
                ax, ay = abs(e[2, 0] - e[1, 0]) / 2, abs(e[3, 1] - e[0, 1])
                p.mat.ellipse(e[0], (ax, ay), tyre)
                p.mat.ellipse(e[0], (ax * 0.55, ay * 0.55), rim)
        for xa in (x0 + 0.08, x1 - 0.4):
            p.fill(_zplane(z0, xa, xa + 0.32, belt - 0.28, belt - 0.12), lights)
        p.fill(_zplane(z0, c["x"] - 0.26, c["x"] + 0.26, 0.35, 0.47), plate)
        d = st.sun * -0.35
        p.shadow(_ground(x0 - 0.15 + d, x1 + 0.15 + d, z0 - 0.2, z1 + 0.2), min(st.shadow + 0.3, 0.85))
    return draw


# --------------------------------------------------------------------------- persons
# Body-frame points (l: person's left, y: up, f: forward; metres for a 1.75 m adult).
# Indices 0..16 are the COCO keypoints; the rest shape the figure.
_HEAD, _NECK_TOP, _NECK_BASE, _LHAND, _RHAND, _LTOE, _RTOE = range(17, 24)
_CHEST = list(range(24, 32))
_PELVIS = list(range(32, 40))
_N_BODY = 40


def _limb(alpha: float, beta: float, side: float) -> np.ndarray:
    """Unit direction (l, y, f) of a limb hanging down, swung forward by alpha and out sideways by
    beta (radians); side +1 for the person's left limbs, -1 for the right."""
    return np.array([side * math.sin(beta), -math.cos(beta) * math.cos(alpha), math.cos(beta) * math.sin(alpha)])


def _sample_pose(rng: np.random.Generator) -> dict[str, float]:
    """Joint angles (radians) for standing, walking, arms raised or gesturing figures."""
    deg = math.pi / 180
    kind = rng.random()
    pose = {}
    for s in ("l", "r"):                                 # standing defaults
        pose[f"arm_a_{s}"] = rng.uniform(-8, 8) * deg
        pose[f"arm_b_{s}"] = rng.uniform(4, 14) * deg
        pose[f"elbow_{s}"] = rng.uniform(0, 25) * deg
        pose[f"hip_a_{s}"] = rng.uniform(-4, 4) * deg
        pose[f"hip_b_{s}"] = rng.uniform(2, 7) * deg
        pose[f"knee_{s}"] = rng.uniform(0, 8) * deg
    phase, swing = rng.uniform(0, 2 * math.pi), rng.uniform(12, 28) * deg
    raised = [rng.random() < 0.7, rng.random() < 0.6]
    up = [(rng.uniform(-15, 40) * deg, rng.uniform(100, 170) * deg, rng.uniform(0, 70) * deg) for _ in range(2)]
    point = (rng.uniform(50, 100) * deg, rng.uniform(0, 40) * deg, rng.uniform(0, 40) * deg)
    which = "l" if rng.random() < 0.5 else "r"
    if 0.3 <= kind < 0.75 or kind >= 0.9:                # walking legs (also for gestures)
        sin_p = math.sin(phase)
        for s, sign in (("l", 1.0), ("r", -1.0)):
            pose[f"hip_a_{s}"] = sign * swing * sin_p
            pose[f"knee_{s}"] = (5 + 35 * max(0.0, -sign * math.sin(phase + 0.6))) * deg
            if kind < 0.75:
                pose[f"arm_a_{s}"] = -0.8 * sign * swing * sin_p
                pose[f"elbow_{s}"] = rng.uniform(10, 40) * deg
    if 0.75 <= kind < 0.9:                               # one or both arms raised
        for s, r, (a, b, e) in zip(("l", "r"), raised, up):
            if r or s == which:
                pose[f"arm_a_{s}"], pose[f"arm_b_{s}"], pose[f"elbow_{s}"] = a, b, e
    elif kind >= 0.9:                                    # pointing / waving one arm
        pose[f"arm_a_{which}"], pose[f"arm_b_{which}"], pose[f"elbow_{which}"] = point
    return pose


def _body_points(rng: np.random.Generator, scale: float) -> np.ndarray:
    """[40, 3] body-frame points (l, y, f) of a posed, grounded figure of height ~1.75 * scale."""
    pose = _sample_pose(rng)
    pts = np.zeros((_N_BODY, 3))
    pts[0] = (0, 1.61, 0.10)                                         # nose
    pts[1], pts[2] = (0.032, 1.645, 0.08), (-0.032, 1.645, 0.08)     # eyes
    pts[3], pts[4] = (0.078, 1.625, -0.01), (-0.078, 1.625, -0.01)   # ears
    pts[_HEAD], pts[_NECK_TOP], pts[_NECK_BASE] = (0, 1.625, 0), (0, 1.56, -0.01), (0, 1.42, 0)
    for side, s, (sh, el, wr, hand), (hp, kn, an, toe) in (
            (1.0, "l", (5, 7, 9, _LHAND), (11, 13, 15, _LTOE)), (-1.0, "r", (6, 8, 10, _RHAND), (12, 14, 16, _RTOE))):
        pts[sh] = (side * 0.19, 1.44, 0)
        a, b = pose[f"arm_a_{s}"], pose[f"arm_b_{s}"]
        pts[el] = pts[sh] + 0.29 * _limb(a, b, side)
        fore = _limb(a + pose[f"elbow_{s}"], b, side)
        pts[wr] = pts[el] + 0.26 * fore
        pts[hand] = pts[wr] + 0.08 * fore
        pts[hp] = (side * 0.1, 0.95, 0)
        a, b = pose[f"hip_a_{s}"], pose[f"hip_b_{s}"]
        pts[kn] = pts[hp] + 0.44 * _limb(a, b, side)
        pts[an] = pts[kn] + 0.43 * _limb(a - pose[f"knee_{s}"], b, side)
        pts[toe] = pts[an] + (0, -0.055, 0.16)
    pts[_CHEST] = [(l * w, y, f) for l in (1, -1) for y, w in ((1.47, 0.2), (1.0, 0.155)) for f in (0.1, -0.1)]
    pts[_PELVIS] = [(l * w, y, f) for l in (1, -1) for y, w in ((1.03, 0.16), (0.82, 0.15)) for f in (0.1, -0.09)]
    ground = min(pts[15, 1] - 0.075, pts[16, 1] - 0.075, pts[_LTOE, 1] - 0.03, pts[_RTOE, 1] - 0.03)
    pts[:, 1] -= ground
    return pts * scale


def _skin(rng: np.random.Generator) -> np.ndarray:
    t = rng.uniform(0, 1)
    light, deep = np.array([235, 195, 165]), np.array([95, 62, 45])
    return _jitter(rng, light + t * (deep - light), 10)


def _plan_person(rng: np.random.Generator, st: _Street, mats: _Materials, instance: int, x: float,
                 z: float) -> _Actor:
    """A figure at ground point (x, z): size, pose, facing and clothes."""
    height = rng.uniform(1.5, 1.95)
    body = _body_points(rng, height / 1.75)
    facing = int(rng.integers(0, 5))
    yaw = (math.pi, 0.0, math.pi / 2, -math.pi / 2, 0.0)[facing] + rng.uniform(-0.4, 0.4)
    if facing == 4:
        yaw = rng.uniform(0, 2 * math.pi)                # any direction
    hair_cols = [(30, 25, 22), (85, 55, 35), (195, 165, 105), (150, 150, 150), (130, 60, 30)]
    skin = mats.add("person", _skin(rng), lo=0.05, hi=0.05, instance=instance)
    hair = mats.add("person", _jitter(rng, hair_cols[int(rng.integers(0, 5))], 12), lo=0.1, hi=0.2, instance=instance)
    top = mats.add("person", _hsv(rng.uniform(0, 1), rng.uniform(0.1, 0.9), rng.uniform(0.2, 0.95)),
                   lo=0.1, hi=0.1, instance=instance)
    bottoms = [(50, 70, 115), (30, 30, 35), (165, 145, 105), (95, 95, 100)]
    bottom_rgb = _jitter(rng, bottoms[int(rng.integers(0, 4))], 15) if rng.random() < 0.75 else \
        _hsv(rng.uniform(0, 1), rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8))
    bottom = mats.add("person", bottom_rgb, lo=0.1, hi=0.1, instance=instance)
    shoes = mats.add("person", _jitter(rng, (35, 30, 30) if rng.random() < 0.7 else (220, 220, 220), 10),
                     lo=0.05, hi=0.05, instance=instance)
    dark = mats.add("person", _jitter(rng, (25, 20, 20), 5), lo=0.02, hi=0.02, instance=instance)
    sleeves, shorts = rng.random() < 0.6, rng.random() < 0.2
    return _Actor(z, _person_draw(st, instance, x, z, yaw, body, height / 1.75,
                                  (skin, hair, top, bottom, shoes, dark), sleeves, shorts))


def _figure_to_world(body: np.ndarray, x: float, z: float, yaw: float) -> np.ndarray:
    """Body-frame points [n, 3] (l, y, f) of a figure standing at (x, 0, z) -> world [n, 3].

    yaw 0 faces away from the camera (+Z), pi faces it, pi/2 faces image right. The person's
    left is (-cos yaw, 0, sin yaw): facing the camera, their left side is on the image right,
    seen from behind on the image left, so COCO left/right labels follow the figure."""
    left = np.array([-math.cos(yaw), 0.0, math.sin(yaw)])
    fwd = np.array([math.sin(yaw), 0.0, math.cos(yaw)])
    return np.array([x, 0.0, z]) + body[:, :1] * left + body[:, 1:2] * np.array([0.0, 1.0, 0.0]) + body[:, 2:] * fwd


def _person_draw(st: _Street, instance: int, x: float, z: float, yaw: float, body: np.ndarray, scale: float,
                 m: tuple[int, ...], sleeves: bool, shorts: bool) -> Draw:
    skin, hair, top, bottom, shoes, dark = m
    world = _figure_to_world(body, x, z, yaw)
    facing = -math.cos(yaw)                                          # 1: faces the camera, -1: back
    caps = [  # (a, b, radius m, material)
        (5, 7, 0.055, top), (6, 8, 0.055, top),
        (7, 9, 0.045, top if sleeves else skin), (8, 10, 0.045, top if sleeves else skin),
        (9, _LHAND, 0.04, skin), (10, _RHAND, 0.04, skin),
        (11, 13, 0.085, bottom), (12, 14, 0.085, bottom),
        (13, 15, 0.065, skin if shorts else bottom), (14, 16, 0.065, skin if shorts else bottom),
        (15, _LTOE, 0.05, shoes), (16, _RTOE, 0.05, shoes),
    ]

    def draw(p: _Painter) -> None:
        cam, s = p.cam, p.cam.focal / z                              # image heights per metre
        uv = cam.project(world)
        kp_px = uv[:17] * p.height - 0.5
        # canvas: the figure's pixel extent with room for limb radii and the head
        margin = 0.13 * scale * s * p.height + 3
        lo = np.floor(uv.min(0) * p.height - 0.5 - margin).astype(int)
        hi = np.ceil(uv.max(0) * p.height - 0.5 + margin).astype(int)
        if hi[0] < 0 or hi[1] < 0 or lo[0] >= p.width or lo[1] >= p.height:
            return
        canvas = _Raster(np.full((hi[1] - lo[1] + 1, hi[0] - lo[0] + 1), EMPTY, np.uint8), p.height, (lo[0], lo[1]))
        parts: list[tuple[float, int, Callable[[], None]]] = []
        for i, (a, b, r, mat) in enumerate(caps):
            parts.append((float(world[a, 2] + world[b, 2]) / 2, i,
                          lambda a=a, b=b, r=r, mat=mat: canvas.capsule(uv[a], uv[b], r * scale * s, mat)))
        parts.append((z, 20, lambda: canvas.fill(_hull(uv[_CHEST]), top)))
        parts.append((z + 0.01, 19, lambda: canvas.fill(_hull(uv[_PELVIS]), bottom)))
        parts.append((float(world[_HEAD, 2]), 21, lambda: _draw_head(canvas, uv, world, scale * s, facing, m)))
        canvas.capsule(uv[_NECK_BASE], uv[_NECK_TOP], 0.05 * scale * s, skin)
        for _, _, fn in sorted(parts, key=lambda t: (-t[0], t[1])):   # far to near within the figure
            fn()
        _paste(p.mat.img, canvas.img, lo)
        rows = np.flatnonzero((canvas.img != EMPTY).any(1))
        cols = np.flatnonzero((canvas.img != EMPTY).any(0))
        box = np.array([lo[0] + cols[0] - 0.5, lo[1] + rows[0] - 0.5, lo[0] + cols[-1] + 0.5, lo[1] + rows[-1] + 0.5])
        box = np.clip(box, -0.5, [p.width - 0.5, p.height - 0.5, p.width - 0.5, p.height - 0.5])
        p.figures.append((instance, kp_px, box))
        p.ground_ellipse_shadow(x - 0.3 * st.sun * scale, z, 0.4 * scale, 0.3 * scale, min(st.shadow + 0.2, 0.7))
    return draw


def _draw_head(r: _Raster, uv: np.ndarray, world: np.ndarray, s: float, facing: float, m: tuple[int, ...]) -> None:
    """Hair-coloured head, a skin face on the side facing the camera, ears, eyes, nose, mouth:
    the visual cues the five head keypoints need. ``s``: image heights per metre (x scale)."""
    skin, hair, _, _, _, dark = m
    ax, ay = 0.085 * s, 0.115 * s
    c = uv[_HEAD]
    zc = world[_HEAD, 2]
    r.ellipse(c, (ax, ay), hair)
    face_w = ax * (1 + facing)                                  # full width facing us, none from behind
    if face_w > 0.15 * ax:
        fx = float(np.sign(uv[0, 0] - c[0])) * (ax - face_w / 2)
        r.ellipse(c + np.array([fx, 0.14 * ay]), (face_w / 2, 0.8 * ay), skin)
    for ear in (3, 4):
        if world[ear, 2] <= zc + 0.02:
            r.ellipse(uv[ear], (0.02 * s, 0.032 * s), skin)
    if facing > -0.3:
        r.ellipse(uv[0], (0.022 * s, 0.022 * s), skin)         # nose: sticks out in profile
        for eye in (1, 2):
            if world[eye, 2] < zc + 0.01:
                r.ellipse(uv[eye], (0.013 * s, 0.011 * s), dark)
        if facing > 0.3:
            r.ellipse(uv[0] + np.array([0, 0.045 * s]), (0.022 * s, 0.006 * s), dark)


def _paste(dst: np.ndarray, canvas: np.ndarray, origin: np.ndarray) -> None:
    """Copy the drawn pixels of a canvas placed at origin (px, may be outside) into dst."""
    h, w = dst.shape
    x0, y0 = max(origin[0], 0), max(origin[1], 0)
    x1, y1 = min(origin[0] + canvas.shape[1], w), min(origin[1] + canvas.shape[0], h)
    if x1 <= x0 or y1 <= y0:
        return
    sub = canvas[y0 - origin[1]:y1 - origin[1], x0 - origin[0]:x1 - origin[0]]
    np.copyto(dst[y0:y1, x0:x1], sub, where=sub != EMPTY)


def _plan_persons(rng: np.random.Generator, st: _Street, mats: _Materials,
                  cars: list[tuple[float, float, float, float, _Actor]]) -> list[_Actor]:
    """1..8 persons: on the sidewalks, crossing the road, behind parked cars, in groups and at
    the image edges; sizes from far (~50 px tall at 1024 rows) to near (~600 px)."""
    actors: list[_Actor] = []
    placed: list[tuple[float, float]] = []
    cam = st.cam
    for k in range(int(rng.integers(1, 9))):
        tall = rng.uniform(0.12, 0.6) if k == 0 else math.exp(rng.uniform(math.log(0.045), math.log(0.6)))
        z = max(cam.focal * 1.75 / tall, 3.0)
        u = rng.uniform(0.0, 1.0)
        mode = rng.random()
        if k == 0:                              # the first person stands in the open, in view
            mode = 0.35 + 0.65 * mode
        side = 1 if rng.random() < 0.5 else -1
        lo, hi = st.visible_x(z)
        if mode < 0.15 and cars:                                       # behind a car
            x0, x1, z0, z1, _ = cars[int(rng.integers(0, len(cars)))]
            z = z0 + rng.uniform(0.4, 2.5)
            x = (x0 + x1) / 2 + rng.uniform(-1.6, 1.6)
        elif mode < 0.25 and placed:                                    # next to someone
            x, z = placed[int(rng.integers(0, len(placed)))]
            x, z = x + rng.uniform(-1.0, 1.0), max(z + rng.uniform(-1.5, 1.5), 3.0)
        elif mode < 0.35:                                               # at the left/right image edge
            edge = lo if side < 0 else hi
            x = edge - side * rng.uniform(-0.3, 0.6)
        elif mode < 0.65:                                               # on the road
            x = st.x_left + 0.5 + u * (st.x_right - st.x_left - 1.0)
        else:                                                           # on a sidewalk
            s_in, s_out = st.walk(side)
            x = side * (s_in + 0.3 + u * max(s_out - s_in - 1.1, 0.1))
        x = float(np.clip(x, -st.front[0] + 0.8, st.front[1] - 0.8))    # never inside a building
        if k == 0:                                                      # one person in view for sure
            x, z = _in_the_open(st, cars, x, z)
        actors.append(_plan_person(rng, st, mats, k + 1, x, z))
        placed.append((x, z))
    return actors


def _in_the_open(st: _Street, cars: list[tuple[float, float, float, float, _Actor]], x: float,
                 z: float) -> tuple[float, float]:
    """Move a person at (x, z) into view and in front of every car that would hide them (cars are
    the only actors wide enough to), so each scene shows at least one person."""
    for _ in range(len(cars) + 1):
        lo, hi = st.visible_x(z)
        x = min(max(x, lo + 0.4), hi - 0.4) if hi - lo > 1.0 else (lo + hi) / 2
        x = float(np.clip(x, -st.front[0] + 0.8, st.front[1] - 0.8))
        hiding = [c for c in cars if c[2] < z and
                  min(c[0] / c[2], c[0] / c[3]) < (x + 0.4) / z and max(c[1] / c[2], c[1] / c[3]) > (x - 0.4) / z]
        if not hiding:
            break
        z = max(min(c[2] for c in hiding) - 0.8, 3.0)
    return x, z


# --------------------------------------------------------------------------- textures and light
def _noise(rng: np.random.Generator, cells: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """Value noise: a random uint8 grid of cells (rows, cols) bilinearly resized to shape."""
    grid = rng.integers(0, 256, (cells[0] + 1, cells[1] + 1), dtype=np.uint8)
    return cv2.resize(grid, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR_EXACT).astype(np.int32)


def _stretch(x: np.ndarray, gain: float) -> np.ndarray:
    return np.clip((x - 128) * gain + 128, 0, 255).astype(np.uint8)


def _plan_textures(rng: np.random.Generator, tex_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Coarse (stains, patches) and fine (leaves, grain) noise [rows, cols] uint8 centred on 128,
    plus cloud cover [rows, cols] uint8, all in scene units."""
    aspect = tex_shape[1] / tex_shape[0]

    def octave(cells: int) -> np.ndarray:        # value noise with `cells` cells per image height
        return _noise(rng, (cells, max(round(cells * aspect), 1)), tex_shape)

    lo = (2 * octave(8) + octave(32)) // 3
    hi = (octave(64) + 2 * rng.integers(0, 256, tex_shape, dtype=np.uint8).astype(np.int32)) // 3
    cloud = (3 * octave(4) + 2 * octave(12) + octave(40)) // 6
    return np.dstack([_stretch(lo, 2.5), _stretch(hi, 2.2)]), _stretch(cloud, 3.0)


@dataclass
class _Light:
    """Global photometry: brightness, contrast, colour temperature; the sky's look."""

    gain: np.ndarray          # [3] per-channel gain (brightness x colour temperature)
    contrast: float
    zenith: np.ndarray        # [3] sky colours
    horizon: np.ndarray
    cloud_rgb: np.ndarray
    cloud_cover: float        # threshold shift: more clouds when larger
    noise: float              # pixel noise amplitude (uint8 levels)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        return (rgb * self.gain - 118.0) * self.contrast + 118.0


def _plan_light(rng: np.random.Generator) -> _Light:
    temp = rng.uniform(-1, 1)
    gain = rng.uniform(0.75, 1.2) * np.array([1 + 0.08 * temp, 1.0, 1 - 0.08 * temp])
    overcast = rng.uniform(0, 1) ** 2
    blue = np.array([rng.uniform(60, 110), rng.uniform(120, 160), rng.uniform(190, 235)])
    grey = _jitter(rng, (175, 180, 188), 15)
    zenith = blue + overcast * (grey - blue)
    horizon = np.minimum(zenith + rng.uniform(30, 70), 250)
    return _Light(gain, rng.uniform(0.8, 1.15), zenith, horizon, _jitter(rng, (235, 235, 238), 15) * (1 - 0.15 * overcast),
                  rng.uniform(-0.3, 0.3), rng.uniform(3.0, 9.0))


# --------------------------------------------------------------------------- entry point
def render_scene(seed: int, height: int = 512, width: int = 1024) -> Scene:
    """Render the street scene of ``seed`` at height x width (any size from 16 px up).

    The same seed and aspect ratio give the same scene at every size; the same seed and size
    give bit-identical outputs. Returns image [H, W, 3] uint8 RGB, labels [H, W] uint8 train
    IDs, instances [H, W] int32 and the visible persons with keypoints and boxes.
    """
    height, width = int(height), int(width)
    if height < 16 or width < 16:
        raise ValueError(f"scene size {height}x{width} is too small (>= 16x16)")
    rng = np.random.Generator(np.random.PCG64(int(seed)))
    aspect = width / height
    tex_shape = (TEX_ROWS, max(int(round(TEX_ROWS * aspect)), 1))
    mats = _Materials()
    sky = mats.add("sky", (0, 0, 0), lo=0.0, hi=0.0)                # index 0: colour comes from the sky grid
    # ---- plan (size independent) ----
    st = _plan_street(rng, aspect)
    background = _plan_ground(rng, st, mats)
    background += _plan_buildings(rng, st, mats)
    actors = _plan_furniture(rng, st, mats)
    cars = _plan_cars(rng, st, mats)
    actors += [c[-1] for c in cars]
    actors += _plan_persons(rng, st, mats, cars)
    light = _plan_light(rng)
    noise, cloud = _plan_textures(rng, tex_shape)
    # ---- rasterise ----
    p = _Painter(st.cam, height, width, tex_shape)
    for draw in background:
        draw(p)
    for actor in sorted(actors, key=lambda a: -a.depth):                 # stable: ties keep plan order
        actor.draw(p)
    mat = p.mat.img
    luts = mats.luts(light)
    labels = cv2.LUT(mat, luts["label"])
    instances = cv2.LUT(mat, luts["instance"]).astype(np.int32)
    shade = _shade(mat, luts, noise, p.shade.img)
    sky_rgb = _sky(st.cam, light, cloud, height, width)
    # pixel noise: the only size-dependent random numbers, drawn last
    grain = np.frombuffer(rng.bytes(height * width), np.uint8).reshape(height, width)
    image = _compose(mat, luts, shade, sky_rgb, sky, grain, light.noise)
    persons = _persons(p.figures, instances)
    return Scene(image=image, labels=labels, instances=instances, persons=persons)


def _shade(mat: np.ndarray, luts: dict[str, np.ndarray], noise: np.ndarray, shadow: np.ndarray) -> np.ndarray:
    """Per-pixel brightness factor [H, W] uint16 in 1/128 (0..255): 1 + coarse and fine texture,
    scaled by each material's amplitudes, minus the soft cast shadows on ground materials.
    Integer arithmetic: exact on every machine and cheaper than float."""
    h, w = mat.shape
    shadow = cv2.GaussianBlur(shadow, (0, 0), 2.0)
    tex = cv2.resize(np.dstack([noise, shadow]), (w, h), interpolation=cv2.INTER_LINEAR_EXACT)
    n_lo, n_hi, sh = cv2.split(tex)
    f = cv2.LUT(mat, luts["lo"]).astype(np.int16)
    f *= n_lo.astype(np.int16) - 128                   # |.| <= 255 * 128: fits int16
    f >>= 7
    g = cv2.LUT(mat, luts["hi"]).astype(np.int16)
    g *= n_hi.astype(np.int16) - 128
    g >>= 7
    f += g
    f -= cv2.LUT(mat, luts["gate"]) & sh               # gate is 0 or 255: a mask
    f += 256
    f >>= 1
    return np.clip(f, 0, 255).astype(np.uint16)


def _sky(cam: _Camera, light: _Light, cloud: np.ndarray, h: int, w: int) -> np.ndarray:
    """Sky colours [rows, W, 3] uint8 for the rows above the horizon: a gradient towards a brighter
    horizon, clouds where the cover noise is high. The sky is smooth, so it is computed on every
    other cell of the noise grid and resized."""
    cloud = cloud[::2, ::2]
    grid_rows = cloud.shape[0]
    rows = min(int(math.ceil(cam.horizon * grid_rows)) + 2, grid_rows)
    t = np.clip(np.arange(rows, dtype=np.float64) / (cam.horizon * grid_rows), 0, 1)
    t = t * (2 - t)
    grad = (light.zenith + t[:, None] * (light.horizon - light.zenith))[:, None, :]      # [rows, 1, 3]
    alpha = np.clip((cloud[:rows].astype(np.float64) / 255 - 0.55 + light.cloud_cover) * 3.0, 0, 0.9)
    grid = np.clip(np.round(light(grad + alpha[..., None] * (light.cloud_rgb - grad))), 0, 255).astype(np.uint8)
    out_rows = max(int(round(rows * h / grid_rows)), 1)
    return cv2.resize(grid, (w, out_rows), interpolation=cv2.INTER_LINEAR_EXACT)[:h]


def _compose(mat: np.ndarray, luts: dict[str, np.ndarray], shade: np.ndarray, sky_rgb: np.ndarray, sky: int,
             grain: np.ndarray, amount: float) -> np.ndarray:
    """Image [H, W, 3] uint8 = material colour (sky: gradient) x shade + luminance noise, softened
    by a 3x3 blur like a camera's optics."""
    rows = sky_rgb.shape[0]
    is_sky = mat[:rows] == sky
    noise = grain.astype(np.int16)
    noise -= 128
    noise *= int(round(amount * 16))
    noise >>= 11                                       # +- amount levels
    channels = []
    for c in range(3):
        base = cv2.LUT(mat, luts["rgb"][c])
        np.copyto(base[:rows], sky_rgb[..., c], where=is_sky)
        v = base.astype(np.uint16)
        v *= shade                                     # <= 255 * 255: fits uint16
        v += 64                                        # round the >> 7
        out = (v >> 7).astype(np.int16)
        out += noise
        channels.append(np.clip(out, 0, 255).astype(np.uint8))
    return cv2.GaussianBlur(cv2.merge(channels), (3, 3), 0)


def _persons(figures: list[tuple[int, np.ndarray, np.ndarray]], instances: np.ndarray) -> list[Person]:
    """Keypoint visibility from the final instance map; persons with no visible pixel are dropped."""
    h, w = instances.shape
    persons = []
    for inst, kp, box in sorted(figures, key=lambda f: f[0]):
        x0, y0, x1, y1 = (int(round(float(b) + 0.5)) for b in box)     # box edges -> pixel index range
        if not (instances[y0:y1, x0:x1] == inst).any():
            continue
        ix, iy = np.floor(kp[:, 0] + 0.5).astype(np.int64), np.floor(kp[:, 1] + 0.5).astype(np.int64)
        inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
        own = np.zeros(17, bool)
        own[inside] = instances[iy[inside], ix[inside]] == inst
        v = np.where(inside, np.where(own, 2.0, 1.0), 0.0)
        persons.append(Person(keypoints=np.column_stack([kp, v]).astype(np.float32),
                              box=box.astype(np.float32), instance_id=inst))
    return persons
