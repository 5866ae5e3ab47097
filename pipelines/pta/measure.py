"""Avatar parameters measured on a face mesh (:class:`pipelines.faces.mesh.FaceMesh`).

**Geometry.** The 468 points are turned into the face's own frame (pose correction): ``x``
along the mean of the left-minus-right vectors of four symmetric point pairs (eye corners,
cheeks, mouth corners), ``y`` from the forehead top (10) towards the chin (152) made orthogonal
to ``x``; the points' coordinates on these two axes are the frontal face. Every length is
divided by the inter-ocular distance (IOD, between the eye contours' centres), so the size of
the face in the photo does not matter; left and right measures are averaged, so a mirrored
photo gives the same values. Widths of the face outline are taken at heights fixed relative to
the eyes, nose and mouth (see ``avatar.schema.json`` for each).

**Classes.** Face shape and eye shape follow from the continuous values by the rules of
:func:`face_shape` and :func:`eye_shape`.

**Colour.** The photo is white balanced first (shades of grey, p = 6: each channel scaled so the
image's Minkowski means are equal) and its exposure normalised (grey world: the mean luminance
brought to 120 of 255, the gain kept within 0.6-1.8), both measured on a 128x128 reduction of
the whole photo: a skin tone does not follow the camera's exposure. Skin is
the trimmed median of the two cheek regions, mapped to the nearest Monk Skin Tone step; the iris
the median of the darker pixels of the ring between 30 % and 90 % of the iris radius inside the
eye opening; hair the median of the person-mask pixels that are not skin (ΔE 8 from the
cheeks) in a band 0.45-0.95 IOD above the mesh's top. Hair style: ``bald`` when that band is
mostly skin, ``covered`` when what covers it is no hair colour (saturated, far from all of
them), else ``long`` / ``medium`` / ``short`` by how
far down beside the face hair-coloured person pixels reach.

**Glasses.** A frame's bridge crosses the nose between the eyes, where skin is smooth: an edge
running along the eye line. ``score`` is the share of pixels of the bridge's middle (60 % of
the quadrilateral between the inner eye corners, glabella and nose bridge, clear of the lashes)
whose gradient across the face exceeds three times the cheeks' 90th percentile (+8), over 0.3;
present from 0.5. A turned head's nose profile runs along the face, so it does not count.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, cast

import cv2
import numpy as np
from numpy.typing import NDArray

from pipelines.faces import regions
from pipelines.faces.mesh import FaceMesh
from pipelines.pta import colour
from pipelines.pta.spec import (
    HAIR_COLOURS,
    BrowParams,
    Colour,
    FaceParams,
    GlassesParams,
    HairParams,
    MouthParams,
    NoseParams,
    SkinParams,
)

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]
Image = NDArray[np.uint8]

#: Symmetric (subject's right, subject's left) point pairs that define the face's x axis.
_PAIRS: Final = ((33, 263), (133, 362), (234, 454), (61, 291))
_BROWS: Final = (
    ((70, 63, 105, 66, 107), (46, 53, 52, 65, 55)),
    ((300, 293, 334, 296, 336), (276, 283, 282, 295, 285)),
)
_EYE_CORNERS: Final = ((33, 133), (263, 362))  # (outer, inner) per eye
_LIDS: Final = ((159, 145), (386, 374))
#: Minkowski norm of the shades-of-grey white balance.
_WB_P: Final = 6.0
#: Mean luminance (0-255) a photo is brought to (exposure; grey world).
_GREY: Final = 120.0
#: Eye distance (pixels) the head crop is reduced to before colours are measured.
WORK_IOD: Final = 64.0
#: Person-mask probability that counts as the person.
_PERSON: Final = 0.5
#: The band above the mesh's top (forehead point 10) where hair is sampled: across and up, IODs.
HAIR_BAND_ACROSS: Final = (-0.6, 0.6)
HAIR_BAND_UP: Final = (0.45, 0.95)


@dataclass(frozen=True)
class Geometry:
    """The measured continuous parameters and classes."""

    face: FaceParams
    eyes_shape: str
    eye_size: float
    eye_opening: float
    eye_spacing: float
    eye_tilt_deg: float
    brows: BrowParams
    nose: NoseParams
    mouth: MouthParams


def frontal(points: NDArray[np.floating]) -> F64:
    """The mesh's points in the face's own frame (``(468, 2)``: x towards the subject's left,
    y down the face), rotation undone."""
    p = np.asarray(points, dtype=np.float64)
    x = np.mean([p[left] - p[right] for right, left in _PAIRS], axis=0)
    x /= max(float(np.linalg.norm(x)), 1e-9)
    y = p[regions.CHIN_BOTTOM] - p[regions.FOREHEAD_TOP]
    y -= float(y @ x) * x
    y /= max(float(np.linalg.norm(y)), 1e-9)
    centred = p - p.mean(axis=0)
    out: F64 = np.stack([centred @ x, centred @ y], axis=1)
    return out


def _width_at(outline: F64, y: float) -> float:
    """Width of a closed polygon along the horizontal line at ``y`` (0 when it misses)."""
    xs = []
    n = len(outline)
    for i in range(n):
        (x0, y0), (x1, y1) = outline[i], outline[(i + 1) % n]
        if (y0 - y) * (y1 - y) <= 0 and y0 != y1:
            xs.append(x0 + (y - y0) * (x1 - x0) / (y1 - y0))
    return max(xs) - min(xs) if len(xs) >= 2 else 0.0


def face_shape(face: FaceParams) -> str:
    """Face shape from the continuous values, first rule that matches (ratios as the mesh
    measures them: its outline stops at the hairline, so faces measure shorter than a
    tape would):

    ``long``: height/width >= 1.3; ``round``: height/width < 1.12 and jaw/cheekbones >= 0.9;
    ``square``: jaw/cheekbones >= 0.96; ``heart``: forehead/cheekbones >= 0.9 and
    chin/cheekbones < 0.55; otherwise ``oval``.
    """
    aspect = face.height / max(face.width, 1e-6)
    jaw = face.jaw_width / max(face.cheekbone_width, 1e-6)
    forehead = face.forehead_width / max(face.cheekbone_width, 1e-6)
    chin = face.chin_width / max(face.cheekbone_width, 1e-6)
    if aspect >= 1.3:
        return "long"
    if aspect < 1.12 and jaw >= 0.9:
        return "round"
    if jaw >= 0.96:
        return "square"
    if forehead >= 0.9 and chin < 0.55:
        return "heart"
    return "oval"


def eye_shape(size: float, opening: float, tilt_deg: float) -> str:
    """Eye shape: ``upturned`` tilt >= 8 degrees; ``downturned`` tilt <= -3; ``round``
    opening/width >= 0.42; ``narrow`` opening/width < 0.2; otherwise ``almond``."""
    aspect = opening / max(size, 1e-6)
    if tilt_deg >= 8:
        return "upturned"
    if tilt_deg <= -3:
        return "downturned"
    if aspect >= 0.42:
        return "round"
    if aspect < 0.2:
        return "narrow"
    return "almond"


def geometry(mesh: FaceMesh) -> Geometry:
    """Continuous parameters and classes of one mesh."""
    q = frontal(mesh.points)
    right_eye = q[list(regions.RIGHT_EYE.indices)].mean(axis=0)
    left_eye = q[list(regions.LEFT_EYE.indices)].mean(axis=0)
    iod = max(float(np.linalg.norm(left_eye - right_eye)), 1e-6)

    def dist(a: int, b: int) -> float:
        return float(np.linalg.norm(q[a] - q[b])) / iod

    outline = q[list(regions.FACE_OVAL.indices)]
    eye_y = float((right_eye[1] + left_eye[1]) / 2)
    top_y, chin_y = float(q[regions.FOREHEAD_TOP, 1]), float(q[regions.CHIN_BOTTOM, 1])
    tip_y = float(q[regions.NOSE_TIP, 1])
    mouth_y = float((q[61, 1] + q[291, 1]) / 2)
    lower_lip_y = float(q[17, 1])

    def width(y: float) -> float:
        return float(_width_at(outline, y)) / iod

    face_values = {
        "width": float(outline[:, 0].max() - outline[:, 0].min()) / iod,
        "height": (chin_y - top_y) / iod,
        "forehead_width": width(eye_y - 0.6 * (eye_y - top_y)),
        "cheekbone_width": width(eye_y + 0.25 * (tip_y - eye_y)),
        "jaw_width": width(mouth_y),
        "chin_width": width((lower_lip_y + chin_y) / 2),
        "chin_length": (chin_y - lower_lip_y) / iod,
    }
    rounded = {k: round(v, 4) for k, v in face_values.items()}
    face = FaceParams(shape="oval", **rounded)
    face = dataclasses.replace(face, shape=face_shape(face))
    size = float(np.mean([dist(o, i) for o, i in _EYE_CORNERS]))
    opening = float(np.mean([dist(u, d) for u, d in _LIDS]))
    tilts = []
    for outer, inner in _EYE_CORNERS:
        dx = abs(float(q[inner, 0] - q[outer, 0]))
        tilts.append(math.degrees(math.atan2(float(q[inner, 1] - q[outer, 1]), max(dx, 1e-6))))
    tilt = float(np.mean(tilts))
    thickness, arch = [], []
    for upper, lower in _BROWS:
        thickness.append(np.mean([dist(u, d) for u, d in zip(upper, lower, strict=True)]))
        pts = q[list(upper)]
        a, b = pts[0], pts[-1]
        length = max(float(np.linalg.norm(b - a)), 1e-6)
        normal = np.array([(b - a)[1], -(b - a)[0]]) / length
        if normal[1] > 0:
            normal = -normal  # pointing up the face
        arch.append(float(np.max((pts - a) @ normal)) / length)
    wings = q[list(regions.RIGHT_NOSE_WING.indices) + list(regions.LEFT_NOSE_WING.indices)]
    return Geometry(
        face=face,
        eyes_shape=eye_shape(size, opening, tilt),
        eye_size=round(size, 4),
        eye_opening=round(opening, 4),
        eye_spacing=round(dist(133, 362), 4),
        eye_tilt_deg=round(tilt, 2),
        brows=BrowParams(round(float(np.mean(thickness)), 4), round(float(np.mean(arch)), 4)),
        nose=NoseParams(
            round(float(wings[:, 0].max() - wings[:, 0].min()) / iod, 4),
            round((float(q[regions.SUBNASALE, 1]) - float(q[168, 1])) / iod, 4),
        ),
        mouth=MouthParams(
            round(dist(61, 291), 4),
            round((float(q[13, 1] - q[0, 1]) + float(q[17, 1] - q[14, 1])) / iod, 4),
        ),
    )


def white_balance_gains(image: Image) -> F32:
    """Per-channel (B, G, R) gains: the shades-of-grey white balance times the grey-world
    exposure (module docstring), from a 128x128 reduction of the whole photo."""
    small = cv2.resize(image, (128, 128), interpolation=cv2.INTER_AREA).astype(np.float64)
    means = np.power(np.mean(np.power(small.reshape(-1, 3) + 1.0, _WB_P), axis=0), 1 / _WB_P)
    cast = np.clip(means.mean() / means, 0.5, 2.0)
    grey = float(np.mean(small.reshape(-1, 3) @ (cast * np.array([0.114, 0.587, 0.299]))))
    exposure = float(np.clip(_GREY / max(grey, 1.0), 0.6, 1.8))
    gains: F32 = (cast * exposure).astype(np.float32)
    return gains


def white_balance(image: Image, gains: F32) -> Image:
    """``image`` with ``gains`` applied."""
    out = np.clip(image.astype(np.float32) * gains, 0, 255)
    return cast(Image, out.astype(np.uint8))


def head_crop(shape: tuple[int, ...], box: tuple[float, float, float, float]) -> tuple[int, ...]:
    """``(x0, y0, x1, y1)`` of the part of the photo the measurements look at: the face box
    widened 1.5 sides left and right, 1 above and 2.2 below (hair beside and below the face),
    clipped to the photo. Everything measured is local, so a 12 MP photo costs what its face
    costs."""
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1)
    height, width = shape[:2]
    return (
        max(0, int(x1 - 1.5 * side)),
        max(0, int(y1 - 1.0 * side)),
        min(width, math.ceil(x2 + 1.5 * side)),
        min(height, math.ceil(y2 + 2.2 * side)),
    )


def shifted(mesh: FaceMesh, x0: int, y0: int, scale: float = 1.0) -> FaceMesh:
    """``mesh`` in the coordinates of a crop whose top-left corner is ``(x0, y0)``, resized by
    ``scale``."""
    offset = np.array([x0, y0], dtype=np.float32)
    points = mesh.points.copy()
    points[:, :2] = (points[:, :2] - offset) * scale
    points[:, 2] *= scale
    iris = None if mesh.iris is None else (mesh.iris - offset) * scale
    return dataclasses.replace(mesh, points=points, iris=iris)


def working_scale(mesh: FaceMesh) -> float:
    """The factor that brings the face to ``WORK_IOD`` pixels between the eyes (never
    enlarging): colours and regions are measured at that size, so the cost of a face does not
    grow with the photo's resolution."""
    p = mesh.points[:, :2].astype(np.float64)
    eyes = [p[list(r.indices)].mean(axis=0) for r in (regions.RIGHT_EYE, regions.LEFT_EYE)]
    iod = float(np.linalg.norm(eyes[1] - eyes[0]))
    return min(1.0, WORK_IOD / max(iod, 1.0))


def _polygon_mask(shape: tuple[int, int], points: F64) -> NDArray[np.bool_]:
    mask = np.zeros(shape, dtype=np.uint8)
    cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
    return cast(NDArray[np.bool_], mask.astype(bool))


def _trimmed(pixels: F32) -> F32:
    if pixels.shape[0] >= 10:
        lo, hi = np.percentile(pixels[:, 0], [20, 90])
        kept: F32 = pixels[(pixels[:, 0] >= lo) & (pixels[:, 0] <= hi)]
        if kept.shape[0]:
            return kept
    return pixels


def skin(lab: F32, mesh: FaceMesh) -> SkinParams:
    """Skin tone from the cheeks of a white-balanced Lab image."""
    mask = np.zeros(lab.shape[:2], dtype=bool)
    for region in (regions.RIGHT_CHEEK, regions.LEFT_CHEEK):
        mask |= _polygon_mask(lab.shape[:2], region.points(mesh))
    found = colour.sample(_trimmed(lab[mask]), int(mask.sum()))
    if found is None:  # the cheeks are off the image: sample the whole skin mask
        mask = regions.skin_mask(lab.shape, mesh) > 0.5
        found = colour.sample(_trimmed(lab[mask]), int(mask.sum()))
    if found is None:
        found = colour.ColourSample((60.0, 12.0, 18.0), colour.lab_to_hex((60.0, 12.0, 18.0)), 0)
    step = colour.nearest(found.lab, colour.MONK_SCALE)
    return SkinParams(monk=step + 1, hex=found.hex, lab=found.lab, monk_hex=colour.MONK_SCALE[step])


def iris(lab: F32, mesh: FaceMesh) -> Colour:
    """Iris colour from the iris landmarks (``unknown`` without them or when lids cover it)."""
    if mesh.iris is None:
        return Colour(hex="#4b3020", lab=(25.0, 10.0, 15.0), name="unknown")
    shape = lab.shape[:2]
    pixels = []
    for eye, region in ((0, regions.RIGHT_EYE), (1, regions.LEFT_EYE)):
        centre = mesh.iris[eye, 0].astype(np.float64)
        radius = float(np.mean(np.linalg.norm(mesh.iris[eye, 1:] - centre, axis=1)))
        ring = colour.disc_mask(shape, (centre[0], centre[1]), radius * 0.9)
        ring &= ~colour.disc_mask(shape, (centre[0], centre[1]), radius * 0.3)
        ring &= _polygon_mask(shape, region.points(mesh))
        pixels.append(lab[ring])
    found = np.concatenate(pixels)
    chroma = np.hypot(found[:, 1], found[:, 2])
    found = found[~((found[:, 0] > 70) & (chroma < 12))]  # sclera, glints
    if found.shape[0] >= 4:
        found = found[found[:, 0] <= np.median(found[:, 0])]
    result = colour.sample(found, max(found.shape[0], 1))
    if result is None:
        return Colour(hex="#4b3020", lab=(25.0, 10.0, 15.0), name="unknown")
    return Colour(hex=result.hex, lab=result.lab, name=colour.eye_colour_name(result.lab))


def _face_axes(mesh: FaceMesh) -> tuple[F64, F64, F64, float]:
    """Image-plane origin (forehead top), up and right unit vectors, and the IOD in pixels."""
    p = mesh.points[:, :2].astype(np.float64)
    up = p[regions.FOREHEAD_TOP] - p[regions.CHIN_BOTTOM]
    up /= max(float(np.linalg.norm(up)), 1e-9)
    right = np.array([-up[1], up[0]])
    eyes = [p[list(r.indices)].mean(axis=0) for r in (regions.RIGHT_EYE, regions.LEFT_EYE)]
    iod = max(float(np.linalg.norm(eyes[1] - eyes[0])), 1.0)
    return p[regions.FOREHEAD_TOP], up, right, iod


def _band(
    shape: tuple[int, int],
    origin: F64,
    up: F64,
    right: F64,
    iod: float,
    across: tuple[float, float],
    along: tuple[float, float],
) -> NDArray[np.bool_]:
    """A quadrilateral in face axes: ``across`` (right) and ``along`` (up) ranges in IODs."""
    corners = [
        origin + iod * (a * right + b * up)
        for a, b in ((across[0], along[0]), (across[1], along[0]),
                     (across[1], along[1]), (across[0], along[1]))
    ]  # fmt: skip
    return _polygon_mask(shape, np.array(corners))


def hair(lab: F32, person: F32, mesh: FaceMesh, skin_lab: Sequence[float]) -> HairParams:
    """Hair colour and coarse style (see the module docstring)."""
    shape = lab.shape[:2]
    origin, up, right, iod = _face_axes(mesh)
    in_person = person >= _PERSON
    skin_like = np.linalg.norm(lab - np.asarray(skin_lab, np.float32), axis=2) < colour.SKIN_DELTA_E
    top = _band(shape, origin, up, right, iod, HAIR_BAND_ACROSS, HAIR_BAND_UP)
    total = max(int(top.sum()), 1)
    hair_px = top & in_person & ~skin_like
    skin_share = float((top & skin_like).sum()) / total
    hair_share = float(hair_px.sum()) / total
    found = colour.sample(lab[hair_px], total)
    names = list(HAIR_COLOURS)
    if found is None or (hair_share < 0.25 and skin_share > 0.4):
        unknown = Colour(hex="#3b2a20", lab=(20.0, 5.0, 8.0), name="unknown")
        style = "bald" if skin_share > 0.4 else "short"
        if found is not None:
            name = names[colour.nearest(found.lab, list(HAIR_COLOURS.values()))]
            unknown = Colour(hex=found.hex, lab=found.lab, name=name)
        return HairParams(style=style, colour=unknown)
    best = colour.nearest(found.lab, list(HAIR_COLOURS.values()))
    hair_colour = Colour(hex=found.hex, lab=found.lab, name=names[best])
    distance = colour.delta_e(found.lab, colour.hex_to_lab(HAIR_COLOURS[names[best]]))
    chroma = math.hypot(found.lab[1], found.lab[2])
    if distance > 25 and chroma > 25:
        return HairParams(style="covered", colour=hair_colour)
    face = cv2.dilate(
        _polygon_mask(shape, regions.FACE_OVAL.points(mesh)).astype(np.uint8),
        np.ones((3, 3), np.uint8),
        iterations=max(1, round(0.1 * iod)),
    ).astype(bool)
    return HairParams(
        style=_hair_length(lab, in_person & ~face, top, found.lab, mesh),
        colour=hair_colour,
    )


def _hair_length(
    lab: F32,
    candidates: NDArray[np.bool_],
    top: NDArray[np.bool_],
    hair_lab: Sequence[float],
    mesh: FaceMesh,
) -> str:
    """``long`` / ``medium`` / ``short`` by how far down the hair reaches beside the face: the
    person pixels outside the face outline within ΔE 22 of the hair colour, connected to the
    hair above the forehead, within 0.7 IOD of the face's sides, reaching 0.35 IOD below the
    chin (long) or below three quarters of the face (medium)."""
    origin, up, right, iod = _face_axes(mesh)
    half = float(np.ptp(frontal(mesh.points)[list(regions.FACE_OVAL.indices), 0])) / iod / 2
    near = np.linalg.norm(lab - np.asarray(hair_lab, np.float32), axis=2) < 22
    hairy = (candidates & near).astype(np.uint8)
    hairy = cv2.morphologyEx(hairy, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    _count, labels = cv2.connectedComponents(hairy, connectivity=8)
    linked = np.unique(labels[top & (hairy > 0)])
    linked = linked[linked > 0]
    if linked.size == 0:
        return "short"
    ys, xs = np.nonzero(np.isin(labels, linked))
    offsets = np.stack([xs - origin[0], ys - origin[1]], axis=1) / iod
    across, along = offsets @ right, offsets @ up
    beside = np.abs(across) < half + 0.7
    if not beside.any():
        return "short"
    reach = float(along[beside].min())
    face_len = float(np.linalg.norm(mesh.points[regions.CHIN_BOTTOM, :2] - origin)) / iod
    if reach < -face_len - 0.35:
        return "long"
    if reach < -0.75 * face_len:
        return "medium"
    return "short"


def glasses(image: Image, mesh: FaceMesh) -> GlassesParams:
    """Glasses present or not, from the gradients at the nose bridge (module docstring)."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
    _origin, up, _right, _iod = _face_axes(mesh)
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    across_edges = np.abs(gx * float(up[0]) + gy * float(up[1]))  # edges across the face
    p = mesh.points[:, :2].astype(np.float64)
    shape = grey.shape[:2]
    corners = p[[133, 168, 362, 6]]
    centre = corners.mean(axis=0)
    bridge = _polygon_mask(shape, centre + 0.6 * (corners - centre))  # clear of the lashes
    cheeks = np.zeros(shape, dtype=bool)
    for region in (regions.RIGHT_CHEEK, regions.LEFT_CHEEK):
        cheeks |= _polygon_mask(shape, region.points(mesh))
    if not bridge.any() or not cheeks.any():
        return GlassesParams(present=False, score=0.0)
    reference = float(np.percentile(across_edges[cheeks], 90)) + 8.0
    share = float((across_edges[bridge] > 3.0 * reference).mean())
    score = round(min(1.0, share / 0.3), 3)
    return GlassesParams(present=score >= 0.5, score=score)


__all__ = [
    "Geometry",
    "eye_shape",
    "face_shape",
    "frontal",
    "geometry",
    "glasses",
    "hair",
    "head_crop",
    "iris",
    "shifted",
    "skin",
    "white_balance",
    "white_balance_gains",
    "working_scale",
]
