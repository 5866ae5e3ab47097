"""The k-Same gate: a k-Same output passes only if the batch had ≥ k distinct subjects and
every face re-detected at the gate's low threshold lies on a region that was replaced by a
cluster average (see the package docstring). Fails closed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from pipelines.deid.gate import DEFAULT_GATE_THRESHOLD, gate_detector
from pipelines.deid.geometry import ellipse_region
from pipelines.faces.detector import Face, FaceDetector

__all__ = ["MIN_IOU", "KSameGateResult", "k_same_gate"]

MIN_IOU = 0.3


@dataclass(frozen=True)
class KSameGateResult:
    """The k-Same gate's verdict: faces found, how many lay on replaced regions, the batch's
    distinct subjects, and the ``reason`` (``ok``, ``face_outside_replaced``,
    ``too_few_subjects``, ``no_source_face``)."""

    passed: bool
    reason: str
    faces: int = 0
    on_replaced: int = 0
    subjects: int = 0
    k: int = 0

    def to_json(self) -> dict[str, object]:
        """JSON-ready."""
        return {
            "gate": "k_same",
            "passed": self.passed,
            "reason": self.reason,
            "faces": self.faces,
            "on_replaced": self.on_replaced,
            "subjects": self.subjects,
            "k": self.k,
        }


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _on_replaced(found: Face, replaced: Sequence[Face], shape: tuple[int, ...], d: float) -> bool:
    cx, cy = (found.box[0] + found.box[2]) / 2.0, (found.box[1] + found.box[3]) / 2.0
    for face in replaced:
        if _iou(found.box, face.box) >= MIN_IOU:
            return True
        region = ellipse_region(shape, face, d)
        if not region.empty and region.x0 <= cx < region.x1 and region.y0 <= cy < region.y1:
            return True
    return False


def k_same_gate(
    img: NDArray[np.uint8],
    detector: FaceDetector,
    replaced: Sequence[Face],
    dilation: float,
    subjects: int,
    k: int,
    threshold: float = DEFAULT_GATE_THRESHOLD,
) -> KSameGateResult:
    """Check one k-Same output: fail closed unless the batch had ≥ ``k`` distinct subjects and
    every face detected at ``threshold`` lies on a replaced region (see the package docstring)."""
    if not replaced:
        return KSameGateResult(False, "no_source_face", subjects=subjects, k=k)
    if subjects < k:
        return KSameGateResult(False, "too_few_subjects", subjects=subjects, k=k)
    runner = gate_detector(detector, threshold)
    found = [f for f in runner.detect(img) if f.score >= threshold]
    on = sum(1 for f in found if _on_replaced(f, replaced, img.shape, dilation))
    if on < len(found):
        return KSameGateResult(False, "face_outside_replaced", len(found), on, subjects, k)
    return KSameGateResult(True, "ok", len(found), on, subjects, k)
