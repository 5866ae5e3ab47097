"""Job type ``detect``: faces, head pose and (on request) the 468-point mesh, as JSON, for a
photo or a video (tracked faces with per-frame boxes). The document is described in
:mod:`pipelines.faces.report` and the README."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pipelines.errors import BadParams
from pipelines.faces.mesh import default_mesher
from pipelines.faces.report import detect_image, detect_video
from pipelines.media import decode_image, media_kind
from pipelines.params import JOB, Params
from worker.jobs.registry import JobHandler, JobOutcome, Output, Tools, register


@register
class DetectJob(JobHandler):
    """Detect faces in a photo or a video; the output ``faces.json`` lists them (photo: highest
    score first; video: per frame, by track)."""

    name = "detect"

    def validate(self, params: Mapping[str, Any]) -> Mapping[str, Any]:
        """Accepts ``max_faces`` (1 to 1000, default 100) and ``mesh`` (boolean, default false:
        the normalised 468 mesh points and iris of each face, photos only); anything else is
        refused."""
        checked = Params(params, ("max_faces", "mesh"), wording=JOB)
        return {
            "max_faces": checked.integer("max_faces", 100, 1, 1000),
            "mesh": checked.boolean("mesh", False),
        }

    def run(self, media: bytes, params: Mapping[str, Any], tools: Tools) -> JobOutcome:
        """Sniff; a photo is decoded, detected and fitted; a video is tracked frame by frame."""
        mesher = default_mesher()
        if media_kind(media) == "image":
            image = decode_image(media, tools.image_limits)
            doc = detect_image(
                image, tools.detector(), mesher, params["max_faces"], with_mesh=params["mesh"]
            )
            faces = len(doc["faces"])
            summary: dict[str, Any] = {"kind": "image", "faces": faces}
        else:
            if params["mesh"]:
                raise BadParams("mesh points are reported for photos only, not for video")
            doc = detect_video(
                media,
                tools.detector(),
                mesher,
                tools.video_limits,
                tools.tracker,
                params["max_faces"],
            )
            faces = len(doc["tracks"])
            summary = {"kind": "video", "faces": faces, "frames": doc["frame_count"]}
        # Compact when large (mesh points, per-frame video boxes); indented otherwise.
        if params["mesh"] or doc["kind"] == "video":
            data = json.dumps(doc, separators=(",", ":")).encode()
        else:
            data = json.dumps(doc, indent=2).encode()
        return JobOutcome(
            outputs=(Output("faces.json", data, "application/json"),),
            faces=faces,
            summary=summary,
        )
