"""Built-in effects, one per module; importing this package registers each of them."""

from pipelines.ar.effects import background, beautify, lut, makeup, reshape, sticker

__all__ = ["background", "beautify", "lut", "makeup", "reshape", "sticker"]
