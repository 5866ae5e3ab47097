"""Effects: the base class and the registry by name (a :class:`pipelines.registry.Registry`).

An effect is one class in one file under :mod:`pipelines.ar.effects`, decorated with
:func:`register`. It declares its ``name``, whether it needs faces, and how far beyond a face's
box it may change pixels (``reach``, in box sizes; ``whole_frame`` effects change every pixel).
``validate`` turns the JSON params of one chain entry into a frozen params object or raises
:class:`~pipelines.errors.BadParams` naming the effect and the field (read with
:class:`pipelines.params.Params`, wording :data:`pipelines.params.EFFECT`); ``apply`` draws the
effect on a BGR frame given the faces on it (:class:`Target`: the detector's face and, for an
effect with ``needs_mesh``, its 468-point mesh). Nothing dispatches on effect names except the
registry.

An effect instance belongs to one parsed chain, that is to one job: it may keep state from frame
to frame of a clip (frames are applied in order); :meth:`Effect.reset` forgets it.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
from numpy.typing import NDArray

from pipelines.errors import BadParams
from pipelines.faces.detector import Face
from pipelines.faces.mesh import FaceMesh
from pipelines.registry import Registry

P = TypeVar("P")
Frame = NDArray[np.uint8]


@dataclass(frozen=True, eq=False)
class Target:
    """One face an effect works on: the detector's ``face`` and its ``mesh`` (``None`` unless
    some effect of the chain needs the mesh)."""

    face: Face
    mesh: FaceMesh | None = None

    def need_mesh(self) -> FaceMesh:
        """The mesh (a chain with a mesh effect always fits one)."""
        if self.mesh is None:
            raise RuntimeError("this effect needs the face mesh; apply it through EffectChain")
        return self.mesh


class Effect(ABC, Generic[P]):
    """One face effect (or whole-frame filter); subclasses are registered with :func:`register`.

    ``needs_faces``: the effect does nothing without faces (an image with none is refused with
    ``no_face`` when every effect of the chain needs faces). ``needs_mesh``: it works on the
    468-point mesh of each face. ``whole_frame``: it may change any pixel. ``reach``:
    otherwise, how far beyond a face box it may change pixels, as a share of the box's longer
    side.
    """

    name: ClassVar[str]
    needs_faces: ClassVar[bool] = True
    needs_mesh: ClassVar[bool] = False
    whole_frame: ClassVar[bool] = False
    reach: ClassVar[float] = 0.0

    @abstractmethod
    def validate(self, params: Mapping[str, Any]) -> P:
        """Check one chain entry (without its ``effect`` key) and return its params object."""

    @abstractmethod
    def apply(self, frame: Frame, targets: Sequence[Target], params: P) -> Frame:
        """Draw the effect on ``frame`` (BGR ``uint8``, may be modified in place); return it."""

    def reset(self) -> None:
        """Forget any state kept from earlier frames (none by default)."""

    def to_json(self, params: P) -> dict[str, Any]:
        """The normalised JSON of validated params (defaults filled in), ``effect`` first."""
        fields: dict[str, Any] = {}
        if dataclasses.is_dataclass(params) and not isinstance(params, type):
            fields = dataclasses.asdict(params)
        return {"effect": self.name, **fields}


E = TypeVar("E", bound=type[Effect[Any]])


def _unknown_effect(name: object, known: str) -> BadParams:
    return BadParams(f"unknown effect {name!r}; known: {known}")


#: The effects by name (classes; :func:`get_effect` hands out a fresh instance).
EFFECTS: Registry[type[Effect[Any]]] = Registry("effect", "pipelines.ar.effects", _unknown_effect)


def register(cls: E) -> E:
    """Class decorator: make an effect available under ``cls.name``."""
    EFFECTS.register(cls)
    return cls


def effect_names() -> list[str]:
    """Every registered effect, sorted."""
    return list(EFFECTS.names())


def get_effect(name: object) -> Effect[Any]:
    """A fresh instance of the effect called ``name``; :class:`BadParams` when there is none."""
    return EFFECTS.get(name)()


__all__ = ["EFFECTS", "Effect", "Frame", "Target", "effect_names", "get_effect", "register"]
