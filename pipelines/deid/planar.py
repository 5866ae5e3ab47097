"""De-identification operators on a video frame's I420 planes (no BGR round trip).

:func:`apply_planes` applies a registered operator to the faces of one
:class:`~pipelines.media.video.Planes` frame, in place. ``mask``, ``blur`` and ``pixelate`` have
per-plane variants here: the luma plane is treated as the operator treats a BGR image, and the
two chroma planes the same way at half resolution (the face, the dilated ellipse, the blur's
sigma and the mosaic's block all halved), with the same parameters and the same regions
(:func:`~pipelines.deid.geometry.ellipse_region`). A mask's colour is converted with the frame's
own matrix and range. Every other operator (``k_same``, ``landmarks_only``) runs on the frame
converted to BGR and back, exactly as on an image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from pipelines.deid.geometry import composite, ellipse_region
from pipelines.deid.operators.blur import BlurParams, gaussian
from pipelines.deid.operators.mask import MaskParams
from pipelines.deid.operators.pixelate import PixelateParams, mosaic
from pipelines.deid.registry import Operator
from pipelines.faces.detector import Face
from pipelines.media.video.planes import Planes

U8 = NDArray[np.uint8]


def _half(face: Face) -> Face:
    """The face in chroma-plane coordinates (half the luma plane's)."""
    x1, y1, x2, y2 = face.box
    points = tuple((x / 2.0, y / 2.0) for x, y in face.landmarks)
    return replace(face, box=(x1 / 2.0, y1 / 2.0, x2 / 2.0, y2 / 2.0), landmarks=points)


def _planes(planes: Planes, face: Face) -> tuple[tuple[U8, Face, float], ...]:
    """``(plane, face in its coordinates, scale)`` for luma, then each chroma plane."""
    half = _half(face)
    return ((planes.y, face, 1.0), (planes.u, half, 0.5), (planes.v, half, 0.5))


def _mask(planes: Planes, faces: Sequence[Face], params: MaskParams) -> None:
    codes = planes.colour.encode(params.color)
    for face in faces:
        for (plane, shaped, _), code in zip(_planes(planes, face), codes, strict=True):
            region = ellipse_region(plane.shape, shaped, params.dilation)
            if not region.empty:
                solid = np.full((region.y1 - region.y0, region.x1 - region.x0), code, np.uint8)
                composite(plane, region, solid)


def _filtered(
    planes: Planes,
    faces: Sequence[Face],
    dilation: float,
    margin: Callable[[Face], float],
    filter_: Callable[[U8, Face, float], U8],
) -> None:
    """Replace each face's ellipse on every plane by ``filter_(rectangle, face, scale)`` of the
    *original* pixels (all patches are computed before any is written, so overlapping faces
    never filter a neighbour's result), ``margin(face)`` luma pixels of context around it."""
    patches = []
    for face in faces:
        for plane, shaped, scale in _planes(planes, face):
            region = ellipse_region(plane.shape, shaped, dilation, margin=margin(face) * scale)
            if region.empty:
                continue
            rows, cols = region.slices()
            patches.append(
                (plane, region, filter_(np.ascontiguousarray(plane[rows, cols]), face, scale))
            )
    for plane, region, patch in patches:
        composite(plane, region, patch)


def _sigma(face: Face, params: BlurParams) -> float:
    # The blur operator's rule: sigma is ``strength`` times the face's longer side.
    return max(0.5, params.strength * max(face.width, face.height))


def _blur(planes: Planes, faces: Sequence[Face], params: BlurParams) -> None:
    _filtered(
        planes,
        faces,
        params.dilation,
        lambda face: 3.0 * _sigma(face, params),
        lambda rect, face, scale: gaussian(rect, max(0.5, _sigma(face, params) * scale)),
    )


def _pixelate(planes: Planes, faces: Sequence[Face], params: PixelateParams) -> None:
    # The pixelate operator's rule: ``blocks`` blocks across the face's longer side.
    def block(face: Face) -> float:
        return max(1.0, max(face.width, face.height) / params.blocks)

    _filtered(
        planes,
        faces,
        params.dilation,
        lambda face: 0.0,
        lambda rect, face, scale: mosaic(rect, max(1.0, block(face) * scale)),
    )


#: Operators with a per-plane variant, by name.
PLANAR: Final[dict[str, Callable[[Planes, Sequence[Face], Any], None]]] = {
    "mask": _mask,
    "blur": _blur,
    "pixelate": _pixelate,
}


def apply_planes(
    operator: Operator[Any], planes: Planes, faces: Sequence[Face], params: Any
) -> None:
    """Apply ``operator`` (with its validated ``params``) to ``faces`` of ``planes``, in place."""
    if not faces:
        return
    planar = PLANAR.get(operator.name)
    if planar is not None:
        planar(planes, faces, params)
        return
    planes.put_bgr(operator.apply(planes.bgr(), faces, params).image)


__all__ = ["PLANAR", "apply_planes"]
