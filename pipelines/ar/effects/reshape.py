"""``reshape``: face slimming and eye enlargement by smooth local warps around the landmarks.

Params: ``slim`` (0-1, default 0.3) and ``eyes`` (0-1, default 0.3).

Both warps are backward maps evaluated with ``cv2.remap`` over the discs they act on only:

* *Slimming* pushes each side of the jaw (face-frame points ``(+-0.85, 1.0)``, radius 0.7 face
  units) towards the midline by ``0.12 * slim`` face units, with Gustafson's local translation
  warp (interactive image warping, 1993): a pixel at distance ``d < r`` from the centre ``c``
  samples ``x - ((r^2 - d^2) / (r^2 - d^2 + |m|^2))^2 m``, which moves the content at ``c`` by
  ``m`` and fades smoothly to nothing at ``r``.
* *Eye enlargement* magnifies a disc of radius 0.45 eye distances around each eye: a pixel at
  distance ``d`` samples ``e + (x - e) (1 - a (1 - d^2 / r^2))`` with ``a = 0.22 * eyes``
  (centre magnified ``1 / (1 - a)``, up to 1.28x, identity at the rim).

The displacements of the discs are summed; pixels outside every disc are not touched, so nothing
changes farther than 0.35 box sides from the face box.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import cv2
import numpy as np
from numpy.typing import NDArray

from pipelines.ar.base import Effect, Frame, register
from pipelines.ar.regions import Roi, face_roi
from pipelines.faces.detector import Face
from pipelines.params import strengths
from pipelines.pta.geometry import FaceFrame

F32 = NDArray[np.float32]

JAW_CENTRES: Final = ((-0.85, 1.0), (0.85, 1.0))
JAW_RADIUS: Final = 0.7
JAW_PUSH: Final = 0.12
EYE_RADIUS: Final = 0.45
EYE_GAIN: Final = 0.22


@dataclass(frozen=True)
class ReshapeParams:
    """Strengths in 0..1."""

    slim: float = 0.3
    eyes: float = 0.3


@register
class Reshape(Effect[ReshapeParams]):
    """Slimmer jaw and larger eyes."""

    name = "reshape"
    reach = 0.35

    def validate(self, params: Mapping[str, Any]) -> ReshapeParams:
        """``slim`` and ``eyes``, numbers from 0 to 1."""
        return strengths(self.name, params, ReshapeParams)

    def apply(self, frame: Frame, faces: Sequence[Face], params: ReshapeParams) -> Frame:
        """Warp every face."""
        for face in faces:
            _warp_face(frame, face, params, face_roi(face, self.reach, frame.shape))
        return frame


@dataclass(frozen=True)
class _Disc:
    cx: float
    cy: float
    r: float


def _warp_face(frame: Frame, face: Face, params: ReshapeParams, limit: Roi) -> None:
    ff = FaceFrame.of(face)
    (ux, uy), _ = ff.axes
    pushes: list[tuple[_Disc, float, float]] = []
    if params.slim > 0:
        push = JAW_PUSH * params.slim * ff.unit
        for u, v in JAW_CENTRES:
            cx, cy = ff.to_image(u, v)
            inward = -1.0 if u > 0 else 1.0
            pushes.append(
                (_Disc(cx, cy, JAW_RADIUS * ff.unit), inward * push * ux, inward * push * uy)
            )
    zooms: list[_Disc] = []
    if params.eyes > 0 and ff.iod > 0:
        zooms = [_Disc(x, y, EYE_RADIUS * ff.iod) for x, y in face.landmarks[:2]]
    discs = [d for d, _, _ in pushes] + zooms
    if not discs:
        return
    roi = Roi.around(
        min(d.cx - d.r for d in discs),
        min(d.cy - d.r for d in discs),
        max(d.cx + d.r for d in discs) + 1,
        max(d.cy + d.r for d in discs) + 1,
        frame.shape,
    )
    roi = Roi(
        max(roi.x0, limit.x0), max(roi.y0, limit.y0), min(roi.x1, limit.x1), min(roi.y1, limit.y1)
    )
    if roi.empty:
        return
    ys, xs = np.mgrid[roi.y0 : roi.y1, roi.x0 : roi.x1].astype(np.float32)
    map_x, map_y = xs.copy(), ys.copy()
    for disc, mx, my in pushes:
        d2 = (xs - disc.cx) ** 2 + (ys - disc.cy) ** 2
        r2, m2 = disc.r**2, mx * mx + my * my
        inside = np.maximum(r2 - d2, 0.0)
        weight = (inside / (inside + m2)) ** 2 if m2 > 0 else np.zeros_like(inside)
        map_x -= weight * mx
        map_y -= weight * my
    gain = EYE_GAIN * params.eyes
    for disc in zooms:
        dx, dy = xs - disc.cx, ys - disc.cy
        falloff = np.maximum(1.0 - (dx * dx + dy * dy) / disc.r**2, 0.0)
        shrink = gain * falloff
        map_x -= shrink * dx
        map_y -= shrink * dy
    # Maps are absolute frame coordinates: remap the whole neighbourhood it samples from.
    rows, cols = roi.slices
    warped = cv2.remap(
        frame, cast(F32, map_x), cast(F32, map_y), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    changed = (map_x != xs) | (map_y != ys)
    region = frame[rows, cols]
    region[changed] = warped[changed]


__all__ = ["Reshape", "ReshapeParams"]
