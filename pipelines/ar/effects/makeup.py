"""``makeup``: lipstick, blush, eyeliner, eyeshadow and brow tint, placed on the face mesh.

Params: ``lipstick``, ``blush``, ``eyeliner``, ``eyeshadow``, ``brows`` (each a colour: ``#rrggbb``,
``#rgb`` or a CSS colour name; absent = not applied) and ``strength`` (0-1, default 0.7). With no
colour at all, a natural look is applied: lipstick ``#b4505a`` and blush ``#e58a7e``.

Every product is a soft mask on the mesh, recoloured in CIE Lab keeping the texture
(:func:`pipelines.ar.regions.tint`: the chroma becomes the product's, the lightness keeps its own
detail and shading and moves part of the way towards the product's):

* lipstick: the outer lip polygon minus the inner one (teeth and the open mouth stay as they
  are), feathered by 4 % of the mouth width; lightness moved 60 %;
* blush: the mesh's cheek patches, feathered by 0.9 eye widths, at 60 % of ``strength``;
* eyeliner: a line along each upper lid (eye-contour points from the outer to the inner corner)
  with a short wing past the outer corner, 5 % of the eye width thick;
* eyeshadow: the band between the upper lid and the brow, feathered wide, at 70 % of
  ``strength``, lightness moved 85 %;
* brows: the brow polygons, feathered by 1.5 % of the face width; lightness moved 60 %.

Everything is drawn on a crop around the face (the mesh's box plus a margin), so the cost does
not grow with the photo. Pixels outside the face oval's box grown by 5 % never change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import cv2
import numpy as np
from numpy.typing import NDArray

from pipelines.ar.base import Effect, Frame, Target, register
from pipelines.ar.regions import local_points, points_roi, tint, to_uint8
from pipelines.colors import to_bgr
from pipelines.faces import regions as R
from pipelines.params import EFFECT, Params

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]

PRODUCTS: Final = ("lipstick", "blush", "eyeliner", "eyeshadow", "brows")
#: The look applied when no product is named.
NATURAL: Final = {"lipstick": "#b4505a", "blush": "#e58a7e"}
#: Upper-lid points of each eye, outer corner to inner corner (subject's right, then left).
UPPER_LIDS: Final = (
    (33, 246, 161, 160, 159, 158, 157, 173, 133),
    (263, 466, 388, 387, 386, 385, 384, 398, 362),
)
#: Lower brow edge of each brow, outer to inner (the top of the eyeshadow band).
BROW_LOWER: Final = ((46, 53, 52, 65, 55), (276, 283, 282, 295, 285))


@dataclass(frozen=True)
class MakeupParams:
    """Normalised ``#rrggbb`` colours (``None``: not applied) and the strength."""

    lipstick: str | None = None
    blush: str | None = None
    eyeliner: str | None = None
    eyeshadow: str | None = None
    brows: str | None = None
    strength: float = 0.7


@register
class Makeup(Effect[MakeupParams]):
    """Mesh-placed makeup."""

    name = "makeup"
    needs_mesh = True
    reach = 0.15

    def validate(self, params: Mapping[str, Any]) -> MakeupParams:
        """Each product a colour (hex or CSS name); ``strength`` 0-1."""
        checked = Params(params, (*PRODUCTS, "strength"), self.name, EFFECT)
        given = {p: checked.css_color(p, "") for p in PRODUCTS if p in checked}
        colours = given or dict(NATURAL)
        return MakeupParams(**colours, strength=checked.number("strength", 0.7, 0.0, 1.0))

    def to_json(self, params: MakeupParams) -> dict[str, Any]:
        """The products applied (absent ones left out) and ``strength``."""
        return {
            "effect": self.name,
            **{p: getattr(params, p) for p in PRODUCTS if getattr(params, p) is not None},
            "strength": params.strength,
        }

    def apply(self, frame: Frame, targets: Sequence[Target], params: MakeupParams) -> Frame:
        """Paint every face."""
        if params.strength <= 0:
            return frame
        for target in targets:
            _paint(frame, target, params)
        return frame


def _paint(frame: Frame, target: Target, params: MakeupParams) -> None:
    mesh = target.need_mesh()
    oval = R.FACE_OVAL.points(mesh)
    width = float(np.ptp(oval[:, 0]))
    roi = points_roi(oval, 0.05 * width, frame.shape)
    if roi.empty or min(roi.shape) < 8:
        return
    rows, cols = roi.slices
    crop = frame[rows, cols]
    pts = local_points(mesh, roi)
    shape = roi.shape
    out = crop.astype(np.float32)
    s = params.strength
    mouth_w = float(np.hypot(*(pts[R.MOUTH_LEFT, :2] - pts[R.MOUTH_RIGHT, :2])))
    eye_w = float(np.hypot(*(pts[R.RIGHT_EYE_INNER, :2] - pts[R.RIGHT_EYE_OUTER, :2])))
    if params.eyeshadow:
        mask = _shadow_mask(shape, pts, eye_w) * (0.7 * s)
        out = tint(to_uint8(out), mask, to_bgr(params.eyeshadow), 0.85)
    if params.blush:
        mask = np.maximum(
            R.region_mask(shape, pts, R.RIGHT_CHEEK, 0.9 * eye_w),
            R.region_mask(shape, pts, R.LEFT_CHEEK, 0.9 * eye_w),
        )
        out = tint(to_uint8(out), mask * (0.6 * s), to_bgr(params.blush), 0.3)
    if params.brows:
        feather = 0.015 * width
        mask = np.maximum(
            R.region_mask(shape, pts, R.RIGHT_BROW, feather),
            R.region_mask(shape, pts, R.LEFT_BROW, feather),
        )
        out = tint(to_uint8(out), mask * s, to_bgr(params.brows), 0.6)
    if params.eyeliner:
        mask = _liner_mask(shape, pts, eye_w) * min(1.0, 1.2 * s)
        out = tint(to_uint8(out), mask, to_bgr(params.eyeliner), 0.9)
    if params.lipstick:
        mask = _lip_mask(shape, pts, mouth_w) * s
        out = tint(to_uint8(out), mask, to_bgr(params.lipstick), 0.6)
    frame[rows, cols] = to_uint8(out)


def _lip_mask(shape: tuple[int, int], pts: F64, mouth_w: float) -> F32:
    """Outer lips minus the inner mouth, feathered by 4 % of the mouth width."""
    feather = max(1.0, 0.04 * mouth_w)
    outer = R.region_mask(shape, pts, R.LIPS_OUTER, feather)
    inner = R.region_mask(shape, pts, R.LIPS_INNER, 0.5 * feather)
    return cast(F32, np.clip(outer - inner, 0.0, 1.0).astype(np.float32))


def _liner_mask(shape: tuple[int, int], pts: F64, eye_w: float) -> F32:
    """A line along each upper lid, thickest at the outer corner, with a short wing."""
    mask = np.zeros(shape, dtype=np.uint8)
    shift = 4
    k = 1 << shift
    thick = max(1, round(0.05 * eye_w))
    for lid in UPPER_LIDS:
        line = pts[list(lid), :2]
        outer, inner = line[0], line[-1]
        along = (outer - inner) / max(float(np.hypot(*(outer - inner))), 1e-9)
        up = np.array([-along[1], along[0]])
        if up[1] > 0:
            up = -up
        wing = outer + 0.22 * eye_w * along + 0.1 * eye_w * up
        poly = np.vstack([wing, line]) * k
        cv2.polylines(
            mask, [np.round(poly).astype(np.int32)], False, 255, thick, cv2.LINE_AA, shift
        )
        # thicker towards the outer corner: a second stroke over the outer half
        half = np.vstack([wing, line[: len(line) // 2 + 1]]) * k
        cv2.polylines(
            mask, [np.round(half).astype(np.int32)], False, 255, thick + 1, cv2.LINE_AA, shift
        )
    soft = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), max(0.6, 0.012 * eye_w))
    return soft.astype(np.float32)


def _shadow_mask(shape: tuple[int, int], pts: F64, eye_w: float) -> F32:
    """The lid band between each upper lid and the lower brow edge, feathered wide, with the
    eye itself left out."""
    band = np.zeros(shape, dtype=np.uint8)
    shift = 4
    for lid, brow in zip(UPPER_LIDS, BROW_LOWER, strict=True):
        lid_pts = pts[list(lid), :2]
        brow_pts = pts[list(brow), :2]
        # the band's top: 60 % of the way from the lid to the brow
        top = lid_pts[[0, 2, 4, 6, 8]] + 0.6 * (brow_pts - lid_pts[[0, 2, 4, 6, 8]])
        poly = np.vstack([lid_pts, top[::-1]]) * (1 << shift)
        cv2.fillPoly(band, [np.round(poly).astype(np.int32)], 255, cv2.LINE_AA, shift)
    soft = cv2.GaussianBlur(band.astype(np.float32) / 255.0, (0, 0), 0.12 * eye_w)
    eyes = np.maximum(
        R.region_mask(shape, pts, R.RIGHT_EYE, 0.0), R.region_mask(shape, pts, R.LEFT_EYE, 0.0)
    )
    return np.clip(soft - eyes, 0.0, 1.0).astype(np.float32)


__all__ = ["NATURAL", "PRODUCTS", "Makeup", "MakeupParams"]
