"""Built-in effects, one per module; importing this package registers each of them."""

from pipelines.ar.effects import beautify, lut, reshape, sticker

__all__ = ["beautify", "lut", "reshape", "sticker"]
