"""Effect chains: a JSON list of effects, validated up front, applied in order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pipelines.ar.base import Effect, Frame, Target, get_effect
from pipelines.errors import BadParams
from pipelines.faces.detector import Face
from pipelines.faces.mesh import FaceMesh, default_mesher
from pipelines.params import JOB, Params

#: Most effects one chain may hold.
MAX_EFFECTS: Final = 16


@dataclass(frozen=True)
class Step:
    """One validated chain entry."""

    effect: Effect[Any]
    params: Any


@dataclass(frozen=True)
class EffectChain:
    """Validated effects, applied in order by :meth:`apply`."""

    steps: tuple[Step, ...]

    @property
    def needs_faces(self) -> bool:
        """True when some effect works on faces (the media must then be searched for them)."""
        return any(step.effect.needs_faces for step in self.steps)

    @property
    def needs_mesh(self) -> bool:
        """True when some effect works on the face mesh (the chain fits it when not given)."""
        return any(step.effect.needs_mesh for step in self.steps)

    @property
    def names(self) -> list[str]:
        """The effects' names, in order."""
        return [step.effect.name for step in self.steps]

    def apply(
        self, frame: Frame, faces: Sequence[Face], meshes: Sequence[FaceMesh] | None = None
    ) -> Frame:
        """Run every effect on ``frame`` (BGR ``uint8``, modified in place) and return it.

        ``meshes`` (one per face, e.g. tracked through a clip) are fitted here when some effect
        needs them and none are given; with a mesh, a face whose mesh is not a face (presence
        below the threshold: a false detection) is left alone.
        """
        targets = self.targets(frame, faces, meshes)
        for step in self.steps:
            frame = step.effect.apply(frame, targets, step.params)
        return frame

    def targets(
        self, frame: Frame, faces: Sequence[Face], meshes: Sequence[FaceMesh] | None = None
    ) -> list[Target]:
        """The faces as the effects see them (with their meshes when some effect needs one)."""
        if not self.needs_mesh or not faces:
            return [Target(face) for face in faces]
        if meshes is None:
            meshes = default_mesher().fit_all(frame, list(faces), iris=False)
        if len(meshes) != len(faces):
            raise ValueError("one mesh per face is needed")
        return [Target(f, m) for f, m in zip(faces, meshes, strict=True) if m.is_face]

    def reset(self) -> None:
        """Forget every effect's state (before reusing the chain on another clip)."""
        for step in self.steps:
            step.effect.reset()

    def to_json(self) -> list[dict[str, Any]]:
        """The normalised chain (defaults filled in), which :func:`parse_chain` accepts."""
        return [step.effect.to_json(step.params) for step in self.steps]


def parse_chain(spec: object) -> EffectChain:
    """Validate a chain: a list of ``{"effect": name, ...params}`` objects, or an object
    ``{"effects": [...]}`` holding that list. At least one effect, at most :data:`MAX_EFFECTS`.

    Raises :class:`BadParams` naming the entry (``effects[i]``), the effect and the field.
    """
    entries = (
        Params(spec, ("effects",), wording=JOB).raw("effects")
        if isinstance(spec, Mapping)
        else spec
    )
    if not isinstance(entries, list | tuple):
        raise BadParams('effects must be a list such as [{"effect": "beautify"}]')
    if not 1 <= len(entries) <= MAX_EFFECTS:
        raise BadParams(f"effects must hold from 1 to {MAX_EFFECTS} effects")
    steps: list[Step] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or "effect" not in entry:
            raise BadParams(f'effects[{i}] must be an object with an "effect" name')
        try:
            effect = get_effect(entry["effect"])
            params = effect.validate({k: v for k, v in entry.items() if k != "effect"})
        except BadParams as exc:
            raise BadParams(f"effects[{i}]: {exc.message}") from None
        steps.append(Step(effect, params))
    return EffectChain(tuple(steps))


__all__ = ["MAX_EFFECTS", "EffectChain", "Step", "parse_chain"]
