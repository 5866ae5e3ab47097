"""``background``: the person kept, the background blurred, replaced by a colour or a backdrop.

Params: ``mode`` (``blur``, the default, ``color`` or ``image``), ``color`` (hex or CSS name,
default ``#ffffff``; mode ``color``) and ``image`` (a built-in backdrop by name, default
``studio``; mode ``image``): ``studio`` (a lit grey wall), ``sunset`` (a warm sky gradient with
a low sun), ``ocean`` (sky over sea) or ``bokeh`` (out-of-focus lights). Backdrops are drawn in
code (no photo, no person) at the frame's size. User-supplied backdrops are out of scope.

Steps per frame:

1. **Segmentation**: :func:`pipelines.faces.segmentation.segment_person` (MediaPipe's selfie
   segmenter), a person probability per pixel.
2. **Edges** (:func:`refine`): a guided filter (He, Sun & Tang 2010) with the frame's grey
   image as the guide snaps the coarse 256-pixel mask to the frame's real edges (hair, shoulders);
   it runs at most 512 pixels on the long side and its linear coefficients are upsampled (the
   "fast guided filter"), then a smoothstep sharpens the transition without aliasing it.
3. **Temporal smoothing** (:class:`MaskSmoother`, video): each pixel's mask follows the new
   value with a gain that grows with the change (0.4 for small flicker, 1 for a real motion),
   so edges stop shimmering and a person who moves is not left behind. The state lives in the
   effect instance, that is one job's chain; :meth:`Background.reset` forgets it.
4. **Compositing** (:func:`composite`): ``mask * frame + (1 - mask) * backdrop``. For ``blur``
   the backdrop is the frame blurred by *normalised convolution* of the background alone
   (``blur(frame * (1 - m)) / blur(1 - m)``), so the person does not bleed a halo into it.

The effect needs no face and may change every pixel (``whole_frame``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import cv2
import numpy as np
from numpy.typing import NDArray

from pipelines.ar.base import Effect, Frame, Target, register
from pipelines.ar.regions import to_uint8
from pipelines.colors import to_bgr
from pipelines.params import EFFECT, Params

F32 = NDArray[np.float32]
U8 = NDArray[np.uint8]

MODES: Final = ("blur", "color", "image")
BACKDROPS: Final = ("bokeh", "ocean", "studio", "sunset")
#: Long side the guided filter runs at.
REFINE_SIDE: Final = 512
#: Background blur sigma as a share of the frame's long side.
BLUR_SHARE: Final = 0.012


@dataclass(frozen=True)
class BackgroundParams:
    """The mode, its colour (``#rrggbb``) and its backdrop name."""

    mode: str = "blur"
    color: str = "#ffffff"
    image: str = "studio"


class MaskSmoother:
    """Per-pixel adaptive smoothing of a mask sequence (see the module docstring, step 3)."""

    def __init__(self, low_gain: float = 0.4, full_change: float = 0.35) -> None:
        self.low_gain = low_gain
        self.full_change = full_change
        self._last: F32 | None = None

    def reset(self) -> None:
        """Forget the previous mask."""
        self._last = None

    def __call__(self, mask: F32) -> F32:
        """The smoothed mask (the input itself on the first frame or a new frame size)."""
        last = self._last
        if last is None or last.shape != mask.shape:
            self._last = mask
            return mask
        change = np.abs(mask - last)
        gain = self.low_gain + (1.0 - self.low_gain) * np.clip(change / self.full_change, 0, 1)
        out = cast(F32, (last + gain * (mask - last)).astype(np.float32))
        self._last = out
        return out


@register
class Background(Effect[BackgroundParams]):
    """Person segmentation, then blur, colour or a built-in backdrop behind the person."""

    name = "background"
    needs_faces = False
    whole_frame = True

    def __init__(self) -> None:
        self._smoother = MaskSmoother()

    def validate(self, params: Mapping[str, Any]) -> BackgroundParams:
        """``mode`` (blur, color, image), ``color`` (hex or CSS name), ``image`` (a backdrop)."""
        checked = Params(params, ("mode", "color", "image"), self.name, EFFECT)
        return BackgroundParams(
            mode=checked.choice("mode", MODES, "blur"),
            color=checked.css_color("color", "#ffffff"),
            image=checked.choice("image", BACKDROPS, "studio"),
        )

    def apply(self, frame: Frame, targets: Sequence[Target], params: BackgroundParams) -> Frame:
        """Segment, refine, smooth over time, composite."""
        from pipelines.faces.segmentation import segment_person

        mask = self._smoother(refine(segment_person(frame), frame))
        return composite(frame, mask, backdrop(frame, mask, params))

    def reset(self) -> None:
        """Forget the previous frame's mask."""
        self._smoother.reset()


def refine(mask: F32, frame: Frame, radius: int = 8, eps: float = 1e-3) -> F32:
    """The person mask snapped to the frame's edges by a fast guided filter (grey guide, window
    ``2 radius + 1`` pixels at the working size), then sharpened with a smoothstep between 0.25
    and 0.75. ``mask``: ``HxW`` float in 0-1, any size (resized to the frame)."""
    height, width = frame.shape[:2]
    scale = min(1.0, REFINE_SIDE / max(height, width))
    small = (max(1, round(width * scale)), max(1, round(height * scale)))
    guide = cv2.cvtColor(cv2.resize(frame, small, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
    g = cast(F32, guide.astype(np.float32) / np.float32(255.0))
    p = cast(F32, cv2.resize(mask.astype(np.float32), small, interpolation=cv2.INTER_LINEAR))
    box = (2 * radius + 1, 2 * radius + 1)

    def mean(x: F32) -> F32:
        return cast(F32, cv2.boxFilter(x, cv2.CV_32F, box, borderType=cv2.BORDER_REFLECT))

    mean_g, mean_p = mean(g), mean(p)
    var_g = mean(cast(F32, g * g)) - mean_g * mean_g
    cov = mean(cast(F32, g * p)) - mean_g * mean_p
    a = mean(cast(F32, cov / (var_g + np.float32(eps))))
    b = mean(cast(F32, mean_p - a * mean_g))
    if scale < 1.0:
        a = cast(F32, cv2.resize(a, (width, height), interpolation=cv2.INTER_LINEAR))
        b = cast(F32, cv2.resize(b, (width, height), interpolation=cv2.INTER_LINEAR))
        g = cast(F32, cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(np.float32) / 255.0)
    q = np.clip((a * g + b - 0.25) / 0.5, 0.0, 1.0)
    return cast(F32, (q * q * (3.0 - 2.0 * q)).astype(np.float32))


def composite(frame: Frame, mask: F32, back: Frame) -> Frame:
    """``mask * frame + (1 - mask) * back`` (``mask`` ``HxW`` in 0-1), as ``uint8``."""
    m = mask.astype(np.float32)[:, :, None]
    out = back.astype(np.float32) + m * (frame.astype(np.float32) - back.astype(np.float32))
    return to_uint8(cast(F32, out))


def blurred_background(frame: Frame, mask: F32, sigma: float) -> Frame:
    """The frame's background blurred by normalised convolution: the person (``mask``) does
    not leak into it; where no background is near, the plain blur is used."""
    bg = (1.0 - mask.astype(np.float32))[:, :, None]
    num = cv2.GaussianBlur(frame.astype(np.float32) * bg, (0, 0), sigma)
    den = cv2.GaussianBlur(bg, (0, 0), sigma)[:, :, None]
    plain = cv2.GaussianBlur(frame, (0, 0), sigma).astype(np.float32)
    weight = np.clip(den / 0.05, 0.0, 1.0)
    out = weight * num / np.maximum(den, 1e-4) + (1.0 - weight) * plain
    return to_uint8(cast(F32, out))


def backdrop(frame: Frame, mask: F32, params: BackgroundParams) -> Frame:
    """What goes behind the person for ``params``, at the frame's size."""
    height, width = frame.shape[:2]
    if params.mode == "blur":
        return blurred_background(frame, mask, max(1.0, BLUR_SHARE * max(height, width)))
    if params.mode == "color":
        solid = np.empty_like(frame)
        solid[:] = to_bgr(params.color)
        return solid
    return built_in_backdrop(params.image, width, height)


@functools.lru_cache(maxsize=8)
def _drawn(name: str, width: int, height: int) -> U8:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = xx / max(width - 1, 1), yy / max(height - 1, 1)
    rgb: NDArray[np.float32]
    if name == "studio":  # a grey wall lit from the upper middle
        d = np.hypot(u - 0.5, (v - 0.25) * 1.2)
        level = 0.78 - 0.45 * np.clip(d, 0, 1) ** 1.5
        rgb = np.stack([level * 0.97, level, level * 1.03], axis=-1)
    elif name == "sunset":  # warm sky, a low sun
        top, bottom = np.array([0.33, 0.2, 0.48]), np.array([0.98, 0.58, 0.3])
        rgb = top + (bottom - top) * v[..., None] ** 0.8
        sun = np.exp(-(((u - 0.7) ** 2 + ((v - 0.78) * height / width) ** 2) / 0.004))
        rgb = rgb + sun[..., None] * np.array([0.4, 0.35, 0.15])
    elif name == "ocean":  # sky over a calm sea with a soft horizon
        sky = (
            np.array([0.55, 0.75, 0.95])
            + (np.array([0.85, 0.92, 0.98]) - (0.55, 0.75, 0.95)) * ((v / 0.55)[..., None])
        )
        sea = np.array([0.1, 0.38, 0.55]) * (1.0 - 0.35 * ((v - 0.55) / 0.45)[..., None])
        ripple = 0.03 * np.sin(80 * v + 6 * np.sin(9 * u))[..., None]
        t = np.clip((v - 0.54) / 0.02, 0, 1)[..., None]
        rgb = sky * (1 - t) + (sea + ripple) * t
    else:  # bokeh: out-of-focus coloured lights on a dark blue
        rgb = np.stack([0.05 + 0.08 * v, 0.07 + 0.05 * v, 0.16 + 0.1 * (1 - v)], axis=-1)
        rng = np.random.default_rng(7)
        side = max(width, height)
        for _ in range(28):
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            r = rng.uniform(0.03, 0.09) * side
            colour = rng.choice([[1.0, 0.75, 0.35], [0.95, 0.5, 0.6], [0.5, 0.7, 1.0]])
            x0, x1 = max(0, int(cx - r) - 1), min(width, int(cx + r) + 2)
            y0, y1 = max(0, int(cy - r) - 1), min(height, int(cy + r) + 2)
            if x1 <= x0 or y1 <= y0:
                continue
            d = np.hypot(xx[y0:y1, x0:x1] - cx, yy[y0:y1, x0:x1] - cy)
            disc = np.clip((r - d) / (0.15 * r), 0, 1)
            rgb[y0:y1, x0:x1] += (0.28 * disc)[..., None] * colour
    bgr = np.clip(np.asarray(rgb)[..., ::-1] * 255.0, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(bgr)


def built_in_backdrop(name: str, width: int, height: int) -> Frame:
    """A built-in backdrop (:data:`BACKDROPS`) drawn at ``width x height`` (a copy).

    Drawn at most 1024 pixels on the long side and scaled up (smooth content: no visible loss).
    """
    if name not in BACKDROPS:
        raise KeyError(name)
    scale = min(1.0, 1024 / max(width, height))
    w, h = max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))
    art = _drawn(name, w, h)
    if (w, h) != (width, height):
        return cast(Frame, cv2.resize(art, (width, height), interpolation=cv2.INTER_LINEAR))
    return art.copy()


__all__ = [
    "BACKDROPS",
    "MODES",
    "Background",
    "BackgroundParams",
    "MaskSmoother",
    "backdrop",
    "blurred_background",
    "built_in_backdrop",
    "composite",
    "refine",
]
