"""The stage-timing wrapper around the face detector changes nothing but the metrics."""

from __future__ import annotations

import numpy as np

from pipelines.deid.gate import gate_detector
from pipelines.faces import CenterFaceDetector, DetectorConfig
from worker.metrics import STAGE_SECONDS, timed_detector


def test_the_wrapper_passes_for_the_detector_and_times_detect() -> None:
    inner = CenterFaceDetector.load(DetectorConfig(threshold=0.5))
    wrapped = timed_detector(inner, "unit-test")
    assert isinstance(wrapped, CenterFaceDetector)
    assert wrapped.config == inner.config
    # The residual gate swaps in a lower-threshold detector for a CenterFace one: still so.
    gate = gate_detector(wrapped, 0.3)
    assert isinstance(gate, CenterFaceDetector) and gate.config.threshold == 0.3
    before = STAGE_SECONDS.labels("unit-test", "detect")._sum.get()
    faces = wrapped.detect(np.zeros((64, 64, 3), np.uint8))
    assert faces == inner.detect(np.zeros((64, 64, 3), np.uint8))
    assert STAGE_SECONDS.labels("unit-test", "detect")._sum.get() > before
