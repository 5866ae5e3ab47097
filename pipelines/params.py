"""One parameter vocabulary for job types, AR effects and de-identification operators.

Parameters arrive as a plain mapping (JSON from a job, a chain entry or a profile). A
:class:`Params` reader checks the keys once, then each getter returns a checked value or raises
:class:`~pipelines.errors.BadParams`. The rules live here only: unknown keys are refused, ``bool``
is not a number, numbers must be finite and in range, integers must be integers. A message names
the owner (``blur: ``, ``beautify: ``, none for a job type), the key and the allowed values,
never the value given.

Each family keeps the wording its users see (:data:`JOB`, :data:`EFFECT`, :data:`OPERATOR`):
``unknown parameter(s): speed`` for a job, ``beautify: unknown field(s) glow; allowed: ...`` for
an effect, ``blur: strength must be between 0.02 and 1`` for an operator.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from pipelines.colors import css_color
from pipelines.errors import BadParams

D = TypeVar("D")


@dataclass(frozen=True)
class Wording:
    """How one family of parameters words its refusals. Templates are ``str.format`` strings over
    ``key``, ``lo``, ``hi`` (numbers and integers) or ``names``, ``allowed`` (unknown keys)."""

    unknown: str
    number_type: str
    number_range: str
    integer_type: str
    integer_range: str


#: Job types (``worker/jobs/types``): ``quality must be an integer from 1 to 100``.
JOB = Wording(
    unknown="unknown parameter(s): {names}",
    number_type="{key} must be a number from {lo:g} to {hi:g}",
    number_range="{key} must be a number from {lo:g} to {hi:g}",
    integer_type="{key} must be an integer from {lo} to {hi}",
    integer_range="{key} must be an integer from {lo} to {hi}",
)

#: AR effects: ``beautify: smooth must be a number from 0 to 1``.
EFFECT = Wording(
    unknown="unknown field(s) {names}; allowed: {allowed}",
    number_type="{key} must be a number from {lo:g} to {hi:g}",
    number_range="{key} must be a number from {lo:g} to {hi:g}",
    integer_type="{key} must be an integer from {lo} to {hi}",
    integer_range="{key} must be an integer from {lo} to {hi}",
)

#: De-identification operators: ``blur: strength must be between 0.02 and 1``.
OPERATOR = Wording(
    unknown="unknown parameter(s) {names}; allowed: {allowed}",
    number_type="{key} must be a number",
    number_range="{key} must be between {lo:g} and {hi:g}",
    integer_type="{key} must be an integer",
    integer_range="{key} must be between {lo} and {hi}",
)


class Params:
    """A checked view of one parameter mapping.

    Construction refuses a non-mapping and any key outside ``allowed``; the getters return the
    value under a key (``default`` when absent) or raise :class:`BadParams`.
    """

    def __init__(
        self,
        params: object,
        allowed: Collection[str],
        owner: str = "",
        wording: Wording = OPERATOR,
    ) -> None:
        self._prefix = f"{owner}: " if owner else ""
        self._wording = wording
        if not isinstance(params, Mapping):
            self.fail("parameters must be a mapping")
        unknown = sorted(str(k) for k in params if k not in allowed)
        if unknown:
            self.fail(
                wording.unknown.format(
                    names=", ".join(unknown), allowed=", ".join(sorted(allowed)) or "none"
                )
            )
        self._params: Mapping[Any, Any] = params

    def fail(self, message: str) -> NoReturn:
        """Raise :class:`BadParams` with ``message`` after the owner's prefix."""
        raise BadParams(f"{self._prefix}{message}")

    def __contains__(self, key: str) -> bool:
        return key in self._params

    def raw(self, key: str, default: Any = None) -> Any:
        """The value under ``key`` as given (``default`` when absent), for a caller to check."""
        return self._params.get(key, default)

    def number(self, key: str, default: float, lo: float, hi: float) -> float:
        """A finite number in ``[lo, hi]``."""
        value = self._params.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(self._wording.number_type.format(key=key, lo=lo, hi=hi))
        try:
            result = float(value)
        except OverflowError:
            result = math.inf
        if not math.isfinite(result) or not lo <= result <= hi:
            self.fail(self._wording.number_range.format(key=key, lo=lo, hi=hi))
        return result

    def integer(self, key: str, default: int, lo: int, hi: int) -> int:
        """An integer in ``[lo, hi]``."""
        value = self._params.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(self._wording.integer_type.format(key=key, lo=lo, hi=hi))
        if not lo <= value <= hi:
            self.fail(self._wording.integer_range.format(key=key, lo=lo, hi=hi))
        return int(value)

    def boolean(self, key: str, default: bool) -> bool:
        """``true`` or ``false``."""
        value = self._params.get(key, default)
        if not isinstance(value, bool):
            self.fail(f"{key} must be true or false")
        return value

    def color(self, key: str, default: tuple[int, int, int]) -> tuple[int, int, int]:
        """A BGR colour: three integers 0-255."""
        value = self._params.get(key, default)
        if (
            not isinstance(value, list | tuple)
            or len(value) != 3
            or any(
                isinstance(c, bool) or not isinstance(c, int) or not 0 <= c <= 255 for c in value
            )
        ):
            self.fail(f"{key} must be three integers from 0 to 255 (B, G, R)")
        return (int(value[0]), int(value[1]), int(value[2]))

    def css_color(self, key: str, default: str) -> str:
        """A colour as ``#rrggbb``/``#rgb`` hex or a CSS colour name, normalised to ``#rrggbb``
        (:func:`pipelines.colors.css_color`)."""
        value = css_color(self._params.get(key, default))
        if value is None:
            self.fail(f"{key} must be a hex colour (#rrggbb) or a CSS colour name")
        return value

    def choice(self, key: str, options: Sequence[str], default: str) -> str:
        """One of ``options``."""
        value = self._params.get(key, default)
        if not isinstance(value, str) or value not in options:
            self.fail(f"{key} must be one of {', '.join(options)}")
        return value


def strengths(owner: str, params: Mapping[str, Any], cls: type[D], wording: Wording = EFFECT) -> D:
    """Params of a dataclass whose fields are all strengths from 0 to 1 (its defaults when
    absent); keys that are not its fields are refused."""
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    for f in fields:
        if not isinstance(f.default, float):
            raise TypeError(f"{cls.__name__}.{f.name} needs a float default")
    reader = Params(params, [f.name for f in fields], owner, wording)
    values = {f.name: reader.number(f.name, float(f.default), 0.0, 1.0) for f in fields}  # type: ignore[arg-type]
    return cls(**values)


__all__ = ["EFFECT", "JOB", "OPERATOR", "Params", "Wording", "strengths"]
