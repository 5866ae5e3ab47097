"""Job type ``detect``: face boxes, five landmarks and scores as JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pipelines.media import decode_image
from pipelines.params import JOB, Params
from worker.jobs.registry import JobHandler, JobOutcome, Output, Tools, register

SCHEMA_VERSION = 1


@register
class DetectJob(JobHandler):
    """Detect faces in a photo; the output ``faces.json`` lists them, largest score first."""

    name = "detect"

    def validate(self, params: Mapping[str, Any]) -> Mapping[str, Any]:
        """Accepts ``max_faces`` (1 to 1000, default 100); anything else is refused."""
        checked = Params(params, ("max_faces",), wording=JOB)
        return {"max_faces": checked.integer("max_faces", 100, 1, 1000)}

    def run(self, media: bytes, params: Mapping[str, Any], tools: Tools) -> JobOutcome:
        """Decode, detect, serialise."""
        image = decode_image(media, tools.image_limits)
        faces = tools.detector().detect(image)[: params["max_faces"]]
        doc = {
            "schema": "facemedia.detect",
            "version": SCHEMA_VERSION,
            "width": int(image.shape[1]),
            "height": int(image.shape[0]),
            "faces": [face.to_json() for face in faces],
        }
        data = json.dumps(doc, indent=2).encode()
        return JobOutcome(
            outputs=(Output("faces.json", data, "application/json"),),
            faces=len(faces),
            summary={"faces": len(faces)},
        )
