"""Reading and checking operator parameters.

Parameters arrive as a plain mapping (JSON from a job or a profile). Every operator turns it into
its own frozen dataclass with these helpers: unknown keys, wrong types (``bool`` is not a number),
non-finite numbers and out-of-range values raise :class:`~pipelines.errors.BadParams` whose message
names the key and the allowed range, never the value.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping

from pipelines.errors import BadParams


def check_keys(operator: str, params: Mapping[str, object], allowed: Collection[str]) -> None:
    """Refuse a non-mapping or any key outside ``allowed``."""
    if not isinstance(params, Mapping):
        raise BadParams(f"{operator}: parameters must be a mapping")
    unknown = sorted(str(k) for k in params if k not in allowed)
    if unknown:
        names = ", ".join(sorted(allowed)) or "none"
        raise BadParams(f"{operator}: unknown parameter(s) {', '.join(unknown)}; allowed: {names}")


def get_float(
    operator: str, params: Mapping[str, object], key: str, default: float, lo: float, hi: float
) -> float:
    """A finite number in ``[lo, hi]`` (``default`` when the key is absent)."""
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadParams(f"{operator}: {key} must be a number")
    number = float(value)
    if not math.isfinite(number) or not lo <= number <= hi:
        raise BadParams(f"{operator}: {key} must be between {lo:g} and {hi:g}")
    return number


def get_int(
    operator: str, params: Mapping[str, object], key: str, default: int, lo: int, hi: int
) -> int:
    """An integer in ``[lo, hi]`` (``default`` when the key is absent)."""
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadParams(f"{operator}: {key} must be an integer")
    if not lo <= value <= hi:
        raise BadParams(f"{operator}: {key} must be between {lo} and {hi}")
    return int(value)


def get_bool(operator: str, params: Mapping[str, object], key: str, default: bool) -> bool:
    """A boolean (``default`` when the key is absent)."""
    value = params.get(key, default)
    if not isinstance(value, bool):
        raise BadParams(f"{operator}: {key} must be true or false")
    return value


def get_color(
    operator: str,
    params: Mapping[str, object],
    key: str,
    default: tuple[int, int, int],
) -> tuple[int, int, int]:
    """A BGR colour: three integers 0-255 (``default`` when the key is absent)."""
    value = params.get(key, default)
    if (
        not isinstance(value, list | tuple)
        or len(value) != 3
        or any(isinstance(c, bool) or not isinstance(c, int) or not 0 <= c <= 255 for c in value)
    ):
        raise BadParams(f"{operator}: {key} must be three integers from 0 to 255 (B, G, R)")
    return (int(value[0]), int(value[1]), int(value[2]))


__all__ = ["check_keys", "get_bool", "get_color", "get_float", "get_int"]
