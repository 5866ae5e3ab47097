"""``lut``: a colour filter over the whole frame, a built-in look or a user's ``.cube`` LUT.

Params: exactly one of ``look`` (``warm``, ``cool``, ``mono``, ``vintage``, ``vivid``) or
``cube`` (the text of a ``.cube`` 3D LUT, see :mod:`pipelines.ar.cube`), and ``strength`` (0-1,
default 1: the mix between the original and the filtered frame).

The looks are 33-point 3D LUTs generated in code from per-pixel formulas on RGB in 0..1
(:data:`LOOKS`), applied exactly as a user's cube is. The filter needs no face.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import numpy as np
from numpy.typing import NDArray

from pipelines.ar.base import Effect, Frame, Target, register
from pipelines.ar.cube import Lut3D, identity_table, parse_cube
from pipelines.params import EFFECT, Params

F32 = NDArray[np.float32]
LOOK_SIZE: Final = 33


def _luma(rgb: F32) -> F32:
    out: F32 = rgb @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
    return out


def _saturate(rgb: F32, amount: float) -> F32:
    y = _luma(rgb)[..., None]
    return cast(F32, y + amount * (rgb - y))


def _s_curve(x: F32, amount: float) -> F32:
    """Contrast around mid grey: a smoothstep mixed in by ``amount``."""
    smooth = x * x * (3 - 2 * x)
    return cast(F32, x + amount * (smooth - x))


def _warm(rgb: F32) -> F32:
    gains = np.array([1.08, 1.02, 0.86], dtype=np.float32)
    return _s_curve(np.clip(rgb * gains + np.array([0.02, 0.01, 0.0], np.float32), 0, 1), 0.15)


def _cool(rgb: F32) -> F32:
    gains = np.array([0.88, 0.99, 1.1], dtype=np.float32)
    return _s_curve(np.clip(rgb * gains + np.array([0.0, 0.01, 0.03], np.float32), 0, 1), 0.1)


def _mono(rgb: F32) -> F32:
    y = _s_curve(np.clip(_luma(rgb), 0, 1), 0.3)
    return cast(F32, np.repeat(y[..., None], 3, axis=-1))


def _vintage(rgb: F32) -> F32:
    faded = 0.08 + 0.84 * _saturate(rgb, 0.65)  # lifted blacks, softened whites
    tint = np.array([1.06, 1.0, 0.82], dtype=np.float32)
    return cast(F32, np.clip(faded * tint + np.array([0.02, 0.01, 0.04], np.float32), 0, 1))


def _vivid(rgb: F32) -> F32:
    return _s_curve(np.clip(_saturate(rgb, 1.4), 0, 1), 0.2)


#: Built-in looks: functions of an ``(..., 3)`` RGB array in 0..1.
LOOKS: Final[dict[str, Callable[[F32], F32]]] = {
    "warm": _warm,
    "cool": _cool,
    "mono": _mono,
    "vintage": _vintage,
    "vivid": _vivid,
}
LOOK_NAMES: Final = tuple(sorted(LOOKS))


@functools.cache
def look_lut(name: str) -> Lut3D:
    """The 33-point LUT of a built-in look (generated on first use)."""
    table = LOOKS[name](identity_table(LOOK_SIZE))
    return Lut3D(np.ascontiguousarray(table, dtype=np.float32), title=name)


@dataclass(frozen=True)
class LutParams:
    """A look name or cube text (exactly one), the strength, and the parsed LUT."""

    look: str | None
    cube: str | None
    strength: float
    lut: Lut3D


@register
class LutFilter(Effect[LutParams]):
    """A whole-frame colour filter."""

    name = "lut"
    needs_faces = False
    whole_frame = True

    def validate(self, params: Mapping[str, Any]) -> LutParams:
        """Exactly one of ``look`` and ``cube``; ``strength`` from 0 to 1."""
        checked = Params(params, ("look", "cube", "strength"), self.name, EFFECT)
        strength = checked.number("strength", 1.0, 0.0, 1.0)
        has_look, has_cube = "look" in checked, "cube" in checked
        if has_look == has_cube:
            checked.fail(f"give exactly one of look (one of {', '.join(LOOK_NAMES)}) or cube")
        if has_look:
            look = checked.choice("look", LOOK_NAMES, "")
            return LutParams(look, None, strength, look_lut(look))
        cube = checked.raw("cube")
        if not isinstance(cube, str):
            checked.fail("cube must be the text of a .cube file")
        return LutParams(None, cube, strength, parse_cube(cube))

    def apply(self, frame: Frame, targets: Sequence[Target], params: LutParams) -> Frame:
        """Filter the whole frame."""
        if params.strength <= 0:
            return frame
        return params.lut.apply(frame, params.strength)

    def to_json(self, params: LutParams) -> dict[str, Any]:
        """``look`` or ``cube`` as given, and ``strength``."""
        out: dict[str, Any] = {"effect": self.name}
        if params.look is not None:
            out["look"] = params.look
        else:
            out["cube"] = params.cube
        out["strength"] = params.strength
        return out


__all__ = ["LOOKS", "LOOK_NAMES", "LutFilter", "LutParams", "look_lut"]
