"""Image decode/probe/encode against real codecs, with generated media only (all in memory)."""

from __future__ import annotations

import io
import os
import struct
import time
import zlib
from typing import Any

import cv2
import numpy as np
import pillow_heif
import pytest
from numpy.typing import NDArray
from PIL import Image, ImageCms, ImageOps

from pipelines.errors import (
    BadParams,
    CorruptMedia,
    NoFace,
    PipelineError,
    TooLarge,
    TooLong,
    UnsupportedFormat,
)
from pipelines.media import ImageInfo, ImageLimits, decode_image, encode_image, probe_image


def pil_bytes(im: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def heic_bytes(im: Image.Image, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    pillow_heif.from_pillow(im).save(buf, **kwargs)
    return buf.getvalue()


def marker_image(height: int = 60, width: int = 40) -> NDArray[np.uint8]:
    """RGB image, black, with a red block at the top-left and a green one at the bottom-left."""
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[:10, :10] = (255, 0, 0)
    rgb[-10:, :10] = (0, 255, 0)
    return rgb


def exif_with(**tags: Any) -> Image.Exif:
    exif = Image.Exif()
    names = {"orientation": 0x0112, "make": 0x010F, "model": 0x0110}
    for name, value in tags.items():
        exif[names[name]] = value
    return exif


def mean_abs(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# --- round trips per format ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "expected", "tolerance"),
    [("JPEG", "jpeg", 6.0), ("PNG", "png", 0.0), ("WEBP", "webp", 6.0), ("HEIF", "heif", 6.0)],
)
def test_round_trip_each_format(
    astronaut_bgr: NDArray[np.uint8], fmt: str, expected: str, tolerance: float
) -> None:
    rgb = np.ascontiguousarray(astronaut_bgr[:, :, ::-1])
    crop = Image.fromarray(rgb[:400, :300])  # not square, so width/height mix-ups show
    data = heic_bytes(crop, quality=90) if fmt == "HEIF" else pil_bytes(crop, fmt)

    info = probe_image(data)
    assert info == ImageInfo(format=expected, width=300, height=400, orientation=1)

    out = decode_image(data)
    assert out.dtype == np.uint8
    assert out.shape == (400, 300, 3)
    assert out.flags.c_contiguous
    assert mean_abs(out, astronaut_bgr[:400, :300]) <= tolerance


def test_probe_does_not_decode_pixels() -> None:
    # 50000 x 50000 RGB would need 7.5 GB to decode; probing must only read the header.
    data = bomb_png(50000, 50000)
    start = time.perf_counter()
    info = probe_image(data)
    assert time.perf_counter() - start < 0.5
    assert (info.format, info.width, info.height) == ("png", 50000, 50000)


# --- EXIF orientation ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow_reference(fmt: str, orientation: int) -> None:
    rgb = marker_image()
    lossless: dict[str, Any] = {"WEBP": {"lossless": True}, "JPEG": {"quality": 100}}
    data = pil_bytes(
        Image.fromarray(rgb), fmt, exif=exif_with(orientation=orientation), **lossless.get(fmt, {})
    )
    reference = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))

    out = decode_image(data)
    info = probe_image(data)
    assert out.shape == reference.shape
    assert (info.width, info.height) == (out.shape[1], out.shape[0])
    assert info.orientation == orientation
    assert mean_abs(out, np.ascontiguousarray(reference[:, :, ::-1])) < 2.0


def test_orientation_6_rotates_clockwise() -> None:
    # Independent of Pillow: orientation 6 means "rotate 90 degrees clockwise to display", so the
    # stored top-left (red) lands top-right and the stored bottom-left (green) top-left.
    data = pil_bytes(Image.fromarray(marker_image()), "PNG", exif=exif_with(orientation=6))
    out = decode_image(data)
    assert out.shape == (40, 60, 3)
    assert tuple(out[5, -5]) == (0, 0, 255)  # red, BGR
    assert tuple(out[5, 5]) == (0, 255, 0)  # green
    assert tuple(out[-5, -5]) == (0, 0, 0)


def test_heic_orientation_applied_once() -> None:
    # pillow-heif writes the EXIF orientation as an irot transform and keeps the EXIF tag too, as
    # phones do. libheif applies the transform; applying the EXIF tag again would rotate twice.
    im = Image.fromarray(marker_image())
    heif = pillow_heif.from_pillow(im)
    heif.info["exif"] = exif_with(orientation=6).tobytes()
    buf = io.BytesIO()
    heif.save(buf, quality=95)
    data = buf.getvalue()
    opened = pillow_heif.open_heif(io.BytesIO(data))
    assert any(t[0] == "irot" for t in opened[0]._c_image.transformations)

    reference = np.asarray(opened.to_pillow().convert("RGB"))[:, :, ::-1]
    out = decode_image(data)
    info = probe_image(data)
    assert out.shape == reference.shape
    assert (info.width, info.height) == (out.shape[1], out.shape[0])
    assert mean_abs(out, np.ascontiguousarray(reference)) < 2.0


def test_malformed_exif_is_ignored() -> None:
    rgb = marker_image()
    data = pil_bytes(Image.fromarray(rgb), "JPEG", quality=100, exif=b"Exif\x00\x00garbage!")
    out = decode_image(data)
    assert out.shape == (60, 40, 3)


# --- mode normalisation ----------------------------------------------------------------------


def test_grayscale_becomes_three_equal_channels() -> None:
    gray = np.tile(np.arange(256, dtype=np.uint8), (20, 1))
    for fmt in ("PNG", "JPEG"):
        out = decode_image(pil_bytes(Image.fromarray(gray, mode="L"), fmt))
        assert out.shape == (20, 256, 3)
        assert np.array_equal(out[:, :, 0], out[:, :, 1])
        assert np.array_equal(out[:, :, 1], out[:, :, 2])
        assert mean_abs(out[:, :, 0], gray) < 2.0


@pytest.mark.parametrize(("fmt", "extra"), [("PNG", {}), ("WEBP", {"lossless": True})])
def test_alpha_is_composited_on_white(fmt: str, extra: dict[str, Any]) -> None:
    rgba = np.zeros((10, 30, 4), np.uint8)
    rgba[:, :, :3] = (0, 0, 0)
    rgba[:, 0:10, 3] = 0  # transparent -> white
    rgba[:, 10:20, 3] = 255  # opaque black stays black
    rgba[:, 20:30, 3] = 128  # half -> mid grey
    out = decode_image(pil_bytes(Image.fromarray(rgba, mode="RGBA"), fmt, **extra))
    assert out.shape == (10, 30, 3)
    assert (out[:, 0:10] == 255).all()
    assert (out[:, 10:20] == 0).all()
    assert (np.abs(out[:, 20:30].astype(int) - 127) <= 1).all()

    if fmt != "PNG":
        return
    la = Image.fromarray(rgba[:, :, 3], mode="L").convert("LA")
    la.putalpha(Image.fromarray(rgba[:, :, 3]))
    out_la = decode_image(pil_bytes(la, "PNG"))
    assert (out_la[:, 0:10] == 255).all()


def test_palette_with_and_without_transparency() -> None:
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.paste(1, (4, 0, 8, 8))
    out = decode_image(pil_bytes(pal, "PNG"))
    assert tuple(out[0, 0]) == (0, 0, 255) and tuple(out[0, 7]) == (255, 0, 0)

    out_t = decode_image(pil_bytes(pal, "PNG", transparency=0))
    assert tuple(out_t[0, 0]) == (255, 255, 255) and tuple(out_t[0, 7]) == (255, 0, 0)


def test_sixteen_bit_png_scaled_to_eight_bit() -> None:
    gray16 = np.array([[0, 257 * 128, 65535, 65535]], dtype=np.uint16).repeat(4, axis=0)
    out = decode_image(pil_bytes(Image.fromarray(gray16), "PNG"))
    assert out.dtype == np.uint8
    assert out.shape == (4, 4, 3)
    assert list(out[0, :, 0]) == [0, 128, 255, 255]

    # 16-bit colour PNG written by OpenCV
    bgr16 = np.zeros((4, 4, 3), np.uint16)
    bgr16[:, :, 2] = 65535
    ok, enc = cv2.imencode(".png", bgr16)
    assert ok
    out_c = decode_image(enc.tobytes())
    assert out_c.dtype == np.uint8
    assert tuple(out_c[0, 0]) == (0, 0, 255)


def test_cmyk_jpeg_to_bgr() -> None:
    rgb = np.zeros((16, 32, 3), np.uint8)
    rgb[:, :16] = (255, 0, 0)
    rgb[:, 16:] = (0, 0, 255)
    cmyk = Image.fromarray(rgb).convert("CMYK")
    data = pil_bytes(cmyk, "JPEG", quality=100)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = decode_image(data)
    assert out.shape == (16, 32, 3)
    assert np.abs(out[8, 4].astype(int) - (0, 0, 255)).max() <= 8  # red
    assert np.abs(out[8, 28].astype(int) - (255, 0, 0)).max() <= 8  # blue


def test_animated_inputs_give_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    for fmt, extra in (("WEBP", {"lossless": True}), ("PNG", {})):
        data = pil_bytes(frames[0], fmt, save_all=True, append_images=frames[1:], **extra)
        assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
        out = decode_image(data)
        assert tuple(out[8, 8]) == (0, 0, 255), fmt


# --- limits ----------------------------------------------------------------------------------


def bomb_png(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose IHDR (with a correct CRC) claims ``width x height``."""
    data = bytearray(pil_bytes(Image.new("RGB", (1, 1)), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def bomb_jpeg(width: int, height: int) -> bytes:
    ok, enc = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    assert ok
    data = bytearray(enc.tobytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.mark.parametrize("bomb", [bomb_png(50000, 50000), bomb_jpeg(60000, 60000)])
def test_decompression_bomb_refused_before_decoding(bomb: bytes) -> None:
    start = time.perf_counter()
    with pytest.raises(TooLarge) as caught:
        decode_image(bomb)
    assert time.perf_counter() - start < 0.5
    assert caught.value.code == "too_large"


def test_pillow_global_bomb_limit_neither_used_nor_changed() -> None:
    before = Image.MAX_IMAGE_PIXELS
    # Over Pillow's own hard limit (2 x 89 MP): the refusal is our TooLarge, raised by our check
    # from the header, not Pillow's DecompressionBombError.
    with pytest.raises(TooLarge):
        decode_image(bomb_png(15000, 15000))
    assert before == Image.MAX_IMAGE_PIXELS


def test_limits_pixels_side_and_bytes() -> None:
    data = pil_bytes(Image.new("RGB", (600, 600)), "PNG")
    assert decode_image(data).shape == (600, 600, 3)
    with pytest.raises(TooLarge):
        decode_image(data, ImageLimits(max_pixels=100_000))
    with pytest.raises(TooLarge):
        decode_image(data, ImageLimits(max_side=599))
    with pytest.raises(TooLarge):
        decode_image(data, ImageLimits(max_bytes=len(data) - 1))
    # side limit on its own: 30000 x 10 is only 300k pixels
    with pytest.raises(TooLarge):
        decode_image(bomb_png(30000, 10))


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "HEIF"])
@pytest.mark.parametrize("keep", [0.5, 0.9, 40])
def test_truncated_is_corrupt(fmt: str, keep: float) -> None:
    rng = np.random.default_rng(3)
    im = Image.fromarray(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8))
    data = heic_bytes(im) if fmt == "HEIF" else pil_bytes(im, fmt)
    cut = int(keep) if keep > 1 else int(len(data) * keep)
    with pytest.raises(CorruptMedia) as caught:
        decode_image(data[:cut])
    assert caught.value.code == "corrupt_media"


def test_corrupted_jpeg_body_is_corrupt() -> None:
    data = bytearray(pil_bytes(Image.new("RGB", (64, 64), (10, 20, 30)), "JPEG"))
    sos = data.find(b"\xff\xda")
    data[sos + 2 :] = b"\xff\xd9"  # scan header destroyed, image ends immediately
    with pytest.raises(CorruptMedia):
        decode_image(bytes(data))


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"", "empty"),
        (os.urandom(4096).replace(b"\xff\xd8", b"xx"), "unrecognised"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
        (b"<svg width='10' height='10'></svg>", "SVG"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "PDF"),
        (b"BM" + bytes(60), "BMP"),
        (b"II*\x00" + bytes(60), "TIFF"),
        (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(40), "video"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + bytes(40), "AVIF"),
    ],
)
def test_unsupported_formats(payload: bytes, fragment: str) -> None:
    for call in (decode_image, probe_image):
        with pytest.raises(UnsupportedFormat) as caught:
            call(payload)
        assert caught.value.code == "unsupported_format"
        assert fragment in caught.value.message


def test_gif_is_unsupported() -> None:
    data = pil_bytes(Image.new("RGB", (8, 8), (255, 0, 0)), "GIF")
    with pytest.raises(UnsupportedFormat, match="GIF"):
        decode_image(data)


def test_format_is_sniffed_not_taken_from_a_name() -> None:
    # A PNG "named" .jpg is a PNG: the functions take bytes only, and sniff them.
    data = pil_bytes(Image.new("RGB", (5, 7)), "PNG")
    assert probe_image(data).format == "png"
    assert decode_image(data).shape == (7, 5, 3)


# --- encode: pixels only ---------------------------------------------------------------------


@pytest.mark.parametrize("out_fmt", ["jpeg", "png", "webp"])
def test_encode_strips_all_metadata(astronaut_bgr: NDArray[np.uint8], out_fmt: str) -> None:
    rgb = np.ascontiguousarray(astronaut_bgr[:128, :128, ::-1])
    exif = exif_with(make="SecretMakeXYZ", model="SecretModelXYZ", orientation=1)
    gps = exif.get_ifd(0x8825)
    gps[2] = (39.0, 54.0, 27.0)  # GPSLatitude
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">SecretXmpXYZ</x:xmpmeta>'
    source = pil_bytes(Image.fromarray(rgb), "JPEG", exif=exif, icc_profile=icc, xmp=xmp)
    opened = Image.open(io.BytesIO(source))
    assert "icc_profile" in opened.info and opened.getexif().get(0x010F) == "SecretMakeXYZ"
    assert b"SecretXmpXYZ" in source  # the input really carries all three

    out = encode_image(decode_image(source), out_fmt, quality=85)
    reopened = Image.open(io.BytesIO(out))
    assert reopened.format == {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}[out_fmt]
    assert not reopened.getexif()
    for key in ("exif", "icc_profile", "xmp", "XML:com.adobe.xmp"):
        assert key not in reopened.info
    for needle in (b"Secret", b"Exif\x00\x00", b"ICC_PROFILE", b"xmpmeta", b"iCCP", b"eXIf"):
        assert needle not in out
    assert decode_image(out).shape == (128, 128, 3)


def test_encode_quality_and_formats(astronaut_bgr: NDArray[np.uint8]) -> None:
    low = encode_image(astronaut_bgr, "jpeg", quality=20)
    high = encode_image(astronaut_bgr, "jpg", quality=95)
    assert len(low) < len(high)
    assert mean_abs(decode_image(high), astronaut_bgr) < 3.0
    png = encode_image(astronaut_bgr, "png")
    assert np.array_equal(decode_image(png), astronaut_bgr)
    gray = encode_image(astronaut_bgr[:, :, 0], "png")
    assert decode_image(gray).shape == (512, 512, 3)


def test_encode_rejects_bad_params(astronaut_bgr: NDArray[np.uint8]) -> None:
    with pytest.raises(BadParams):
        encode_image(astronaut_bgr, "gif")
    with pytest.raises(BadParams):
        encode_image(astronaut_bgr, "jpeg", quality=0)
    with pytest.raises(BadParams):
        encode_image(astronaut_bgr, "jpeg", quality=101)
    with pytest.raises(ValueError):
        encode_image(astronaut_bgr.astype(np.float32), "png")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        encode_image(np.zeros((4, 4, 4), np.uint8), "jpeg")


# --- error taxonomy --------------------------------------------------------------------------


def test_error_codes_are_stable() -> None:
    expected = {
        UnsupportedFormat: "unsupported_format",
        CorruptMedia: "corrupt_media",
        TooLarge: "too_large",
        TooLong: "too_long",
        NoFace: "no_face",
        BadParams: "bad_params",
    }
    for cls, code in expected.items():
        err = cls()
        assert isinstance(err, PipelineError)
        assert cls.code == err.code == code
        assert err.message and str(err) == err.message
        assert cls("custom").message == "custom"


# --- conversions in strips, truncated JPEG (issue 13, part 5) ------------------------------------

TALL = (160, 16_000)  # 2.56 million pixels: three strips of conversion


def _reference_bgr(im: Image.Image) -> NDArray[np.uint8]:
    """The whole-image conversion the strips must reproduce exactly."""
    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        rgba = np.asarray(im.convert("RGBA")).astype(np.uint32)
        alpha = rgba[:, :, 3:4]
        out = (rgba[:, :, :3] * alpha + 255 * (255 - alpha) + 127) // 255
        return np.ascontiguousarray(out.astype(np.uint8)[:, :, ::-1])
    if im.mode.startswith("I"):
        wide = np.clip(np.asarray(im).astype(np.int64), 0, 65535)
        grey = ((wide * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    return np.ascontiguousarray(np.asarray(im.convert("RGB"))[:, :, ::-1])


def _tall_image(mode: str) -> Image.Image:
    rng = np.random.default_rng(7)
    w, h = TALL
    if mode == "RGBA":
        return Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA")
    if mode == "LA":
        return Image.fromarray(rng.integers(0, 256, (h, w, 2), dtype=np.uint8), "LA")
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    if mode == "P":
        im = Image.fromarray(rng.integers(0, 16, (h, w), dtype=np.uint8), "L").convert("P")
        im.putpalette(list(rng.integers(0, 256, 48, dtype=np.uint8)))
        return im
    if mode in ("RGB", "L", "1"):
        return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
    raise ValueError(mode)


@pytest.mark.parametrize(
    ("mode", "save"),
    [
        ("RGBA", {}),
        ("LA", {}),
        ("I;16", {}),
        ("P", {"transparency": 3}),
        ("P", {}),
        ("RGB", {}),
        ("L", {}),
        ("1", {}),
    ],
)
def test_strip_conversion_equals_the_whole_image_conversion(
    mode: str, save: dict[str, Any]
) -> None:
    im = _tall_image(mode)
    data = pil_bytes(im, "PNG", **save)
    with Image.open(io.BytesIO(data)) as reference:
        expected = _reference_bgr(reference)
    out = decode_image(data)
    assert out.shape == (TALL[1], TALL[0], 3) and out.flags["C_CONTIGUOUS"]
    assert np.array_equal(out, expected)


def _astronaut_jpeg(mode: str = "RGB", **save: Any) -> bytes:
    from skimage import data

    return pil_bytes(Image.fromarray(data.astronaut()).convert(mode), "JPEG", quality=90, **save)


@pytest.mark.parametrize(
    ("mode", "save"),
    [("RGB", {}), ("RGB", {"progressive": True}), ("L", {}), ("CMYK", {})],
)
@pytest.mark.parametrize("keep", [0.5, 0.97])
def test_truncated_jpeg_with_an_end_marker_is_corrupt(
    mode: str, save: dict[str, Any], keep: float, capfd: pytest.CaptureFixture[str]
) -> None:
    """Cut, then EOI appended: libjpeg warns "premature end of data segment" and fills the rest
    with grey, which OpenCV (and Pillow, for CMYK) return as an image. Refused, and the warning
    is not left on stderr."""
    whole = _astronaut_jpeg(mode, **save)
    assert decode_image(whole).shape == (512, 512, 3)
    cut = whole[: int(len(whole) * keep)] + b"\xff\xd9"
    with pytest.raises(CorruptMedia, match="truncated"):
        decode_image(cut)
    with pytest.raises(CorruptMedia, match="truncated"):  # cut with no end marker at all
        decode_image(whole[: int(len(whole) * keep)])
    assert "Corrupt JPEG" not in capfd.readouterr().err


def test_jpeg_with_data_after_its_end_marker_still_decodes() -> None:
    """Motion photos and MPF files carry more data after EOI: the image itself is whole."""
    whole = _astronaut_jpeg()
    out = decode_image(whole + b"\x00" * 100 + b"ftypmp42" + os.urandom(2000))
    assert np.array_equal(out, decode_image(whole))


def test_other_stderr_output_during_a_jpeg_decode_is_passed_on(
    capfd: pytest.CaptureFixture[str],
) -> None:
    from pipelines.media.image import _libjpeg_warnings

    with _libjpeg_warnings() as warnings:
        os.write(2, b"Corrupt JPEG data: premature end of data segment\n")
        os.write(2, b"another thread's log line\n")
    assert b"premature end" in warnings()
    err = capfd.readouterr().err
    assert "another thread's log line" in err and "Corrupt JPEG" not in err


def test_memory_ceiling_is_set_lowered_only_and_restored() -> None:
    import resource

    from pipelines.media import memory_ceiling, set_memory_ceiling

    before = resource.getrlimit(resource.RLIMIT_DATA)
    with memory_ceiling(64 * 1024):  # 64 GiB: far above this process, below "unlimited"
        soft = resource.getrlimit(resource.RLIMIT_DATA)[0]
        assert soft == 64 * 1024 * 1024 * 1024 or before[0] <= 64 * 1024**3
        assert set_memory_ceiling(128 * 1024) is None  # never raised
        assert set_memory_ceiling(0) is None  # 0 = off
    assert resource.getrlimit(resource.RLIMIT_DATA) == before


def test_truncation_is_detected_in_a_process_without_stderr() -> None:
    """A daemon may run with descriptor 2 closed: decoding still works, still refuses a cut
    JPEG, and leaves descriptor 2 closed."""
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    code = textwrap.dedent(
        """
        import io, os
        from PIL import Image
        from pipelines.errors import CorruptMedia
        from pipelines.media.image import decode_image
        buf = io.BytesIO()
        Image.new("RGB", (256, 256), (10, 120, 200)).save(buf, "JPEG")
        whole = buf.getvalue()
        os.close(2)
        out = [str(decode_image(whole).shape)]
        try:
            decode_image(whole[: len(whole) // 2] + b"\\xff\\xd9")
            out.append("decoded")
        except CorruptMedia:
            out.append("corrupt")
        try:
            os.fstat(2)
            out.append("open")
        except OSError:
            out.append("closed")
        os.write(1, " ".join(out).encode())
        """
    )
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, timeout=60)
    assert proc.stdout.decode() == "(256, 256, 3) corrupt closed"
