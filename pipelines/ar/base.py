"""Effects: the base class, the registry by name, and the parameter checks they share.

An effect is one class in one file under :mod:`pipelines.ar.effects`, decorated with
:func:`register`. It declares its ``name``, whether it needs faces, and how far beyond a face's
box it may change pixels (``reach``, in box sizes; ``whole_frame`` effects change every pixel).
``validate`` turns the JSON params of one chain entry into a frozen params object or raises
:class:`~pipelines.errors.BadParams` naming the effect and the field; ``apply`` draws the effect
on a BGR frame given the faces on it. Nothing dispatches on effect names except the registry.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
from numpy.typing import NDArray

from pipelines.errors import BadParams
from pipelines.faces.detector import Face

P = TypeVar("P")
Frame = NDArray[np.uint8]


class Effect(ABC, Generic[P]):
    """One face effect (or whole-frame filter); subclasses are registered with :func:`register`.

    ``needs_faces``: the effect does nothing without faces (an image with none is refused with
    ``no_face`` when every effect of the chain needs faces). ``whole_frame``: it may change any
    pixel. ``reach``: otherwise, how far beyond a face box it may change pixels, as a share of
    the box's longer side.
    """

    name: ClassVar[str]
    needs_faces: ClassVar[bool] = True
    whole_frame: ClassVar[bool] = False
    reach: ClassVar[float] = 0.0

    @abstractmethod
    def validate(self, params: Mapping[str, Any]) -> P:
        """Check one chain entry (without its ``effect`` key) and return its params object."""

    @abstractmethod
    def apply(self, frame: Frame, faces: Sequence[Face], params: P) -> Frame:
        """Draw the effect on ``frame`` (BGR ``uint8``, may be modified in place); return it."""

    def to_json(self, params: P) -> dict[str, Any]:
        """The normalised JSON of validated params (defaults filled in), ``effect`` first."""
        fields: dict[str, Any] = {}
        if dataclasses.is_dataclass(params) and not isinstance(params, type):
            fields = dataclasses.asdict(params)
        return {"effect": self.name, **fields}


E = TypeVar("E", bound=type[Effect[Any]])
_EFFECTS: dict[str, type[Effect[Any]]] = {}


def register(cls: E) -> E:
    """Class decorator: make an effect available under ``cls.name``."""
    known = _EFFECTS.get(cls.name)
    if known is not None and known is not cls:
        raise ValueError(f"effect {cls.name!r} registered twice")
    _EFFECTS[cls.name] = cls
    return cls


def _load_builtin() -> None:
    import pipelines.ar.effects  # noqa: F401  (each module registers itself)


def effect_names() -> list[str]:
    """Every registered effect, sorted."""
    _load_builtin()
    return sorted(_EFFECTS)


def get_effect(name: object) -> Effect[Any]:
    """A fresh instance of the effect called ``name``; :class:`BadParams` when there is none."""
    _load_builtin()
    cls = _EFFECTS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise BadParams(f"unknown effect {name!r}; known: {', '.join(effect_names())}")
    return cls()


# -- parameter checks shared by the effects -----------------------------------------------------


def check_fields(effect: str, params: Mapping[str, Any], allowed: Collection[str]) -> None:
    """Refuse fields the effect does not know."""
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        known = ", ".join(sorted(allowed))
        raise BadParams(f"{effect}: unknown field(s) {', '.join(unknown)}; allowed: {known}")


def number(
    effect: str, params: Mapping[str, Any], field: str, default: float, lo: float, hi: float
) -> float:
    """A finite number in ``[lo, hi]`` (``default`` when absent)."""
    value = params.get(field, default)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not lo <= value <= hi
    ):
        raise BadParams(f"{effect}: {field} must be a number from {lo:g} to {hi:g}")
    return float(value)


D = TypeVar("D")


def strengths(effect: str, params: Mapping[str, Any], cls: type[D]) -> D:
    """Params of a dataclass whose fields are all strengths from 0 to 1 (its defaults when
    absent); unknown fields are refused."""
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    check_fields(effect, params, [f.name for f in fields])
    values: dict[str, float] = {}
    for f in fields:
        if not isinstance(f.default, float):
            raise TypeError(f"{cls.__name__}.{f.name} needs a float default")
        values[f.name] = number(effect, params, f.name, f.default, 0.0, 1.0)
    return cls(**values)


def choice(
    effect: str, params: Mapping[str, Any], field: str, options: Sequence[str], default: str
) -> str:
    """One of ``options`` (``default`` when absent)."""
    value = params.get(field, default)
    if value not in options:
        raise BadParams(f"{effect}: {field} must be one of {', '.join(options)}")
    return str(value)


__all__ = [
    "Effect",
    "Frame",
    "check_fields",
    "choice",
    "effect_names",
    "get_effect",
    "number",
    "register",
    "strengths",
]
