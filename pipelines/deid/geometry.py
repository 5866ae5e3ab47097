"""Face regions shared by the operators: a dilated ellipse around a face box.

The region of a face is the ellipse centred on its box whose semi-axes are ``dilation`` times
half the box width and height. ``dilation = sqrt(2)`` circumscribes the box (its corners lie on
the ellipse); the operators' defaults are larger, so the whole box and a margin around it (hair
line, chin, ears) are covered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np
from numpy.typing import NDArray

from pipelines.faces.detector import Face

#: Dilation at which the ellipse passes through the box corners.
CIRCUMSCRIBED: Final = math.sqrt(2.0)


@dataclass(frozen=True)
class Region:
    """A face region clipped to the image: ``y0:y1, x0:x1`` and a mask of that size (``uint8``,
    255 inside the ellipse, 0 outside: the form OpenCV's masked copy takes)."""

    x0: int
    y0: int
    x1: int
    y1: int
    mask: NDArray[np.uint8]

    @property
    def empty(self) -> bool:
        """True when no pixel of the region lies inside the image."""
        return self.x1 <= self.x0 or self.y1 <= self.y0 or not bool(self.mask.any())

    def slices(self) -> tuple[slice, slice]:
        """``(rows, cols)`` slices of the region's bounding rectangle."""
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


def ellipse_region(
    shape: tuple[int, ...], face: Face, dilation: float, margin: float = 0.0
) -> Region:
    """The dilated ellipse of ``face`` in an image of ``shape``.

    ``margin`` (pixels) widens the bounding rectangle beyond the ellipse (for filters that need
    context), without widening the mask.
    """
    height, width = int(shape[0]), int(shape[1])
    x1, y1, x2, y2 = face.box
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    ax = max(1.0, (x2 - x1) / 2.0 * dilation)
    ay = max(1.0, (y2 - y1) / 2.0 * dilation)
    rx0 = max(0, math.floor(cx - ax - margin))
    ry0 = max(0, math.floor(cy - ay - margin))
    rx1 = min(width, math.ceil(cx + ax + margin) + 1)
    ry1 = min(height, math.ceil(cy + ay + margin) + 1)
    if rx1 <= rx0 or ry1 <= ry0:
        return Region(0, 0, 0, 0, np.zeros((0, 0), dtype=np.uint8))
    ys = (np.arange(ry0, ry1, dtype=np.float64) + 0.5 - cy) / ay
    xs = (np.arange(rx0, rx1, dtype=np.float64) + 0.5 - cx) / ax
    # A pixel belongs to the region when any part of it may touch the ellipse: test its centre
    # against the ellipse grown by half a pixel's diagonal.
    grow_x, grow_y = 1.0 + 0.75 / ax, 1.0 + 0.75 / ay
    inside = (xs[None, :] / grow_x) ** 2 + (ys[:, None] / grow_y) ** 2 <= 1.0
    return Region(rx0, ry0, rx1, ry1, np.ascontiguousarray(inside, dtype=np.uint8) * np.uint8(255))


def fill_region(img: NDArray[np.uint8], region: Region, color: tuple[int, int, int]) -> None:
    """Paint the region of ``img`` (in place) with a solid BGR ``color``."""
    if region.empty:
        return
    solid = np.empty((region.y1 - region.y0, region.x1 - region.x0, 3), dtype=np.uint8)
    solid[:] = color
    composite(img, region, solid)


def composite(img: NDArray[np.uint8], region: Region, patch: NDArray[np.uint8]) -> None:
    """Copy ``patch`` (the size of the region's rectangle) into ``img`` inside the region mask."""
    if region.empty:
        return
    rows, cols = region.slices()
    # cv2.copyTo on a contiguous copy of the rectangle: ~30x faster than numpy's masked copy.
    rect = np.ascontiguousarray(img[rows, cols])
    cv2.copyTo(np.ascontiguousarray(patch), region.mask, rect)
    img[rows, cols] = rect


def resize_exact(
    img: NDArray[np.uint8], width: int, height: int, interpolation: int
) -> NDArray[np.uint8]:
    """``cv2.resize`` to exactly ``width x height`` (at least 1x1)."""
    out = cv2.resize(img, (max(1, width), max(1, height)), interpolation=interpolation)
    return np.asarray(out, dtype=np.uint8)


__all__ = ["CIRCUMSCRIBED", "Region", "composite", "ellipse_region", "fill_region", "resize_exact"]
