"""3D colour lookup tables: the Adobe/Resolve ``.cube`` text format and trilinear application.

Parsing (:func:`parse_cube`) follows the Cube LUT Specification 1.0: ``#`` comments and blank
lines anywhere; keywords before the data: ``TITLE "..."``, ``LUT_3D_SIZE N``, ``DOMAIN_MIN r g
b``, ``DOMAIN_MAX r g b`` (and Resolve's ``LUT_3D_INPUT_RANGE lo hi``); then ``N^3`` lines of
three numbers (output red, green, blue) with red varying fastest, then green, then blue. 1D LUTs
are refused. Sizes 2 to :data:`MAX_SIZE`; every value must be finite; each domain minimum must
be below its maximum. Every problem is a :class:`~pipelines.errors.BadParams` naming the line.

Application (:meth:`Lut3D.apply`) is trilinear interpolation organised for OpenCV: the table is
laid out as one image whose columns are the blue slices side by side (red along each slice's
columns, green down the rows); per pixel, one bilinear ``cv2.remap`` in the blue slice below the
pixel's blue and one in the slice above, mixed by the blue fraction (``cv2.blendLinear``),
is the trilinear value. The channel-to-position mapping (through the domain) is a 256-entry
``cv2.LUT``. ``remap`` resolves positions to 1/32 of a grid cell, so grids coarser than
:data:`MIN_GRID_CELLS` cells are first refined on a nested grid (exact: trilinear interpolation
of a trilinear function on nested cells reproduces it), which keeps the error below 0.25 of an
8-bit level per unit slope; a 33-point table fits in the CPU cache. Output values are clipped
to 0..1 (the table is clipped before interpolation).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Final, cast

import cv2
import numpy as np
from numpy.typing import NDArray

from pipelines.errors import BadParams

F32 = NDArray[np.float32]

#: Largest accepted LUT_3D_SIZE (65 is the largest size in common use).
MAX_SIZE: Final = 65
#: Small grids are refined (exactly) to at least this many cells per axis before use.
MIN_GRID_CELLS: Final = 32
#: Pixels per band of rows in :meth:`Lut3D.apply`.
_BAND_PIXELS: Final = 1 << 18
#: Largest accepted .cube text, in characters (a 65-point cube is about 7 MB; 33 points, 1 MB).
MAX_TEXT: Final = 8 * 1024 * 1024


@dataclass(frozen=True, eq=False)
class Lut3D:
    """A 3D LUT: ``table[b, g, r]`` is the output RGB (nominally 0..1) at grid point
    ``(r, g, b)``; the grid spans ``domain_min..domain_max`` per input channel (RGB)."""

    table: F32
    domain_min: tuple[float, float, float] = (0.0, 0.0, 0.0)
    domain_max: tuple[float, float, float] = (1.0, 1.0, 1.0)
    title: str = ""

    def __post_init__(self) -> None:
        n = self.size
        if self.table.shape != (n, n, n, 3) or not 2 <= n <= MAX_SIZE:
            raise BadParams(f"a 3D LUT must be N x N x N x 3 with N from 2 to {MAX_SIZE}")
        if any(lo >= hi for lo, hi in zip(self.domain_min, self.domain_max, strict=True)):
            raise BadParams("each DOMAIN_MIN value must be below its DOMAIN_MAX")

    @property
    def size(self) -> int:
        """Grid points per axis."""
        return int(self.table.shape[0])

    @functools.cached_property
    def _prepared(self) -> tuple[F32, F32, F32, int]:
        """The blue-sliced table image, the per-channel position LUT, the blue fractions and
        the refined grid size (see :meth:`apply`)."""
        n = self.size
        refine = max(1, math.ceil(MIN_GRID_CELLS / (n - 1)))
        size = (n - 1) * refine + 1
        table = np.clip(self.table[..., ::-1].astype(np.float32) * 255.0, 0.0, 255.0)  # BGR out
        if refine > 1:  # nested finer grid: trilinear values stay exactly the same
            t = np.linspace(0.0, n - 1.0, size)
            i0 = np.minimum(np.floor(t).astype(np.intp), n - 2)
            f = (t - i0).astype(np.float32)
            for axis in range(3):
                shape = [1, 1, 1, 1]
                shape[axis] = size
                lo, hi = np.take(table, i0, axis=axis), np.take(table, i0 + 1, axis=axis)
                table = lo + f.reshape(shape) * (hi - lo)
        # rows: green position; columns: blue slice * size + red position
        image = np.ascontiguousarray(table.transpose(1, 0, 2, 3).reshape(size, size * size, 3))
        positions: list[F32] = []
        for c in range(3):  # r, g, b
            lo_d, hi_d = self.domain_min[c], self.domain_max[c]
            unit = np.clip((np.arange(256) / 255.0 - lo_d) / (hi_d - lo_d), 0.0, 1.0)
            positions.append((unit * (size - 1)).astype(np.float32))
        blue = positions[2]
        slice_index = np.minimum(np.floor(blue), size - 2)
        # per input channel (B, G, R): blue slice offset in columns, green row, red column
        lut = np.stack([slice_index * size, positions[1], positions[0]], axis=-1)
        fraction = (blue - slice_index).astype(np.float32).reshape(1, 256)
        return image.astype(np.float32), lut.reshape(1, 256, 3).astype(np.float32), fraction, size

    def apply(self, bgr: NDArray[np.uint8], strength: float = 1.0) -> NDArray[np.uint8]:
        """The LUT applied to a BGR ``uint8`` image (trilinear), mixed with it by ``strength``.

        Large images are processed in bands of rows, so the float intermediates stay small.
        """
        rows = max(1, _BAND_PIXELS // max(1, bgr.shape[1]))
        if bgr.shape[0] <= rows:
            return self._apply(bgr, strength)
        out = np.empty_like(bgr)
        for top in range(0, bgr.shape[0], rows):
            out[top : top + rows] = self._apply(bgr[top : top + rows], strength)
        return out

    def _apply(self, bgr: NDArray[np.uint8], strength: float) -> NDArray[np.uint8]:
        image, lut, fraction, size = self._prepared
        offset, row, red = cv2.split(cv2.LUT(bgr, lut))
        column = cv2.add(offset, red)
        lower = cv2.remap(image, column, row, cv2.INTER_LINEAR)
        upper = cv2.remap(image, column + np.float32(size), row, cv2.INTER_LINEAR)
        weight = cv2.LUT(np.ascontiguousarray(bgr[:, :, 0]), fraction)
        mixed = cv2.blendLinear(lower, upper, 1.0 - weight, weight)
        out = cast(NDArray[np.uint8], cv2.convertScaleAbs(mixed))  # values are in 0..255
        if strength < 1.0:
            out = cast(NDArray[np.uint8], cv2.addWeighted(out, strength, bgr, 1.0 - strength, 0))
        return out


def identity_table(size: int) -> F32:
    """The ``(size, size, size, 3)`` identity table (grid RGB, red fastest)."""
    axis = np.linspace(0.0, 1.0, size, dtype=np.float32)
    b, g, r = np.meshgrid(axis, axis, axis, indexing="ij")
    return cast(F32, np.stack([r, g, b], axis=-1))


def _numbers(parts: list[str], count: int, line_no: int, what: str) -> list[float]:
    if len(parts) != count:
        raise BadParams(f"lut: cube line {line_no}: {what} needs {count} numbers")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise BadParams(f"lut: cube line {line_no}: {what} must be numbers") from None
    if not all(math.isfinite(v) for v in values):
        raise BadParams(f"lut: cube line {line_no}: {what} must be finite numbers")
    return values


def parse_cube(text: str) -> Lut3D:
    """Parse ``.cube`` text into a :class:`Lut3D`; :class:`BadParams` on any problem."""
    if len(text) > MAX_TEXT:
        raise BadParams(f"lut: cube text is longer than {MAX_TEXT} characters")
    size: int | None = None
    title = ""
    lo, hi = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    rows: list[str] = []
    first_data = 0
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        head, _, rest = line.partition(" ")
        keyword = head.upper()
        if keyword[:1].isalpha():
            if rows:
                raise BadParams(f"lut: cube line {line_no}: keyword {head} after the data")
            parts = rest.split()
            if keyword == "TITLE":
                title = rest.strip().strip('"')[:200]
            elif keyword == "LUT_3D_SIZE":
                (value,) = _numbers(parts, 1, line_no, "LUT_3D_SIZE")
                if value != int(value) or not 2 <= value <= MAX_SIZE:
                    raise BadParams(
                        f"lut: cube line {line_no}: LUT_3D_SIZE must be an integer from 2 to "
                        f"{MAX_SIZE}"
                    )
                size = int(value)
            elif keyword == "LUT_1D_SIZE":
                raise BadParams(f"lut: cube line {line_no}: 1D LUTs are not supported")
            elif keyword == "DOMAIN_MIN":
                lo = _numbers(parts, 3, line_no, "DOMAIN_MIN")
            elif keyword == "DOMAIN_MAX":
                hi = _numbers(parts, 3, line_no, "DOMAIN_MAX")
            elif keyword == "LUT_3D_INPUT_RANGE":
                a, b = _numbers(parts, 2, line_no, "LUT_3D_INPUT_RANGE")
                lo, hi = [a, a, a], [b, b, b]
            else:
                raise BadParams(f"lut: cube line {line_no}: unknown keyword {head[:40]}")
            continue
        if not rows:
            first_data = line_no
        rows.append(line)
    if size is None:
        raise BadParams("lut: cube has no LUT_3D_SIZE")
    expected = size**3
    if len(rows) != expected:
        raise BadParams(
            f"lut: cube has {len(rows)} data lines; LUT_3D_SIZE {size} needs {expected}"
        )
    try:
        values = np.array([row.split() for row in rows], dtype=np.float64)
    except ValueError:
        for offset, row in enumerate(rows):  # find the first bad line for the message
            _numbers(row.split(), 3, first_data + offset, "a data line")
        raise BadParams("lut: cube data lines must be three numbers") from None
    if values.shape != (expected, 3):
        for offset, row in enumerate(rows):
            _numbers(row.split(), 3, first_data + offset, "a data line")
    if not np.all(np.isfinite(values)):
        raise BadParams("lut: cube data values must be finite")
    if any(a >= b for a, b in zip(lo, hi, strict=True)):
        raise BadParams("lut: cube DOMAIN_MIN must be below DOMAIN_MAX in every channel")
    table = values.astype(np.float32).reshape(size, size, size, 3)
    return Lut3D(table, (lo[0], lo[1], lo[2]), (hi[0], hi[1], hi[2]), title)


def to_cube(lut: Lut3D) -> str:
    """``.cube`` text of a LUT (six decimals)."""
    lines = [f'TITLE "{lut.title}"'] if lut.title else []
    lines.append(f"LUT_3D_SIZE {lut.size}")
    lines.append("DOMAIN_MIN " + " ".join(f"{v:g}" for v in lut.domain_min))
    lines.append("DOMAIN_MAX " + " ".join(f"{v:g}" for v in lut.domain_max))
    lines += [f"{r:.6f} {g:.6f} {b:.6f}" for r, g, b in lut.table.reshape(-1, 3).tolist()]
    return "\n".join(lines) + "\n"


__all__ = ["MAX_SIZE", "MAX_TEXT", "Lut3D", "identity_table", "parse_cube", "to_cube"]
