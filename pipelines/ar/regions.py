"""Face regions the local effects work in: regions of interest, soft masks, and colour
blending in CIE Lab that keeps the skin's texture."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import cv2
import numpy as np
from numpy.typing import NDArray

from pipelines.faces.detector import Face
from pipelines.faces.mesh import FaceMesh

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]


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


def points_roi(points: NDArray[np.floating], margin: float, frame_shape: tuple[int, ...]) -> Roi:
    """The pixels covering ``points`` (N, 2+) grown by ``margin`` pixels, clipped."""
    xy = np.asarray(points, dtype=np.float64)[:, :2]
    lo, hi = xy.min(axis=0) - margin, xy.max(axis=0) + margin
    return Roi.around(lo[0], lo[1], hi[0] + 1, hi[1] + 1, frame_shape)


def local_points(mesh: FaceMesh, roi: Roi) -> F64:
    """The mesh's points (468, 3) with ``x, y`` relative to ``roi``'s top-left pixel (for the
    masks of :mod:`pipelines.faces.regions` computed on a crop instead of the whole frame)."""
    pts = mesh.points.astype(np.float64)
    pts[:, 0] -= roi.x0
    pts[:, 1] -= roi.y0
    return pts


def face_width(mesh: FaceMesh) -> float:
    """The face's width in pixels: the span of the mesh's points across the eye-corner line."""
    pts = mesh.points[:, :2].astype(np.float64)
    axis = pts[263] - pts[33]
    axis /= max(float(np.hypot(*axis)), 1e-9)
    along = pts @ axis
    return float(along.max() - along.min())


def tint(crop: NDArray[np.uint8], mask: F32, bgr: tuple[int, int, int], luma: float) -> F32:
    """``crop`` recoloured towards ``bgr`` inside ``mask`` (0-1 weights), keeping texture.

    In CIE Lab, the chroma ``(a, b)`` becomes the colour's (plus a quarter of the crop's own
    variation around its masked mean, so shading stays), and the lightness moves towards the
    colour's by ``luma`` (0: the crop's own lightness, texture and shading; 1: the colour's
    lightness plus the crop's detail). Returns float BGR pixels (0-255), mixed by ``mask``.
    """
    src = crop.astype(np.float32) / 255.0
    lab = cv2.cvtColor(src, cv2.COLOR_BGR2Lab)
    target = cv2.cvtColor(np.array([[bgr]], dtype=np.float32) / 255.0, cv2.COLOR_BGR2Lab)[0, 0]
    weight = mask.astype(np.float32)
    total = float(weight.sum())
    if total <= 0:
        return cast(F32, crop.astype(np.float32))
    mean = (lab * weight[:, :, None]).reshape(-1, 3).sum(axis=0) / total
    out = lab.copy()
    out[:, :, 0] = lab[:, :, 0] + luma * (target[0] - mean[0])
    out[:, :, 1] = target[1] + 0.25 * (lab[:, :, 1] - mean[1])
    out[:, :, 2] = target[2] + 0.25 * (lab[:, :, 2] - mean[2])
    out[:, :, 0] = np.clip(out[:, :, 0], 0.0, 100.0)
    coloured = cv2.cvtColor(out, cv2.COLOR_Lab2BGR) * 255.0
    return blend(crop.astype(np.float32), cast(F32, coloured), weight)


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


__all__ = [
    "Roi",
    "blend",
    "ellipse_mask",
    "face_roi",
    "face_width",
    "local_points",
    "points_roi",
    "tint",
    "to_uint8",
]
