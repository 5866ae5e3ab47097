"""``sticker``: glasses, a hat or cat ears placed in 3D on each head, by its pose.

Params: ``name`` (``glasses``, ``hat`` or ``ears``; required) and ``opacity`` (0-1, default 1).

The art (:mod:`pipelines.ar.stickers`, premultiplied BGRA drawn in face units) is mapped onto
flat *pieces*, quads in the canonical face's 3D frame (centimetres, :mod:`pipelines.faces.
canonical`: ``x`` to the subject's left, ``y`` up, ``z`` towards the camera; one face unit is
the canonical eye distance, 6.32 cm, for glasses, and 6.5 cm for hat and ears). Each piece's
four corners are projected into the photo through the head's pose
(:class:`pipelines.faces.mesh.HeadTransform`: ``solvePnP`` of the mesh against the canonical
face, pinhole camera), and the art is warped with that perspective homography and
alpha-blended. So the sticker turns, nods, tilts and shrinks with the head, and foreshortens on
a profile face while staying attached:

* ``glasses``: the front (lenses, bridge) in the plane ``z = 5.3`` (1.7 cm in front of the eye
  centres, resting on the nose bridge), lens centres on the canonical eye centres; two temples
  in the side planes ``x = +-7.2`` from the hinges back to the ears. A temple on a side of
  the head turned away from the camera (the far arm on a turned head, hidden behind it) is not
  drawn; nearer pieces are drawn last.
* ``ears``: a head-fixed quad in the plane ``z = 0.5`` over the top of the head.
* ``hat``: a top hat is round, so its outline does not depend on yaw: its quad stays facing the
  camera (a billboard through the head's centre, ``z = -1``, 1.8 cm lower than its art's
  face units so it sits over the hair), upright along the head's up axis
  as projected, placed and scaled by perspective; it follows roll, pitch and distance.

Nothing is drawn farther than one box side from the detector's face box (``reach``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import cv2
import numpy as np
from numpy.typing import NDArray

from pipelines.ar.base import Effect, Frame, Target, register
from pipelines.ar.regions import Roi, face_roi, to_uint8
from pipelines.ar.stickers import STICKER_NAMES, StickerArt, sticker_art
from pipelines.faces.mesh import HeadTransform
from pipelines.params import EFFECT, Params

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]

#: Canonical eye distance (cm) and face unit (cm) for hat and ears.
IOD_CM: Final = 6.32
FACE_UNIT_CM: Final = 6.5
#: Canonical height (cm) of the eye centres: the face units' origin.
EYE_Y: Final = 2.64
GLASSES_Z: Final = 5.3
EARS_Z: Final = 0.5
HAT_Z: Final = -1.0
#: The hat sits lower than its art's face units say: over the hair, brim at the hairline.
HAT_DROP_CM: Final = 1.8
#: Glasses temples: hinge and ear ends (x, y, z in cm), mirrored for the other side.
TEMPLE_HINGE: Final = (7.2, 2.9, 5.0)
TEMPLE_EAR: Final = (7.6, 2.3, -2.2)
#: A temple whose side of the head faces away from the camera by more than this (the sine of
#: the angle, about 24 degrees) is hidden behind the head.
HIDDEN_BEYOND: Final = 0.4


@dataclass(frozen=True)
class StickerParams:
    """Which sticker, and how opaque."""

    name: str
    opacity: float = 1.0


@dataclass(frozen=True, eq=False)
class Piece:
    """Art and the image positions of its canvas corners (top-left, top-right, bottom-right,
    bottom-left), with the depth of its centre (cm from the camera) for drawing order."""

    art: StickerArt
    corners: F64
    depth: float


@register
class Sticker(Effect[StickerParams]):
    """A procedurally drawn sticker placed on each head in 3D."""

    name = "sticker"
    needs_mesh = True
    reach = 1.0

    def validate(self, params: Mapping[str, Any]) -> StickerParams:
        """``name`` (required) and ``opacity`` (0-1)."""
        checked = Params(params, ("name", "opacity"), self.name, EFFECT)
        if "name" not in checked:
            checked.fail(f"name is required (one of {', '.join(STICKER_NAMES)})")
        return StickerParams(
            name=checked.choice("name", STICKER_NAMES, ""),
            opacity=checked.number("opacity", 1.0, 0.0, 1.0),
        )

    def apply(self, frame: Frame, targets: Sequence[Target], params: StickerParams) -> Frame:
        """Blend the sticker onto every face."""
        if params.opacity <= 0:
            return frame
        for target in targets:
            limit = face_roi(target.face, self.reach, frame.shape)
            for piece in pieces(params.name, target.need_mesh().transform):
                place(frame, piece, limit, params.opacity)
        return frame


def _canvas_quad(art: StickerArt) -> F64:
    """The art's corners in face units ``(u, v)``: TL, TR, BR, BL."""
    return np.array(
        [[art.u0, art.v0], [art.u1, art.v0], [art.u1, art.v1], [art.u0, art.v1]], dtype=np.float64
    )


def _to_camera(transform: HeadTransform, canonical: F64) -> F64:
    pts = np.asarray(canonical, dtype=np.float64).reshape(-1, 3) * (1.0, -1.0, -1.0)
    out: F64 = pts @ transform.rotation.T + transform.translation
    return out


def _project(transform: HeadTransform, camera_points: F64) -> F64:
    uvw = camera_points @ transform.camera.T
    out: F64 = uvw[:, :2] / np.maximum(uvw[:, 2:3], 1e-6)
    return out


def _fixed(transform: HeadTransform, art: StickerArt, unit_cm: float, z: float) -> Piece:
    """A head-fixed piece in the plane ``z`` (face units -> canonical cm)."""
    uv = _canvas_quad(art)
    canonical = np.column_stack([uv[:, 0] * unit_cm, EYE_Y - uv[:, 1] * unit_cm, np.full(4, z)])
    cam = _to_camera(transform, canonical)
    return Piece(art, _project(transform, cam), float(cam[:, 2].mean()))


def _turned_away(transform: HeadTransform, side: float, point: F64) -> bool:
    """Whether the side of the head ``side`` (-1: subject's right, +1: left) faces away from
    the camera at ``point`` by more than :data:`HIDDEN_BEYOND` (the sine of the angle): the far
    arm of the glasses on a turned head, hidden behind it."""
    outward = transform.rotation @ (np.array([side, 0.0, 0.0]) * (1.0, -1.0, -1.0))
    cam = _to_camera(transform, point.reshape(1, 3))[0]
    to_camera = -cam / max(float(np.linalg.norm(cam)), 1e-9)
    return float(np.dot(outward, to_camera)) < -HIDDEN_BEYOND


def _temples(transform: HeadTransform) -> list[Piece]:
    art = sticker_art("temple")
    out: list[Piece] = []
    for side in (-1.0, 1.0):
        hinge = np.array(TEMPLE_HINGE) * (side, 1.0, 1.0)
        ear = np.array(TEMPLE_EAR) * (side, 1.0, 1.0)
        if _turned_away(transform, side, (hinge + ear) / 2):
            continue  # the far arm on a turned head
        down = np.array([0.0, -1.0, 0.0])
        uv = _canvas_quad(art)
        # u runs from the hinge to the ear, v across the arm (downwards), in eye distances
        canonical = np.array([hinge + u * (ear - hinge) + v * IOD_CM * down for u, v in uv])
        cam = _to_camera(transform, canonical)
        out.append(Piece(art, _project(transform, cam), float(cam[:, 2].mean())))
    return out


def _billboard(transform: HeadTransform, art: StickerArt, unit_cm: float, z: float) -> Piece:
    """A camera-facing piece through the canonical point ``(0, EYE_Y - HAT_DROP_CM, z)``,
    upright along the head's up axis as seen from the camera."""
    anchor = _to_camera(transform, np.array([[0.0, EYE_Y - HAT_DROP_CM, z]]))[0]
    up = transform.rotation @ np.array([0.0, -1.0, 0.0])  # canonical up, in the camera frame
    ray = anchor / max(float(np.linalg.norm(anchor)), 1e-9)
    side = np.cross(ray, up)
    side /= max(float(np.linalg.norm(side)), 1e-9)
    up_seen = np.cross(side, ray)
    uv = _canvas_quad(art)
    cam = np.array([anchor + u * unit_cm * side - v * unit_cm * up_seen for u, v in uv])
    return Piece(art, _project(transform, cam), float(anchor[2]))


def pieces(name: str, transform: HeadTransform) -> list[Piece]:
    """The pieces of sticker ``name`` on a head, farthest first."""
    art = sticker_art(name)
    found: list[Piece]
    if name == "glasses":
        found = [*_temples(transform), _fixed(transform, art, IOD_CM, GLASSES_Z)]
    elif name == "ears":
        found = [_fixed(transform, art, FACE_UNIT_CM, EARS_Z)]
    else:
        found = [_billboard(transform, art, FACE_UNIT_CM, HAT_Z)]
    return sorted(found, key=lambda p: -p.depth)


def place(frame: Frame, piece: Piece, limit: Roi, opacity: float) -> None:
    """Warp the piece's art onto ``frame`` by its homography and blend it, inside ``limit``."""
    corners = piece.corners
    if not np.all(np.isfinite(corners)):
        return
    box = Roi.around(
        corners[:, 0].min() - 1,
        corners[:, 1].min() - 1,
        corners[:, 0].max() + 2,
        corners[:, 1].max() + 2,
        frame.shape,
    )
    roi = Roi(
        max(box.x0, limit.x0), max(box.y0, limit.y0), min(box.x1, limit.x1), min(box.y1, limit.y1)
    )
    if roi.empty:
        return
    canvas = piece.art.canvas
    height, width = canvas.shape[:2]
    # reduce with area averaging first when the art shrinks a lot (a warp alone would alias)
    span = max(float(np.ptp(corners[:, 0])), float(np.ptp(corners[:, 1])), 1.0)
    shrink = span / max(width, height)
    if shrink < 0.6:
        size = (max(2, round(width * shrink * 1.5)), max(2, round(height * shrink * 1.5)))
        canvas = cast(NDArray[np.uint8], cv2.resize(canvas, size, interpolation=cv2.INTER_AREA))
        height, width = canvas.shape[:2]
    src = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    dst = (corners - (roi.x0, roi.y0)).astype(np.float32)
    matrix = cv2.getPerspectiveTransform(src, dst)
    warped = cv2.warpPerspective(
        canvas,
        matrix,
        (roi.x1 - roi.x0, roi.y1 - roi.y0),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0, 0),
    ).astype(np.float32) * (opacity / 255.0)
    alpha = warped[:, :, 3:4]
    if not np.any(alpha > 0):
        return
    rows, cols = roi.slices
    under = frame[rows, cols].astype(np.float32)
    frame[rows, cols] = to_uint8(cast(F32, under * (1.0 - alpha) + warped[:, :, :3] * 255.0))


__all__ = ["Piece", "Sticker", "StickerParams", "pieces", "place"]
