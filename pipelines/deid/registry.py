"""The operator registry: de-identification operators looked up by name.

Each operator lives in its own module under :mod:`pipelines.deid.operators` and registers one
instance with :func:`register` when that module is imported. :data:`OPERATORS` is a
:class:`pipelines.registry.Registry`: it imports the operators package on first use, so looking an
operator up never depends on import order, and dispatch is a dictionary look-up (no chain of
string comparisons).

An operator is used in two steps: :meth:`Operator.validate` turns a plain parameter mapping into
the operator's frozen parameter record (read with :class:`pipelines.params.Params`, raising
:class:`~pipelines.errors.BadParams`), then
:meth:`Operator.apply` de-identifies the given faces of one BGR image and returns a new image (the
input is never modified) with any annotations the operator keeps.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
from numpy.typing import NDArray

from pipelines.errors import BadParams
from pipelines.faces.detector import Face
from pipelines.registry import Registry

P = TypeVar("P")


@dataclass(frozen=True)
class FaceAnnotation:
    """What an operator keeps of one face: its five landmarks (left eye, right eye, nose tip, left
    and right mouth corner) normalised to the image, ``x / width`` and ``y / height`` in
    ``[0, 1]``."""

    landmarks: tuple[tuple[float, float], ...]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: ``{"landmarks": [[x, y], ...]}``."""
        return {"landmarks": [[round(x, 5), round(y, 5)] for x, y in self.landmarks]}


@dataclass(frozen=True)
class OperatorOutput:
    """The de-identified image and the annotations kept (one per face, or none)."""

    image: NDArray[np.uint8]
    annotations: tuple[FaceAnnotation, ...] = ()


class Operator(ABC, Generic[P]):
    """A de-identification operator. Subclasses set ``name`` and implement both methods."""

    name: ClassVar[str]

    @abstractmethod
    def validate(self, params: Mapping[str, object]) -> P:
        """Check ``params`` and return the operator's frozen parameter record (or BadParams)."""

    @abstractmethod
    def apply(self, img: NDArray[np.uint8], faces: Sequence[Face], params: P) -> OperatorOutput:
        """De-identify ``faces`` of ``img`` (BGR ``uint8``) into a new image."""


def _unknown_operator(name: object, known: str) -> BadParams:
    return BadParams(f"unknown de-identification operator; known: {known}")


#: The operators by name (one instance each).
OPERATORS: Registry[Operator[Any]] = Registry(
    "de-identification operator", "pipelines.deid.operators", _unknown_operator
)


def register(operator: Operator[Any]) -> Operator[Any]:
    """Add ``operator`` under its ``name``; a second, different operator of that name is refused."""
    return OPERATORS.register(operator)


def get_operator(name: str) -> Operator[Any]:
    """The operator registered as ``name``; :class:`BadParams` for an unknown name."""
    return OPERATORS.get(name)


def operator_names() -> tuple[str, ...]:
    """The registered operator names, sorted."""
    return OPERATORS.names()


__all__ = [
    "OPERATORS",
    "FaceAnnotation",
    "Operator",
    "OperatorOutput",
    "get_operator",
    "operator_names",
    "register",
]
