"""Format sniffing: what the bytes are, from their magic (never from a file name).

The one place that knows the magic numbers and the ISO-BMFF brand tables. Images: JPEG, PNG, WebP
and HEIF (:func:`sniff_image_format`). Videos: ISO-BMFF (``ftyp``: MP4, MOV/QuickTime) and EBML
(``1A45DFA3``: WebM, Matroska) (:func:`sniff_video_container`). :func:`media_kind` tells an image
from a video, as the AR pipeline and research sampling need. Everything else is refused with
:class:`~pipelines.errors.UnsupportedFormat`, whose message names the kind of file when it is a
common one (GIF, PDF, SVG, BMP, TIFF, AVIF, a video where an image was expected).

Pure Python over the first bytes; imports nothing heavier than the error types.
"""

from __future__ import annotations

from typing import Final, Literal

from pipelines.errors import UnsupportedFormat

ImageFormat = Literal["jpeg", "png", "webp", "heif"]
ContainerKind = Literal["mp4", "mov", "webm", "matroska"]
MediaKind = Literal["image", "video"]

# ISO-BMFF brands: HEVC-coded HEIF (what phones write) and the generic HEIF brands.
HEVC_BRANDS: Final = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"}
)
GENERIC_HEIF_BRANDS: Final = frozenset({b"mif1", b"msf1"})
AVIF_BRANDS: Final = frozenset({b"avif", b"avis"})
#: Brands of still images (HEIF, AVIF, JPEG in HEIF): a file whose major brand is one of these is
#: not a video.
STILL_IMAGE_BRANDS: Final = HEVC_BRANDS | GENERIC_HEIF_BRANDS | AVIF_BRANDS | {b"jpeg"}
#: Brands of MP4/MOV/3GP movies: a file carrying one (and no image brand) is not an image.
VIDEO_BRANDS: Final = frozenset(
    {
        b"isom",
        b"iso2",
        b"iso4",
        b"iso5",
        b"iso6",
        b"mp41",
        b"mp42",
        b"avc1",
        b"qt  ",
        b"M4V ",
        b"3gp4",
        b"3gp5",
        b"3gp6",
        b"dash",
    }
)

_EBML_MAGIC: Final = b"\x1a\x45\xdf\xa3"


def sniff_image_format(data: bytes) -> ImageFormat:
    """Return the image format of ``data`` from its magic bytes.

    Raises :class:`UnsupportedFormat` for anything that is not JPEG, PNG, WebP or HEIF.
    """
    head = bytes(data[:64])
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp":
        return _sniff_bmff(head)
    raise UnsupportedFormat(_describe_unsupported(head))


def _sniff_bmff(head: bytes) -> ImageFormat:
    box_size = int.from_bytes(head[0:4], "big")
    end = min(max(box_size, 16), len(head))
    brands = {head[8:12]} | {head[i : i + 4] for i in range(16, end - 3, 4)}
    if brands & HEVC_BRANDS:
        return "heif"
    if brands & AVIF_BRANDS:
        raise UnsupportedFormat("AVIF images are not supported")
    if brands & GENERIC_HEIF_BRANDS:
        return "heif"
    if brands & VIDEO_BRANDS:
        raise UnsupportedFormat("the input is a video, not an image")
    raise UnsupportedFormat("unrecognised ISO media file")


def _describe_unsupported(head: bytes) -> str:
    if not head:
        return "the input is empty"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF images are not supported"
    if head.startswith(b"%PDF"):
        return "PDF documents are not supported"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<?xml", b"<svg", b"<!doctype svg", b"<!--")):
        return "SVG and XML documents are not supported"
    if head.startswith(b"BM"):
        return "BMP images are not supported"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF images are not supported"
    return "unrecognised image format"


def sniff_video_container(data: bytes) -> ContainerKind:
    """The container of ``data`` from its magic bytes; :class:`UnsupportedFormat` otherwise."""
    if len(data) >= 12 and data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in STILL_IMAGE_BRANDS:
            raise UnsupportedFormat("the file is a still image, not a video")
        return "mov" if brand == b"qt  " else "mp4"
    if data[:4] == _EBML_MAGIC:
        # The EBML header's DocType element (ID 0x4282) names the flavour.
        head = data[:64]
        at = head.find(b"\x42\x82")
        if at >= 0 and head[at + 3 : at + 7] == b"webm":
            return "webm"
        return "matroska"
    raise UnsupportedFormat("the media is not an MP4, MOV, WebM or Matroska video")


def media_kind(data: bytes) -> MediaKind:
    """``image`` or ``video``, sniffed from the magic bytes (an image first: a HEIF photo is
    ISO-BMFF too); :class:`UnsupportedFormat` for anything else."""
    try:
        sniff_image_format(data)
        return "image"
    except UnsupportedFormat:
        pass
    try:
        sniff_video_container(data)
    except UnsupportedFormat:
        raise UnsupportedFormat(
            "the media is neither a JPEG, PNG, WebP or HEIF image nor an MP4, MOV or WebM video"
        ) from None
    return "video"


__all__ = [
    "AVIF_BRANDS",
    "GENERIC_HEIF_BRANDS",
    "HEVC_BRANDS",
    "STILL_IMAGE_BRANDS",
    "VIDEO_BRANDS",
    "ContainerKind",
    "ImageFormat",
    "MediaKind",
    "media_kind",
    "sniff_image_format",
    "sniff_video_container",
]
