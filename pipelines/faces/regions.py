"""Named landmark sets of the 468-point mesh, and masks made from them.

Indices are MediaPipe's. ``RIGHT``/``LEFT`` are the *subject's* sides (MediaPipe's naming): the
subject's right eye is on the image left of an unmirrored frontal photo. Closed regions list
their polygon in order around the outline; every ``LEFT_*`` set is the mirror image of its
``RIGHT_*`` set on the canonical face (a test checks it). Eye, brow, lip and oval outlines are
MediaPipe's ``face_mesh_connections`` contours (Apache License 2.0); cheeks, forehead, chin, nose
wings and nostrils were drawn here on the canonical face and checked on photos.

Masks are float32 ``HxW`` in ``[0, 1]``; ``feather_px`` is the width of the soft edge (a
Gaussian of sigma ``feather_px / 2`` on the anti-aliased polygon; 0 gives the hard,
anti-aliased polygon).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np
from numpy.typing import NDArray

from pipelines.errors import BadParams
from pipelines.faces.detector import Face
from pipelines.faces.mesh import FaceMesh

F32 = NDArray[np.float32]


@dataclass(frozen=True)
class Region:
    """A named set of mesh indices: a polygon (``closed``) or a polyline."""

    name: str
    indices: tuple[int, ...]
    closed: bool = True

    def points(self, mesh: FaceMesh | NDArray[np.floating]) -> NDArray[np.float64]:
        """The region's ``(N, 2)`` image points, in order."""
        pts = mesh.points if isinstance(mesh, FaceMesh) else np.asarray(mesh)
        return np.asarray(pts, dtype=np.float64)[list(self.indices), :2]


FACE_OVAL: Final = Region(
    "face_oval",
    (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
     152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109),
)  # fmt: skip
LIPS_OUTER: Final = Region(
    "lips_outer",
    (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185),
)
LIPS_INNER: Final = Region(
    "lips_inner",
    (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191),
)
RIGHT_EYE: Final = Region(
    "right_eye", (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
)
LEFT_EYE: Final = Region(
    "left_eye", (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
)
RIGHT_BROW: Final = Region("right_brow", (46, 53, 52, 65, 55, 107, 66, 105, 63, 70))
LEFT_BROW: Final = Region("left_brow", (276, 283, 282, 295, 285, 336, 296, 334, 293, 300))
#: Skin under each eye, beside the nose, above the mouth-corner line.
RIGHT_CHEEK: Final = Region("right_cheek", (117, 118, 101, 36, 205, 187, 147, 123))
LEFT_CHEEK: Final = Region("left_cheek", (346, 347, 330, 266, 425, 411, 376, 352))
#: Between the eyebrows' upper edge and the top of the mesh (which stops below the hairline).
FOREHEAD: Final = Region(
    "forehead",
    (21, 54, 103, 67, 109, 10, 338, 297, 332, 284, 251,
     301, 298, 333, 299, 337, 151, 108, 69, 104, 68, 71),
)  # fmt: skip
#: Below the lower lip down to the bottom of the oval.
CHIN: Final = Region(
    "chin",
    (106, 182, 83, 18, 313, 406, 335, 424, 378, 400, 377, 152, 148, 176, 149, 204),
)
#: The jaw from the subject's right ear to the left ear through the chin (a line).
JAW_LINE: Final = Region(
    "jaw_line",
    (234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288,
     361, 323, 454),
    closed=False,
)  # fmt: skip
#: The nose's midline from between the eyes to the tip (a line).
NOSE_BRIDGE: Final = Region("nose_bridge", (168, 6, 197, 195, 5, 4), closed=False)
RIGHT_NOSE_WING: Final = Region("right_nose_wing", (48, 115, 220, 218, 235, 64))
LEFT_NOSE_WING: Final = Region("left_nose_wing", (278, 344, 440, 438, 455, 294))
RIGHT_NOSTRIL: Final = Region("right_nostril", (218, 237, 241, 99, 240, 235))
LEFT_NOSTRIL: Final = Region("left_nostril", (438, 457, 461, 328, 460, 455))
#: The whole nose outline (bridge top, wings, base).
NOSE: Final = Region(
    "nose",
    (168, 417, 351, 419, 248, 281, 363, 440, 344, 278, 294, 327, 326, 2, 97, 98, 64, 48, 115,
     220, 134, 51, 3, 196, 122, 193),
)  # fmt: skip

#: Single landmarks.
NOSE_TIP: Final = 4
SUBNASALE: Final = 2
CHIN_BOTTOM: Final = 152
FOREHEAD_TOP: Final = 10
#: Outer and inner eye corners (subject's sides).
RIGHT_EYE_OUTER: Final = 33
RIGHT_EYE_INNER: Final = 133
LEFT_EYE_INNER: Final = 362
LEFT_EYE_OUTER: Final = 263
MOUTH_RIGHT: Final = 61
MOUTH_LEFT: Final = 291
#: The mesh points standing for the 68 iBUG-300W landmarks (dlib's 68-point model), in iBUG
#: order: jaw 0-16 (image left to right), brows 17-26, nose 27-35, eyes 36-47, lips 48-67. The
#: inner 51 (17-67) correspond closely; the jaw contour is defined differently by the two
#: annotations (bench/mesh_eval.py measures both).
IBUG_68: Final = (
    127, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 356,
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    168, 197, 5, 4, 75, 97, 2, 326, 305,
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    61, 39, 37, 0, 267, 269, 291, 321, 314, 17, 84, 91, 78, 82, 13, 312, 308, 317, 14, 87,
)  # fmt: skip
#: Rows of :attr:`FaceMesh.iris` (each row: centre, then four contour points).
RIGHT_IRIS: Final = 0
LEFT_IRIS: Final = 1

REGIONS: Final = (
    FACE_OVAL,
    LIPS_OUTER,
    LIPS_INNER,
    RIGHT_EYE,
    LEFT_EYE,
    RIGHT_BROW,
    LEFT_BROW,
    RIGHT_CHEEK,
    LEFT_CHEEK,
    FOREHEAD,
    CHIN,
    JAW_LINE,
    NOSE_BRIDGE,
    RIGHT_NOSE_WING,
    LEFT_NOSE_WING,
    RIGHT_NOSTRIL,
    LEFT_NOSTRIL,
    NOSE,
)
#: What :func:`skin_mask` cuts out of the face oval.
NOT_SKIN: Final = (
    RIGHT_EYE,
    LEFT_EYE,
    RIGHT_BROW,
    LEFT_BROW,
    LIPS_OUTER,
    RIGHT_NOSTRIL,
    LEFT_NOSTRIL,
)

_SHIFT: Final = 4  # sub-pixel bits for cv2.fillPoly


def iris_centre(mesh: FaceMesh, side: int) -> tuple[float, float]:
    """The iris centre of ``side`` (:data:`RIGHT_IRIS` or :data:`LEFT_IRIS`); without iris
    landmarks, the centroid of that eye's outline."""
    if side not in (RIGHT_IRIS, LEFT_IRIS):
        raise BadParams("iris side must be RIGHT_IRIS (0) or LEFT_IRIS (1)")
    if mesh.iris is not None:
        x, y = mesh.iris[side, 0]
        return float(x), float(y)
    eye = RIGHT_EYE if side == RIGHT_IRIS else LEFT_EYE
    cx, cy = eye.points(mesh).mean(axis=0)
    return float(cx), float(cy)


#: A CenterFace box reaches this far above the mesh's top point (10), in chin-to-top distances
#: (measured on 21 faces: the astronaut and insightface's group photo, upright and rotated 15
#: degrees either way; median 0.105, SD 0.05).
_BOX_FOREHEAD: Final = 0.1


def face_of(mesh: FaceMesh) -> Face:
    """A detector-style :class:`~pipelines.faces.detector.Face` for a mesh: the box of its points
    stretched up over the forehead as a CenterFace box is (along the face's own up direction),
    the five landmarks (eye centres, nose tip, mouth corners; subject's right first, which is
    image left on an upright unmirrored face) and the presence as score."""
    pts = mesh.points[:, :2].astype(np.float64)
    up = pts[FOREHEAD_TOP] - pts[CHIN_BOTTOM]
    top = pts[FOREHEAD_TOP] + _BOX_FOREHEAD * up
    every = np.vstack([pts, top[None]])
    x1, y1 = every.min(axis=0)
    x2, y2 = every.max(axis=0)
    width, height = mesh.image_size
    box = (
        float(max(x1, 0.0)),
        float(max(y1, 0.0)),
        float(min(x2, float(width))),
        float(min(y2, float(height))),
    )
    landmarks = (
        iris_centre(mesh, RIGHT_IRIS),
        iris_centre(mesh, LEFT_IRIS),
        (float(pts[NOSE_TIP, 0]), float(pts[NOSE_TIP, 1])),
        (float(pts[MOUTH_RIGHT, 0]), float(pts[MOUTH_RIGHT, 1])),
        (float(pts[MOUTH_LEFT, 0]), float(pts[MOUTH_LEFT, 1])),
    )
    return Face(box=box, landmarks=landmarks, score=float(mesh.presence))


def _fill(mask: NDArray[np.uint8], polygon: NDArray[np.float64], offset: tuple[int, int]) -> None:
    pts = np.round((polygon - np.asarray(offset)) * (1 << _SHIFT)).astype(np.int32)
    cv2.fillPoly(mask, [pts.reshape(-1, 1, 2)], 255, lineType=cv2.LINE_AA, shift=_SHIFT)


def _window(
    shape: tuple[int, ...], polygons: list[NDArray[np.float64]], margin: float
) -> tuple[int, int, int, int] | None:
    """Integer bounds ``(x0, y0, x1, y1)`` of the polygons plus a margin, clipped to the image."""
    height, width = int(shape[0]), int(shape[1])
    allpts = np.concatenate(polygons)
    x0 = max(0, math.floor(allpts[:, 0].min() - margin))
    y0 = max(0, math.floor(allpts[:, 1].min() - margin))
    x1 = min(width, math.ceil(allpts[:, 0].max() + margin) + 1)
    y1 = min(height, math.ceil(allpts[:, 1].max() + margin) + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def _feathered(
    shape: tuple[int, ...],
    include: list[NDArray[np.float64]],
    exclude: list[NDArray[np.float64]],
    feather_px: float,
    exclude_grow_px: float = 0.0,
) -> F32:
    if not (math.isfinite(feather_px) and feather_px >= 0):
        raise BadParams("feather_px must be a non-negative number")
    out = np.zeros((int(shape[0]), int(shape[1])), dtype=np.float32)
    margin = 2.0 * feather_px + 2.0
    window = _window(shape, include, margin)
    if window is None:
        return out
    x0, y0, x1, y1 = window
    inside = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    for polygon in include:
        _fill(inside, polygon, (x0, y0))
    if exclude:
        cut = np.zeros_like(inside)
        for polygon in exclude:
            _fill(cut, polygon, (x0, y0))
        grow = round(exclude_grow_px)
        if grow > 0:
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
            cut = np.asarray(cv2.dilate(cut, kernel), dtype=np.uint8)
        inside = np.asarray(cv2.subtract(inside, cut), dtype=np.uint8)
    soft: F32 = inside.astype(np.float32) / 255.0
    if feather_px > 0:
        soft = np.asarray(cv2.GaussianBlur(soft, (0, 0), sigmaX=feather_px / 2.0), dtype=np.float32)
    out[y0:y1, x0:x1] = soft
    return out


def region_mask(
    shape: tuple[int, ...],
    mesh: FaceMesh | NDArray[np.floating],
    region: Region,
    feather_px: float = 0.0,
) -> F32:
    """The float32 ``HxW`` mask (``shape[:2]``) of a closed ``region`` of ``mesh``."""
    if not region.closed:
        raise BadParams(f"region {region.name} is a line, not an area")
    return _feathered(shape, [region.points(mesh)], [], feather_px)


def skin_mask(
    shape: tuple[int, ...],
    mesh: FaceMesh | NDArray[np.floating],
    feather_px: float = 0.0,
    margin: float = 0.04,
) -> F32:
    """The face's skin: the face oval minus the eyes, brows, lips and nostrils (see
    :data:`NOT_SKIN`), the cut-outs grown by ``margin`` times the eye-corner distance (lashes,
    lip line). Float32 ``HxW`` in ``[0, 1]``."""
    pts = mesh.points if isinstance(mesh, FaceMesh) else np.asarray(mesh)
    eyes = float(np.hypot(*(pts[LEFT_EYE_OUTER, :2] - pts[RIGHT_EYE_OUTER, :2])))
    return _feathered(
        shape,
        [FACE_OVAL.points(mesh)],
        [region.points(mesh) for region in NOT_SKIN],
        feather_px,
        exclude_grow_px=margin * eyes,
    )


__all__ = [
    "CHIN",
    "CHIN_BOTTOM",
    "FACE_OVAL",
    "FOREHEAD",
    "FOREHEAD_TOP",
    "IBUG_68",
    "JAW_LINE",
    "LEFT_BROW",
    "LEFT_CHEEK",
    "LEFT_EYE",
    "LEFT_EYE_INNER",
    "LEFT_EYE_OUTER",
    "LEFT_IRIS",
    "LEFT_NOSE_WING",
    "LEFT_NOSTRIL",
    "LIPS_INNER",
    "LIPS_OUTER",
    "MOUTH_LEFT",
    "MOUTH_RIGHT",
    "NOSE",
    "NOSE_BRIDGE",
    "NOSE_TIP",
    "NOT_SKIN",
    "REGIONS",
    "RIGHT_BROW",
    "RIGHT_CHEEK",
    "RIGHT_EYE",
    "RIGHT_EYE_INNER",
    "RIGHT_EYE_OUTER",
    "RIGHT_IRIS",
    "RIGHT_NOSE_WING",
    "RIGHT_NOSTRIL",
    "SUBNASALE",
    "Region",
    "face_of",
    "iris_centre",
    "region_mask",
    "skin_mask",
]
