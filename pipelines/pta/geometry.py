"""A face's own coordinate frame, head pose and aligned crops, from the five landmarks.

The *face frame* has its origin at the midpoint of the eyes, its ``u`` axis along the eye line
(towards the image-right eye) and its ``v`` axis perpendicular to it, pointing down the face
(towards the mouth). Coordinates in it are in *face units*: ``unit`` pixels, the larger of the
inter-ocular distance and ``0.42 * sqrt(box area)``, so a face turned sideways (whose eye distance
shrinks in the picture) keeps a sensible scale. On an upright frontal face the eyes are at
``(-0.5, 0)`` and ``(0.5, 0)``, the mouth corners near ``(+-0.4, 1.0)``, the top of the detector's
box near ``v = -1`` and its bottom near ``v = 1.7``.

Angles follow image coordinates (``y`` down): ``roll`` is the angle of the eye line from the
horizontal, positive when the image-right eye is lower (the head tilted clockwise as seen).
The pipelines of both products (PTA and AR) use this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, cast

import cv2
import numpy as np
from numpy.typing import NDArray

from pipelines.faces.detector import Face

Point = tuple[float, float]
F64 = NDArray[np.float64]

#: Face units per pixel of a face box's geometric-mean side (CenterFace boxes: about 2.4 eye
#: distances per side on frontal faces).
BOX_UNIT: Final = 0.42
#: Depth of the nose tip in front of the eyes, in eye distances (anthropometric average, about
#: 30 mm for a 63 mm eye distance); the yaw estimate scales with it.
NOSE_DEPTH: Final = 0.5


@dataclass(frozen=True)
class FaceFrame:
    """The face frame of one face (see the module docstring).

    ``origin``: eye midpoint (image pixels); ``angle``: eye line angle (radians, image
    coordinates); ``iod``: inter-ocular distance in pixels as seen; ``unit``: pixels per face
    unit.
    """

    origin: Point
    angle: float
    iod: float
    unit: float

    @classmethod
    def of(cls, face: Face) -> FaceFrame:
        """The frame of a detected face."""
        (lx, ly), (rx, ry) = face.landmarks[0], face.landmarks[1]
        dx, dy = rx - lx, ry - ly
        iod = math.hypot(dx, dy)
        angle = math.atan2(dy, dx) if iod > 0 else 0.0
        area = max(face.width, 1.0) * max(face.height, 1.0)
        unit = max(iod, BOX_UNIT * math.sqrt(area), 1.0)
        return cls(((lx + rx) / 2, (ly + ry) / 2), angle, iod, unit)

    @property
    def roll_deg(self) -> float:
        """Eye line angle in degrees; positive when the image-right eye is lower."""
        return math.degrees(self.angle)

    @property
    def axes(self) -> tuple[Point, Point]:
        """Unit vectors of ``u`` (along the eyes) and ``v`` (down the face), in image pixels."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        return (c, s), (-s, c)

    def to_image(self, u: float, v: float) -> Point:
        """Image pixel of the face-frame point ``(u, v)``."""
        (ux, uy), (vx, vy) = self.axes
        k = self.unit
        return (self.origin[0] + k * (u * ux + v * vx), self.origin[1] + k * (u * uy + v * vy))

    def to_face(self, x: float, y: float) -> Point:
        """Face-frame coordinates of the image pixel ``(x, y)``."""
        (ux, uy), (vx, vy) = self.axes
        dx, dy = x - self.origin[0], y - self.origin[1]
        return ((dx * ux + dy * uy) / self.unit, (dx * vx + dy * vy) / self.unit)

    def crop_matrix(self, centre: Point, side_units: float, size: int) -> F64:
        """2x3 affine matrix mapping image pixels to a ``size`` x ``size`` aligned crop.

        The crop is centred on the face-frame point ``centre``, spans ``side_units`` face units
        and is rotated so that the eye line is horizontal.
        """
        scale = size / (side_units * self.unit)
        cx, cy = self.to_image(*centre)
        c, s = math.cos(-self.angle) * scale, math.sin(-self.angle) * scale
        # p' = R(-angle) * scale * (p - centre) + size / 2
        return np.array(
            [
                [c, -s, size / 2 - (c * cx - s * cy)],
                [s, c, size / 2 - (s * cx + c * cy)],
            ],
            dtype=np.float64,
        )


def yaw_deg(face: Face, frame: FaceFrame) -> float:
    """Yaw estimate (degrees) from the nose tip's offset along the eye line.

    The nose tip sits ``NOSE_DEPTH`` eye distances in front of the eyes, so turning the head by
    ``yaw`` moves it sideways by ``NOSE_DEPTH * tan(yaw)`` eye distances as seen. Positive when
    the face turns towards the image's right. A coarse estimate: about +-10 degrees on frontal
    faces, unreliable beyond +-60 degrees (the far eye is hidden).
    """
    if frame.iod <= 0:
        return 0.0
    (ux, uy), _ = frame.axes
    nx, ny = face.landmarks[2]
    offset = ((nx - frame.origin[0]) * ux + (ny - frame.origin[1]) * uy) / frame.iod
    return math.degrees(math.atan2(offset, NOSE_DEPTH))


def landmarks_in_face_units(face: Face, frame: FaceFrame) -> F64:
    """The five landmarks as ``(5, 2)`` face-frame coordinates."""
    return np.array([frame.to_face(x, y) for x, y in face.landmarks], dtype=np.float64)


def apply_affine(matrix: F64, points: F64) -> F64:
    """Map ``(N, 2)`` points through a 2x3 affine matrix."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    out: F64 = pts @ matrix[:, :2].T + matrix[:, 2]
    return out


def warp_crop(image: NDArray[np.uint8], matrix: F64, size: int) -> NDArray[np.uint8]:
    """The ``size`` x ``size`` crop of ``image`` defined by ``matrix`` (image -> crop).

    When the crop shrinks the source by more than 2x, the region it covers is first reduced with
    area averaging (a plain bilinear warp would alias), so the cost depends on the crop, not on
    the image. Pixels outside the image are replicated from its border.
    """
    scale = math.hypot(matrix[0, 0], matrix[1, 0])
    src, m = image, matrix
    if scale < 0.5:
        inverse = cv2.invertAffineTransform(m)
        square = np.array([[0, 0], [size, 0], [0, size], [size, size]], dtype=np.float64)
        corners = apply_affine(inverse.astype(np.float64), square)
        height, width = image.shape[:2]
        x0 = max(math.floor(corners[:, 0].min()) - 2, 0)
        y0 = max(math.floor(corners[:, 1].min()) - 2, 0)
        x1 = min(math.ceil(corners[:, 0].max()) + 2, width)
        y1 = min(math.ceil(corners[:, 1].max()) + 2, height)
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            factor = min(1.0, 2.0 * scale)
            roi = image[y0:y1, x0:x1]
            out_w = max(1, round((x1 - x0) * factor))
            out_h = max(1, round((y1 - y0) * factor))
            src = cast(
                NDArray[np.uint8], cv2.resize(roi, (out_w, out_h), interpolation=cv2.INTER_AREA)
            )
            fx, fy = out_w / (x1 - x0), out_h / (y1 - y0)
            # crop = M * (roi_point / f + offset)
            pre = np.array([[1 / fx, 0, x0], [0, 1 / fy, y0], [0, 0, 1]], dtype=np.float64)
            m = matrix @ pre
    out = cv2.warpAffine(
        src, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return cast(NDArray[np.uint8], out)


__all__ = [
    "BOX_UNIT",
    "NOSE_DEPTH",
    "FaceFrame",
    "apply_affine",
    "landmarks_in_face_units",
    "warp_crop",
    "yaw_deg",
]
