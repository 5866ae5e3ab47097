"""``reshape``: face slimming, eye enlargement, nose slimming and chin, on the face mesh.

Params (each 0-1): ``slim`` (default 0.3), ``eyes`` (0.3), ``nose`` (0) and ``chin`` (0).

Each control moves mesh points (in pixels of the face's own width ``W``, along the face's axes:
``u`` along the eye-corner line, ``v`` perpendicular to it, down the face):

* ``slim``: the jaw line moves towards the face's midline (the line through the point between
  the eyes, 168, and the chin, 152) by ``0.1 * slim`` of its distance from it, most at the
  jaw's lower half (weight rising from 0 at the ears' level to 1 at the jaw corners);
* ``eyes``: each eye's contour moves away from its centre by ``0.16 * eyes`` of its distance
  (up to 1.16x larger eyes);
* ``nose``: the nose wings move towards the nose's midline by ``0.25 * nose`` of their distance;
* ``chin``: the chin points below the lower lip move down by ``0.05 * chin * W`` (a longer,
  more pointed chin), weighted by how far below the mouth they are.

Points that must stay are given zero moves: the upper face oval (forehead and temples), the
brows, the cheek patches, the nose bridge and tip, the mouth corners and lip midpoints, and the
eye corners when the eyes do not change (so enlarging the eyes does not drag the cheeks). The
moves define a smooth displacement field (:func:`pipelines.ar.warp.displacement_field`: a
thin-plate spline, tapered to zero over
``0.22 W`` outside the convex hull of the face oval by a C1 smoothstep): no seam, no kink where
jaw meets neck, and pixels farther than ``0.22 W`` from the oval's hull are never touched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from pipelines.ar.base import Effect, Frame, Target, register
from pipelines.ar.regions import face_width
from pipelines.ar.warp import DEFAULT_STEP, Field, displacement_field, warp
from pipelines.faces import regions as R
from pipelines.faces.mesh import FaceMesh
from pipelines.params import strengths

F64 = NDArray[np.float64]

SLIM_GAIN: Final = 0.1
EYE_GAIN: Final = 0.16
NOSE_GAIN: Final = 0.25
CHIN_GAIN: Final = 0.05
#: Width of the taper outside the oval's hull, in face widths.
MARGIN_SHARE: Final = 0.22
#: Points that never move (besides the upper oval).
_FIXED: Final = (
    *R.RIGHT_BROW.indices,
    *R.LEFT_BROW.indices,
    *R.NOSE_BRIDGE.indices,
    *R.RIGHT_CHEEK.indices,
    *R.LEFT_CHEEK.indices,
    R.NOSE_TIP,
    R.SUBNASALE,
    R.MOUTH_RIGHT,
    R.MOUTH_LEFT,
    0,
    17,
    13,
    14,
)
_EYE_CORNERS: Final = (
    R.RIGHT_EYE_OUTER,
    R.RIGHT_EYE_INNER,
    R.LEFT_EYE_INNER,
    R.LEFT_EYE_OUTER,
)
_MIDLINE: Final = (168, 152)
_CHIN_POINTS: Final = (148, 176, 149, 150, 152, 377, 400, 378, 379, 175, 199, 200, 18, 428)


@dataclass(frozen=True)
class ReshapeParams:
    """Strengths in 0..1."""

    slim: float = 0.3
    eyes: float = 0.3
    nose: float = 0.0
    chin: float = 0.0


@register
class Reshape(Effect[ReshapeParams]):
    """Slimmer jaw, larger eyes, slimmer nose, longer chin."""

    name = "reshape"
    needs_mesh = True
    reach = 0.35

    def validate(self, params: Mapping[str, Any]) -> ReshapeParams:
        """``slim``, ``eyes``, ``nose`` and ``chin``, numbers from 0 to 1."""
        return strengths(self.name, params, ReshapeParams)

    def apply(self, frame: Frame, targets: Sequence[Target], params: ReshapeParams) -> Frame:
        """Warp every face."""
        for target in targets:
            field = reshape_field(target.need_mesh(), params, frame.shape)
            if field is not None:
                warp(frame, field)
        return frame


def _axes(pts: F64) -> tuple[F64, F64]:
    u = pts[R.LEFT_EYE_OUTER] - pts[R.RIGHT_EYE_OUTER]
    u /= max(float(np.hypot(*u)), 1e-9)
    v = np.array([-u[1], u[0]])
    if float(np.dot(v, pts[R.CHIN_BOTTOM] - pts[168])) < 0:
        v = -v
    return u, v


def control_points(mesh: FaceMesh, params: ReshapeParams) -> tuple[F64, F64, F64]:
    """The control points (N, 2), their moves (N, 2) and the hull outline (the face oval)."""
    pts = mesh.points[:, :2].astype(np.float64)
    u, v = _axes(pts)
    width = face_width(mesh)
    moves: dict[int, F64] = {}

    def move(index: int, delta: F64) -> None:
        moves[index] = moves.get(index, np.zeros(2)) + delta

    top, chin = pts[_MIDLINE[0]], pts[_MIDLINE[1]]
    mid_u = float(np.dot(top, u))
    span_v = max(float(np.dot(chin - top, v)), 1.0)
    # the oval: the jaw moves, the rest of it stays
    for i in R.FACE_OVAL.indices:
        depth = float(np.dot(pts[i] - top, v)) / span_v  # 0 between the eyes, 1 at the chin
        weight = float(np.clip((depth - 0.25) / 0.45, 0.0, 1.0))
        weight = weight * weight * (3 - 2 * weight)
        off = float(np.dot(pts[i], u)) - mid_u
        move(i, -SLIM_GAIN * params.slim * weight * off * u)
    if params.eyes > 0:
        for eye in (R.RIGHT_EYE, R.LEFT_EYE):
            centre = eye.points(pts).mean(axis=0)
            for i in eye.indices:
                move(i, EYE_GAIN * params.eyes * (pts[i] - centre))
    else:
        for i in _EYE_CORNERS:
            move(i, np.zeros(2))
    if params.nose > 0:
        nose_mid = float(np.dot(pts[R.NOSE_TIP], u))
        for wing in (R.RIGHT_NOSE_WING, R.LEFT_NOSE_WING):
            for i in wing.indices:
                move(i, -NOSE_GAIN * params.nose * (float(np.dot(pts[i], u)) - nose_mid) * u)
    if params.chin > 0:
        lip = float(np.dot(pts[17], v))
        for i in _CHIN_POINTS:
            below = float(np.clip((float(np.dot(pts[i], v)) - lip) / (0.5 * span_v), 0.0, 1.0))
            move(i, CHIN_GAIN * params.chin * width * below * v)
    for i in _FIXED:
        moves.setdefault(i, np.zeros(2))
    index = list(moves)
    return pts[index], np.array([moves[i] for i in index]), R.FACE_OVAL.points(pts)


def reshape_field(
    mesh: FaceMesh, params: ReshapeParams, frame_shape: tuple[int, ...]
) -> Field | None:
    """The displacement field of ``params`` on one face (``None`` when nothing moves)."""
    points, moves, oval = control_points(mesh, params)
    hull = np.vstack([oval, points + moves])
    width = face_width(mesh)
    # the spline's grid: 4 px, or 1/80 of the face on large faces (its features are far larger)
    step = max(DEFAULT_STEP, round(width / 80))
    return displacement_field(points, moves, frame_shape, MARGIN_SHARE * width, hull, step)


__all__ = ["Reshape", "ReshapeParams", "control_points", "reshape_field"]
