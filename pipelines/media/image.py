"""Still images in and out, entirely in memory.

Accepted inputs are sniffed from their magic bytes (never from a file name; see
:mod:`pipelines.media.sniff`): JPEG, PNG, WebP and HEIC/HEIF. Everything else is refused with
:class:`~pipelines.errors.UnsupportedFormat`, including
GIF (animated, palette-limited, not what phones upload as a face photo), AVIF (the bundled libheif
has no AV1 decoder), SVG, PDF, BMP and TIFF.

Limits are checked from the header, before a single pixel is decoded: a decompression bomb is
refused with :class:`~pipelines.errors.TooLarge`, never decoded. Pillow's own global bomb check
(``Image.MAX_IMAGE_PIXELS``) is not consulted or changed: the format's plugin class is opened
directly, so the limits in force are exactly the :class:`ImageLimits` passed in.

Decoded images are always 8-bit BGR (``HxWx3`` ``uint8``, the OpenCV convention), with the EXIF
orientation applied. Pillow parses every header; pixels are decoded by Pillow (PNG, CMYK JPEG,
WebP with alpha or animation), pillow-heif (HEIF) or, for YCbCr and grayscale JPEG and opaque still
WebP, by OpenCV, which writes BGR directly (copying a 12 MP image out of Pillow costs as much as
decoding it).

Encoded images are re-encoded pixels only: no EXIF, GPS, XMP, ICC profile or maker note of an
input can reach an output. Nothing here writes a file.

Note: Pillow's process-wide ``ImageFile.LOAD_TRUNCATED_IMAGES`` must stay ``False`` (its default)
for truncated inputs to be refused.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import struct
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final, Literal, cast

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFile
from PIL.JpegImagePlugin import JpegImageFile
from PIL.PngImagePlugin import PngImageFile
from PIL.WebPImagePlugin import WebPImageFile

from pipelines.errors import BadParams, CorruptMedia, PipelineError, TooLarge
from pipelines.media.sniff import ImageFormat, sniff_image_format

OutputFormat = Literal["jpeg", "png", "webp"]

_EXIF_ORIENTATION: Final = 0x0112

# Exceptions Pillow and its plugins raise on malformed data.
_DECODE_ERRORS: Final = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    struct.error,
    RuntimeError,
)


@dataclass(frozen=True)
class ImageLimits:
    """Limits an input image must respect; checked from the header before decoding."""

    max_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_side: int = 20000
    # A progressive JPEG's scans each revisit every block: thousands of tiny scans make a
    # decompression bomb of CPU time (a 270 KB file took 23 s). Encoders write about 10.
    max_jpeg_scans: int = 100


@dataclass(frozen=True)
class ImageInfo:
    """What the header says about an image.

    ``width`` and ``height`` are those of the image as displayed, i.e. after the EXIF orientation
    is applied: the shape :func:`decode_image` returns is ``(height, width, 3)``. ``orientation``
    is the EXIF orientation (1-8) that will be applied; HEIF transforms are applied by libheif and
    always report 1.
    """

    format: str
    width: int
    height: int
    orientation: int = 1


def _open(data: bytes, fmt: ImageFormat) -> ImageFile.ImageFile:
    """Parse the header only (Pillow decodes lazily)."""
    fp = io.BytesIO(data)
    try:
        if fmt == "jpeg":
            return JpegImageFile(fp)
        if fmt == "png":
            return PngImageFile(fp)
        if fmt == "webp":
            return WebPImageFile(fp)
        # Imported on first use: no global opener registration, nothing at import time.
        from pillow_heif.as_plugin import HeifImageFile

        return cast(ImageFile.ImageFile, HeifImageFile(fp))
    except Image.DecompressionBombError as exc:
        raise TooLarge("the image dimensions exceed the limits") from exc
    except MemoryError as exc:
        raise TooLarge("the image is too large to decode") from exc
    except _DECODE_ERRORS as exc:
        raise CorruptMedia(f"the {_label(fmt)} header is corrupt or truncated") from exc


def _label(fmt: ImageFormat) -> str:
    return {"jpeg": "JPEG", "png": "PNG", "webp": "WebP", "heif": "HEIF"}[fmt]


def _orientation(im: Image.Image) -> int:
    """EXIF orientation from the already-parsed metadata (never triggers a pixel decode)."""
    raw = im.info.get("exif")
    if not raw or not isinstance(raw, bytes | bytearray):
        return 1
    try:
        exif = Image.Exif()
        exif.load(bytes(raw))
        value = exif.get(_EXIF_ORIENTATION, 1)
    except Exception:  # malformed metadata is discarded anyway; it must not fail the decode
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _png_exif_chunk(data: bytes) -> bytes | None:
    """Find an ``eXIf`` chunk anywhere in a PNG by walking chunk headers (no decompression)."""
    pos = 8
    end = len(data)
    while pos + 8 <= end:
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind == b"eXIf":
            return bytes(data[pos + 8 : pos + 8 + length])
        if kind == b"IEND":
            break
        pos += 12 + length
    return None


def _check_limits(width: int, height: int, nbytes: int, limits: ImageLimits) -> None:
    if nbytes > limits.max_bytes:
        raise TooLarge(f"the image is larger than {limits.max_bytes} bytes")
    if width <= 0 or height <= 0:
        raise CorruptMedia("the image header declares an empty image")
    if max(width, height) > limits.max_side:
        raise TooLarge(f"the image is wider or taller than {limits.max_side} pixels")
    if width * height > limits.max_pixels:
        raise TooLarge(f"the image has more than {limits.max_pixels} pixels")


def _jpeg_scans(data: bytes, limit: int) -> int:
    """The JPEG's scan count (see :func:`_jpeg_walk`)."""
    return _jpeg_walk(data, limit)[0]


def _jpeg_walk(data: bytes, limit: int) -> tuple[int, bool]:
    """Count the JPEG's scans (SOS markers) by walking its segments, skipping entropy-coded data
    (where 0xFF is always stuffed or a restart marker); stops counting past ``limit``. Also says
    whether the walk reached the EOI marker (a file cut short never does)."""
    n, pos, scans = len(data), 2, 0
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            pos = data.find(b"\xff", pos)
            if pos < 0:
                break
            continue
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x00, 0x01) or 0xD0 <= marker <= 0xD7:  # stuffing, TEM, RSTn
            pos += 2
            continue
        if marker == 0xD9:  # EOI
            return scans, True
        if marker == 0xDA:
            scans += 1
            if scans > limit:
                break
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    # Fewer than 4 bytes left (or none: the walk ran past the end, or found no marker).
    return scans, pos >= 0 and b"\xff\xd9" in data[pos:]


def probe_image(data: bytes) -> ImageInfo:
    """Read format and displayed dimensions from the header, without decoding any pixels.

    Raises :class:`UnsupportedFormat` or :class:`CorruptMedia`. No limits are applied here.
    """
    fmt = sniff_image_format(data)
    with _open(data, fmt) as im:
        width, height = im.size
        if fmt == "png" and "exif" not in im.info:
            exif = _png_exif_chunk(data)
            if exif is not None:
                im.info["exif"] = exif
        orientation = _orientation(im)
    if orientation >= 5:
        width, height = height, width
    return ImageInfo(format=fmt, width=width, height=height, orientation=orientation)


def decode_image(data: bytes, limits: ImageLimits = ImageLimits()) -> NDArray[np.uint8]:
    """Decode an image from bytes to an 8-bit BGR array (``HxWx3``, ``uint8``).

    The byte size, the pixel count and the longest side are checked against ``limits`` from the
    header before anything is decoded (:class:`TooLarge`). EXIF orientation is applied. Grayscale,
    16-bit, palette, CMYK and other modes are converted to 8-bit BGR; transparency is composited
    on white. Animated or multi-image inputs give their first (primary) image. Truncated or
    malformed data raises :class:`CorruptMedia`; other formats :class:`UnsupportedFormat`.
    """
    if len(data) > limits.max_bytes:
        raise TooLarge(f"the image is larger than {limits.max_bytes} bytes")
    fmt = sniff_image_format(data)
    # Pillow's decoded image is released when this returns, before the rotation's copy.
    bgr, orientation = _decode_upright_pending(data, fmt, limits)
    try:
        return _apply_orientation(bgr, orientation)
    except MemoryError as exc:
        raise TooLarge("the image is too large to decode") from exc


def _decode_upright_pending(
    data: bytes, fmt: ImageFormat, limits: ImageLimits
) -> tuple[NDArray[np.uint8], int]:
    """The decoded BGR pixels (orientation not yet applied) and the EXIF orientation."""
    with _open(data, fmt) as im:
        _check_limits(im.size[0], im.size[1], len(data), limits)
        if fmt == "jpeg":
            scans, ended = _jpeg_walk(data, limits.max_jpeg_scans)
            if scans > limits.max_jpeg_scans:
                raise TooLarge(f"the JPEG has more than {limits.max_jpeg_scans} scans")
            if not ended:
                raise CorruptMedia("the JPEG data is truncated (no end-of-image marker)")
        try:
            if _opencv_decodes(fmt, im):
                bgr = _decode_with_opencv(data, fmt)
            else:
                if fmt == "jpeg":  # CMYK/YCCK: Pillow decodes, libjpeg checks the data first
                    _check_jpeg_data(data)
                im.load()
                bgr = _to_bgr(im)
        except MemoryError as exc:
            raise TooLarge("the image is too large to decode") from exc
        except cv2.error as exc:
            raise _cv2_failure(exc, fmt) from exc
        except _DECODE_ERRORS as exc:
            raise CorruptMedia(f"the {_label(fmt)} data is corrupt or truncated") from exc
        return bgr, _orientation(im)


def _opencv_decodes(fmt: ImageFormat, im: ImageFile.ImageFile) -> bool:
    """Whether OpenCV decodes the pixels: YCbCr/grayscale JPEG, opaque still WebP."""
    if fmt == "jpeg":
        return im.mode in ("RGB", "L")
    if fmt == "webp":
        return im.mode == "RGB" and not getattr(im, "is_animated", False)
    return False


def _decode_with_opencv(data: bytes, fmt: ImageFormat) -> NDArray[np.uint8]:
    """Decode straight to BGR with OpenCV (orientation not applied).

    Pillow decodes as fast, but copying its pixels out to numpy costs as much again; OpenCV
    writes BGR directly. OpenCV refuses truncated JPEG and WebP (it returns no image), as Pillow
    does. Only called after Pillow parsed the header and the limits were checked.
    """
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    buf = np.frombuffer(data, np.uint8)
    try:
        if fmt == "jpeg":
            with _libjpeg_warnings() as warnings:
                out = cv2.imdecode(buf, flags)
            if _TRUNCATED_JPEG.search(warnings()):
                raise CorruptMedia("the JPEG data is truncated (premature end of data)")
        else:
            out = cv2.imdecode(buf, flags)
    except cv2.error as exc:
        raise _cv2_failure(exc, fmt) from exc
    if out is None or out.ndim != 3 or out.shape[2] != 3:
        raise CorruptMedia(f"the {_label(fmt)} data is corrupt or truncated")
    return cast(NDArray[np.uint8], out)


def _cv2_failure(exc: cv2.error, fmt: ImageFormat) -> PipelineError:
    """OpenCV's out-of-memory error (past the memory ceiling) is too_large; others corrupt."""
    if "Insufficient memory" in str(exc):
        return TooLarge("the image is too large to decode")
    return CorruptMedia(f"the {_label(fmt)} data is corrupt or truncated")


def _check_jpeg_data(data: bytes) -> None:
    """Run libjpeg over the whole entropy-coded data at 1/8 scale (a few MB at most) and refuse
    a file its warnings call truncated: Pillow decodes such a file silently."""
    flags = cv2.IMREAD_REDUCED_GRAYSCALE_8 | cv2.IMREAD_IGNORE_ORIENTATION
    with _libjpeg_warnings() as warnings:
        out = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if out is None or _TRUNCATED_JPEG.search(warnings()):
        raise CorruptMedia("the JPEG data is truncated (premature end of data)")


# libjpeg's warnings for data that ends before the image does (JWRN_HIT_MARKER, JWRN_JPEG_EOF).
# It decodes on, filling the rest with grey; OpenCV returns that image without a word.
_TRUNCATED_JPEG: Final = re.compile(
    rb"premature end of data segment|premature end of jpeg file", re.IGNORECASE
)
_STDERR_LOCK: Final = threading.Lock()


@contextlib.contextmanager
def _libjpeg_warnings() -> Iterator[Callable[[], bytes]]:
    """Collect what native code writes to file descriptor 2 during the block.

    libjpeg (inside OpenCV) reports a truncated file only as a warning line on ``stderr``, and
    OpenCV exposes no other signal. The descriptor is pointed at an in-memory file for the block
    (one block at a time in the process); afterwards every line that is not a libjpeg
    "Corrupt JPEG data"/"Premature end" warning is written on to the real ``stderr``, so other
    threads' output is delayed, never lost.
    """
    captured = b""
    with _STDERR_LOCK:
        if sys.stderr is not None:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
        try:
            saved: int | None = os.dup(2)
        except OSError:  # no descriptor 2 at all: use one for the block, close it after
            saved = None
        sink = _memory_file()
        if sink == 2:  # descriptor 2 was free and the in-memory file took it: keep our own
            sink = os.dup(2)
        try:
            os.dup2(sink, 2)
            try:
                yield lambda: captured
            finally:
                if saved is None:
                    os.close(2)
                else:
                    os.dup2(saved, 2)
                os.lseek(sink, 0, os.SEEK_SET)
                chunks = []
                while chunk := os.read(sink, 1 << 16):
                    chunks.append(chunk)
                captured = b"".join(chunks)
        finally:
            os.close(sink)
            if saved is not None:
                os.close(saved)
    others = b"".join(
        line for line in captured.splitlines(keepends=True) if not _LIBJPEG_LINE.match(line)
    )
    if others and saved is not None:
        with contextlib.suppress(OSError):
            os.write(2, others)


_LIBJPEG_LINE: Final = re.compile(rb"(corrupt jpeg data|premature end of jpeg file)", re.I)


def _memory_file() -> int:
    """A file descriptor of an anonymous in-memory file (a deleted temporary file elsewhere)."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("facemedia-libjpeg", os.MFD_CLOEXEC)
    handle = tempfile.TemporaryFile()  # noqa: SIM115 - the descriptor outlives the object
    fd = os.dup(handle.fileno())
    handle.close()
    return fd


# Pixels converted per strip of rows: the temporaries of a conversion (a strip's RGBA copy, its
# 16-bit products) stay a few MB whatever the image size.
_STRIP_PIXELS: Final = 1 << 20
_ALPHA_MODES: Final = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})

_StripFn = Callable[[Image.Image, NDArray[np.uint8]], None]


def _to_bgr(im: Image.Image) -> NDArray[np.uint8]:
    """Normalise any Pillow mode to a contiguous 8-bit BGR array, one strip of rows at a time.

    The output is allocated once and each strip is converted into its rows, so the peak is
    Pillow's decoded image (at most 4 bytes a pixel: RGBA, or RGB padded to 4) plus the output
    (3 bytes a pixel) plus one strip's temporaries: about 2.3x the output, where converting the
    whole image at once (a float or 16-bit copy of every channel) peaked at 10x.
    """
    width, height = im.size
    out = np.empty((height, width, 3), np.uint8)
    convert = _strip_converter(im)
    rows = max(1, _STRIP_PIXELS // max(1, width))
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        strip = im if (top == 0 and bottom == height) else im.crop((0, top, width, bottom))
        convert(strip, out[top:bottom])
    return out


def _strip_converter(im: Image.Image) -> _StripFn:
    """The conversion of one strip of ``im``'s mode into BGR rows."""
    mode = im.mode
    if mode in _ALPHA_MODES or ("transparency" in im.info and mode in ("P", "L", "RGB")):
        return _composite_strip
    if mode == "RGB":
        return _rgb_strip
    if mode == "L":
        return _grey_strip
    if mode.startswith("I"):  # 16-bit (I;16, I;16B, ...) or 32-bit integer grayscale
        return _wide_grey_strip
    if mode == "1":
        return lambda strip, dst: _grey_strip(strip.convert("L"), dst)
    # CMYK, YCbCr, LAB, HSV, P without transparency, F, ...
    return lambda strip, dst: _rgb_strip(strip.convert("RGB"), dst)


def _rgb_strip(strip: Image.Image, dst: NDArray[np.uint8]) -> None:
    cv2.cvtColor(np.asarray(strip), cv2.COLOR_RGB2BGR, dst=dst)


def _grey_strip(strip: Image.Image, dst: NDArray[np.uint8]) -> None:
    cv2.cvtColor(np.asarray(strip), cv2.COLOR_GRAY2BGR, dst=dst)


def _wide_grey_strip(strip: Image.Image, dst: NDArray[np.uint8]) -> None:
    """16- or 32-bit grey to 8 bits, rounded: ``(v * 255 + 32767) // 65535`` over [0, 65535]."""
    wide = np.asarray(strip)
    if wide.dtype != np.uint16:
        wide = np.clip(wide, 0, 65535)
    scaled = wide.astype(np.uint32)
    scaled *= 255
    scaled += 32767
    scaled //= 65535
    cv2.cvtColor(scaled.astype(np.uint8), cv2.COLOR_GRAY2BGR, dst=dst)


def _composite_strip(strip: Image.Image, dst: NDArray[np.uint8]) -> None:
    rgba = np.asarray(strip if strip.mode == "RGBA" else strip.convert("RGBA"))
    _composite_on_white(rgba, dst)


def _composite_on_white(rgba: NDArray[np.uint8], dst: NDArray[np.uint8]) -> None:
    """Composite RGBA on white into ``dst`` (BGR): ``round(c * a / 255) + (255 - a)``.

    Equal to ``(c*a + 255*(255-a) + 127) // 255`` for every ``c`` and ``a`` (``c*a/255`` is never
    a half, so rounding has no ties), done by OpenCV in 8 bits: no 16-bit copy of the strip.
    """
    bgr = cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGR)
    alpha = rgba[:, :, 3]
    alpha3 = cv2.merge((alpha, alpha, alpha))
    cv2.multiply(bgr, alpha3, dst=bgr, scale=1 / 255)
    cv2.add(bgr, cv2.bitwise_not(alpha3), dst=dst)


def _apply_orientation(img: NDArray[np.uint8], orientation: int) -> NDArray[np.uint8]:
    """Apply an EXIF orientation (same result as ``PIL.ImageOps.exif_transpose``)."""
    if orientation == 2:
        out = cv2.flip(img, 1)
    elif orientation == 3:
        out = cv2.rotate(img, cv2.ROTATE_180)
    elif orientation == 4:
        out = cv2.flip(img, 0)
    elif orientation == 5:
        out = cv2.transpose(img)
    elif orientation == 6:
        out = cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE)
    elif orientation == 7:
        out = cv2.rotate(cv2.transpose(img), cv2.ROTATE_180)
    elif orientation == 8:
        out = cv2.rotate(img, cv2.ROTATE_90_COUNTERCLOCKWISE)
    else:
        return img
    return cast(NDArray[np.uint8], out)


_ENCODE_EXT: Final[dict[str, str]] = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png", "webp": ".webp"}


def encode_image(img: NDArray[np.uint8], fmt: str = "jpeg", quality: int = 90) -> bytes:
    """Encode a BGR (or grayscale, or BGRA for PNG/WebP) ``uint8`` array to bytes.

    Only pixels are written: the output carries no EXIF, GPS, XMP, ICC profile or maker note.
    ``fmt`` is ``"jpeg"`` (or ``"jpg"``), ``"png"`` or ``"webp"``; ``quality`` (1-100) applies
    to JPEG and WebP. An unknown format or quality raises :class:`BadParams`; an array that is
    not an image raises :class:`ValueError` (a programming error, not a user error).
    """
    key = fmt.lower()
    ext = _ENCODE_EXT.get(key)
    if ext is None:
        raise BadParams("the output image format must be jpeg, png or webp")
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise BadParams("the output image quality must be an integer from 1 to 100")
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
        raise ValueError("encode_image expects a uint8 numpy array")
    channels = 1 if img.ndim == 2 else (img.shape[2] if img.ndim == 3 else 0)
    if channels not in (1, 3, 4) or img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"encode_image expects HxW, HxWx3 or HxWx4, got shape {img.shape}")
    if channels == 4 and ext == ".jpg":
        raise ValueError("JPEG has no alpha channel; pass a BGR image")
    if ext == ".jpg":
        params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    elif ext == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, quality]
    else:
        params = [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(img), params)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {key}")
    return bytes(buf.tobytes())


__all__ = [
    "ImageInfo",
    "ImageLimits",
    "OutputFormat",
    "decode_image",
    "encode_image",
    "probe_image",
]
