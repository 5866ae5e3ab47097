"""``sticker``: built-in glasses, hat or ears anchored to each face's landmarks.

Params: ``name`` (``glasses``, ``hat`` or ``ears``; required) and ``opacity`` (0-1, default 1).

The art (:mod:`pipelines.ar.stickers`) is drawn in face units; it is placed with the similarity
transform of the face frame (origin at the eye midpoint, rotated with the eye line, scaled by
the eye distance for glasses and by the face unit for hat and ears), and alpha-blended
(premultiplied). In video the faces are the tracker's smoothed faces, so the sticker follows
the face without jitter. Nothing is drawn farther than one box side from the face box.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import cv2
import numpy as np
from numpy.typing import NDArray

from pipelines.ar.base import Effect, Frame, register
from pipelines.ar.regions import Roi, face_roi, to_uint8
from pipelines.ar.stickers import PPU, STICKER_NAMES, StickerArt, sticker_art
from pipelines.faces.detector import Face
from pipelines.params import EFFECT, Params
from pipelines.pta.geometry import FaceFrame, apply_affine

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]


@dataclass(frozen=True)
class StickerParams:
    """Which sticker, and how opaque."""

    name: str
    opacity: float = 1.0


@register
class Sticker(Effect[StickerParams]):
    """A procedurally drawn sticker following each face."""

    name = "sticker"
    reach = 1.0

    def validate(self, params: Mapping[str, Any]) -> StickerParams:
        """``name`` (required) and ``opacity`` (0-1)."""
        checked = Params(params, ("name", "opacity"), self.name, EFFECT)
        if "name" not in checked:
            checked.fail(f"name is required (one of {', '.join(STICKER_NAMES)})")
        return StickerParams(
            name=checked.choice("name", STICKER_NAMES, ""),
            opacity=checked.number("opacity", 1.0, 0.0, 1.0),
        )

    def apply(self, frame: Frame, faces: Sequence[Face], params: StickerParams) -> Frame:
        """Blend the sticker onto every face."""
        if params.opacity <= 0:
            return frame
        art = sticker_art(params.name)
        for face in faces:
            place(
                frame,
                art,
                placement(face, art),
                face_roi(face, self.reach, frame.shape),
                params.opacity,
            )
        return frame


def placement(face: Face, art: StickerArt) -> F64:
    """2x3 affine matrix from the art's canvas pixels to frame pixels for this face."""
    ff = FaceFrame.of(face)
    k = ff.iod if art.unit == "iod" and ff.iod > 0 else ff.unit
    (ux, uy), (vx, vy) = ff.axes
    ox, oy = ff.origin
    s = k / PPU
    return np.array(
        [
            [s * ux, s * vx, ox + k * (art.u0 * ux + art.v0 * vx)],
            [s * uy, s * vy, oy + k * (art.u0 * uy + art.v0 * vy)],
        ],
        dtype=np.float64,
    )


def place(frame: Frame, art: StickerArt, matrix: F64, limit: Roi, opacity: float) -> None:
    """Alpha-blend the art onto ``frame`` through ``matrix``, never outside ``limit``."""
    height, width = art.canvas.shape[:2]
    corners = apply_affine(matrix, np.array([[0, 0], [width, 0], [0, height], [width, height]]))
    box = Roi.around(
        corners[:, 0].min() - 1,
        corners[:, 1].min() - 1,
        corners[:, 0].max() + 2,
        corners[:, 1].max() + 2,
        frame.shape,
    )
    roi = Roi(
        max(box.x0, limit.x0), max(box.y0, limit.y0), min(box.x1, limit.x1), min(box.y1, limit.y1)
    )
    if roi.empty:
        return
    canvas = art.canvas
    m = matrix.copy()
    scale = math.hypot(m[0, 0], m[1, 0])
    if scale < 0.75:  # reduce with area averaging first: a bilinear warp alone would alias
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        canvas = cast(NDArray[np.uint8], cv2.resize(canvas, size, interpolation=cv2.INTER_AREA))
        m[:, 0] *= width / size[0]
        m[:, 1] *= height / size[1]
    m[0, 2] -= roi.x0
    m[1, 2] -= roi.y0
    rows, cols = roi.slices
    warped = cv2.warpAffine(
        canvas,
        m,
        (roi.x1 - roi.x0, roi.y1 - roi.y0),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0, 0),
    ).astype(np.float32) * (opacity / 255.0)
    alpha = warped[:, :, 3:4]
    if not np.any(alpha > 0):
        return
    under = frame[rows, cols].astype(np.float32)
    frame[rows, cols] = to_uint8(under * (1.0 - alpha) + warped[:, :, :3] * 255.0)


__all__ = ["Sticker", "StickerParams", "place", "placement"]
