"""De-identification of an image or a video with a registered operator.

:func:`deidentify_image` applies an operator to given faces of one BGR image;
:func:`deidentify_video` detects and tracks faces through a video (:class:`~pipelines.faces.
tracking.LookaheadTracker`: detection every few frames, coasting in between, so a face is never
left unmasked on a frame the detector misses; the frames are held until the next detection, so a
face's box between two detections is interpolated between them and a face found at a detection
is masked on the frames before it too) and applies the operator to every frame, on the decoder's
own YUV planes (:mod:`pipelines.deid.planar`; only the frames the detector runs on are converted
to BGR). The video output is H.264 MP4 written by
:func:`~pipelines.media.video.transform_video_planes`: no container or stream metadata of the
input survives (no creation time, location, device), and the audio is *dropped* unless
``keep_audio`` is set (a voice identifies). Images come back as arrays: encode them with
:func:`~pipelines.media.image.encode_image`, which writes pixels only.

Neither function proves anything: run :func:`~pipelines.deid.gate.residual_gate` on the result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from pipelines.deid.gate import Box, at_threshold, cleared_by
from pipelines.deid.planar import apply_planes
from pipelines.deid.registry import FaceAnnotation, get_operator
from pipelines.faces.detector import Face, FaceDetector
from pipelines.faces.tracking import FaceTracker, LookaheadTracker, TrackedFace, TrackerConfig
from pipelines.media.video import Planes, VideoLimits, transform_video_planes

_LIMITS: Final = VideoLimits()
_TRACKER: Final = TrackerConfig()

#: Detection threshold for de-identification (CenterFace's default is 0.5). Masking a false
#: positive costs little, missing a face leaks it: at 0.5 CenterFace found 91 of the 96 faces of
#: the evaluation scenes, at 0.3 all 96 with no false positive (docs/PRIVACY.md).
DEID_DETECT_THRESHOLD: Final = 0.3

#: The default operator and parameters (read-only), calibrated by ``bench/privacy_eval.py``
#: (docs/PRIVACY.md): 0 residual detections (dlib HOG) and 0 re-identifications (dlib ResNet at
#: 0.6) on the generated scenes, with every scene whose faces were all found passing the gate.
DEFAULT_PROFILE: Final[tuple[str, Mapping[str, object]]] = (
    "mask",
    MappingProxyType({"dilation": 1.5}),
)


@dataclass(frozen=True)
class DeidResult:
    """A de-identified image (BGR ``uint8``) and the operator's annotations."""

    image: NDArray[np.uint8]
    annotations: tuple[FaceAnnotation, ...] = ()


@dataclass(frozen=True)
class DeidVideo:
    """A de-identified video: the MP4 bytes, the number of tracks (distinct faces seen), the
    number of frames and of frames that had at least one face."""

    data: bytes
    tracks: int
    frames: int
    frames_with_faces: int
    operator: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    #: Per frame, the regions a clearing operator painted solid (empty tuples for any other
    #: operator): the gate's ``cleared_frames`` (see :mod:`pipelines.deid.gate`).
    cleared: tuple[tuple[Box, ...], ...] = ()


def _check_image(img: NDArray[np.uint8]) -> None:
    if (
        not isinstance(img, np.ndarray)
        or img.dtype != np.uint8
        or img.ndim != 3
        or img.shape[2] != 3
    ):
        raise ValueError("de-identification expects an HxWx3 BGR uint8 array")


def deidentify_image(
    img: NDArray[np.uint8],
    faces: Sequence[Face],
    operator: str,
    params: Mapping[str, object] | None = None,
) -> DeidResult:
    """Apply the operator registered as ``operator`` to ``faces`` of ``img``.

    The parameters are validated first (:class:`~pipelines.errors.BadParams`); ``img`` is not
    modified.
    """
    _check_image(img)
    op = get_operator(operator)
    checked = op.validate(params or {})
    output = op.apply(img, faces, checked)
    return DeidResult(output.image, output.annotations)


def deidentify_video_detailed(
    data: bytes,
    detector: FaceDetector,
    operator: str,
    params: Mapping[str, object] | None = None,
    limits: VideoLimits = _LIMITS,
    *,
    keep_audio: bool = False,
    tracker: TrackerConfig = _TRACKER,
    detect_threshold: float | None = DEID_DETECT_THRESHOLD,
    lookahead: bool = True,
) -> DeidVideo:
    """:func:`deidentify_video` returning the counts the gate and the ledger need too.

    ``lookahead=False`` runs the online :class:`~pipelines.faces.tracking.FaceTracker` instead
    (with its warm-up detections; no frame held, no interpolation, no backfill): the behaviour
    before the lookahead, kept for comparison.
    """
    op = get_operator(operator)
    checked = op.validate(params or {})
    if detect_threshold is not None:
        detector = at_threshold(detector, detect_threshold)
    # Timed by each frame's pts.
    ahead = LookaheadTracker(detector, tracker) if lookahead else None
    online = FaceTracker(detector, tracker)
    track_ids: set[int] = set()
    counts = {"frames": 0, "with_faces": 0}
    cleared: list[tuple[Box, ...]] = []

    def look(index: int, pts: float, planes: Planes) -> None:
        # The frame is converted to BGR only when the detector runs on it.
        assert ahead is not None
        ahead.look(index, (planes.width, planes.height), planes.bgr, pts)

    def fn(index: int, pts: float, planes: Planes) -> None:
        tracked: list[TrackedFace]
        if ahead is not None:
            tracked = ahead.faces(index)
        else:
            tracked = online.track(index, (planes.width, planes.height), planes.bgr, pts)
        counts["frames"] += 1
        faces = [t.face for t in tracked]
        cleared.append(tuple(cleared_by(operator, (planes.height, planes.width), faces, checked)))
        if not tracked:
            return
        counts["with_faces"] += 1
        track_ids.update(t.track_id for t in tracked)
        apply_planes(op, planes, faces, checked)

    if ahead is not None:
        out = transform_video_planes(
            data, fn, limits, keep_audio=keep_audio, look=look, lookahead=ahead.lookahead
        )
    else:
        out = transform_video_planes(data, fn, limits, keep_audio=keep_audio)
    return DeidVideo(
        out,
        len(track_ids),
        counts["frames"],
        counts["with_faces"],
        operator,
        dict(params or {}),
        tuple(cleared),
    )


def deidentify_video(
    data: bytes,
    detector: FaceDetector,
    operator: str,
    params: Mapping[str, object] | None = None,
    limits: VideoLimits = _LIMITS,
    *,
    keep_audio: bool = False,
    tracker: TrackerConfig = _TRACKER,
    detect_threshold: float | None = DEID_DETECT_THRESHOLD,
) -> bytes:
    """De-identify every tracked face of a video; the H.264 MP4 bytes.

    Faces are detected at ``detect_threshold`` (:data:`DEID_DETECT_THRESHOLD`; ``None`` runs
    ``detector`` as given), then tracked. Audio is dropped unless ``keep_audio``; no container or
    stream metadata of the input is written. Errors: those of
    :func:`~pipelines.media.video.transform_video` and the operator's (for ``k_same``, a frame
    with fewer than ``k`` faces raises
    :class:`~pipelines.deid.operators.k_same.KSameBatchTooSmall`).
    """
    return deidentify_video_detailed(
        data,
        detector,
        operator,
        params,
        limits,
        keep_audio=keep_audio,
        tracker=tracker,
        detect_threshold=detect_threshold,
    ).data


__all__ = [
    "DEFAULT_PROFILE",
    "DEID_DETECT_THRESHOLD",
    "DeidResult",
    "DeidVideo",
    "deidentify_image",
    "deidentify_video",
    "deidentify_video_detailed",
]
