"""``beautify``: skin smoothing and whitening, restricted to the skin inside each face.

Params: ``smooth`` (0-1, default 0.6) and ``whiten`` (0-1, default 0.3).

The mask is an ellipse as wide as the face box, from the brows to the chin (face units -0.55 to
1.75, see :mod:`pipelines.pta.geometry`; rotated with the eye line), intersected with a
skin-colour range in YCrCb (Cr 133-180, Cb 77-135), minus the eyes and the mouth (so they stay
sharp), feathered. Smoothing is a bilateral filter (kernel 7.5 % of the face width) run on the
face reduced to at most 120 pixels wide (so its cost does not grow with the photo) and scaled
back: it keeps the low frequencies (shape, shading) and drops skin texture; the result is mixed
in by ``smooth`` times the mask.
Whitening lifts the tones with a logarithmic curve, ``v' = 255 log(1 + (b - 1) v / 255) /
log(b)`` with ``b = 1 + 3 whiten``, mixed in by the mask. No pixel farther than 10 % of the box's
longer side from the box changes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import cv2
import numpy as np
from numpy.typing import NDArray

from pipelines.ar.base import Effect, Frame, register
from pipelines.ar.regions import blend, ellipse_mask, face_roi, to_uint8
from pipelines.faces.detector import Face
from pipelines.params import strengths
from pipelines.pta.geometry import FaceFrame

F32 = NDArray[np.float32]

#: Face width the smoothing runs at, and its kernel's diameter as a share of that width.
WORK_WIDTH: Final = 120
KERNEL_SHARE: Final = 0.075
#: Top and bottom of the face ellipse, in face units (brows to chin).
ELLIPSE_V: Final = (-0.55, 1.75)
CR_RANGE: Final = (133, 180)
CB_RANGE: Final = (77, 135)


@dataclass(frozen=True)
class BeautifyParams:
    """Strengths in 0..1."""

    smooth: float = 0.6
    whiten: float = 0.3


@register
class Beautify(Effect[BeautifyParams]):
    """Skin smoothing and whitening inside each face's skin mask."""

    name = "beautify"
    reach = 0.1

    def validate(self, params: Mapping[str, Any]) -> BeautifyParams:
        """``smooth`` and ``whiten``, numbers from 0 to 1."""
        return strengths(self.name, params, BeautifyParams)

    def apply(self, frame: Frame, faces: Sequence[Face], params: BeautifyParams) -> Frame:
        """Smooth and whiten the skin of every face."""
        if params.smooth <= 0 and params.whiten <= 0:
            return frame
        curve = _whitening_curve(params.whiten)
        for face in faces:
            roi = face_roi(face, self.reach, frame.shape)
            if roi.empty or min(roi.shape) < 4:
                continue
            rows, cols = roi.slices
            crop = frame[rows, cols]
            mask = skin_mask(crop, face, (roi.x0, roi.y0))
            if not mask.any():
                continue
            out = crop.astype(np.float32)
            if params.smooth > 0:
                out = blend(out, _smoothed(crop, face, params.smooth), mask * params.smooth)
            if curve is not None:
                lifted = cv2.LUT(to_uint8(out), curve).astype(np.float32)
                out = blend(out, lifted, mask)
            frame[rows, cols] = to_uint8(out)
        return frame


def skin_mask(crop: Frame, face: Face, offset: tuple[int, int]) -> F32:
    """Feathered skin mask (0..1) of a face's crop whose top-left pixel is ``offset``."""
    height, width = crop.shape[:2]
    ff = FaceFrame.of(face)
    ox, oy = offset
    # An ellipse from the brows to the chin, as wide as the box (its top stays below the hair).
    top, bottom = ELLIPSE_V
    cx, cy = ff.to_image(0.0, (top + bottom) / 2)
    half_h = min((bottom - top) / 2 * ff.unit, face.height / 2)
    region = ellipse_mask(
        (height, width), (cx - ox, cy - oy), (face.width / 2, half_h), ff.roll_deg
    )
    ycrcb = cv2.cvtColor(crop, cv2.COLOR_BGR2YCrCb)
    skin = cv2.inRange(ycrcb, (0, CR_RANGE[0], CB_RANGE[0]), (255, CR_RANGE[1], CB_RANGE[1]))
    mask = cv2.bitwise_and(region, skin)
    # Keep the eyes and the mouth sharp.
    holes = np.zeros_like(mask)
    eye_r = 0.24 * max(ff.iod, 1.0)
    for x, y in face.landmarks[:2]:
        cv2.circle(holes, (round(x - ox), round(y - oy)), max(1, round(eye_r)), 255, -1)
    (mlx, mly), (mrx, mry) = face.landmarks[3], face.landmarks[4]
    mouth_w = math.hypot(mrx - mlx, mry - mly)
    mouth_centre = ((mlx + mrx) / 2 - ox, (mly + mry) / 2 - oy)
    holes = np.maximum(
        holes,
        ellipse_mask((height, width), mouth_centre, (0.65 * mouth_w, 0.35 * mouth_w), ff.roll_deg),
    )
    mask = cv2.bitwise_and(mask, cv2.bitwise_not(holes))
    sigma = max(0.5, 0.025 * max(face.width, face.height))
    soft = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), sigma)
    # The blur must not carry the mask out of the face ellipse's neighbourhood.
    return cast(F32, soft * (cv2.dilate(region, np.ones((3, 3), np.uint8), iterations=2) > 0))


def _smoothed(crop: Frame, face: Face, strength: float) -> F32:
    height, width = crop.shape[:2]
    scale = min(1.0, WORK_WIDTH / max(face.width, 1.0))
    small = crop
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = cast(Frame, cv2.resize(crop, size, interpolation=cv2.INTER_AREA))
    # the kernel spans a fixed share of the face at the working scale (9 px at 120 px wide)
    diameter = max(3, round(face.width * scale * KERNEL_SHARE) | 1)
    flat = cv2.bilateralFilter(small, diameter, 20.0 + 40.0 * strength, diameter / 2)
    if scale < 1.0:
        flat = cv2.resize(flat, (width, height), interpolation=cv2.INTER_LINEAR)
    return cast(F32, flat.astype(np.float32))


def _whitening_curve(whiten: float) -> NDArray[np.uint8] | None:
    if whiten <= 0:
        return None
    base = 1.0 + 3.0 * whiten
    v = np.arange(256, dtype=np.float64)
    curve = 255.0 * np.log1p((base - 1.0) * v / 255.0) / math.log(base)
    return cast(NDArray[np.uint8], np.clip(np.rint(curve), 0, 255).astype(np.uint8))


__all__ = ["Beautify", "BeautifyParams", "skin_mask"]
