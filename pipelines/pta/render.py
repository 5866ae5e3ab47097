"""The 2D avatar: a stylised head-and-shoulders character drawn from an :class:`AvatarSpec` alone.

No pixel of any photo reaches the drawing: every shape is placed from the spec's measured
parameters (in inter-ocular distances) and coloured from its measured classes
(:mod:`pipelines.pta.palette`). The same spec gives byte-identical SVG and PNG files.

Measured parameters are caricatured a little: each is drawn at the character's proportion
(:data:`BASE`) changed by ``GAIN`` times its relative deviation from the population mean
(:data:`MEANS`), clamped to a drawable range, so two people's
avatars differ visibly where their faces differ, and no measurement can break the drawing.

Styles (:data:`pipelines.pta.spec.STYLES`):

* ``flat``: flat colours, no outlines, soft shadows (the look of most avatar makers);
* ``toon``: bold ink outlines, cel-shaded face and hair, warmer backdrop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from pipelines.errors import BadParams
from pipelines.pta import palette
from pipelines.pta.shapes import (
    VIEW,
    Path,
    Point,
    Shape,
    ellipse,
    smooth_path,
    to_png,
    to_svg,
)
from pipelines.pta.spec import STYLES, AvatarSpec

#: Population means of the measured parameters (inter-ocular distances, as the mesh measures
#: them; degrees for the tilt), around which the drawing caricatures.
MEANS: Final = {
    "face.width": 2.15,
    "face.height": 2.55,
    "face.forehead_width": 1.8,
    "face.cheekbone_width": 2.1,
    "face.jaw_width": 1.95,
    "face.chin_width": 1.25,
    "face.chin_length": 0.55,
    "eyes.size": 0.45,
    "eyes.spacing": 0.54,
    "eyes.tilt_deg": 3.5,
    "brows.thickness": 0.09,
    "brows.arch": 0.17,
    "nose.width": 0.64,
    "nose.length": 0.77,
    "mouth.width": 1.0,
    "mouth.lip_fullness": 0.19,
}
#: What the mean face is drawn with (the character's proportions: a rounder, shorter face,
#: bigger eyes than a photo's).
BASE: Final = {
    "face.width": 2.25,
    "face.height": 2.95,
    "face.forehead_width": 1.95,
    "face.cheekbone_width": 2.15,
    "face.jaw_width": 1.75,
    "face.chin_width": 0.95,
    "face.chin_length": 0.62,
    "eyes.size": 0.47,
    "eyes.spacing": 0.53,
    "eyes.tilt_deg": 4.0,
    "brows.thickness": 0.12,
    "brows.arch": 0.1,
    "nose.width": 0.6,
    "nose.length": 0.8,
    "mouth.width": 0.85,
    "mouth.lip_fullness": 0.3,
}
#: Caricature gain.
GAIN: Final = 1.6
#: Drawing scale: canvas units per inter-ocular distance.
K: Final = 100.0
#: Eye line height and the head's centre line.
EYE_Y: Final = 236.0
CX: Final = VIEW / 2

#: Eye aspect (height over width) by eye shape.
EYE_ASPECT: Final = {
    "almond": 0.5,
    "round": 0.64,
    "narrow": 0.4,
    "upturned": 0.5,
    "downturned": 0.5,
}


@dataclass(frozen=True)
class _Look:
    background: str
    disc: str
    shirt: str
    ink: bool
    blush: float


_LOOKS: Final = {
    "flat": _Look(background="#e9eef3", disc="#cfdde9", shirt="#4f7cac", ink=False, blush=0.2),
    "toon": _Look(background="#fff1d6", disc="#ffd49a", shirt="#e4572e", ink=True, blush=0.28),
}


def _drawn(spec: AvatarSpec, key: str, lo: float, hi: float) -> float:
    group, name = key.split(".")
    value = float(getattr(getattr(spec, group), name))
    mean, base = MEANS[key], BASE[key]
    if key == "eyes.tilt_deg":
        drawn = base + GAIN * (value - mean)
    else:
        drawn = base * (1 + GAIN * (value - mean) / mean)
    return min(hi, max(lo, drawn))


def _mirror(points: list[Point]) -> list[Point]:
    return [(2 * CX - x, y) for x, y in reversed(points)]


@dataclass(frozen=True)
class _Layout:
    """Where the drawing's parts go (canvas units)."""

    top: float
    chin: float
    nose: float
    mouth: float
    half_width: float
    half_forehead: float
    half_cheek: float
    half_jaw: float
    half_chin: float


def _layout(spec: AvatarSpec) -> _Layout:
    height = _drawn(spec, "face.height", 2.3, 3.6)
    top = EYE_Y - 0.42 * height * K * 0.95
    chin = EYE_Y + 0.58 * height * K * 0.78
    nose = EYE_Y + _drawn(spec, "nose.length", 0.55, 1.1) * K * 0.62
    chin_length = _drawn(spec, "face.chin_length", 0.4, 0.95)
    mouth = max(nose + 18, chin - chin_length * K * 0.62 - 10)
    half_width = _drawn(spec, "face.width", 1.8, 2.7) * K / 2
    half_cheek = min(half_width, _drawn(spec, "face.cheekbone_width", 1.7, 2.6) * K / 2)
    half_forehead = min(half_width * 0.98, _drawn(spec, "face.forehead_width", 1.5, 2.5) * K / 2)
    half_jaw = min(half_cheek * 0.95, _drawn(spec, "face.jaw_width", 1.2, 2.4) * K / 2)
    half_chin = min(half_jaw * 0.78, _drawn(spec, "face.chin_width", 0.6, 1.5) * K / 2)
    return _Layout(
        top, chin, nose, mouth, half_width, half_forehead, half_cheek, half_jaw, half_chin
    )


def face_outline(spec: AvatarSpec) -> Path:
    """The face's outline (a closed spline through forehead, cheekbones, jaw and chin)."""
    g = _layout(spec)
    upper = EYE_Y - g.top
    right = [
        (CX + g.half_forehead * 0.62, g.top + upper * 0.06),
        (CX + g.half_forehead, EYE_Y - upper * 0.5),
        (CX + g.half_width, EYE_Y + 0.05 * K),
        (CX + g.half_cheek, EYE_Y + 0.4 * K),
        (CX + g.half_jaw, g.mouth + 0.02 * K),
        (CX + g.half_chin, g.chin - 0.22 * (g.chin - g.mouth)),
        (CX + g.half_chin * 0.45, g.chin - 2),
    ]
    return smooth_path([(CX, g.top), *right, (CX, g.chin), *_mirror(right)], tension=1.0)


def _hair_cap(spec: AvatarSpec, g: _Layout) -> Path | None:
    """The hair in front of the head (cap and fringe, side locks for medium and long)."""
    style = spec.hair.style
    if style in ("bald", "covered"):
        return None
    upper = EYE_Y - g.top
    w, f = g.half_width, g.half_forehead
    lock = {"short": EYE_Y + 0.06 * K, "medium": g.mouth + 0.1 * K, "long": g.chin + 0.9 * K}
    bottom = lock[style]
    outer_right = [
        (CX + f * 0.55, g.top - 0.3 * K),
        (CX + w + 0.1 * K, g.top + upper * 0.35),
        (CX + w + 0.14 * K, EYE_Y),
        (CX + w + (0.2 if style == "long" else 0.12) * K, bottom),
    ]
    inner_right = [
        (CX + w - (0.16 if style != "short" else 0.02) * K, bottom - 0.06 * K),
        (CX + w - 0.06 * K, EYE_Y - 0.3 * K),
        (CX + f * 0.62, g.top + upper * 0.3),
    ]
    fringe = [
        (CX + f * 0.12, g.top + upper * 0.2),
        (CX - f * 0.38, g.top + upper * 0.36),
        (CX - f * 0.82, g.top + upper * 0.42),
    ]
    inner_left = [
        (CX - w + 0.06 * K, EYE_Y - 0.3 * K),
        (CX - w + (0.16 if style != "short" else 0.02) * K, bottom - 0.06 * K),
    ]
    outer_left = [
        (CX - w - (0.2 if style == "long" else 0.12) * K, bottom),
        (CX - w - 0.14 * K, EYE_Y),
        (CX - w - 0.1 * K, g.top + upper * 0.35),
        (CX - f * 0.55, g.top - 0.3 * K),
    ]
    points = [
        (CX, g.top - 0.34 * K),
        *outer_right,
        *inner_right,
        *fringe,
        *inner_left,
        *outer_left,
    ]
    return smooth_path(points, tension=0.9)


def _hair_back(spec: AvatarSpec, g: _Layout) -> Path | None:
    """Hair behind the head and neck (medium and long)."""
    style = spec.hair.style
    if style not in ("medium", "long"):
        return None
    w = g.half_width
    bottom = g.mouth + 0.35 * K if style == "medium" else g.chin + 1.05 * K
    spread = 0.16 if style == "medium" else 0.3
    right = [
        (CX + w * 0.8, g.top - 0.2 * K),
        (CX + w + 0.2 * K, EYE_Y - 0.2 * K),
        (CX + w + spread * K, bottom - 0.3 * K),
        (CX + w + spread * K * 0.6, bottom),
        (CX + w * 0.4, bottom + 0.04 * K),
    ]
    return smooth_path([(CX, g.top - 0.32 * K), *right, *_mirror(right)], tension=0.9)


def _hat(g: _Layout, look: _Look) -> list[Shape]:
    w = g.half_width
    upper = EYE_Y - g.top
    band_y = g.top + upper * 0.32
    dome = smooth_path(
        [
            (CX, g.top - 0.55 * K),
            (CX + w * 0.85, g.top - 0.1 * K),
            (CX + w + 0.12 * K, band_y),
            (CX - w - 0.12 * K, band_y),
            (CX - w * 0.85, g.top - 0.1 * K),
        ]
    )
    band = smooth_path(
        [
            (CX + w + 0.16 * K, band_y - 0.14 * K),
            (CX + w + 0.16 * K, band_y + 0.14 * K),
            (CX, band_y + 0.2 * K),
            (CX - w - 0.16 * K, band_y + 0.14 * K),
            (CX - w - 0.16 * K, band_y - 0.14 * K),
            (CX, band_y - 0.08 * K),
        ],
        tension=0.6,
    )
    colour = palette.mix(look.shirt, "#ffffff", 0.15)
    ink = palette.shade(colour, 0.45) if look.ink else None
    return [
        Shape(dome, fill=colour, stroke=ink, width=3.5),
        Shape(band, fill=palette.shade(colour, 0.82), stroke=ink, width=3.5),
    ]


def _eye(spec: AvatarSpec, side: int, look: _Look) -> list[Shape]:
    """One eye (side -1: image left, +1: image right): white, iris, pupil, highlights, lashes."""
    size = _drawn(spec, "eyes.size", 0.36, 0.62) * K * 1.3
    spacing = _drawn(spec, "eyes.spacing", 0.4, 0.7) * K
    tilt = math.radians(max(-12.0, min(14.0, _drawn(spec, "eyes.tilt_deg", -12, 14))))
    aspect = EYE_ASPECT.get(spec.eyes.shape, 0.5)
    height = size * aspect
    inner = (CX + side * spacing / 2, EYE_Y)
    outer = (CX + side * (spacing / 2 + size), EYE_Y - math.tan(tilt) * size)
    dx = outer[0] - inner[0]
    up = (
        (inner[0] + dx * 0.12, inner[1] - height * 0.9),
        (outer[0] - dx * 0.3, outer[1] - height * 0.85),
        outer,
    )
    down = (
        (outer[0] - dx * 0.22, outer[1] + height * 0.6),
        (inner[0] + dx * 0.28, inner[1] + height * 0.55),
        inner,
    )
    white = Path(inner, (up, down))
    centre = ((inner[0] + outer[0]) / 2, (inner[1] + outer[1]) / 2 - height * 0.08)
    r = height * 0.5
    iris = palette.iris(spec)
    ink = "#2a1c17"
    shapes = [
        Shape(white, fill="#fbfbf8"),
        Shape(
            ellipse(centre[0], centre[1], r, r),
            fill=iris,
            stroke=palette.shade(iris, 0.55),
            width=r * 0.16,
            clip=white,
        ),
        Shape(ellipse(centre[0], centre[1], r * 0.48, r * 0.48), fill="#17131a", clip=white),
        Shape(
            ellipse(centre[0] - r * 0.32, centre[1] - r * 0.38, r * 0.26, r * 0.26),
            fill="#ffffff",
            clip=white,
        ),
        Shape(
            ellipse(centre[0] + r * 0.3, centre[1] + r * 0.3, r * 0.11, r * 0.11),
            fill="#ffffff",
            opacity=0.8,
            clip=white,
        ),
        Shape(Path(inner, (up,), closed=False), stroke=ink, width=4.2),
        Shape(
            Path(
                outer,
                (
                    (
                        (outer[0] + side * 2, outer[1] - 1),
                        (outer[0] + side * 5, outer[1] - 3),
                        (outer[0] + side * 7, outer[1] - 6),
                    ),
                ),
                closed=False,
            ),
            stroke=ink,
            width=3.2,
        ),
    ]
    if look.ink:
        shapes.append(Shape(Path(outer, (down,), closed=False), stroke=ink, width=1.6))
    if spec.glasses.present:
        shapes.extend(_lens(centre, size, height, side))
    return shapes


def _lens(centre: Point, size: float, height: float, side: int) -> list[Shape]:
    gw, gh = size * 0.78, max(height * 1.15, size * 0.5)
    x, y = centre[0], centre[1] + height * 0.05
    frame = smooth_path(
        [
            (x - gw, y - gh * 0.7),
            (x, y - gh * 0.8),
            (x + gw, y - gh * 0.7),
            (x + gw * 1.02, y + gh * 0.3),
            (x + gw * 0.7, y + gh * 0.85),
            (x, y + gh * 0.9),
            (x - gw * 0.7, y + gh * 0.85),
            (x - gw * 1.02, y + gh * 0.3),
        ],
        tension=0.8,
    )
    temple_from = (x + side * gw, y - gh * 0.55)
    temple = Path(
        temple_from,
        (
            (
                (temple_from[0] + side * 20, temple_from[1]),
                (temple_from[0] + side * 40, y - 6),
                (temple_from[0] + side * 52, y - 4),
            ),
        ),
        closed=False,
    )
    return [
        Shape(frame, fill="#dff3ff", opacity=0.22),
        Shape(frame, stroke="#262529", width=5.0),
        Shape(temple, stroke="#262529", width=4.0),
    ]


def _bridge(spec: AvatarSpec) -> list[Shape]:
    if not spec.glasses.present:
        return []
    spacing = _drawn(spec, "eyes.spacing", 0.4, 0.7) * K
    size = _drawn(spec, "eyes.size", 0.36, 0.62) * K * 1.3
    half = spacing / 2 + size / 2 - size * 0.78
    y = EYE_Y - 0.05 * K
    path = Path(
        (CX - half, y),
        (((CX - half * 0.4, y - 9), (CX + half * 0.4, y - 9), (CX + half, y)),),
        closed=False,
    )
    return [Shape(path, stroke="#262529", width=5.0)]


def _brow(spec: AvatarSpec, side: int, colour: str) -> Shape:
    spacing = _drawn(spec, "eyes.spacing", 0.4, 0.7) * K
    size = _drawn(spec, "eyes.size", 0.36, 0.62) * K * 1.3
    thick = max(5.0, min(17.0, _drawn(spec, "brows.thickness", 0.04, 0.22) * K * 0.9))
    arch = _drawn(spec, "brows.arch", -0.05, 0.3)
    inner_x = CX + side * (spacing / 2 - 2)
    outer_x = CX + side * (spacing / 2 + size + 8)
    length = abs(outer_x - inner_x)
    base = EYE_Y - 0.5 * K - size * 0.1
    peak_x = inner_x + (outer_x - inner_x) * 0.62
    lift = arch * length + 3
    points = [
        (inner_x, base - thick * 0.5),
        (peak_x, base - lift - thick * 0.5),
        (outer_x, base + 6 - thick * 0.22),
        (outer_x - side * 3, base + 6 + thick * 0.18),
        (peak_x, base - lift + thick * 0.5),
        (inner_x, base + thick * 0.5),
    ]
    return Shape(smooth_path(points, tension=0.55), fill=colour)


def _nose(spec: AvatarSpec, g: _Layout, skin: str, look: _Look) -> list[Shape]:
    width = _drawn(spec, "nose.width", 0.4, 0.85) * K * 0.5
    y = g.nose
    shadow = palette.shade(skin, 0.72)
    base = Path(
        (CX - width / 2, y - 6),
        (((CX - width / 4, y + 3), (CX + width / 4, y + 3), (CX + width / 2, y - 6)),),
        closed=False,
    )
    shapes = [
        Shape(ellipse(CX, y - 6, width * 0.42, 9), fill=palette.shade(skin, 0.9), opacity=0.5),
        Shape(base, stroke=shadow, width=3.2),
    ]
    if look.ink:
        side = Path(
            (CX + 0.1 * K, EYE_Y + 0.15 * K),
            (((CX + 0.12 * K, y - 20), (CX + width / 2 + 2, y - 16), (CX + width / 2, y - 6)),),
            closed=False,
        )
        shapes.append(Shape(side, stroke=shadow, width=2.4))
    return shapes


def _mouth(spec: AvatarSpec, g: _Layout, skin: str, look: _Look) -> list[Shape]:
    width = _drawn(spec, "mouth.width", 0.6, 1.1) * K * 0.72
    full = _drawn(spec, "mouth.lip_fullness", 0.12, 0.5) * K * 0.5
    y = g.mouth
    upper_h, lower_h = full * 0.42, full * 0.58
    left, right = (CX - width / 2, y - 3), (CX + width / 2, y - 3)
    line = ((CX - width * 0.2, y + 3), (CX + width * 0.2, y + 3), right)
    lip = palette.lips(spec)
    upper = Path(
        left,
        (
            (
                (CX - width * 0.35, y - upper_h * 0.7),
                (CX - width * 0.2, y - upper_h * 1.15),
                (CX - width * 0.1, y - upper_h),
            ),
            (
                (CX - width * 0.04, y - upper_h * 0.9),
                (CX, y - upper_h * 0.7),
                (CX, y - upper_h * 0.72),
            ),
            (
                (CX, y - upper_h * 0.7),
                (CX + width * 0.04, y - upper_h * 0.9),
                (CX + width * 0.1, y - upper_h),
            ),
            ((CX + width * 0.2, y - upper_h * 1.15), (CX + width * 0.35, y - upper_h * 0.7), right),
            ((CX + width * 0.2, y + 3), (CX - width * 0.2, y + 3), left),
        ),
    )
    lower = Path(
        left,
        (
            line,
            ((CX + width * 0.3, y + lower_h * 1.2), (CX - width * 0.3, y + lower_h * 1.2), left),
        ),
    )
    return [
        Shape(lower, fill=lip),
        Shape(upper, fill=palette.shade(lip, 0.88)),
        Shape(
            ellipse(CX, y + lower_h * 0.55, width * 0.16, lower_h * 0.22),
            fill="#ffffff",
            opacity=0.22,
        ),
        Shape(Path(left, (line,), closed=False), stroke=palette.shade(lip, 0.55), width=2.6),
    ]


def scene(spec: AvatarSpec, style: str) -> tuple[list[Shape], str]:
    """The drawing's shapes, back to front, and its background colour."""
    if style not in _LOOKS:
        raise BadParams(f"style must be one of {', '.join(STYLES)}")
    look = _LOOKS[style]
    g = _layout(spec)
    skin = palette.skin(spec)
    hair = palette.hair(spec)
    shadow = palette.shade(skin, 0.84)
    ink_skin = palette.shade(skin, 0.42) if look.ink else None
    ink_hair = palette.shade(hair, 0.45) if look.ink else None
    face = face_outline(spec)
    shapes: list[Shape] = [Shape(ellipse(CX, 262, 226, 226), fill=look.disc)]
    back = _hair_back(spec, g)
    if back is not None:
        shapes.append(Shape(back, fill=palette.shade(hair, 0.82), stroke=ink_hair, width=3.5))
    # shoulders and neck
    shoulders = smooth_path(
        [
            (CX - 190, 560),
            (CX - 178, 470),
            (CX - 110, 428),
            (CX, 420),
            (CX + 110, 428),
            (CX + 178, 470),
            (CX + 190, 560),
        ]
    )
    neck_half = g.half_jaw * 0.5
    neck = smooth_path(
        [
            (CX - neck_half, g.mouth),
            (CX + neck_half, g.mouth),
            (CX + neck_half * 1.05, 436),
            (CX, 448),
            (CX - neck_half * 1.05, 436),
        ],
        tension=0.4,
    )
    shapes += [
        Shape(neck, fill=skin, stroke=ink_skin, width=3.0),
        Shape(ellipse(CX, g.chin - 4, g.half_jaw * 0.8, 34), fill=shadow, opacity=0.9, clip=neck),
        Shape(
            shoulders,
            fill=look.shirt,
            stroke=palette.shade(look.shirt, 0.5) if look.ink else None,
            width=3.5,
        ),
        Shape(
            smooth_path(
                [(CX - neck_half * 1.3, 424), (CX, 462), (CX + neck_half * 1.3, 424)], closed=False
            ),
            stroke=palette.shade(look.shirt, 0.8),
            width=6,
        ),
    ]
    # ears, face
    for side in (-1, 1):
        ear_x = CX + side * (g.half_width - 4)
        shapes.append(
            Shape(
                ellipse(ear_x, EYE_Y + 0.16 * K, 0.17 * K, 0.29 * K, side * 8),
                fill=skin,
                stroke=ink_skin,
                width=3.0,
            )
        )
        shapes.append(
            Shape(ellipse(ear_x + side * 3, EYE_Y + 0.16 * K, 0.08 * K, 0.17 * K), fill=shadow)
        )
    shapes.append(Shape(face, fill=skin, stroke=ink_skin, width=3.5))
    if look.ink:  # cel shadow on the image-right side
        shapes.append(
            Shape(
                ellipse(
                    CX + g.half_width * 1.3,
                    EYE_Y + 0.5 * K,
                    g.half_width * 0.75,
                    (g.chin - g.top) * 0.75,
                ),
                fill=shadow,
                clip=face,
            )
        )
    cap = _hair_cap(spec, g)
    if cap is not None:
        shifted = Path(
            (cap.start[0], cap.start[1] + 9),
            tuple(
                ((a[0], a[1] + 9), (b[0], b[1] + 9), (c[0], c[1] + 9)) for a, b, c in cap.segments
            ),
        )
        shapes.append(Shape(shifted, fill=shadow, opacity=0.7, clip=face))
    for side in (-1, 1):
        shapes.append(
            Shape(
                ellipse(CX + side * g.half_cheek * 0.6, EYE_Y + 0.5 * K, 0.22 * K, 0.12 * K),
                fill="#ff7070",
                opacity=look.blush,
            )
        )
    shapes += _nose(spec, g, skin, look)
    shapes += _mouth(spec, g, skin, look)
    for side in (-1, 1):
        shapes += _eye(spec, side, look)
    shapes += _bridge(spec)
    if cap is not None:
        shapes.append(Shape(cap, fill=hair, stroke=ink_hair, width=3.5))
        if look.ink:
            shine = Path(
                (CX - g.half_forehead * 0.5, g.top - 0.12 * K),
                (
                    (
                        (CX - g.half_forehead * 0.1, g.top - 0.24 * K),
                        (CX + g.half_forehead * 0.3, g.top - 0.22 * K),
                        (CX + g.half_forehead * 0.6, g.top - 0.06 * K),
                    ),
                ),
                closed=False,
            )
            shapes.append(
                Shape(shine, stroke=palette.mix(hair, "#ffffff", 0.35), width=6, opacity=0.8)
            )
    elif spec.hair.style == "covered":
        shapes += _hat(g, look)
    else:  # bald: a highlight on the scalp
        shapes.append(
            Shape(
                ellipse(CX - g.half_forehead * 0.3, g.top + 0.22 * K, 0.3 * K, 0.12 * K, -15),
                fill="#ffffff",
                opacity=0.22,
            )
        )
    brow = palette.brows(spec)
    shapes += [_brow(spec, side, brow) for side in (-1, 1)]
    return shapes, look.background


def render_svg(spec: AvatarSpec, style: str | None = None, size: int | None = None) -> bytes:
    """The avatar as SVG (``style`` and ``size`` default to the spec's ``render``)."""
    shapes, background = scene(spec, style or spec.render.style)
    return to_svg(shapes, size or spec.render.size, background)


def render_png(spec: AvatarSpec, style: str | None = None, size: int | None = None) -> bytes:
    """The avatar as PNG (same drawing as :func:`render_svg`)."""
    shapes, background = scene(spec, style or spec.render.style)
    return to_png(shapes, size or spec.render.size, background)


__all__ = ["BASE", "GAIN", "MEANS", "face_outline", "render_png", "render_svg", "scene"]
