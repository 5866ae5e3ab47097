"""``facemedia avatar render``: redraw an avatar's files from its ``avatar.json`` alone.

Light: loads the spec, its schema check (jsonschema) and the renderers (numpy, Pillow); no
OpenCV, no container, no ledger. The files are written 0600 through
:mod:`worker.private_files` (an avatar is derived from a person's face).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from worker.cli._common import EXIT_REFUSED, JsonOpt, emit, fail

avatar_app = typer.Typer(no_args_is_help=True, help="Avatars (pta job outputs)")

#: Largest avatar.json read (the documents are about 2 KB).
_MAX_SPEC_BYTES = 64 * 1024


@avatar_app.command("render")
def avatar_render(
    spec_file: Annotated[Path, typer.Argument(help="an avatar.json (schema v2)")],
    out: Annotated[Path, typer.Option("--out", help="directory for the files")],
    style: Annotated[
        str | None, typer.Option("--style", help="flat or toon (default: the spec's)")
    ] = None,
    size: Annotated[
        int | None, typer.Option("--size", help="PNG side in pixels (default: the spec's)")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write avatar.svg, avatar.png and avatar.glb drawn from SPEC_FILE alone (the same spec
    gives byte-identical files)."""
    from pipelines.errors import PipelineError
    from pipelines.pta.gltf import render_glb
    from pipelines.pta.render import render_png, render_svg
    from pipelines.pta.spec import STYLES, AvatarSpec
    from worker.private_files import atomic_write_private, private_dir

    try:
        raw = spec_file.read_bytes()[: _MAX_SPEC_BYTES + 1]
    except OSError as exc:
        raise fail(
            f"cannot read {spec_file}: {exc.strerror}", EXIT_REFUSED, error="unreadable"
        ) from None
    if len(raw) > _MAX_SPEC_BYTES:
        raise fail("avatar.json is larger than 64 KiB", EXIT_REFUSED, error="bad_params")
    if style is not None and style not in STYLES:
        raise fail(f"--style must be one of {', '.join(STYLES)}", EXIT_REFUSED, error="bad_params")
    if size is not None and not 64 <= size <= 2048:
        raise fail("--size must be from 64 to 2048", EXIT_REFUSED, error="bad_params")
    try:
        spec = AvatarSpec.from_json(json.loads(raw)).replace_render(style=style, size=size)
    except json.JSONDecodeError:
        raise fail("avatar.json is not JSON", EXIT_REFUSED, error="bad_params") from None
    except PipelineError as exc:
        raise fail(exc.message, EXIT_REFUSED, error=exc.code) from None
    directory = private_dir(out)
    files = {
        "avatar.svg": render_svg(spec),
        "avatar.png": render_png(spec),
        "avatar.glb": render_glb(spec),
    }
    for name, data in files.items():
        atomic_write_private(directory / name, data)
    emit(
        {
            "out": str(directory),
            "style": spec.render.style,
            "size": spec.render.size,
            "files": sorted(files),
        },
        as_json,
    )


__all__ = ["avatar_app"]
