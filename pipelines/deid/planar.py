"""De-identification operators on a video frame's I420 planes (no BGR round trip).

:func:`apply_planes` applies a registered operator to the faces of one
:class:`~pipelines.media.video.Planes` frame, in place. ``mask``, ``blur`` and ``pixelate`` have
per-plane variants here: the luma plane is treated as the operator treats a BGR image, and the
two chroma planes the same way at half resolution: the face is halved and the operator's own
rules applied to it (:func:`~pipelines.deid.operators.blur.sigma_for`,
:func:`~pipelines.deid.operators.pixelate.block_for`, the same dilated ellipse,
:func:`~pipelines.deid.geometry.ellipse_region`, computed once for both chroma planes), with the
same parameters. Only the face regions are read and written. A mask's colour is converted with
the frame's own matrix and range. Every other operator (``k_same``, ``landmarks_only``) runs on
the frame converted to BGR and back, exactly as on an image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from pipelines.deid.geometry import Region, composite, ellipse_region
from pipelines.deid.operators.blur import BlurParams, gaussian, sigma_for
from pipelines.deid.operators.mask import MaskParams
from pipelines.deid.operators.pixelate import PixelateParams, block_for, mosaic
from pipelines.deid.registry import Operator
from pipelines.faces.detector import Face
from pipelines.media.video.planes import Planes

U8 = NDArray[np.uint8]


def _half(face: Face) -> Face:
    """The face in chroma-plane coordinates (half the luma plane's)."""
    x1, y1, x2, y2 = face.box
    points = tuple((x / 2.0, y / 2.0) for x, y in face.landmarks)
    return replace(face, box=(x1 / 2.0, y1 / 2.0, x2 / 2.0, y2 / 2.0), landmarks=points)


def _regions(
    planes: Planes, face: Face, dilation: float, margin: Callable[[Face], float]
) -> list[tuple[tuple[U8, ...], Face, Region]]:
    """``(planes, face in their coordinates, region)`` for the luma plane, then for both chroma
    planes (one region: they have one size), the face's dilated ellipse with ``margin(face)``
    pixels of context; empty regions left out."""
    out: list[tuple[tuple[U8, ...], Face, Region]] = []
    for group, shaped in (((planes.y,), face), ((planes.u, planes.v), _half(face))):
        region = ellipse_region(group[0].shape, shaped, dilation, margin=margin(shaped))
        if not region.empty:
            out.append((group, shaped, region))
    return out


def _no_margin(face: Face) -> float:
    return 0.0


def _mask(planes: Planes, faces: Sequence[Face], params: MaskParams) -> None:
    luma, cb, cr = planes.colour.encode(params.color)
    codes = {1: (luma,), 2: (cb, cr)}
    for face in faces:
        for group, _, region in _regions(planes, face, params.dilation, _no_margin):
            solid = np.empty((region.y1 - region.y0, region.x1 - region.x0), np.uint8)
            for plane, code in zip(group, codes[len(group)], strict=True):
                solid.fill(code)
                composite(plane, region, solid)


def _filtered(
    planes: Planes,
    faces: Sequence[Face],
    dilation: float,
    margin: Callable[[Face], float],
    filter_: Callable[[U8, Face], U8],
) -> None:
    """Replace each face's ellipse on every plane by ``filter_(rectangle, face)`` of the
    *original* pixels (all patches are computed before any is written, so overlapping faces
    never filter a neighbour's result), with ``margin(face)`` pixels of context around it; the
    face is given in the plane's own coordinates, so the operator's rule (sigma, block size)
    applies to each plane as to an image."""
    patches = []
    for face in faces:
        for group, shaped, region in _regions(planes, face, dilation, margin):
            rows, cols = region.slices()
            for plane in group:
                rect = np.ascontiguousarray(plane[rows, cols])
                patches.append((plane, region, filter_(rect, shaped)))
    for plane, region, patch in patches:
        composite(plane, region, patch)


def _blur(planes: Planes, faces: Sequence[Face], params: BlurParams) -> None:
    # The blur operator's rule and context (sigma_for, 3 sigma), per plane.
    _filtered(
        planes,
        faces,
        params.dilation,
        lambda face: 3.0 * sigma_for(face, params),
        lambda rect, face: gaussian(rect, sigma_for(face, params)),
    )


def _pixelate(planes: Planes, faces: Sequence[Face], params: PixelateParams) -> None:
    # The pixelate operator's rule (block_for), per plane.
    _filtered(
        planes,
        faces,
        params.dilation,
        _no_margin,
        lambda rect, face: mosaic(rect, block_for(face, params)),
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
