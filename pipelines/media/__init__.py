"""Media input and output: decoding and encoding in memory, with limits checked up front."""

from pipelines.media.image import (
    ImageFormat,
    ImageInfo,
    ImageLimits,
    OutputFormat,
    decode_image,
    encode_image,
    probe_image,
    sniff_image_format,
)

__all__ = [
    "ImageFormat",
    "ImageInfo",
    "ImageLimits",
    "OutputFormat",
    "decode_image",
    "encode_image",
    "probe_image",
    "sniff_image_format",
]
