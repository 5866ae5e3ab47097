"""Job type ``pta`` (photo to avatar): ``avatar.json`` (the avatar spec) and ``avatar.png``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pipelines.media import decode_image
from pipelines.params import JOB, Params
from pipelines.pta import AvatarConfig, RenderParams, make_avatars
from worker.jobs.registry import JobHandler, JobOutcome, Output, Tools, register

_LIMITS = {"max_faces": (1, 100, 20), "size": (64, 2048, 512), "colors": (2, 32, 8)}


@register
class PtaJob(JobHandler):
    """Describe every face of a photo (schema ``facemedia.pta.avatar``) and render the largest
    as a cartoon; ``no_face`` when there is none."""

    name = "pta"

    def validate(self, params: Mapping[str, Any]) -> Mapping[str, Any]:
        """Accepts ``max_faces`` (1-100, default 20), ``size`` (avatar side in pixels, 64-2048,
        default 512) and ``colors`` (palette size, 2-32, default 8)."""
        checked = Params(params, tuple(_LIMITS), wording=JOB)
        return {
            key: checked.integer(key, default, lo, hi) for key, (lo, hi, default) in _LIMITS.items()
        }

    def run(self, media: bytes, params: Mapping[str, Any], tools: Tools) -> JobOutcome:
        """Decode, detect, describe and render."""
        image = decode_image(media, tools.image_limits)
        faces = tools.detector().detect(image)
        config = AvatarConfig(
            size=params["size"],
            max_faces=params["max_faces"],
            render=RenderParams(colors=params["colors"]),
        )
        result = make_avatars(image, faces, config)
        spec = json.dumps(result.spec, indent=2).encode()
        return JobOutcome(
            outputs=(
                Output("avatar.json", spec, "application/json"),
                Output("avatar.png", result.png, "image/png"),
            ),
            faces=result.faces,
            summary={"faces": result.faces},
        )
