"""Smooth local warps: a displacement field from control points, tapered to zero outside a hull.

The warps of ``reshape`` are given as *moves* of control points (mesh points: the jaw moves
inwards, the eye contours outwards, ...) plus points that must stay (zero moves). The field is
built in three steps:

1. **Interpolation by a thin-plate spline** (Bookstein 1989): the backward displacement
   ``-move`` is known at each point's *destination* ``p + move``; the spline
   ``f(x) = a0 + a1 x + a2 y + sum_i w_i U(|x - c_i|)`` with ``U(r) = r^2 log r`` interpolates
   it with the least bending energy, so it is smooth (C1 everywhere, C-infinity off the
   centres) and exact at the control points. ``remap`` then samples ``x + f(x)``: the content
   at ``p`` lands on ``p + move``.
2. **Taper**: the field is multiplied by ``w(x) = 1 - smoothstep(d(x) / margin)``, ``d`` the
   Euclidean distance from the convex hull of the control points (0 inside). The distance
   from a convex set is C1 outside it, and smoothstep has zero slope at both ends, so the
   product is C1: no seam at the hull nor at the outer edge, no kink where jaw meets neck.
3. **Locality**: outside the hull dilated by ``margin`` the field is exactly zero; :func:`warp`
   only rewrites pixels whose displacement is non-zero.

The spline is evaluated on a grid of ``step`` pixels and upsampled bicubically (a smooth
function's bicubic interpolation stays smooth), so the cost grows with the area over
``step^2`` times the number of points, not with the photo.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, cast

import cv2
import numpy as np
from numpy.typing import NDArray

from pipelines.ar.regions import Roi

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]
U8 = NDArray[np.uint8]

#: Grid spacing (pixels) the spline is evaluated on before bicubic upsampling.
DEFAULT_STEP: Final = 4
#: Control points closer than this (pixels) to an earlier one are dropped (a singular system).
MIN_SEPARATION: Final = 0.5


def _kernel(r2: F64) -> F64:
    """``U(r) = r^2 log r`` written on ``r^2`` (``0`` at ``r = 0``)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 0.5 * r2 * np.log(r2)
    return cast(F64, np.where(r2 > 0, out, 0.0))


@dataclass(frozen=True, eq=False)
class ThinPlateSpline:
    """A 2D thin-plate spline with vector values: ``centres`` (N, 2), ``weights`` (N, k),
    ``affine`` (3, k); coordinates are scaled by ``scale`` around ``origin`` for conditioning."""

    centres: F64
    weights: F64
    affine: F64
    origin: F64
    scale: float

    @classmethod
    def fit(cls, centres: F64, values: F64, smoothing: float = 0.0) -> ThinPlateSpline:
        """The spline through ``values`` (N, k) at ``centres`` (N, 2); ``smoothing`` > 0 trades
        exactness for less bending (a ridge on the kernel matrix, in scaled units)."""
        pts = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
        vals = np.asarray(values, dtype=np.float64).reshape(len(pts), -1)
        origin = pts.mean(axis=0)
        scale = float(max(np.ptp(pts, axis=0).max(), 1.0))
        unit = (pts - origin) / scale
        n = len(unit)
        d2 = ((unit[:, None, :] - unit[None, :, :]) ** 2).sum(axis=2)
        k = _kernel(d2) + smoothing * np.eye(n)
        p = np.hstack([np.ones((n, 1)), unit])
        system = np.zeros((n + 3, n + 3))
        system[:n, :n], system[:n, n:], system[n:, :n] = k, p, p.T
        rhs = np.zeros((n + 3, vals.shape[1]))
        rhs[:n] = vals
        try:
            solution = np.asarray(np.linalg.solve(system, rhs), dtype=np.float64)
        except np.linalg.LinAlgError:  # degenerate layout (e.g. collinear points)
            solution = np.asarray(np.linalg.lstsq(system, rhs, rcond=None)[0], dtype=np.float64)
        return cls(unit, solution[:n], solution[n:], origin, scale)

    def __call__(self, xy: F64) -> F64:
        """Values at the points ``xy`` (M, 2), as (M, k)."""
        unit = (np.asarray(xy, dtype=np.float64).reshape(-1, 2) - self.origin) / self.scale
        out = self.affine[0] + unit @ self.affine[1:]
        c2 = (self.centres**2).sum(axis=1)
        for start in range(0, len(unit), 16384):  # bounded temporaries
            part = unit[start : start + 16384]
            # |p - c|^2 = |p|^2 + |c|^2 - 2 p.c (one matrix product instead of an N x M x 2 array)
            d2 = (part**2).sum(axis=1)[:, None] + c2[None, :] - 2.0 * (part @ self.centres.T)
            out[start : start + 16384] += _kernel(np.maximum(d2, 0.0)) @ self.weights
        return cast(F64, out)


def dedupe(points: F64, moves: F64) -> tuple[F64, F64]:
    """Drop control points closer than :data:`MIN_SEPARATION` to an earlier one."""
    keep: list[int] = []
    for i, p in enumerate(points):
        if not keep or float(np.hypot(*(points[keep] - p).T).min()) >= MIN_SEPARATION:
            keep.append(i)
    return points[keep], moves[keep]


@dataclass(frozen=True, eq=False)
class Field:
    """A backward displacement field over ``roi``: ``dx``, ``dy`` (float32, the ROI's shape),
    zero outside the tapered hull. ``remap`` samples ``(x + dx, y + dy)``."""

    roi: Roi
    dx: F32
    dy: F32

    @property
    def active(self) -> NDArray[np.bool_]:
        """Pixels of the ROI the field moves."""
        return cast(NDArray[np.bool_], (self.dx != 0) | (self.dy != 0))


def taper(shape: tuple[int, int], hull: F64, margin: float) -> F32:
    """``1`` inside the convex ``hull`` (ROI pixel coordinates), falling to ``0`` at ``margin``
    pixels from it along ``1 - smoothstep(d / margin)`` (C1), ``0`` beyond."""
    inside = np.zeros(shape, dtype=np.uint8)
    cv2.fillConvexPoly(inside, np.round(hull * 16).astype(np.int32), 255, cv2.LINE_8, 4)
    dist = cv2.distanceTransform(
        cast(U8, cv2.bitwise_not(inside)), cv2.DIST_L2, cv2.DIST_MASK_PRECISE
    )
    t = np.clip(dist / max(margin, 1.0), 0.0, 1.0)
    return cast(F32, (1.0 - t * t * (3.0 - 2.0 * t)).astype(np.float32))


def displacement_field(
    points: F64,
    moves: F64,
    frame_shape: tuple[int, ...],
    margin: float,
    hull_points: F64 | None = None,
    step: int = DEFAULT_STEP,
) -> Field | None:
    """The tapered field moving each of ``points`` (N, 2, frame pixels) by ``moves`` (N, 2).

    The hull is the convex hull of ``hull_points`` (default: the points and their
    destinations); the field is zero farther than ``margin`` pixels from it. ``None`` when
    nothing moves or the region lies outside the frame.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    mv = np.asarray(moves, dtype=np.float64).reshape(-1, 2)
    if len(pts) == 0 or not np.any(mv):
        return None
    dst, back = dedupe(pts + mv, -mv)
    outline = np.vstack([pts, pts + mv]) if hull_points is None else hull_points
    hull = cv2.convexHull(np.asarray(outline, dtype=np.float32)).reshape(-1, 2)
    lo, hi = hull.min(axis=0) - margin, hull.max(axis=0) + margin
    roi = Roi.around(lo[0], lo[1], hi[0] + 1, hi[1] + 1, frame_shape)
    if roi.empty:
        return None
    height, width = roi.shape
    spline = ThinPlateSpline.fit(dst, back)
    # grid sample j sits at pixel (j + 0.5) * step - 0.5: resize by ``step`` lines them up
    gh, gw = -(-height // step), -(-width // step)
    gy = (np.arange(gh) + 0.5) * step - 0.5 + roi.y0
    gx = (np.arange(gw) + 0.5) * step - 0.5 + roi.x0
    grid = np.stack(np.meshgrid(gx, gy), axis=-1).reshape(-1, 2)
    coarse = spline(grid).reshape(gh, gw, 2).astype(np.float32)
    fine = cv2.resize(coarse, (gw * step, gh * step), interpolation=cv2.INTER_CUBIC)
    weight = taper((height, width), hull.astype(np.float64) - (roi.x0, roi.y0), margin)
    dx = np.ascontiguousarray(fine[:height, :width, 0] * weight)
    dy = np.ascontiguousarray(fine[:height, :width, 1] * weight)
    return Field(roi, cast(F32, dx), cast(F32, dy))


def warp(frame: U8, field: Field) -> U8:
    """Resample ``frame`` (in place) through ``field``; pixels the field leaves are untouched."""
    roi = field.roi
    rows, cols = roi.slices
    ys, xs = np.mgrid[roi.y0 : roi.y1, roi.x0 : roi.x1].astype(np.float32)
    warped = cv2.remap(
        frame,
        xs + field.dx,
        ys + field.dy,
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    active = field.active
    region = frame[rows, cols]
    region[active] = warped[active]
    return frame


__all__ = [
    "DEFAULT_STEP",
    "Field",
    "ThinPlateSpline",
    "dedupe",
    "displacement_field",
    "taper",
    "warp",
]
