"""The avatar spec (``avatar.json``, schema ``facemedia.pta.avatar`` v2) as frozen dataclasses.

The document is what every avatar output is drawn from: :mod:`pipelines.pta.render` (SVG and
PNG) and :mod:`pipelines.pta.gltf` (GLB) read an :class:`AvatarSpec` and nothing else, so
``avatar.json`` alone re-renders byte-identical files. Its JSON Schema is the file
``avatar.schema.json`` beside this module (:mod:`pipelines.pta.schema`), the one place the
ranges and enumerations live: :meth:`AvatarSpec.from_json` validates against it, then builds the
dataclasses.

Lengths are in inter-ocular distances (IOD: the distance between the two eye centres), measured
on the mesh after the head's rotation is undone (see :mod:`pipelines.pta.measure`); angles in
degrees; colours as sRGB hex with their CIE Lab (D65; L 0-100).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

SCHEMA_ID: Final = "facemedia.pta.avatar"
SCHEMA_VERSION: Final = 2

#: Drawing styles of :mod:`pipelines.pta.render` (the first is the default).
STYLES: Final = ("flat", "toon")
#: Face shape classes, decided from the continuous face parameters (:mod:`pipelines.pta.measure`).
FACE_SHAPES: Final = ("oval", "round", "square", "long", "heart")
#: Eye shape classes.
EYE_SHAPES: Final = ("almond", "round", "narrow", "upturned", "downturned")
#: Coarse hair styles, from the segmentation mask around the head.
HAIR_STYLES: Final = ("bald", "short", "medium", "long", "covered")
#: How the avatar's face was chosen among the faces found.
CHOSEN_BY: Final = ("largest", "index")

#: Named hair colours the sampled colour is matched to (nearest in Lab).
HAIR_COLOURS: Final = {
    "black": "#1b1a1a",
    "dark_brown": "#3b2a20",
    "brown": "#6a4e3a",
    "light_brown": "#a47a55",
    "blonde": "#d6b47a",
    "platinum": "#e6dcc2",
    "auburn": "#6d2c1e",
    "red": "#a4462a",
    "grey": "#8e8c8a",
    "white": "#dedcda",
}

#: Eye colour names, decided from the iris sample's lightness, chroma and hue (see
#: :func:`pipelines.pta.colour.eye_colour_name`).
EYE_COLOURS: Final = ("dark_brown", "brown", "hazel", "green", "blue", "grey")

Lab = tuple[float, float, float]


@dataclass(frozen=True)
class Colour:
    """A measured colour: sRGB ``hex``, CIE ``lab``, and the nearest ``name`` of its family."""

    hex: str
    lab: Lab
    name: str


@dataclass(frozen=True)
class FaceParams:
    """Face outline: class and widths at the forehead, cheekbones, jaw and chin (IOD)."""

    shape: str
    width: float
    height: float
    forehead_width: float
    cheekbone_width: float
    jaw_width: float
    chin_width: float
    chin_length: float


@dataclass(frozen=True)
class EyeParams:
    """Eyes: class, width (``size``) and opening (IOD), inner-corner ``spacing`` (IOD),
    canthal ``tilt_deg`` (outer corner higher = positive), and the iris colour."""

    shape: str
    size: float
    opening: float
    spacing: float
    tilt_deg: float
    iris: Colour


@dataclass(frozen=True)
class BrowParams:
    """Brows: ``thickness`` (IOD) and ``arch`` (peak height over brow length)."""

    thickness: float
    arch: float


@dataclass(frozen=True)
class NoseParams:
    """Nose: alar ``width`` and nasion-to-base ``length`` (IOD)."""

    width: float
    length: float


@dataclass(frozen=True)
class MouthParams:
    """Mouth: corner-to-corner ``width`` and ``lip_fullness`` (both lips' heights; IOD)."""

    width: float
    lip_fullness: float


@dataclass(frozen=True)
class SkinParams:
    """Skin tone: Monk Skin Tone scale step ``monk`` (1 lightest - 10 darkest), the measured
    colour after white balance, and the scale's own swatch ``monk_hex``."""

    monk: int
    hex: str
    lab: Lab
    monk_hex: str


@dataclass(frozen=True)
class HairParams:
    """Hair: coarse ``style`` and ``colour`` (``name`` from the hair colour family)."""

    style: str
    colour: Colour


@dataclass(frozen=True)
class GlassesParams:
    """Glasses: ``present``, decided from ``score`` (0-1)."""

    present: bool
    score: float


@dataclass(frozen=True)
class RenderParams:
    """The default drawing: ``style`` and PNG ``size`` (pixels; the SVG is scalable)."""

    style: str = STYLES[0]
    size: int = 512


@dataclass(frozen=True)
class SourceInfo:
    """Where the parameters came from (not used by the renderers): faces found, the chosen
    face's index in the detector's list (the ``detect`` job's order) and why it was chosen,
    and its head pose in degrees (yaw, pitch, roll; see :mod:`pipelines.faces.mesh`)."""

    faces_found: int
    face: int
    chosen_by: str
    pose_deg: tuple[float, float, float]


@dataclass(frozen=True)
class AvatarSpec:
    """The whole avatar: every parameter the renderers draw from, and its source."""

    face: FaceParams
    eyes: EyeParams
    brows: BrowParams
    nose: NoseParams
    mouth: MouthParams
    skin: SkinParams
    hair: HairParams
    glasses: GlassesParams
    render: RenderParams
    source: SourceInfo

    def to_json(self) -> dict[str, Any]:
        """The JSON document (``schema`` and ``version`` first)."""
        body = _jsonable(dataclasses.asdict(self))
        return {"schema": SCHEMA_ID, "version": SCHEMA_VERSION, **body}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> AvatarSpec:
        """Validate ``doc`` against the schema (``BadParams`` naming the first problem), then
        build the spec."""
        from pipelines.pta.schema import validate

        validate(doc)
        body = {k: v for k, v in doc.items() if k not in ("schema", "version")}
        built = _build(cls, body)
        assert isinstance(built, AvatarSpec)
        return built

    def replace_render(self, style: str | None = None, size: int | None = None) -> AvatarSpec:
        """The same avatar with another default style or size."""
        render = RenderParams(
            style=self.render.style if style is None else style,
            size=self.render.size if size is None else size,
        )
        return dataclasses.replace(self, render=render)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _build(kind: Any, value: Any) -> Any:
    """``value`` (already schema-valid JSON) as ``kind``: a dataclass, a tuple or a scalar."""
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        hints = typing.get_type_hints(kind)
        fields = {f.name: _build(hints[f.name], value[f.name]) for f in dataclasses.fields(kind)}
        return kind(**fields)
    if typing.get_origin(kind) is tuple:
        (item, *_rest) = typing.get_args(kind)
        return tuple(_build(item, v) for v in value)
    if kind is float:
        return float(value)
    return value


__all__ = [
    "CHOSEN_BY",
    "EYE_COLOURS",
    "EYE_SHAPES",
    "FACE_SHAPES",
    "HAIR_COLOURS",
    "HAIR_STYLES",
    "SCHEMA_ID",
    "SCHEMA_VERSION",
    "STYLES",
    "AvatarSpec",
    "BrowParams",
    "Colour",
    "EyeParams",
    "FaceParams",
    "GlassesParams",
    "HairParams",
    "MouthParams",
    "NoseParams",
    "RenderParams",
    "SkinParams",
    "SourceInfo",
]
