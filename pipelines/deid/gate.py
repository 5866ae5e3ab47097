"""The residual-face gate: a de-identified output passes only if no face can be found in it.

The output is re-detected at a *low* threshold (0.2 by default, against the detector's usual 0.5)
over the whole image, or over every frame of a video. The gate fails closed:

* any face found -> fail (``residual_face``);
* the source had no detectable face -> fail (``no_source_face``): nothing can be proven
  anonymised, the detector may simply have missed the face that is still there;
* an empty frame sequence -> fail (``no_frames``).

A :class:`~pipelines.faces.detector.CenterFaceDetector` whose threshold is above the gate's is
replaced by one with the gate's threshold (same settings otherwise; loaded once per process and
settings, then reused). Any other :class:`~pipelines.faces.detector.FaceDetector` is run as given
and its faces counted when their score reaches the threshold; such a detector must itself be
configured to report faces down to that score.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from pipelines.errors import BadParams
from pipelines.faces.detector import CenterFaceDetector, DetectorConfig, Face, FaceDetector
from pipelines.media.video import VideoLimits, iter_frames

GateReason = Literal["ok", "residual_face", "no_source_face", "no_frames"]

DEFAULT_GATE_THRESHOLD = 0.2
_LIMITS = VideoLimits()


@dataclass(frozen=True)
class GateResult:
    """The gate's verdict: ``passed``, the number of faces found (summed over frames), the
    ``reason`` (``ok`` when passed), the frames checked and the first frame with a face."""

    passed: bool
    residual_faces: int
    reason: GateReason
    frames_checked: int = 0
    first_residual_frame: int | None = None

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict of the verdict."""
        return dataclasses.asdict(self)


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


def residual_gate(
    img_or_frames: NDArray[np.uint8] | Iterable[NDArray[np.uint8]],
    detector: FaceDetector,
    source_faces: int,
    threshold: float = DEFAULT_GATE_THRESHOLD,
) -> GateResult:
    """Check a de-identified image (an ``HxWx3`` array) or every frame of an iterable of frames.

    ``source_faces`` is the number of faces found in the source (for video, tracks). The source
    is checked first, so a source without a face fails without running the detector.
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
    first: int | None = None
    for index, frame in enumerate(frames):
        checked += 1
        count = len(_faces(runner, frame, threshold))
        if count and first is None:
            first = index
        found += count
    if checked == 0:
        return GateResult(False, 0, "no_frames")
    if found:
        return GateResult(False, found, "residual_face", checked, first)
    return GateResult(True, 0, "ok", checked, None)


def residual_gate_video(
    data: bytes,
    detector: FaceDetector,
    source_faces: int,
    threshold: float = DEFAULT_GATE_THRESHOLD,
    limits: VideoLimits = _LIMITS,
) -> GateResult:
    """:func:`residual_gate` over every decoded frame of an encoded video."""
    return residual_gate(
        (bgr for _, _, bgr in iter_frames(data, limits)), detector, source_faces, threshold
    )


__all__ = [
    "DEFAULT_GATE_THRESHOLD",
    "GateReason",
    "GateResult",
    "at_threshold",
    "gate_detector",
    "residual_gate",
    "residual_gate_video",
]
