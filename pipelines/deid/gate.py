"""The residual-face gate: a de-identified output passes only if no face can be found in it.

The output is re-detected at a *low* threshold (0.2 by default, against the detector's usual 0.5)
over the whole image, or over every frame of a video. The gate fails closed:

* any face found -> fail (``residual_face``);
* the source had no detectable face -> fail (``no_source_face``): nothing can be proven
  anonymised, the detector may simply have missed the face that is still there;
* an empty frame sequence -> fail (``no_frames``).

**Second opinion (the face mesh), where the operator cleared the face.** A low threshold also
finds things that are not faces: the edge of a mask against a collar (CenterFace 0.36 on
scikit-image's astronaut), the dots of ``landmarks_only`` (0.2). When the operator painted the
face's region solid (:data:`CLEARING_OPERATORS`: no pixel of the face is left there), the caller
passes those regions as ``cleared``; a detection that overlaps one and scores below
:data:`SURE_SCORE` (0.5, the detector's usual threshold) then counts only if the 468-point face
mesh fitted on it (:class:`pipelines.faces.mesh.FaceMesher`) reports a presence of at least
:data:`MESH_PRESENCE` (0.1; the mesh reads 0.008 on that collar and 1.0 on a face). Everything
else counts as the detector says: a detection at or above :data:`SURE_SCORE`, one away from the
cleared regions (an untouched face the source detection missed), and every detection on a
blurred or pixelated output (a blurred face reads 0.001 to the mesh and can still be
recognised). ``dismissed`` counts what the mesh dismissed. On video the regions are given per
frame (``cleared_frames``), since the faces move.

A job whose output fails the gate raises :class:`ResidualFace` (code ``residual_face``), whose
message names a stronger setting to try (:func:`stronger_than`).

A :class:`~pipelines.faces.detector.CenterFaceDetector` whose threshold is above the gate's is
replaced by one with the gate's threshold (same settings otherwise; loaded once per process and
settings, then reused). Any other :class:`~pipelines.faces.detector.FaceDetector` is run as given
and its faces counted when their score reaches the threshold; such a detector must itself be
configured to report faces down to that score.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
from numpy.typing import NDArray

from pipelines.deid.geometry import ellipse_region
from pipelines.errors import BadParams, PipelineError
from pipelines.faces.detector import CenterFaceDetector, DetectorConfig, Face, FaceDetector
from pipelines.faces.mesh import default_mesher
from pipelines.media.video import VideoLimits, iter_frames

GateReason = Literal["ok", "residual_face", "no_source_face", "no_frames"]

DEFAULT_GATE_THRESHOLD = 0.2
#: Detections at or above this score count without a second opinion.
SURE_SCORE: Final = 0.5
#: Below :data:`SURE_SCORE`, a detection on a cleared region counts when the mesh's face
#: presence reaches this.
MESH_PRESENCE: Final = 0.1
#: Operators that paint each face's dilated ellipse solid: no pixel of the face is left in it.
CLEARING_OPERATORS: Final = frozenset({"mask", "landmarks_only"})

Box = tuple[float, float, float, float]
_LIMITS = VideoLimits()


@dataclass(frozen=True)
class GateResult:
    """The gate's verdict: ``passed``, the number of faces found (summed over frames), the
    ``reason`` (``ok`` when passed), the frames checked, the first frame with a face, and the
    low-score detections the face mesh dismissed as not a face."""

    passed: bool
    residual_faces: int
    reason: GateReason
    frames_checked: int = 0
    first_residual_frame: int | None = None
    dismissed: int = 0

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict of the verdict."""
        return dataclasses.asdict(self)


class ResidualFace(PipelineError):
    """A de-identified output still holds a detectable face: nothing of it may be kept."""

    code = "residual_face"
    default_message = "a face is still detectable in the de-identified output"


#: What to try when an operator's output fails the gate: the next stronger setting.
_STRONGER: Final[dict[str, str]] = {
    "blur": "pixelate (blocks 4) or mask",
    "pixelate": "mask",
    "mask": "mask with a larger dilation (2.0)",
    "landmarks_only": "mask with a larger dilation (2.0)",
    "k_same": "mask",
}


def stronger_than(operator: str) -> str:
    """The stronger operator (or setting) to try after ``operator`` failed the gate."""
    return _STRONGER.get(operator, "mask")


def residual_face(operator: str, verdict: GateResult) -> ResidualFace:
    """The error for an output of ``operator`` that failed the gate with ``verdict``."""
    where = (
        "" if verdict.frames_checked <= 1 else f" (first on frame {verdict.first_residual_frame})"
    )
    return ResidualFace(
        f"{verdict.residual_faces} face(s) still detectable after {operator}{where}; "
        f"nothing was kept; try a stronger operator: {stronger_than(operator)}"
    )


@functools.lru_cache(maxsize=4)
def _centerface(config: DetectorConfig) -> CenterFaceDetector:
    return CenterFaceDetector.load(config)


def at_threshold(detector: FaceDetector, threshold: float) -> FaceDetector:
    """``detector`` itself, or, for a CenterFace above ``threshold``, one at ``threshold`` with
    the same settings otherwise (loaded once per process and settings)."""
    if isinstance(detector, CenterFaceDetector) and detector.config.threshold > threshold:
        return _centerface(dataclasses.replace(detector.config, threshold=threshold))
    return detector


def gate_detector(
    detector: FaceDetector, threshold: float = DEFAULT_GATE_THRESHOLD
) -> FaceDetector:
    """The detector the gate runs (:func:`at_threshold` at the gate's threshold)."""
    return at_threshold(detector, threshold)


def _faces(detector: FaceDetector, frame: NDArray[np.uint8], threshold: float) -> list[Face]:
    return [f for f in detector.detect(frame) if f.score >= threshold]


def cleared_boxes(shape: tuple[int, ...], faces: Sequence[Face], dilation: float) -> list[Box]:
    """The bounding boxes of the faces' dilated ellipses (what a clearing operator painted)."""
    boxes: list[Box] = []
    for face in faces:
        region = ellipse_region(shape, face, dilation)
        if not region.empty:
            boxes.append((region.x0, region.y0, region.x1, region.y1))
    return boxes


def cleared_by(
    operator: str, shape: tuple[int, ...], faces: Sequence[Face], params: Mapping[str, Any] | Any
) -> list[Box]:
    """What ``operator`` painted solid over ``faces``: the ``cleared`` argument of
    :func:`residual_gate`; empty for an operator that clears nothing. ``params``: the
    operator's parameters as given (validated here) or its validated record."""
    if operator not in CLEARING_OPERATORS:
        return []
    if isinstance(params, Mapping):
        from pipelines.deid.registry import get_operator

        params = get_operator(operator).validate(params)  # fills the operator's defaults
    return cleared_boxes(shape, faces, float(params.dilation))


def _overlaps(face: Face, box: Box) -> bool:
    x1, y1, x2, y2 = face.box
    return x1 < box[2] and box[0] < x2 and y1 < box[3] and box[1] < y2


def confirmed(frame: NDArray[np.uint8], faces: list[Face], cleared: Sequence[Box]) -> list[Face]:
    """The detections that count as faces: all but those that overlap a ``cleared`` region,
    score below :data:`SURE_SCORE` and fit a mesh of presence below :data:`MESH_PRESENCE`."""
    unsure = [
        f for f in faces if f.score < SURE_SCORE and any(_overlaps(f, box) for box in cleared)
    ]
    if not unsure:
        return faces
    mesher = default_mesher()
    dismissed = {id(f) for f in unsure if mesher.fit(frame, f, iris=False).presence < MESH_PRESENCE}
    return [f for f in faces if id(f) not in dismissed]


def residual_gate(
    img_or_frames: NDArray[np.uint8] | Iterable[NDArray[np.uint8]],
    detector: FaceDetector,
    source_faces: int,
    threshold: float = DEFAULT_GATE_THRESHOLD,
    *,
    cleared: Sequence[Box] = (),
    cleared_frames: Sequence[Sequence[Box]] = (),
) -> GateResult:
    """Check a de-identified image (an ``HxWx3`` array) or every frame of an iterable of frames.

    ``source_faces`` is the number of faces found in the source (for video, tracks). The source
    is checked first, so a source without a face fails without running the detector.
    ``cleared``: regions (x1, y1, x2, y2) a clearing operator painted solid (an image's; see the
    module docstring), where the face mesh gives a second opinion on low-score detections.
    ``cleared_frames``: the same per frame of a video (frame ``i`` uses ``cleared_frames[i]``;
    a frame past its end gets the detector alone).
    """
    if not 0.0 < threshold < 1.0:
        raise BadParams("the gate threshold must be between 0 and 1")
    if source_faces <= 0:
        return GateResult(False, 0, "no_source_face")
    frames: Iterable[NDArray[np.uint8]]
    frames = [img_or_frames] if isinstance(img_or_frames, np.ndarray) else img_or_frames
    runner = gate_detector(detector, threshold)
    found = 0
    checked = 0
    dismissed = 0
    first: int | None = None
    for index, frame in enumerate(frames):
        checked += 1
        faces = _faces(runner, frame, threshold)
        here = cleared_frames[index] if index < len(cleared_frames) else cleared
        kept = confirmed(frame, faces, here) if here and faces else faces
        dismissed += len(faces) - len(kept)
        if kept and first is None:
            first = index
        found += len(kept)
    if checked == 0:
        return GateResult(False, 0, "no_frames")
    if found:
        return GateResult(False, found, "residual_face", checked, first, dismissed)
    return GateResult(True, 0, "ok", checked, None, dismissed)


def residual_gate_video(
    data: bytes,
    detector: FaceDetector,
    source_faces: int,
    threshold: float = DEFAULT_GATE_THRESHOLD,
    limits: VideoLimits = _LIMITS,
    *,
    cleared_frames: Sequence[Sequence[Box]] = (),
) -> GateResult:
    """:func:`residual_gate` over every decoded frame of an encoded video; ``cleared_frames``
    (per frame, what a clearing operator painted: :attr:`DeidVideo.cleared`) lets the face
    mesh give its second opinion there, as on a photo; without it, the detector alone."""
    return residual_gate(
        (bgr for _, _, bgr in iter_frames(data, limits)),
        detector,
        source_faces,
        threshold,
        cleared_frames=cleared_frames,
    )


__all__ = [
    "CLEARING_OPERATORS",
    "DEFAULT_GATE_THRESHOLD",
    "MESH_PRESENCE",
    "SURE_SCORE",
    "Box",
    "GateReason",
    "GateResult",
    "ResidualFace",
    "at_threshold",
    "cleared_boxes",
    "confirmed",
    "gate_detector",
    "residual_face",
    "residual_gate",
    "residual_gate_video",
    "stronger_than",
]
