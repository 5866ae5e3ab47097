"""A video frame as the decoder's own I420 planes, with conversions to BGR for regions only.

:class:`Planes` is what :func:`~pipelines.media.video.transform_video_planes` hands its callback:
the luma plane ``y`` (``H x W``) and the chroma planes ``u``, ``v`` (``ceil(H/2) x ceil(W/2)``)
as writable numpy views, plus the colour description they are in (:class:`YuvMatrix`: BT.601,
BT.709 or BT.2020 coefficients, limited or full range). A callback that blurs, masks or pixelates
works on the planes directly (the chroma planes at half resolution); one that needs BGR pixels
converts only the rectangle it works on (:meth:`Planes.bgr` / :meth:`Planes.put_bgr`), with the
frame's own matrix and range, so a BT.709 clip keeps its colours.

The planes hold the encoder's even size (an odd picture is padded by one row or column, which
the transcoder fills by replication *after* the callback, from the processed picture); the
properties ``y``, ``u``, ``v`` show the picture itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, cast

import cv2
import numpy as np
from numpy.typing import NDArray

U8 = NDArray[np.uint8]
F32 = NDArray[np.float32]

# FFmpeg's AVColorSpace values for the matrices with their own coefficients.
_BT709: Final = 1
_BT2020: Final = frozenset({9, 10})
_KR_KB: Final = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722), "bt2020": (0.2627, 0.0593)}


@dataclass(frozen=True)
class YuvMatrix:
    """How Y'CbCr values map to R'G'B': the matrix (``bt601``, ``bt709``, ``bt2020``) and the
    range (limited: Y 16-235, chroma 16-240; full: 0-255)."""

    matrix: str = "bt601"
    full_range: bool = False

    @classmethod
    def of(cls, colorspace: int, full_range: bool) -> YuvMatrix:
        """From FFmpeg's ``AVColorSpace`` value (unspecified and unknown values are BT.601,
        FFmpeg's own default for SD and for untagged streams in swscale)."""
        if colorspace == _BT709:
            return cls("bt709", full_range)
        if colorspace in _BT2020:
            return cls("bt2020", full_range)
        return cls("bt601", full_range)

    @property
    def opencv(self) -> bool:
        """True when OpenCV's I420 conversions (BT.601, limited range) are exact for it."""
        return self.matrix == "bt601" and not self.full_range

    def forward(self) -> F32:
        """The 3x4 affine matrix from BGR (0-255) to ``(Y, Cb, Cr)`` codes."""
        kr, kb = _KR_KB[self.matrix]
        kg = 1.0 - kr - kb
        ys, cs, off = (255.0, 255.0, 0.0) if self.full_range else (219.0, 224.0, 16.0)
        luma = np.array([kb, kg, kr]) * ys / 255.0
        blue = (np.array([1.0, 0.0, 0.0]) - np.array([kb, kg, kr])) * 0.5 / (1.0 - kb)
        red = (np.array([0.0, 0.0, 1.0]) - np.array([kb, kg, kr])) * 0.5 / (1.0 - kr)
        m = np.zeros((3, 4), dtype=np.float64)
        m[0, :3], m[0, 3] = luma, off
        m[1, :3], m[1, 3] = blue * cs / 255.0, 128.0
        m[2, :3], m[2, 3] = red * cs / 255.0, 128.0
        return m.astype(np.float32)

    def inverse(self) -> F32:
        """The 3x4 affine matrix from ``(Y, Cb, Cr)`` codes to BGR (0-255)."""
        fwd = self.forward().astype(np.float64)
        inv = np.linalg.inv(fwd[:, :3])
        out = np.zeros((3, 4), dtype=np.float64)
        out[:, :3] = inv
        out[:, 3] = -inv @ fwd[:, 3]
        return out.astype(np.float32)

    def encode(self, bgr: tuple[int, int, int]) -> tuple[int, int, int]:
        """The ``(Y, Cb, Cr)`` codes of one BGR colour."""
        fwd = self.forward().astype(np.float64)
        yuv = fwd[:, :3] @ np.array(bgr, dtype=np.float64) + fwd[:, 3]
        y, u, v = (int(np.clip(round(float(c)), 0, 255)) for c in yuv)
        return y, u, v


def even_rect(
    x0: int, y0: int, x1: int, y1: int, width: int, height: int
) -> tuple[int, int, int, int]:
    """``x0, y0, x1, y1`` grown to even coordinates (whole chroma samples), clipped to
    ``width x height`` (even)."""
    return (
        max(0, x0 - x0 % 2),
        max(0, y0 - y0 % 2),
        min(width, x1 + x1 % 2),
        min(height, y1 + y1 % 2),
    )


@dataclass(frozen=True)
class Planes:
    """One frame's I420 planes (writable) and their colour description.

    ``luma``, ``cb``, ``cr`` are the encoder-sized planes (even width and height); ``width`` and
    ``height`` the picture's own size. Writes through :attr:`y`, :attr:`u`, :attr:`v` or
    :meth:`put_bgr` land in the frame that is encoded.
    """

    luma: U8
    cb: U8
    cr: U8
    width: int
    height: int
    colour: YuvMatrix

    @property
    def y(self) -> U8:
        """The luma plane of the picture (``height x width``)."""
        return self.luma[: self.height, : self.width]

    @property
    def u(self) -> U8:
        """The Cb plane (``ceil(height/2) x ceil(width/2)``)."""
        return self.cb[: (self.height + 1) // 2, : (self.width + 1) // 2]

    @property
    def v(self) -> U8:
        """The Cr plane (``ceil(height/2) x ceil(width/2)``)."""
        return self.cr[: (self.height + 1) // 2, : (self.width + 1) // 2]

    def rect(self, x0: int, y0: int, x1: int, y1: int) -> tuple[int, int, int, int]:
        """The even-aligned rectangle covering ``x0:x1, y0:y1`` (see :func:`even_rect`)."""
        return even_rect(x0, y0, x1, y1, self.luma.shape[1], self.luma.shape[0])

    def bgr(self, rect: tuple[int, int, int, int] | None = None) -> U8:
        """The BGR pixels of an even-aligned ``rect`` (``x0, y0, x1, y1``; the whole picture
        when ``None``), a new array in the frame's own matrix and range."""
        x0, y0, x1, y1 = rect if rect is not None else (0, 0, self.width, self.height)
        if rect is None:
            x1, y1 = x1 + x1 % 2, y1 + y1 % 2
        y = self.luma[y0:y1, x0:x1]
        u = self.cb[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2]
        v = self.cr[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2]
        out = yuv_to_bgr(y, u, v, self.colour)
        if rect is None and out.shape[:2] != (self.height, self.width):
            out = np.ascontiguousarray(out[: self.height, : self.width])
        return out

    def put_bgr(self, bgr: U8, rect: tuple[int, int, int, int] | None = None) -> None:
        """Write BGR pixels back into an even-aligned ``rect`` (the whole picture when
        ``None``; an odd-sized picture is padded by replication first)."""
        if rect is None:
            x0, y0 = 0, 0
            pad_h, pad_w = self.height % 2, self.width % 2
            if pad_h or pad_w:
                bgr = cast(U8, cv2.copyMakeBorder(bgr, 0, pad_h, 0, pad_w, cv2.BORDER_REPLICATE))
        else:
            x0, y0 = rect[0], rect[1]
        h, w = bgr.shape[:2]
        y, u, v = bgr_to_yuv(bgr, self.colour)
        self.luma[y0 : y0 + h, x0 : x0 + w] = y
        self.cb[y0 // 2 : (y0 + h) // 2, x0 // 2 : (x0 + w) // 2] = u
        self.cr[y0 // 2 : (y0 + h) // 2, x0 // 2 : (x0 + w) // 2] = v


def yuv_to_bgr(y: U8, u: U8, v: U8, colour: YuvMatrix) -> U8:
    """BGR of even-sized I420 planes (chroma upsampled by repetition, as OpenCV does)."""
    h, w = y.shape
    if colour.opencv:
        i420 = np.empty((h * 3 // 2, w), dtype=np.uint8)
        i420[:h] = y
        i420[h:].reshape(-1)[: u.size] = u.reshape(-1)
        i420[h:].reshape(-1)[u.size :] = v.reshape(-1)
        return cast(U8, cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420))
    up = (w, h)
    yuv = cv2.merge(
        [
            y.astype(np.float32),
            cv2.resize(u, up, interpolation=cv2.INTER_NEAREST).astype(np.float32),
            cv2.resize(v, up, interpolation=cv2.INTER_NEAREST).astype(np.float32),
        ]
    )
    bgr = cv2.transform(yuv, colour.inverse())
    return cast(U8, np.clip(np.rint(bgr), 0, 255).astype(np.uint8))


def bgr_to_yuv(bgr: U8, colour: YuvMatrix) -> tuple[U8, U8, U8]:
    """I420 planes of an even-sized BGR image (chroma: the mean of each 2x2 block)."""
    h, w = bgr.shape[:2]
    if colour.opencv:
        i420 = cast(U8, cv2.cvtColor(np.ascontiguousarray(bgr), cv2.COLOR_BGR2YUV_I420))
        chroma = i420[h:].reshape(-1)
        n = (h // 2) * (w // 2)
        return i420[:h], chroma[:n].reshape(h // 2, w // 2), chroma[n:].reshape(h // 2, w // 2)
    yuv = cv2.transform(bgr.astype(np.float32), colour.forward())
    y = np.clip(np.rint(yuv[:, :, 0]), 0, 255).astype(np.uint8)
    half = cast(F32, cv2.resize(yuv[:, :, 1:], (w // 2, h // 2), interpolation=cv2.INTER_AREA))
    u = np.clip(np.rint(half[:, :, 0]), 0, 255).astype(np.uint8)
    v = np.clip(np.rint(half[:, :, 1]), 0, 255).astype(np.uint8)
    return y, u, v


__all__ = ["Planes", "YuvMatrix", "bgr_to_yuv", "even_rect", "yuv_to_bgr"]
