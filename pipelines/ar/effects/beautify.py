"""``beautify``: skin smoothing on the mesh's skin mask, and whitening as its own control.

Params: ``smooth`` (0-1, default 0.6) and ``whiten`` (0-1, default 0: off).

The mask is the mesh's skin (:func:`pipelines.faces.regions.skin_mask`: the face oval minus the
eyes, brows, lips and nostrils, the cut-outs grown a little), feathered by 3 % of the face width,
so the eyes, brows, lips and the nose's openings stay sharp and the edge of the face fades out.

Smoothing is an edge-preserving bilateral filter (kernel 7.5 % of the face width) run on the face
reduced to at most 120 pixels wide, so its cost does not grow with the photo; only the
*difference* it makes is scaled back up and added to the full-resolution pixels, mixed by
``smooth`` times the mask. Both the filter and the mix preserve the local mean, so the skin
keeps its colour: the mean Lab colour of the cheeks moves by CIE76 Delta E <= 3 at the
defaults (tests/pipelines/test_ar_mesh.py measures it). Whitening lifts only the lightness L*
(CIE Lab; chroma kept, so the face does not turn grey or pink) by ``12 * whiten`` units at L* 50
mixed by the mask; it is off unless asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import cv2
import numpy as np
from numpy.typing import NDArray

from pipelines.ar.base import Effect, Frame, Target, register
from pipelines.ar.regions import blend, face_width, local_points, points_roi, to_uint8
from pipelines.faces import regions as R
from pipelines.params import strengths

F32 = NDArray[np.float32]

#: Face width the smoothing runs at, and its kernel's diameter as a share of that width.
WORK_WIDTH: Final = 120
KERNEL_SHARE: Final = 0.075
#: Feather of the skin mask, as a share of the face width.
FEATHER_SHARE: Final = 0.03
#: Lightness (L*, 0-100) added at ``whiten = 1`` to mid-grey skin (L* 50; less towards white).
WHITEN_L: Final = 12.0


@dataclass(frozen=True)
class BeautifyParams:
    """Strengths in 0..1."""

    smooth: float = 0.6
    whiten: float = 0.0


@register
class Beautify(Effect[BeautifyParams]):
    """Skin smoothing (and optional whitening) inside each face's mesh skin mask."""

    name = "beautify"
    needs_mesh = True
    reach = 0.1

    def validate(self, params: Mapping[str, Any]) -> BeautifyParams:
        """``smooth`` and ``whiten``, numbers from 0 to 1."""
        return strengths(self.name, params, BeautifyParams)

    def apply(self, frame: Frame, targets: Sequence[Target], params: BeautifyParams) -> Frame:
        """Smooth (and whiten) the skin of every face."""
        if params.smooth <= 0 and params.whiten <= 0:
            return frame
        for target in targets:
            mesh = target.need_mesh()
            width = face_width(mesh)
            roi = points_roi(R.FACE_OVAL.points(mesh), 2.0 * FEATHER_SHARE * width, frame.shape)
            if roi.empty or min(roi.shape) < 8:
                continue
            rows, cols = roi.slices
            crop = frame[rows, cols]
            mask = R.skin_mask(roi.shape, local_points(mesh, roi), FEATHER_SHARE * width)
            if not mask.any():
                continue
            out = crop.astype(np.float32)
            if params.smooth > 0:
                out = blend(out, _smoothed(crop, width, params.smooth), mask * params.smooth)
            if params.whiten > 0:
                out = blend(out, _whitened(to_uint8(out), params.whiten), mask)
            frame[rows, cols] = to_uint8(out)
        return frame


def _smoothed(crop: Frame, face_px: float, strength: float) -> F32:
    """The bilateral-filtered crop: filtered small, and only the change upsampled."""
    height, width = crop.shape[:2]
    scale = min(1.0, WORK_WIDTH / max(face_px, 1.0))
    small = crop
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = cast(Frame, cv2.resize(crop, size, interpolation=cv2.INTER_AREA))
    diameter = max(3, round(face_px * scale * KERNEL_SHARE) | 1)
    flat = cv2.bilateralFilter(small, diameter, 20.0 + 40.0 * strength, diameter / 2)
    change: F32 = flat.astype(np.float32) - small.astype(np.float32)
    if scale < 1.0:
        change = cast(F32, cv2.resize(change, (width, height), interpolation=cv2.INTER_LINEAR))
    return cast(F32, crop.astype(np.float32) + change)


def _whitened(crop: Frame, whiten: float) -> F32:
    """Lightness lifted by up to :data:`WHITEN_L` (less near white), chroma kept."""
    lab = cv2.cvtColor(crop.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)
    lift = 2.0 * WHITEN_L * whiten * (1.0 - lab[:, :, 0] / 100.0)
    lab[:, :, 0] = np.clip(lab[:, :, 0] + lift, 0.0, 100.0)
    return cast(F32, cv2.cvtColor(lab, cv2.COLOR_Lab2BGR) * 255.0)


__all__ = ["Beautify", "BeautifyParams"]
