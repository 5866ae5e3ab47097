"""Vector shapes (cubic Bezier paths with fill, stroke, opacity and a clip) and their two
outputs: SVG text and an anti-aliased raster.

The avatar renderer (:mod:`pipelines.pta.render`) builds a list of :class:`Shape` and hands it to
:func:`to_svg` and :func:`to_png`, so both files show the same drawing. The raster is drawn with
Pillow at ``SUPERSAMPLE`` times the size (Bezier segments flattened to ``STEPS`` lines each),
each shape composited inside its bounding box (8-bit masks, ``Image.paste`` blending), then
box-filtered down (``Image.reduce``): deterministic, no OpenCV.
Coordinates are in a ``VIEW`` x ``VIEW`` box whatever the output size.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

Point = tuple[float, float]
Segment = tuple[Point, Point, Point]

#: Side of the drawing's coordinate box.
VIEW: Final = 512.0
#: Raster supersampling factor (per side).
SUPERSAMPLE: Final = 4
#: Lines per Bezier segment in the raster.
STEPS: Final = 16
#: Cubic Bezier approximation of a quarter circle.
_KAPPA: Final = 0.5522847498


@dataclass(frozen=True)
class Path:
    """A path: ``start`` then cubic segments ``(control 1, control 2, end)``; ``closed`` joins
    the end to the start."""

    start: Point
    segments: tuple[Segment, ...]
    closed: bool = True

    def points(self) -> list[Point]:
        """The path flattened to a polyline (``STEPS`` points per segment)."""
        out = [self.start]
        p0 = self.start
        for c1, c2, p1 in self.segments:
            for i in range(1, STEPS + 1):
                t = i / STEPS
                u = 1 - t
                a, b, c, d = u * u * u, 3 * u * u * t, 3 * u * t * t, t * t * t
                out.append(
                    (
                        a * p0[0] + b * c1[0] + c * c2[0] + d * p1[0],
                        a * p0[1] + b * c1[1] + c * c2[1] + d * p1[1],
                    )
                )
            p0 = p1
        return out

    def d(self) -> str:
        """The SVG path data (coordinates to 2 decimals)."""
        parts = [f"M{_n(self.start[0])} {_n(self.start[1])}"]
        for c1, c2, p in self.segments:
            parts.append(f"C{_n(c1[0])} {_n(c1[1])} {_n(c2[0])} {_n(c2[1])} {_n(p[0])} {_n(p[1])}")
        if self.closed:
            parts.append("Z")
        return "".join(parts)


@dataclass(frozen=True)
class Shape:
    """A path drawn with a ``fill`` and/or a ``stroke`` (hex colours), ``opacity`` applying to
    both, clipped to the inside of ``clip`` when given."""

    path: Path
    fill: str | None = None
    stroke: str | None = None
    width: float = 0.0
    opacity: float = 1.0
    clip: Path | None = None


def _n(value: float) -> str:
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def smooth_path(points: Sequence[Point], closed: bool = True, tension: float = 1.0) -> Path:
    """A Catmull-Rom spline through ``points`` as cubic Bezier segments."""
    n = len(points)
    if n < 2:
        raise ValueError("a path needs two points")
    segments: list[Segment] = []
    count = n if closed else n - 1
    k = tension / 6.0
    for i in range(count):
        p0 = points[(i - 1) % n] if closed or i > 0 else points[i]
        p1 = points[i]
        p2 = points[(i + 1) % n]
        p3 = points[(i + 2) % n] if closed or i + 2 < n else p2
        c1 = (p1[0] + (p2[0] - p0[0]) * k, p1[1] + (p2[1] - p0[1]) * k)
        c2 = (p2[0] - (p3[0] - p1[0]) * k, p2[1] - (p3[1] - p1[1]) * k)
        segments.append((c1, c2, p2))
    return Path(points[0], tuple(segments), closed)


def ellipse(cx: float, cy: float, rx: float, ry: float, angle_deg: float = 0.0) -> Path:
    """An ellipse (four cubic segments), rotated by ``angle_deg`` about its centre."""
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))

    def at(x: float, y: float) -> Point:
        return (cx + x * c - y * s, cy + x * s + y * c)

    kx, ky = rx * _KAPPA, ry * _KAPPA
    return Path(
        at(rx, 0),
        (
            (at(rx, ky), at(kx, ry), at(0, ry)),
            (at(-kx, ry), at(-rx, ky), at(-rx, 0)),
            (at(-rx, -ky), at(-kx, -ry), at(0, -ry)),
            (at(kx, -ry), at(rx, -ky), at(rx, 0)),
        ),
    )


def polygon(points: Sequence[Point], closed: bool = True) -> Path:
    """Straight segments through ``points``."""
    segments = []
    for a, b in zip(points, [*points[1:], points[0]] if closed else points[1:], strict=False):
        segments.append((a, b, b))
    return Path(points[0], tuple(segments), closed)


def to_svg(shapes: Sequence[Shape], size: int, background: str) -> bytes:
    """An SVG document of ``size`` pixels showing ``shapes`` over ``background``."""
    defs: list[str] = []
    body: list[str] = []
    clip_ids: dict[str, str] = {}
    v = _n(VIEW)
    for shape in shapes:
        attrs = [f'd="{shape.path.d()}"']
        attrs.append(f'fill="{shape.fill}"' if shape.fill else 'fill="none"')
        if shape.stroke:
            attrs.append(
                f'stroke="{shape.stroke}" stroke-width="{_n(shape.width)}" '
                'stroke-linejoin="round" stroke-linecap="round"'
            )
        if shape.opacity < 1:
            attrs.append(f'fill-opacity="{_n(shape.opacity)}"')
            if shape.stroke:
                attrs.append(f'stroke-opacity="{_n(shape.opacity)}"')
        if shape.clip is not None:
            data = shape.clip.d()
            if data not in clip_ids:
                clip_ids[data] = f"c{len(clip_ids)}"
                defs.append(f'<clipPath id="{clip_ids[data]}"><path d="{data}"/></clipPath>')
            attrs.append(f'clip-path="url(#{clip_ids[data]})"')
        body.append(f"<path {' '.join(attrs)}/>")
    lines = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" '
        f'viewBox="0 0 {v} {v}">',
        f"<defs>{''.join(defs)}</defs>" if defs else "",
        f'<rect width="{v}" height="{v}" fill="{background}"/>',
        *body,
        "</svg>",
    ]
    return ("\n".join(line for line in lines if line) + "\n").encode()


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def rasterise(shapes: Sequence[Shape], size: int, background: str) -> NDArray[np.uint8]:
    """The drawing as an ``(size, size, 3)`` RGB array."""
    from PIL import Image, ImageChops, ImageDraw

    side = size * SUPERSAMPLE
    scale = side / VIEW
    canvas = Image.new("RGB", (side, side), _rgb(background))

    def coords(path: Path, x0: int, y0: int) -> list[Point]:
        return [(x * scale - x0, y * scale - y0) for x, y in path.points()]

    for shape in shapes:
        outline = coords(shape.path, 0, 0)
        pad = shape.width * scale / 2 + 2 if shape.stroke else 2.0
        xs = [p[0] for p in outline]
        ys = [p[1] for p in outline]
        x0, y0 = max(0, math.floor(min(xs) - pad)), max(0, math.floor(min(ys) - pad))
        x1, y1 = min(side, math.ceil(max(xs) + pad)), min(side, math.ceil(max(ys) + pad))
        if x1 <= x0 or y1 <= y0:
            continue
        box = (x1 - x0, y1 - y0)
        local = [(x - x0, y - y0) for x, y in outline]
        clip = None
        if shape.clip is not None:
            clip = Image.new("L", box, 0)
            ImageDraw.Draw(clip).polygon(coords(shape.clip, x0, y0), fill=255)
        layers = []
        if shape.fill:
            mask = Image.new("L", box, 0)
            ImageDraw.Draw(mask).polygon(local, fill=255)
            layers.append((shape.fill, mask))
        if shape.stroke and shape.width > 0:
            mask = Image.new("L", box, 0)
            draw = ImageDraw.Draw(mask)
            w = max(1, round(shape.width * scale))
            line = [*local, local[0]] if shape.path.closed else local
            draw.line(line, fill=255, width=w, joint="curve")
            r = w / 2
            for x, y in (line[0], line[-1]):
                draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
            layers.append((shape.stroke, mask))
        for colour, mask in layers:
            if shape.opacity < 1:
                level = shape.opacity
                mask = mask.point([round(v * level) for v in range(256)])
            if clip is not None:
                mask = ImageChops.multiply(mask, clip)
            canvas.paste(_rgb(colour), (x0, y0, x1, y1), mask)
    small = canvas.reduce(SUPERSAMPLE)
    out: NDArray[np.uint8] = np.asarray(small, dtype=np.uint8).copy()
    return out


def to_png(shapes: Sequence[Shape], size: int, background: str) -> bytes:
    """The drawing as PNG bytes (pixels only: no text chunks, no metadata)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rasterise(shapes, size, background), "RGB").save(
        buffer, format="PNG", compress_level=6
    )
    return buffer.getvalue()


__all__ = [
    "SUPERSAMPLE",
    "VIEW",
    "Path",
    "Shape",
    "ellipse",
    "polygon",
    "rasterise",
    "smooth_path",
    "to_png",
    "to_svg",
]
