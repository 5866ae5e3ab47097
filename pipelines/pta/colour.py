"""Colour sampling in CIE Lab: skin from the cheeks, hair above the forehead, eyes at the irises.

Lab values are those of OpenCV's float conversion of sRGB (D65): ``L`` in 0..100, ``a`` and
``b`` roughly -128..127. Distances are CIE76 (Euclidean in Lab). Every sample is a median over
a region of the face mesh (:mod:`pipelines.pta.measure` chooses the regions).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, cast

import cv2
import numpy as np
from numpy.typing import NDArray

from pipelines.pta.spec import EYE_COLOURS, HAIR_COLOURS

F32 = NDArray[np.float32]
Lab = tuple[float, float, float]

#: The Monk Skin Tone scale (Google, CC BY 4.0): ten tones, lightest first; palette index 1-10.
MONK_SCALE: Final = (
    "#f6ede4",
    "#f3e7db",
    "#f7ead0",
    "#eadaba",
    "#d7bd96",
    "#a07e56",
    "#825c43",
    "#604134",
    "#3a312a",
    "#292420",
)

#: A pixel closer than this (CIE76) to the sampled skin tone counts as skin.
SKIN_DELTA_E: Final = 8.0


@dataclass(frozen=True)
class ColourSample:
    """A sampled colour: Lab, its sRGB hex, and the share of the region's pixels it summarises."""

    lab: Lab
    hex: str
    coverage: float


def to_lab(bgr: NDArray[np.uint8]) -> F32:
    """BGR ``uint8`` image (or ``(N, 3)`` pixels) to float32 Lab of the same shape."""
    arr = np.asarray(bgr, dtype=np.uint8)
    flat = arr.reshape(-1, 1, 3).astype(np.float32) / 255.0
    lab = cast(F32, cv2.cvtColor(flat, cv2.COLOR_BGR2Lab))
    return lab.reshape(arr.shape).astype(np.float32)


def lab_to_hex(lab: Sequence[float]) -> str:
    """The sRGB ``#rrggbb`` of a Lab colour (clipped to the sRGB gamut)."""
    px = np.array([[lab]], dtype=np.float32)
    bgr = cv2.cvtColor(px, cv2.COLOR_Lab2BGR)[0, 0]
    b, g, r = (round(float(np.clip(c, 0.0, 1.0)) * 255) for c in bgr)
    return f"#{r:02x}{g:02x}{b:02x}"


@functools.cache
def hex_to_lab(colour: str) -> Lab:
    """Lab of an sRGB ``#rrggbb``."""
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    lab = to_lab(np.array([[b, g, r]], dtype=np.uint8))[0]
    return (float(lab[0]), float(lab[1]), float(lab[2]))


def delta_e(a: Sequence[float], b: Sequence[float]) -> float:
    """CIE76 colour difference."""
    return float(math.dist(a, b))


def nearest(lab: Sequence[float], palette: Sequence[str]) -> int:
    """Index of the palette colour (hex) nearest to ``lab``."""
    return min(range(len(palette)), key=lambda i: delta_e(lab, hex_to_lab(palette[i])))


def _rounded(lab: Sequence[float]) -> Lab:
    return (round(float(lab[0]), 2), round(float(lab[1]), 2), round(float(lab[2]), 2))


def sample(pixels: F32, total: int) -> ColourSample | None:
    """Median Lab of ``pixels`` (``(N, 3)``), ``None`` when there are none."""
    if pixels.shape[0] == 0:
        return None
    lab = _rounded(np.median(pixels, axis=0).tolist())
    return ColourSample(lab, lab_to_hex(lab), round(pixels.shape[0] / max(total, 1), 3))


def disc_mask(
    shape: tuple[int, int], centre: tuple[float, float], radius: float
) -> NDArray[np.bool_]:
    """Pixels of an ``(h, w)`` image within ``radius`` of ``centre`` (x, y)."""
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    inside: NDArray[np.bool_] = (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= radius**2
    return inside


def eye_colour_name(lab: Sequence[float]) -> str:
    """Name of an iris colour: rules on lightness ``L``, chroma ``C`` and hue ``h`` (degrees).

    ``L < 30`` dark_brown; bluish hue (200-300) blue; ``C < 8`` and ``L >= 45`` grey; greenish
    hue (95-200) green; yellow hue (65-95) with ``L >= 40`` hazel; otherwise brown.
    """
    lightness, a, b = lab
    chroma = math.hypot(a, b)
    hue = math.degrees(math.atan2(b, a)) % 360
    if lightness < 30:
        return "dark_brown"
    if 200 <= hue < 300 and chroma >= 4:
        return "blue"
    if chroma < 8 and lightness >= 45:
        return "grey"
    if 95 <= hue < 200 and chroma >= 4:
        return "green"
    if 65 <= hue < 95 and lightness >= 40:
        return "hazel"
    return "brown"


__all__ = [
    "EYE_COLOURS",
    "HAIR_COLOURS",
    "MONK_SCALE",
    "SKIN_DELTA_E",
    "ColourSample",
    "delta_e",
    "disc_mask",
    "eye_colour_name",
    "hex_to_lab",
    "lab_to_hex",
    "nearest",
    "sample",
    "to_lab",
]
