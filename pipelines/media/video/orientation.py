"""Display orientation: the upright transform for a frame's display matrix (the eight symmetries
of a rectangle, the same choices as FFmpeg's ``autorotate``)."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

import cv2
import numpy as np
from av.sidedata.sidedata import Type as SideDataType
from av.video.frame import VideoFrame
from numpy.typing import NDArray


@dataclass(frozen=True)
class _Orientation:
    """How to make a decoded picture upright: one of the eight symmetries of a rectangle."""

    op: Literal["none", "cw", "ccw", "180", "hflip", "vflip", "transpose", "antitranspose"]
    rotation: int  # clockwise quarter turn reported in VideoInfo

    @property
    def swaps(self) -> bool:
        return self.op in ("cw", "ccw", "transpose", "antitranspose")

    def apply(self, img: NDArray[np.uint8]) -> NDArray[np.uint8]:
        op = self.op
        if op == "none":
            return img
        if op == "cw":
            out = cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE)
        elif op == "ccw":
            out = cv2.rotate(img, cv2.ROTATE_90_COUNTERCLOCKWISE)
        elif op == "180":
            out = cv2.rotate(img, cv2.ROTATE_180)
        elif op == "hflip":
            out = cv2.flip(img, 1)
        elif op == "vflip":
            out = cv2.flip(img, 0)
        elif op == "transpose":
            out = cv2.transpose(img)
        else:  # antitranspose: rotate clockwise, then flip vertically
            out = cv2.flip(cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE), 0)
        return cast(NDArray[np.uint8], out)


_UPRIGHT: Final = _Orientation("none", 0)


def _display_matrix(frame: VideoFrame) -> tuple[int, ...] | None:
    side_data = cast(Any, frame.side_data)
    for item in side_data:
        if item.type == SideDataType.DISPLAYMATRIX:
            raw = bytes(item)
            if len(raw) >= 36:
                return cast(tuple[int, ...], struct.unpack("=9i", raw[:36]))
    return None


def _orientation(matrix: tuple[int, ...] | None) -> _Orientation:
    """The upright transform for an FFmpeg display matrix (same decisions as ``autorotate``).

    The matrix's rotation (``av_display_rotation_get``) is counter-clockwise; its negation,
    normalised to [0, 360), is the clockwise turn to apply. The signs of entries 0, 3, 4 tell a
    mirrored matrix from a plain rotation, as in FFmpeg's ``fftools`` filter setup.
    """
    if matrix is None:
        return _UPRIGHT
    a, b, c, d = (v / 65536.0 for v in (matrix[0], matrix[1], matrix[3], matrix[4]))
    scale0 = math.hypot(a, c)
    scale1 = math.hypot(b, d)
    if scale0 == 0.0 or scale1 == 0.0:
        return _UPRIGHT
    ccw = -math.degrees(math.atan2(b / scale1, a / scale0))
    theta = round(-ccw / 90.0) * 90 % 360  # clockwise, snapped to a quarter turn
    if theta == 90:
        return _Orientation("transpose" if matrix[3] > 0 else "cw", 90)
    if theta == 180:
        if matrix[0] < 0 and matrix[4] < 0:
            return _Orientation("180", 180)
        if matrix[0] < 0:
            return _Orientation("hflip", 0)
        if matrix[4] < 0:
            return _Orientation("vflip", 0)
        return _Orientation("180", 180)
    if theta == 270:
        return _Orientation("antitranspose" if matrix[3] < 0 else "ccw", 270)
    if matrix[4] < 0:
        return _Orientation("vflip", 0)
    return _UPRIGHT
