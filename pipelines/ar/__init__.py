"""AR: face effects (background, beautify, lut, makeup, reshape, sticker) chained on photos and
videos; the face effects work on the 468-point face mesh."""

from pipelines.ar.base import Effect, Target, effect_names, get_effect, register
from pipelines.ar.chain import MAX_EFFECTS, EffectChain, Step, parse_chain
from pipelines.ar.cube import Lut3D, parse_cube, to_cube
from pipelines.ar.process import ArResult, apply_image, apply_media, apply_video, media_kind

__all__ = [
    "MAX_EFFECTS",
    "ArResult",
    "Effect",
    "EffectChain",
    "Lut3D",
    "Step",
    "Target",
    "apply_image",
    "apply_media",
    "apply_video",
    "effect_names",
    "get_effect",
    "media_kind",
    "parse_chain",
    "parse_cube",
    "register",
    "to_cube",
]
