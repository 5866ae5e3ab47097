"""The displacement-field machinery of ``reshape`` (pipelines/ar/warp.py) on synthetic control
points: exact at the points, zero outside the dilated hull, continuous (no seam, no kink)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from pipelines.ar.warp import Field, ThinPlateSpline, displacement_field, warp

F64 = NDArray[np.float64]
SHAPE = (520, 600, 3)
CX, CY, AX, AY = 300.0, 260.0, 90.0, 120.0
MARGIN = 60.0


def slimming() -> tuple[F64, F64]:
    """A face-like oval of 36 points whose lower half moves inwards (up to 6 px), plus four
    inner points that stay (eyes, nose, mouth)."""
    t = np.linspace(0, 2 * np.pi, 36, endpoint=False)
    oval = np.stack([CX + AX * np.cos(t), CY + AY * np.sin(t)], axis=1)
    moves = np.zeros_like(oval)
    lower = np.sin(t) > 0.2
    moves[lower, 0] = -12 * np.cos(t[lower]) * np.sin(t[lower])
    inner = np.array([[CX - 35, CY - 30], [CX + 35, CY - 30], [CX, CY + 10], [CX, CY + 60]])
    return np.vstack([oval, inner]), np.vstack([moves, np.zeros_like(inner)])


@pytest.fixture(scope="module")
def field() -> Field:
    points, moves = slimming()
    made = displacement_field(points, moves, SHAPE, MARGIN)
    assert made is not None
    return made


def hull_distance(field: Field) -> NDArray[np.float32]:
    """Each ROI pixel's distance from the oval's convex hull (0 inside)."""
    points, moves = slimming()
    hull = cv2.convexHull(np.vstack([points, points + moves]).astype(np.float32)).reshape(-1, 2)
    inside = np.zeros(field.roi.shape, np.uint8)
    cv2.fillConvexPoly(inside, np.round(hull - (field.roi.x0, field.roi.y0)).astype(np.int32), 255)
    return cv2.distanceTransform(cv2.bitwise_not(inside), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def test_spline_interpolates_exactly() -> None:
    rng = np.random.default_rng(3)
    centres = rng.uniform(0, 200, (30, 2))
    values = rng.normal(0, 5, (30, 2))
    spline = ThinPlateSpline.fit(centres, values)
    assert np.abs(spline(centres) - values).max() < 1e-6
    # an affine function is reproduced everywhere (no bending needed)
    affine = centres @ np.array([[0.1, -0.2], [0.3, 0.05]]) + (2.0, -1.0)
    probe = rng.uniform(0, 200, (50, 2))
    expected = probe @ np.array([[0.1, -0.2], [0.3, 0.05]]) + (2.0, -1.0)
    assert np.abs(ThinPlateSpline.fit(centres, affine)(probe) - expected).max() < 1e-6


def test_moves_land_and_the_rest_stays(field: Field) -> None:
    points, moves = slimming()
    dst = points + moves
    for (x, y), (mx, my) in zip(dst, moves, strict=True):
        i, j = round(y) - field.roi.y0, round(x) - field.roi.x0
        # backward field at the destination samples the source point (grid + rounding error)
        assert abs(field.dx[i, j] + mx) < 0.6 and abs(field.dy[i, j] + my) < 0.6
    dist = hull_distance(field)
    assert not field.active[dist > MARGIN + 1.5].any()  # zero beyond the dilated hull
    assert field.active[dist < 1].sum() > 0.2 * (dist < 1).sum()


def test_field_is_continuous_no_seam_no_kink(field: Field) -> None:
    """The largest jump of the field's gradient between neighbouring pixels (its second
    difference) is small against the moves, everywhere: at the hull, at the taper's outer edge
    and in between. A field cut at a hull or a rectangle (the old warp) jumps by the whole
    move there."""
    _, moves = slimming()
    biggest = float(np.abs(moves).max())
    for d in (field.dx, field.dy):
        grad_jump = max(
            float(np.abs(np.diff(d, 2, axis=0)).max()), float(np.abs(np.diff(d, 2, axis=1)).max())
        )
        assert grad_jump < 0.02 * biggest, grad_jump
    # no fold: the backward map's Jacobian determinant stays well above 0
    dx_dy, dx_dx = np.gradient(field.dx)
    dy_dy, dy_dx = np.gradient(field.dy)
    assert float(((1 + dx_dx) * (1 + dy_dy) - dx_dy * dy_dx).min()) > 0.7
    # the same field cut off at the hull (no taper) has a seam: a jump of several pixels
    cut = np.where(hull_distance(field) > 0, 0.0, field.dx)  # inside the hull the taper is 1
    assert float(np.abs(np.diff(cut, axis=1)).max()) > 0.3 * biggest


def test_warp_changes_only_the_active_pixels(field: Field) -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, SHAPE, dtype=np.uint8)
    out = warp(img.copy(), field)
    changed = np.abs(out.astype(int) - img).max(axis=2) > 0
    rows, cols = field.roi.slices
    outside = np.ones(SHAPE[:2], bool)
    outside[rows, cols] = ~field.active
    assert not changed[outside].any()
    assert changed.sum() > 5000


def test_nothing_to_move() -> None:
    points, moves = slimming()
    assert displacement_field(points, np.zeros_like(moves), SHAPE, MARGIN) is None
    assert displacement_field(points + 5000, moves, SHAPE, MARGIN) is None  # off the frame
