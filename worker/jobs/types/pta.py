"""Job type ``pta`` (photo to avatar): ``avatar.json`` (the measured avatar spec, schema v2) and
``avatar.svg``, ``avatar.png`` and ``avatar.glb`` drawn from it alone."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pipelines.media import decode_image
from pipelines.params import JOB, Params
from pipelines.pta.avatar import LARGEST, AvatarConfig, draw, measure_spec
from pipelines.pta.spec import STYLES
from worker.jobs.registry import JobHandler, JobOutcome, Output, Tools, register

_MAX_FACE_INDEX = 999


@register
class PtaJob(JobHandler):
    """Make an avatar of one face of a photo (the largest unless ``face`` names another);
    ``no_face`` when there is none."""

    name = "pta"

    def validate(self, params: Mapping[str, Any]) -> Mapping[str, Any]:
        """Accepts ``face`` (``"largest"``, the default, or an index into the detector's
        list, as the ``detect`` job orders it), ``size`` (PNG side in pixels, 64-2048, default
        512) and ``style`` (``flat``, the default, or ``toon``)."""
        checked = Params(params, ("face", "size", "style"), wording=JOB)
        face: str | int = LARGEST
        if "face" in checked and checked.raw("face") != LARGEST:
            if isinstance(checked.raw("face"), str):
                checked.fail('face must be "largest" or a face index from 0')
            face = checked.integer("face", 0, 0, _MAX_FACE_INDEX)
        return {
            "face": face,
            "size": checked.integer("size", 512, 64, 2048),
            "style": checked.choice("style", STYLES, STYLES[0]),
        }

    def run(self, media: bytes, params: Mapping[str, Any], tools: Tools) -> JobOutcome:
        """Decode, detect, measure the chosen face, draw."""
        image = decode_image(media, tools.image_limits)
        faces = tools.detector().detect(image)
        config = AvatarConfig(face=params["face"], style=params["style"], size=params["size"])
        outputs = draw(measure_spec(image, faces, config))
        source = outputs.spec.source
        return JobOutcome(
            outputs=(
                Output(
                    "avatar.json",
                    json.dumps(outputs.spec.to_json(), indent=2).encode(),
                    "application/json",
                ),
                Output("avatar.svg", outputs.svg, "image/svg+xml"),
                Output("avatar.png", outputs.png, "image/png"),
                Output("avatar.glb", outputs.glb, "model/gltf-binary"),
            ),
            faces=len(faces),
            summary={"faces": len(faces), "face": source.face, "chosen_by": source.chosen_by},
        )
