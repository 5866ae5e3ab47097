"""Face alignment by landmarks: a similarity transform onto a canonical five-point template.

:func:`align_face` maps a face's five landmarks (left eye, right eye, nose tip, left and right
mouth corner) onto :data:`TEMPLATE_112` (the five-point template of the ArcFace/InsightFace
112x112 crops) scaled into a ``size x size`` crop with a margin, so the crop holds the whole face
with forehead, chin and cheeks: with the default margin of 1.8 the template's 112-pixel frame
covers ``1 / 1.8`` of the crop. The transform (rotation, uniform scale, translation) is the least
squares fit of Umeyama (1991), computed here so it is deterministic. :func:`paste_back` warps a
crop of the same geometry back into the image and composites it inside the face's dilated
ellipse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np
from numpy.typing import NDArray

from pipelines.deid.geometry import composite, ellipse_region
from pipelines.errors import BadParams
from pipelines.faces.detector import Face

F64 = NDArray[np.float64]

#: Five-point template (x, y) of the 112x112 ArcFace crop: eyes, nose tip, mouth corners.
TEMPLATE_112: Final = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
DEFAULT_SIZE: Final = 128
DEFAULT_MARGIN: Final = 1.8


@dataclass(frozen=True)
class AlignTransform:
    """The similarity transform from image pixels to crop pixels (a 2x3 matrix, row-major)."""

    matrix: tuple[float, float, float, float, float, float]
    size: int

    def as_array(self) -> F64:
        """The 2x3 matrix as an array."""
        return np.array(self.matrix, dtype=np.float64).reshape(2, 3)

    def inverse(self) -> F64:
        """The 2x3 matrix from crop pixels back to image pixels."""
        return np.asarray(cv2.invertAffineTransform(self.as_array()), dtype=np.float64)

    @property
    def scale(self) -> float:
        """Crop pixels per image pixel."""
        a, b = self.matrix[0], self.matrix[3]
        return float(np.hypot(a, b))


def template(size: int = DEFAULT_SIZE, margin: float = DEFAULT_MARGIN) -> F64:
    """The five template points in a ``size x size`` crop with ``margin``."""
    return (TEMPLATE_112 - 56.0) * (size / 112.0) / margin + size / 2.0


def similarity(src: F64, dst: F64) -> F64:
    """Least-squares similarity (Umeyama) mapping points ``src`` (N, 2) onto ``dst``: 2x3."""
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - mu_s, dst - mu_d
    var_s = float((s**2).sum() / len(src))
    if var_s <= 1e-12:
        raise BadParams("the face landmarks are degenerate")
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1.0
    rot = u @ sign @ vt
    scale = float(np.trace(np.diag(sig) @ sign) / var_s)
    t = mu_d - scale * rot @ mu_s
    out: F64 = np.hstack([scale * rot, t[:, None]])
    return out


def align_face(
    img: NDArray[np.uint8],
    face: Face,
    size: int = DEFAULT_SIZE,
    margin: float = DEFAULT_MARGIN,
) -> tuple[NDArray[np.uint8], AlignTransform]:
    """Crop ``face`` from ``img`` aligned to the canonical template: ``(crop, transform)``.

    The crop is ``size x size`` BGR; pixels outside the image are replicated from its border.
    """
    if len(face.landmarks) != 5:
        raise BadParams("alignment needs five landmarks")
    src = np.asarray(face.landmarks, dtype=np.float64)
    matrix = similarity(src, template(size, margin))
    crop = cv2.warpAffine(
        img, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    values = tuple(float(v) for v in matrix.reshape(-1))
    transform = AlignTransform(
        (values[0], values[1], values[2], values[3], values[4], values[5]), size
    )
    return np.asarray(crop, dtype=np.uint8), transform


def paste_back(
    img: NDArray[np.uint8],
    crop: NDArray[np.uint8],
    transform: AlignTransform,
    face: Face,
    dilation: float = 1.5,
) -> NDArray[np.uint8]:
    """A copy of ``img`` with ``crop`` warped back to ``face`` inside its dilated ellipse.

    Pixels of the ellipse that the crop does not cover (a face so close to the crop's edge that
    the template margin does not reach the ellipse) are filled with the crop's mean colour, so
    nothing of the original face survives there.
    """
    out = img.copy()
    paste_into(out, crop, transform, face, dilation)
    return out


def paste_into(
    out: NDArray[np.uint8],
    crop: NDArray[np.uint8],
    transform: AlignTransform,
    face: Face,
    dilation: float = 1.5,
) -> None:
    """:func:`paste_back` in place: modifies ``out``."""
    if crop.shape[:2] != (transform.size, transform.size):
        raise ValueError("the crop does not match the transform's size")
    region = ellipse_region(out.shape, face, dilation)
    if region.empty:
        return
    inverse = transform.inverse()
    # Warp only the region's rectangle: shift the inverse so the rectangle's corner is (0, 0).
    local = inverse.copy()
    local[:, 2] -= (region.x0, region.y0)
    width, height = region.x1 - region.x0, region.y1 - region.y0
    warped = cv2.warpAffine(crop, local, (width, height), flags=cv2.INTER_LINEAR)
    cover = cv2.warpAffine(
        np.full(crop.shape[:2], 255, np.uint8), local, (width, height), flags=cv2.INTER_NEAREST
    )
    patch = np.asarray(warped, dtype=np.uint8)
    uncovered = np.asarray(cover) == 0
    if uncovered.any():
        mean = crop.reshape(-1, crop.shape[2]).mean(axis=0)
        patch[uncovered] = np.round(mean).astype(np.uint8)
    composite(out, region, patch)


__all__ = [
    "DEFAULT_MARGIN",
    "DEFAULT_SIZE",
    "TEMPLATE_112",
    "AlignTransform",
    "align_face",
    "paste_back",
    "paste_into",
    "similarity",
    "template",
]
