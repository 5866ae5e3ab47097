"""The JSON Schema (draft 2020-12) of the avatar spec, version 1 (``avatar.json``).

Versioning: ``schema`` names the document type and ``version`` its major version. Adding an
optional field keeps the version; removing or renaming a field, or changing a meaning or unit,
increments it. Consumers must ignore fields they do not know (the schema allows none beyond
those listed, so a producer change that adds one also changes this file).
"""

from __future__ import annotations

from typing import Any, Final

from pipelines.pta.avatar import SCHEMA_ID, SCHEMA_VERSION, SHAPE_CLASSES
from pipelines.pta.colour import EYE_COLOURS, HAIR_COLOURS

_NUMBER: Final = {"type": "number"}
_RATIO: Final = {"type": "number", "minimum": 0}
_HEX: Final = {"type": "string", "pattern": "^#[0-9a-f]{6}$"}
_POINT: Final = {"type": "array", "items": _NUMBER, "minItems": 2, "maxItems": 2}
_LAB: Final = {
    "description": "CIE Lab (D65): L 0-100, a and b about -128..127",
    "type": "array",
    "items": _NUMBER,
    "minItems": 3,
    "maxItems": 3,
}


def _strict(properties: dict[str, Any], description: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": sorted(properties),
        "additionalProperties": False,
    }
    if description:
        out["description"] = description
    return out


def _named_colour(names: tuple[str, ...], description: str) -> dict[str, Any]:
    return _strict(
        {
            "lab": {"oneOf": [_LAB, {"type": "null"}]},
            "hex": {"oneOf": [_HEX, {"type": "null"}]},
            "name": {"enum": [*names, "unknown"]},
            "coverage": {
                "description": "share of the sampled region's pixels the colour summarises",
                "type": "number",
                "minimum": 0,
                "maximum": 1,
            },
        },
        description,
    )


_FACE: Final = _strict(
    {
        "index": {"type": "integer", "minimum": 0},
        "primary": {"type": "boolean", "description": "the largest face; avatar.png is its"},
        "box": {
            "description": "x1, y1, x2, y2 in source pixels",
            "type": "array",
            "items": _NUMBER,
            "minItems": 4,
            "maxItems": 4,
        },
        "landmarks": {
            "description": "left eye, right eye, nose tip, mouth left, mouth right (source px)",
            "type": "array",
            "items": _POINT,
            "minItems": 5,
            "maxItems": 5,
        },
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "pose": _strict(
            {
                "roll_deg": {
                    "description": "eye line angle; positive when the image-right eye is lower",
                    "type": "number",
                    "minimum": -180,
                    "maximum": 180,
                },
                "yaw_deg": {
                    "description": "estimate from the nose offset; positive = turned to the "
                    "image's right",
                    "type": "number",
                    "minimum": -90,
                    "maximum": 90,
                },
            }
        ),
        "shape": _strict(
            {
                "class": {"enum": list(SHAPE_CLASSES)},
                "proportions": _strict(
                    {
                        "aspect_ratio": _RATIO,
                        "forehead_ratio": _RATIO,
                        "jaw_ratio": _RATIO,
                        "eye_spacing": _RATIO,
                        "eye_mouth_ratio": _RATIO,
                        "mouth_width_ratio": _RATIO,
                        "nose_ratio": _NUMBER,
                    },
                    "box height/width (roll undone); forehead and jaw widths over the "
                    "cheekbone width; eye distance over cheekbone width; eye-mouth distance "
                    "and mouth width over eye distance; nose depth between eyes (0) and "
                    "mouth (1)",
                ),
                "measured": _strict(
                    {
                        "forehead": {"type": "boolean"},
                        "cheekbones": {"type": "boolean"},
                        "jaw": {"type": "boolean"},
                    },
                    "which widths were measured; an unmeasured ratio holds its default",
                ),
            }
        ),
        "skin": _strict(
            {
                "lab": _LAB,
                "hex": _HEX,
                "palette": {"const": "monk"},
                "palette_index": {"type": "integer", "minimum": 1, "maximum": 10},
                "palette_hex": _HEX,
            },
            "median of two cheek discs; nearest Monk Skin Tone (1 lightest, 10 darkest)",
        ),
        "hair": _named_colour(tuple(HAIR_COLOURS), "non-skin pixels of a band above the forehead"),
        "eyes": _named_colour(EYE_COLOURS, "darker non-skin, non-sclera pixels at the eyes"),
        "render": _strict(
            {
                "style": {"const": "cartoon"},
                "size": {"type": "integer", "minimum": 64, "maximum": 2048},
                "crop": _strict(
                    {
                        "centre": _POINT,
                        "angle_deg": _NUMBER,
                        "side_px": {"type": "number", "exclusiveMinimum": 0},
                    },
                    "square crop of side side_px source pixels centred on centre, rotated "
                    "by angle_deg (eyes level), scaled to size",
                ),
                "smoothing": {"type": "object"},
                "quantisation": _strict(
                    {
                        "method": {"const": "kmeans_lab"},
                        "colors": {"type": "integer", "minimum": 2, "maximum": 32},
                    }
                ),
                "outline": {"type": "object"},
                "palette": {"type": "array", "items": _HEX, "minItems": 1, "maxItems": 32},
                "landmarks": {
                    "description": "the five landmarks in avatar pixels",
                    "type": "array",
                    "items": _POINT,
                    "minItems": 5,
                    "maxItems": 5,
                },
            }
        ),
    }
)

#: The avatar spec's JSON Schema.
AVATAR_SCHEMA: Final[dict[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": f"https://facemedia.invalid/schemas/{SCHEMA_ID}/v{SCHEMA_VERSION}.json",
    "title": "facemedia avatar spec",
    **_strict(
        {
            "schema": {"const": SCHEMA_ID},
            "version": {"const": SCHEMA_VERSION},
            "image": _strict(
                {
                    "width": {"type": "integer", "minimum": 1},
                    "height": {"type": "integer", "minimum": 1},
                }
            ),
            "primary": {"type": "integer", "minimum": 0},
            "faces": {"type": "array", "items": _FACE, "minItems": 1},
        }
    ),
}

__all__ = ["AVATAR_SCHEMA"]
