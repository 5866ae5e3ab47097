"""Built-in sticker art, drawn procedurally with OpenCV on RGBA canvases.

Each sticker is drawn once per process (cached) in its own *face-unit* coordinates: ``u`` along
the eye line, ``v`` down the face, origin at the eye midpoint (see
:mod:`pipelines.pta.geometry`). ``unit`` says what one face unit is when the sticker is placed:
the eye distance (``"iod"``, glasses: the lenses land on the eyes) or the face frame's unit
(``"face"``, hat and ears: sized with the head). Canvases are premultiplied BGRA: OpenCV's
anti-aliased drawing on a transparent canvas blends every channel, alpha included, which is
exactly premultiplied compositing, so warping them bilinearly leaves no dark fringes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

import cv2
import numpy as np
from numpy.typing import NDArray

#: Canvas pixels per face unit.
PPU: Final = 160
_SHIFT: Final = 4  # sub-pixel bits for cv2 drawing


@dataclass(frozen=True)
class StickerArt:
    """A premultiplied BGRA canvas covering face units ``[u0, u1] x [v0, v1]``."""

    canvas: NDArray[np.uint8]
    u0: float
    v0: float
    unit: Literal["iod", "face"]

    @property
    def u1(self) -> float:
        """Right edge in face units."""
        return self.u0 + float(self.canvas.shape[1]) / PPU

    @property
    def v1(self) -> float:
        """Bottom edge in face units."""
        return self.v0 + float(self.canvas.shape[0]) / PPU


class _Pen:
    """Draws in face units on a canvas; colours are BGR with an opacity (premultiplied here)."""

    def __init__(self, u0: float, v0: float, u1: float, v1: float) -> None:
        self.u0, self.v0 = u0, v0
        width, height = round((u1 - u0) * PPU), round((v1 - v0) * PPU)
        self.canvas = np.zeros((height, width, 4), dtype=np.uint8)

    def pt(self, u: float, v: float) -> tuple[int, int]:
        k = PPU << _SHIFT
        return round((u - self.u0) * k), round((v - self.v0) * k)

    def len(self, units: float) -> int:
        return max(1, round(units * (PPU << _SHIFT)))

    @staticmethod
    def colour(bgr: tuple[int, int, int], alpha: float = 1.0) -> tuple[int, int, int, int]:
        b, g, r = bgr
        return (round(b * alpha), round(g * alpha), round(r * alpha), round(255 * alpha))

    def ellipse(
        self,
        centre: tuple[float, float],
        axes: tuple[float, float],
        colour: tuple[int, int, int, int],
        thickness: float = -1.0,
        angle: float = 0.0,
        arc: tuple[float, float] = (0.0, 360.0),
    ) -> None:
        width = -1 if thickness < 0 else max(1, round(thickness * PPU))
        cv2.ellipse(
            self.canvas,
            self.pt(*centre),
            (self.len(axes[0]), self.len(axes[1])),
            angle,
            arc[0],
            arc[1],
            colour,
            width,
            cv2.LINE_AA,
            _SHIFT,
        )

    def polygon(self, points: list[tuple[float, float]], colour: tuple[int, int, int, int]) -> None:
        pts = np.array([self.pt(u, v) for u, v in points], dtype=np.int32)
        cv2.fillPoly(self.canvas, [pts], colour, cv2.LINE_AA, _SHIFT)

    def line(
        self,
        a: tuple[float, float],
        b: tuple[float, float],
        colour: tuple[int, int, int, int],
        thickness: float,
    ) -> None:
        cv2.line(
            self.canvas,
            self.pt(*a),
            self.pt(*b),
            colour,
            max(1, round(thickness * PPU)),
            cv2.LINE_AA,
            _SHIFT,
        )


def _glasses() -> StickerArt:
    """Round glasses: tinted lenses centred on the eyes (``u = +-0.5, v = 0``), a bridge and
    short temples."""
    pen = _Pen(-1.15, -0.5, 1.15, 0.5)
    frame = pen.colour((30, 30, 30))
    for u in (-0.5, 0.5):
        pen.ellipse((u, 0.0), (0.36, 0.32), pen.colour((90, 60, 40), 0.35))
        pen.ellipse((u, 0.0), (0.36, 0.32), frame, thickness=0.06)
    pen.ellipse((0.0, 0.02), (0.15, 0.1), frame, thickness=0.05, arc=(200, 340))
    pen.line((-0.86, -0.04), (-1.1, -0.1), frame, 0.06)
    pen.line((0.86, -0.04), (1.1, -0.1), frame, 0.06)
    return StickerArt(pen.canvas, pen.u0, pen.v0, "iod")


def _temple() -> StickerArt:
    """One arm of the glasses, drawn along ``u`` from the hinge (``u = 0``) back to the ear
    (``u = 1``), ``v`` across it: placed on the side of the head by the 3D sticker."""
    pen = _Pen(-0.02, -0.06, 1.02, 0.06)
    frame = pen.colour((30, 30, 30))
    pen.line((0.0, 0.0), (0.86, 0.0), frame, 0.055)
    pen.ellipse((0.93, 0.02), (0.08, 0.035), frame, angle=20.0)
    return StickerArt(pen.canvas, pen.u0, pen.v0, "iod")


def _hat() -> StickerArt:
    """A top hat sitting on the head (brim at ``v = -1.2``) with a red band."""
    pen = _Pen(-1.6, -2.7, 1.6, -0.95)
    black, band = pen.colour((25, 25, 25)), pen.colour((40, 40, 200))
    pen.polygon([(-0.9, -1.25), (-0.95, -2.55), (0.95, -2.55), (0.9, -1.25)], black)
    pen.ellipse((0.0, -2.55), (0.95, 0.12), black)
    pen.polygon([(-0.91, -1.3), (-0.92, -1.55), (0.92, -1.55), (0.91, -1.3)], band)
    pen.ellipse((0.0, -1.2), (1.5, 0.2), black)
    return StickerArt(pen.canvas, pen.u0, pen.v0, "face")


def _ears() -> StickerArt:
    """Cat ears on top of the head: dark triangles with pink insides."""
    pen = _Pen(-1.55, -2.5, 1.55, -0.95)
    outer, inner = pen.colour((45, 45, 60)), pen.colour((170, 150, 240))
    for side in (-1.0, 1.0):
        base = 0.85 * side
        pen.polygon([(base - 0.5, -1.05), (base + 0.1 * side, -2.35), (base + 0.5, -1.05)], outer)
        pen.polygon([(base - 0.28, -1.2), (base + 0.08 * side, -2.0), (base + 0.28, -1.2)], inner)
    return StickerArt(pen.canvas, pen.u0, pen.v0, "face")


_ART: Final[dict[str, Callable[[], StickerArt]]] = {
    "glasses": _glasses,
    "hat": _hat,
    "ears": _ears,
    "temple": _temple,
}

#: Names of the built-in stickers (``temple`` is a part of ``glasses``, not a sticker).
STICKER_NAMES: Final = ("ears", "glasses", "hat")


@functools.cache
def sticker_art(name: str) -> StickerArt:
    """The art of a built-in sticker (drawn on first use); ``KeyError`` for an unknown name."""
    return _ART[name]()


__all__ = ["PPU", "STICKER_NAMES", "StickerArt", "sticker_art"]
