"""Avatars drawn from parameters alone (no photo, no person): the images in ``docs/img``.

``python -m pipelines.pta.examples docs/img`` writes ``avatar-<name>-<style>.png`` and ``.svg``
for each example spec below, in both styles.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from pipelines.pta.render import render_png, render_svg
from pipelines.pta.spec import (
    STYLES,
    AvatarSpec,
    BrowParams,
    Colour,
    EyeParams,
    FaceParams,
    GlassesParams,
    HairParams,
    MouthParams,
    NoseParams,
    RenderParams,
    SkinParams,
    SourceInfo,
)


def _colour(name: str) -> Colour:
    return Colour(hex="#000000", lab=(0.0, 0.0, 0.0), name=name)


def base() -> AvatarSpec:
    """A spec at the population means."""
    return AvatarSpec(
        face=FaceParams("oval", 2.15, 2.55, 1.8, 2.1, 1.95, 1.25, 0.55),
        eyes=EyeParams("almond", 0.45, 0.16, 0.54, 3.5, _colour("brown")),
        brows=BrowParams(0.09, 0.17),
        nose=NoseParams(0.64, 0.77),
        mouth=MouthParams(1.0, 0.19),
        skin=SkinParams(5, "#d7bd96", (78.0, 5.0, 22.0), "#d7bd96"),
        hair=HairParams("short", _colour("light_brown")),
        glasses=GlassesParams(False, 0.0),
        render=RenderParams(),
        source=SourceInfo(1, 0, "largest", (0.0, 0.0, 0.0)),
    )


def with_changes(spec: AvatarSpec, **groups: dict[str, Any]) -> AvatarSpec:
    """``spec`` with fields of its groups replaced: ``with_changes(s, hair={"style": "bald"})``."""
    for group, values in groups.items():
        spec = dataclasses.replace(
            spec, **{group: dataclasses.replace(getattr(spec, group), **values)}
        )
    return spec


def examples() -> dict[str, AvatarSpec]:
    """Four characters that differ where the measurements can differ."""
    b = base()
    return {
        "a": b,
        "b": with_changes(
            b,
            face={"width": 1.98, "jaw_width": 1.7, "chin_width": 1.05},
            eyes={"shape": "round", "opening": 0.2},
            skin={"monk": 8, "monk_hex": "#604134"},
            hair={"style": "long", "colour": _colour("black")},
            glasses={"present": True, "score": 0.9},
        ),
        "c": with_changes(
            b,
            face={"width": 2.35, "jaw_width": 2.2, "shape": "square"},
            eyes={"iris": _colour("blue")},
            brows={"thickness": 0.12},
            skin={"monk": 2, "monk_hex": "#f3e7db"},
            hair={"style": "medium", "colour": _colour("auburn")},
        ),
        "d": with_changes(
            b,
            mouth={"lip_fullness": 0.25, "width": 1.08},
            nose={"width": 0.72},
            skin={"monk": 6, "monk_hex": "#a07e56"},
            hair={"style": "bald", "colour": _colour("unknown")},
        ),
    }


def write(directory: Path) -> list[Path]:
    """Write every example in every style; the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, spec in examples().items():
        for style in STYLES:
            stem = directory / f"avatar-{name}-{style}"
            stem.with_suffix(".png").write_bytes(render_png(spec, style, 256))
            stem.with_suffix(".svg").write_bytes(render_svg(spec, style, 256))
            written += [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    return written


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    for path in write(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img")):
        sys.stdout.write(f"{path}\n")

__all__ = ["base", "examples", "with_changes", "write"]
