"""The JSON Schema (draft 2020-12) of the avatar spec, version 2 (``avatar.json``).

Built here from the vocabularies of :mod:`pipelines.pta.spec` and the colour families of
:mod:`pipelines.pta.colour`, and committed as ``pipelines/pta/avatar.schema.json`` for
non-Python consumers: ``python -m pipelines.pta.schema`` rewrites the file, and a test fails when
the file and :data:`AVATAR_SCHEMA` differ.

Versioning: ``schema`` names the document type and ``version`` its major version. Adding an
optional field keeps the version; removing or renaming a field, or changing a meaning or unit,
increments it. No field beyond those listed is allowed (a producer change that adds one also
changes this file).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from pipelines.errors import BadParams
from pipelines.pta.spec import (
    CHOSEN_BY,
    EYE_COLOURS,
    EYE_SHAPES,
    FACE_SHAPES,
    HAIR_COLOURS,
    HAIR_STYLES,
    SCHEMA_ID,
    SCHEMA_VERSION,
    STYLES,
)

#: The committed copy of the schema.
SCHEMA_FILE: Final = Path(__file__).with_name("avatar.schema.json")

_HEX: Final = {"type": "string", "pattern": "^#[0-9a-f]{6}$"}
_LAB: Final = {
    "description": "CIE Lab (D65): L 0-100, a and b about -128..127",
    "type": "array",
    "items": {"type": "number", "minimum": -200, "maximum": 200},
    "minItems": 3,
    "maxItems": 3,
}


def _length(description: str, hi: float = 6.0) -> dict[str, Any]:
    return {
        "description": f"{description} (inter-ocular distances)",
        "type": "number",
        "minimum": 0,
        "maximum": hi,
    }


def _strict(properties: dict[str, Any], description: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }
    if description:
        out["description"] = description
    return out


def _colour(names: tuple[str, ...], description: str) -> dict[str, Any]:
    return _strict({"hex": _HEX, "lab": _LAB, "name": {"enum": list(names)}}, description)


def build_schema() -> dict[str, Any]:
    """The schema as a dict (what the committed file holds)."""
    face = _strict(
        {
            "shape": {"enum": list(FACE_SHAPES)},
            "width": _length("widest span of the face outline"),
            "height": _length("forehead top to chin"),
            "forehead_width": _length("outline width 60 % of the way from the eyes to the top"),
            "cheekbone_width": _length("outline width a quarter of the way from eyes to nose tip"),
            "jaw_width": _length("outline width at the mouth corners' height"),
            "chin_width": _length("outline width halfway from the lower lip to the chin"),
            "chin_length": _length("lower lip to chin"),
        },
        "the face outline, rotation undone",
    )
    eyes = _strict(
        {
            "shape": {"enum": list(EYE_SHAPES)},
            "size": _length("corner-to-corner width of one eye", 2.0),
            "opening": _length("lid-to-lid opening of one eye", 1.0),
            "spacing": _length("inner corner to inner corner", 2.0),
            "tilt_deg": {
                "description": "canthal tilt: the outer corner above the inner one is positive",
                "type": "number",
                "minimum": -45,
                "maximum": 45,
            },
            "iris": _colour((*EYE_COLOURS, "unknown"), "median iris colour at the iris landmarks"),
        },
        "both eyes averaged (so a mirrored photo gives the same values)",
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://facemedia.invalid/schemas/{SCHEMA_ID}/v{SCHEMA_VERSION}.json",
        "title": "facemedia avatar spec",
        **_strict(
            {
                "schema": {"const": SCHEMA_ID},
                "version": {"const": SCHEMA_VERSION},
                "face": face,
                "eyes": eyes,
                "brows": _strict(
                    {
                        "thickness": _length("mean upper-to-lower brow distance", 1.0),
                        "arch": {
                            "description": "height of the brow's peak over the line through its "
                            "ends, over the brow's length",
                            "type": "number",
                            "minimum": -1,
                            "maximum": 1,
                        },
                    }
                ),
                "nose": _strict(
                    {
                        "width": _length("alar width", 3.0),
                        "length": _length("nasion to the nose's base", 3.0),
                    }
                ),
                "mouth": _strict(
                    {
                        "width": _length("corner to corner", 3.0),
                        "lip_fullness": _length("upper plus lower lip height", 1.5),
                    }
                ),
                "skin": _strict(
                    {
                        "monk": {"type": "integer", "minimum": 1, "maximum": 10},
                        "hex": _HEX,
                        "lab": _LAB,
                        "monk_hex": _HEX,
                    },
                    "median of the cheek skin after white balance; nearest Monk Skin Tone step "
                    "(1 lightest, 10 darkest)",
                ),
                "hair": _strict(
                    {
                        "style": {"enum": list(HAIR_STYLES)},
                        "colour": _colour((*HAIR_COLOURS, "unknown"), "median of the hair pixels"),
                    },
                    "from the person mask around the head, above and beside the face",
                ),
                "glasses": _strict(
                    {
                        "present": {"type": "boolean"},
                        "score": {"type": "number", "minimum": 0, "maximum": 1},
                    }
                ),
                "render": _strict(
                    {
                        "style": {"enum": list(STYLES)},
                        "size": {"type": "integer", "minimum": 64, "maximum": 2048},
                    },
                    "the default drawing: style and PNG side in pixels",
                ),
                "source": _strict(
                    {
                        "faces_found": {"type": "integer", "minimum": 1},
                        "face": {"type": "integer", "minimum": 0},
                        "chosen_by": {"enum": list(CHOSEN_BY)},
                        "pose_deg": {
                            "description": "yaw, pitch, roll of the chosen face (degrees)",
                            "type": "array",
                            "items": {"type": "number", "minimum": -180, "maximum": 180},
                            "minItems": 3,
                            "maxItems": 3,
                        },
                    },
                    "the chosen face: its index in the detector's list (the detect job's order)",
                ),
            }
        ),
    }


#: The avatar spec's JSON Schema.
AVATAR_SCHEMA: Final[dict[str, Any]] = build_schema()


def schema_text() -> str:
    """The schema file's exact text."""
    return json.dumps(AVATAR_SCHEMA, indent=2) + "\n"


def validate(doc: Mapping[str, Any]) -> None:
    """Raise :class:`BadParams` naming the first place where ``doc`` breaks the schema."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(AVATAR_SCHEMA)
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(document)"
        raise BadParams(
            f"avatar.json does not match schema v{SCHEMA_VERSION} at {where}: {error.message[:200]}"
        )


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    SCHEMA_FILE.write_text(schema_text())
    sys.stdout.write(f"wrote {SCHEMA_FILE}\n")

__all__ = ["AVATAR_SCHEMA", "SCHEMA_FILE", "build_schema", "schema_text", "validate"]
