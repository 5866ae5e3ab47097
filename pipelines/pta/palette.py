"""The avatar's colours: measured names mapped to stylised swatches, and sRGB hex arithmetic.

Both renderers (2D: :mod:`pipelines.pta.render`, 3D: :mod:`pipelines.pta.gltf`) colour the
avatar from the spec through these functions, so the two agree. Skin uses the Monk Skin Tone
swatch of the measured step, hair and irises the swatch of their measured name: a stylised
character in product colours, stable under small measurement changes, never a photo's pixel.
"""

from __future__ import annotations

from typing import Final

from pipelines.pta.spec import AvatarSpec

#: Iris swatches by measured name.
IRIS: Final = {
    "dark_brown": "#3b2214",
    "brown": "#6b4226",
    "hazel": "#8a7440",
    "green": "#4f7d46",
    "blue": "#3f7fc0",
    "grey": "#7b8a98",
    "unknown": "#4b3020",
}

#: Hair swatches by measured name (a little livelier than the measurement's reference colours).
HAIR: Final = {
    "black": "#231f20",
    "dark_brown": "#3e2a1f",
    "brown": "#6b4a32",
    "light_brown": "#a0734c",
    "blonde": "#d9b26a",
    "platinum": "#e8dcbc",
    "auburn": "#7a3322",
    "red": "#b0502c",
    "grey": "#9a9794",
    "white": "#e4e2de",
    "unknown": "#3e2a1f",
}


def rgb(colour: str) -> tuple[int, int, int]:
    """``#rrggbb`` as integers."""
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def hex_of(r: float, g: float, b: float) -> str:
    """Integers (clamped, rounded) as ``#rrggbb``."""
    return "#" + "".join(f"{max(0, min(255, round(c))):02x}" for c in (r, g, b))


def mix(a: str, b: str, t: float) -> str:
    """``a`` moved ``t`` (0-1) of the way to ``b`` in sRGB."""
    ra, rb = rgb(a), rgb(b)
    return hex_of(*(x + (y - x) * t for x, y in zip(ra, rb, strict=True)))


def shade(colour: str, factor: float) -> str:
    """``colour`` scaled by ``factor`` (< 1 darker)."""
    return hex_of(*(c * factor for c in rgb(colour)))


def linear(colour: str) -> tuple[float, float, float]:
    """``#rrggbb`` as linear-light RGB in 0-1 (glTF's ``baseColorFactor``)."""

    def one(c: int) -> float:
        v = c / 255.0
        return v / 12.92 if v <= 0.04045 else float(((v + 0.055) / 1.055) ** 2.4)

    r, g, b = rgb(colour)
    return one(r), one(g), one(b)


def skin(spec: AvatarSpec) -> str:
    """The avatar's skin colour: the Monk swatch of the measured step."""
    return spec.skin.monk_hex


def hair(spec: AvatarSpec) -> str:
    """The avatar's hair colour."""
    return HAIR.get(spec.hair.colour.name, HAIR["unknown"])


def brows(spec: AvatarSpec) -> str:
    """Brow colour: the hair's, darkened (bald or covered heads: a dark brown by skin)."""
    if spec.hair.style in ("bald", "covered") or spec.hair.colour.name == "unknown":
        return shade(mix(skin(spec), "#2a1a12", 0.75), 0.9)
    return shade(hair(spec), 0.8)


def iris(spec: AvatarSpec) -> str:
    """The avatar's iris colour."""
    return IRIS.get(spec.eyes.iris.name, IRIS["unknown"])


def lips(spec: AvatarSpec) -> str:
    """Lip colour: the skin mixed towards a rose, darker on darker skin."""
    return shade(mix(skin(spec), "#c2545e", 0.45), 0.95)


__all__ = [
    "HAIR",
    "IRIS",
    "brows",
    "hair",
    "hex_of",
    "iris",
    "linear",
    "lips",
    "mix",
    "rgb",
    "shade",
    "skin",
]
