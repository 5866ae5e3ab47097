"""Photo to avatar: a versioned JSON avatar spec per face and a cartoon render of the primary face.

For each detected face (largest first; the largest is the *primary*), on aligned crops (eyes
level, see :mod:`pipelines.pta.geometry`):

* **pose**: roll from the eye line, yaw estimated from the nose tip's offset along it;
* **shape**: continuous proportions (box aspect corrected for roll, widths of the skin region at
  the forehead, cheekbones and jaw, eye spacing, eye-mouth distance, mouth width, nose position)
  and a class (``oval``, ``round``, ``square``, ``long``, ``heart``) decided from them by the rules
  of :func:`shape_class`;
* **skin**: median Lab of two cheek discs, mapped to the nearest tone of the Monk Skin Tone scale;
* **hair**: median Lab of the non-skin pixels of a band above the forehead, named;
* **eyes**: median Lab of the darker, non-skin, non-sclera pixels around the eye landmarks, named;
* **render**: the crop (centre, angle, scale), the cartoon parameters and the k-means palette,
  and the landmarks in avatar pixels.

The primary face is rendered as a ``size`` x ``size`` cartoon (:mod:`pipelines.pta.render`) and
encoded as PNG (pixels only). The document layout is :data:`pipelines.pta.schema.AVATAR_SCHEMA`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, cast

import cv2
import numpy as np
from numpy.typing import NDArray

from pipelines.errors import BadParams, NoFace
from pipelines.faces.detector import Face
from pipelines.media.image import encode_image
from pipelines.pta import colour
from pipelines.pta.geometry import FaceFrame, apply_affine, warp_crop, yaw_deg
from pipelines.pta.render import RenderParams, cartoon, palette, palette_hex

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]

SCHEMA_ID: Final = "facemedia.pta.avatar"
SCHEMA_VERSION: Final = 1

#: Side of the crop every face's colours and proportions are measured on.
FEATURE_SIZE: Final = 256
#: Cheek disc centres and radius (face units).
CHEEKS: Final = ((-0.55, 0.55), (0.55, 0.55))
CHEEK_RADIUS: Final = 0.17
#: The band above the forehead where hair is sampled (face units: u from, u to, v from, v to).
HAIR_BAND: Final = (-0.6, 0.6, -1.45, -1.05)
#: Radius of the discs around the eye landmarks where the iris is sampled (face units).
EYE_RADIUS: Final = 0.16
#: Rows (face units) where the skin region's width is measured.
FOREHEAD_V: Final = -0.5
CHEEKBONE_V: Final = 0.35
JAW_V: Final = 1.3
#: A skin run reaching this far from the midline (face units) leaked into the background.
MAX_HALF_WIDTH: Final = 1.5
#: A forehead or jaw run narrower than this share of the cheekbone run is covered, not skin.
MIN_RUN_RATIO: Final = 0.5
#: A pixel within this distance (CIE76) of the skin tone belongs to the skin region.
SHAPE_DELTA_E: Final = 20.0


@dataclass(frozen=True)
class AvatarConfig:
    """Avatar settings: render ``size`` (pixels), ``max_faces`` described, the crop (``crop_units``
    face units wide, centred on the face-frame point ``crop_centre``) and the cartoon params."""

    size: int = 512
    max_faces: int = 20
    crop_units: float = 4.6
    crop_centre: tuple[float, float] = (0.0, 0.3)
    render: RenderParams = field(default_factory=RenderParams)

    def __post_init__(self) -> None:
        if not 64 <= self.size <= 2048:
            raise BadParams("avatar size must be from 64 to 2048 pixels")
        if not 1 <= self.max_faces <= 1000:
            raise BadParams("max_faces must be from 1 to 1000")
        if not 2 <= self.render.colors <= 32:
            raise BadParams("colors must be from 2 to 32")


@dataclass(frozen=True)
class AvatarResult:
    """The avatar spec (JSON-ready, see :data:`pipelines.pta.schema.AVATAR_SCHEMA`) and the PNG
    render of the primary face."""

    spec: Mapping[str, Any]
    png: bytes
    faces: int


def make_avatars(
    image: NDArray[np.uint8], faces: Sequence[Face], config: AvatarConfig = AvatarConfig()
) -> AvatarResult:
    """Describe every face (up to ``max_faces``, largest first) and render the largest.

    Raises :class:`NoFace` when ``faces`` is empty.
    """
    if not faces:
        raise NoFace("no face was found in the photo")
    ordered = sorted(faces, key=lambda f: f.width * f.height, reverse=True)[: config.max_faces]
    described = [_describe(image, face, config, i) for i, face in enumerate(ordered)]
    frame = FaceFrame.of(ordered[0])
    matrix = frame.crop_matrix(config.crop_centre, config.crop_units, config.size)
    crop = warp_crop(image, matrix, config.size)
    centres = described[0].pop("_palette")
    for face in described[1:]:
        del face["_palette"]
    drawn = cartoon(crop, config.render, centres)
    spec = {
        "schema": SCHEMA_ID,
        "version": SCHEMA_VERSION,
        "image": {"width": int(image.shape[1]), "height": int(image.shape[0])},
        "primary": 0,
        "faces": described,
    }
    return AvatarResult(spec=spec, png=encode_image(drawn, "png"), faces=len(ordered))


def _describe(
    image: NDArray[np.uint8], face: Face, config: AvatarConfig, index: int
) -> dict[str, Any]:
    frame = FaceFrame.of(face)
    feature_matrix = frame.crop_matrix(config.crop_centre, config.crop_units, FEATURE_SIZE)
    crop = warp_crop(image, feature_matrix, FEATURE_SIZE)
    lab = colour.to_lab(crop)
    px_per_unit = FEATURE_SIZE / config.crop_units

    def at(u: float, v: float) -> tuple[float, float]:
        cu, cv = config.crop_centre
        half = FEATURE_SIZE / 2
        return (half + (u - cu) * px_per_unit, half + (v - cv) * px_per_unit)

    skin = colour.skin_sample(lab, [at(u, v) for u, v in CHEEKS], CHEEK_RADIUS * px_per_unit)
    tone = colour.nearest(skin.lab, colour.MONK_SCALE)

    u0, u1, v0, v1 = HAIR_BAND
    (x0, y0), (x1, y1) = at(u0, v0), at(u1, v1)
    band = np.zeros(lab.shape[:2], dtype=bool)
    band[max(0, round(y0)) : max(0, round(y1)), max(0, round(x0)) : max(0, round(x1))] = True
    hair = colour.non_skin_sample(lab, band, skin.lab)

    eyes_px = apply_affine(feature_matrix, np.array(face.landmarks[:2], dtype=np.float64))
    eye_region = np.zeros(lab.shape[:2], dtype=bool)
    for x, y in eyes_px.tolist():
        eye_region |= colour.disc_mask(lab.shape[:2], (x, y), EYE_RADIUS * px_per_unit)
    eyes = colour.iris_sample(lab, eye_region, skin.lab)

    proportions, measured = _proportions(face, frame, lab, skin.lab, at, px_per_unit)
    render_matrix = frame.crop_matrix(config.crop_centre, config.crop_units, config.size)
    centres = palette(crop, config.render)
    cx, cy = frame.to_image(*config.crop_centre)
    return {
        "index": index,
        "primary": index == 0,
        **face.to_json(),
        "pose": {"roll_deg": round(frame.roll_deg, 2), "yaw_deg": round(yaw_deg(face, frame), 2)},
        "shape": {
            "class": shape_class(proportions),
            "proportions": proportions,
            "measured": measured,
        },
        "skin": {
            "lab": list(skin.lab),
            "hex": skin.hex,
            "palette": "monk",
            "palette_index": tone + 1,
            "palette_hex": colour.MONK_SCALE[tone],
        },
        "hair": _named(hair, colour.HAIR_COLOURS),
        "eyes": _eyes(eyes),
        "render": {
            "style": "cartoon",
            "size": config.size,
            "crop": {
                "centre": [round(cx, 2), round(cy, 2)],
                "angle_deg": round(frame.roll_deg, 2),
                "side_px": round(config.crop_units * frame.unit, 2),
            },
            **config.render.to_json(),
            "palette": palette_hex(centres),
            "landmarks": [
                [round(x, 2), round(y, 2)]
                for x, y in apply_affine(render_matrix, np.array(face.landmarks)).tolist()
            ],
        },
        "_palette": centres,
    }


def _named(found: colour.ColourSample | None, names: Mapping[str, str]) -> dict[str, Any]:
    if found is None:
        return {"lab": None, "hex": None, "name": "unknown", "coverage": 0.0}
    keys = list(names)
    best = colour.nearest(found.lab, [names[k] for k in keys])
    return {
        "lab": list(found.lab),
        "hex": found.hex,
        "name": keys[best],
        "coverage": found.coverage,
    }


def _eyes(found: colour.ColourSample | None) -> dict[str, Any]:
    if found is None:
        return {"lab": None, "hex": None, "name": "unknown", "coverage": 0.0}
    name = colour.eye_colour_name(found.lab)
    return {"lab": list(found.lab), "hex": found.hex, "name": name, "coverage": found.coverage}


def _proportions(
    face: Face,
    frame: FaceFrame,
    lab: F32,
    skin: colour.Lab,
    at: Callable[[float, float], tuple[float, float]],
    px_per_unit: float,
) -> tuple[dict[str, float], dict[str, bool]]:
    """Continuous proportions (see :func:`shape_class`) and which widths were measured.

    Widths are those of the skin-coloured run through the face's midline on the forehead,
    cheekbone and jaw rows; a width that cannot be measured (hair over the forehead, a beard, a
    background of the skin's colour) leaves its ratio at a neutral default (forehead 1.0,
    jaw 0.85).
    """
    points = np.array([frame.to_face(x, y) for x, y in face.landmarks], dtype=np.float64)
    width, height = _upright_box(face, frame.angle)
    iod_units = frame.iod / frame.unit
    eye_mouth = float(np.mean(points[3:5, 1]))
    mouth_width = float(np.hypot(*(points[4] - points[3])))
    region = _skin_region(lab, skin)
    rows = {"forehead": FOREHEAD_V, "cheekbones": CHEEKBONE_V, "jaw": JAW_V}
    widths = {name: _run_width(region, at(0.0, v), px_per_unit) for name, v in rows.items()}
    cheek = widths["cheekbones"]
    for name in ("forehead", "jaw"):
        found = widths[name]
        if cheek is None or (found is not None and found < MIN_RUN_RATIO * cheek):
            widths[name] = None  # covered (hair, beard, shadow), or nothing to compare it to
    forehead, jaw = widths["forehead"], widths["jaw"]
    cheek_units = cheek if cheek is not None else width / frame.unit
    values = {
        "aspect_ratio": height / max(width, 1e-6),
        "forehead_ratio": forehead / cheek if forehead is not None and cheek else 1.0,
        "jaw_ratio": jaw / cheek if jaw is not None and cheek else 0.85,
        "eye_spacing": iod_units / max(cheek_units, 1e-6),
        "eye_mouth_ratio": eye_mouth / max(iod_units, 1e-6),
        "mouth_width_ratio": mouth_width / max(iod_units, 1e-6),
        "nose_ratio": float(points[2, 1]) / max(eye_mouth, 1e-6),
    }
    measured = {name: w is not None for name, w in widths.items()}
    return {k: round(float(v), 3) for k, v in values.items()}, measured


def _upright_box(face: Face, angle: float) -> tuple[float, float]:
    """Width and height of the face box with the roll undone (the detector's boxes are axis
    aligned: a tilted face gets a squarer box). Not corrected beyond 30 degrees."""
    w, h = face.width, face.height
    c, s = abs(math.cos(angle)), abs(math.sin(angle))
    det = c * c - s * s
    if det < 0.5:
        return w, h
    return max((c * w - s * h) / det, 1.0), max((c * h - s * w) / det, 1.0)


def _skin_region(lab: F32, skin: colour.Lab) -> NDArray[np.bool_]:
    distance = np.linalg.norm(lab - np.asarray(skin, np.float32), axis=2)
    mask = (distance < SHAPE_DELTA_E).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    return cast(NDArray[np.bool_], mask.astype(bool))


def _run_width(
    region: NDArray[np.bool_], centre: tuple[float, float], px_per_unit: float
) -> float | None:
    """Width (face units) of the skin run on the row through ``centre`` that contains the
    midline, or the skin pixel nearest to it within 0.3 units; None when there is none or when
    the run reaches ``MAX_HALF_WIDTH`` units from the midline (it leaked into the background)."""
    row_i = round(centre[1])
    if not 0 <= row_i < region.shape[0]:
        return None
    row = region[row_i]
    mid = round(centre[0])
    reach = round(0.3 * px_per_unit)
    candidates = [x for x in range(mid - reach, mid + reach + 1) if 0 <= x < row.size and row[x]]
    if not candidates:
        return None
    start = min(candidates, key=lambda x: abs(x - mid))
    left = start
    while left > 0 and row[left - 1]:
        left -= 1
    right = start
    while right < row.size - 1 and row[right + 1]:
        right += 1
    bound = MAX_HALF_WIDTH * px_per_unit
    if left <= 0 or right >= row.size - 1 or mid - left >= bound or right - mid >= bound:
        return None
    return (right - left + 1) / px_per_unit


def shape_class(p: Mapping[str, float]) -> str:
    """Face shape from proportions, first rule that matches:

    ``long``: aspect ratio >= 1.5; ``square``: aspect < 1.38 and jaw ratio >= 0.9;
    ``round``: aspect < 1.3 and jaw ratio >= 0.78; ``heart``: forehead ratio >= 0.95 and jaw
    ratio < 0.72; otherwise ``oval``.
    """
    aspect, jaw, forehead = p["aspect_ratio"], p["jaw_ratio"], p["forehead_ratio"]
    if aspect >= 1.5:
        return "long"
    if aspect < 1.38 and jaw >= 0.9:
        return "square"
    if aspect < 1.3 and jaw >= 0.78:
        return "round"
    if forehead >= 0.95 and jaw < 0.72:
        return "heart"
    return "oval"


SHAPE_CLASSES: Final = ("oval", "round", "square", "long", "heart")

__all__ = [
    "SCHEMA_ID",
    "SCHEMA_VERSION",
    "SHAPE_CLASSES",
    "AvatarConfig",
    "AvatarResult",
    "make_avatars",
    "shape_class",
]
