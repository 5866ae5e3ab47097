"""Job type ``ar``: an effect chain on a photo or a video (``result.jpg``/``.png``/``.mp4``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from pipelines.ar import apply_media, parse_chain
from pipelines.params import JOB, Params
from worker.jobs.registry import JobHandler, JobOutcome, Output, Tools, register

#: The chain when the params name none (what ``facemedia demo --job ar`` shows).
DEFAULT_EFFECTS: Final = ({"effect": "beautify"}, {"effect": "sticker", "name": "glasses"})


@register
class ArJob(JobHandler):
    """Apply face effects in order; the media kind is sniffed (image or MP4/MOV/WebM video)."""

    name = "ar"

    def validate(self, params: Mapping[str, Any]) -> Mapping[str, Any]:
        """Accepts ``effects`` (the chain, a list of ``{"effect": name, ...}``; default
        :data:`DEFAULT_EFFECTS`) and ``quality`` (JPEG output quality, 1-100, default 90)."""
        checked = Params(params, ("effects", "quality"), wording=JOB)
        quality = checked.integer("quality", 90, 1, 100)
        chain = parse_chain(checked.raw("effects", DEFAULT_EFFECTS))
        return {"effects": chain.to_json(), "quality": quality}

    def run(self, media: bytes, params: Mapping[str, Any], tools: Tools) -> JobOutcome:
        """Sniff, find or track the faces, apply the chain, encode."""
        chain = parse_chain(params["effects"])
        result = apply_media(
            media,
            chain,
            tools.detector(),
            tools.image_limits,
            tools.video_limits,
            tools.tracker,
            quality=params["quality"],
        )
        return JobOutcome(
            outputs=(Output(result.filename, result.data, result.content_type),),
            faces=result.faces,
            summary={
                "kind": result.kind,
                "effects": chain.names,
                "faces": result.faces,
                "frames": result.frames,
                "frames_with_faces": result.frames_with_faces,
            },
        )
