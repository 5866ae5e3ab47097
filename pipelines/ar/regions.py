"""Face regions the local effects work in: regions of interest and soft masks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import cv2
import numpy as np
from numpy.typing import NDArray

from pipelines.faces.detector import Face

F32 = NDArray[np.float32]


@dataclass(frozen=True)
class Roi:
    """An integer pixel rectangle ``[x0, x1) x [y0, y1)`` inside a frame."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def empty(self) -> bool:
        """True when the rectangle holds no pixel."""
        return self.x1 <= self.x0 or self.y1 <= self.y0

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(rows, cols)`` for indexing a frame."""
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``."""
        return self.y1 - self.y0, self.x1 - self.x0

    @classmethod
    def around(
        cls, x0: float, y0: float, x1: float, y1: float, frame_shape: tuple[int, ...]
    ) -> Roi:
        """The pixels covering the float rectangle, clipped to the frame."""
        height, width = frame_shape[:2]
        return cls(
            max(0, math.floor(x0)),
            max(0, math.floor(y0)),
            min(width, math.ceil(x1)),
            min(height, math.ceil(y1)),
        )


def face_roi(face: Face, margin: float, frame_shape: tuple[int, ...]) -> Roi:
    """The face box grown by ``margin`` times its longer side on every side, clipped."""
    x1, y1, x2, y2 = face.box
    pad = margin * max(face.width, face.height)
    return Roi.around(x1 - pad, y1 - pad, x2 + pad, y2 + pad, frame_shape)


def ellipse_mask(
    shape: tuple[int, int],
    centre: tuple[float, float],
    axes: tuple[float, float],
    angle_deg: float,
) -> NDArray[np.uint8]:
    """A filled, anti-aliased ellipse (0-255) on an ``(h, w)`` canvas."""
    mask = np.zeros(shape, dtype=np.uint8)
    shift = 4  # sub-pixel precision bits
    k = 1 << shift
    cv2.ellipse(
        mask,
        (round(centre[0] * k), round(centre[1] * k)),
        (max(1, round(axes[0] * k)), max(1, round(axes[1] * k))),
        angle_deg,
        0,
        360,
        255,
        -1,
        cv2.LINE_AA,
        shift,
    )
    return mask


def blend(base: F32, other: F32, weight: F32) -> F32:
    """``base + weight * (other - base)`` with a per-pixel ``(h, w)`` weight in 0..1."""
    out: F32 = base + weight[:, :, None] * (other - base)
    return out


def to_uint8(values: F32) -> NDArray[np.uint8]:
    """Round and saturate float pixels to ``uint8``."""
    return cast(NDArray[np.uint8], np.clip(np.rint(values), 0, 255).astype(np.uint8))


__all__ = ["Roi", "blend", "ellipse_mask", "face_roi", "to_uint8"]
