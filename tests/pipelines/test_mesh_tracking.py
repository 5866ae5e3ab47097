"""Mesh tracking on generated clips made from scikit-image's astronaut (real models)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from pipelines.errors import BadParams
from pipelines.faces import regions
from pipelines.faces.detector import CenterFaceDetector
from pipelines.faces.mesh import FaceMesher, default_mesher
from pipelines.faces.mesh_tracking import MeshTracker, MeshTrackerConfig

pytestmark = pytest.mark.timeout(300)

W, H = 1280, 720


@pytest.fixture(scope="module")
def mesher() -> FaceMesher:
    return default_mesher()


def scene(astronaut_bgr: NDArray[np.uint8], dx: int = 0) -> NDArray[np.uint8]:
    """A 720p frame: the astronaut scaled to 720 px high on a grey wall, shifted by ``dx``."""
    frame = np.full((H, W, 3), (120, 110, 100), np.uint8)
    big = cv2.resize(astronaut_bgr, (H, H), interpolation=cv2.INTER_CUBIC)
    x0 = 280 + dx
    frame[:, x0 : x0 + H] = big
    return frame


def noisy(frame: NDArray[np.uint8], rng: np.random.Generator) -> NDArray[np.uint8]:
    """Sensor noise (sigma 3 levels) and JPEG quality 85: what a still camera delivers."""
    noise = rng.normal(0.0, 3.0, frame.shape).round().astype(np.int16)
    out = np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    ok, enc = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return np.asarray(cv2.imdecode(enc, cv2.IMREAD_COLOR), np.uint8)


def rms_jitter(points: list[NDArray[np.float32]]) -> float:
    """RMS distance (px) of every point from its mean position over the frames."""
    stack = np.asarray(points, dtype=np.float64)
    dev = stack - stack.mean(axis=0)
    return float(np.sqrt((dev**2).sum(axis=2).mean()))


def test_still_face_at_720p_jitters_under_half_a_pixel(
    astronaut_bgr: NDArray[np.uint8], detector: CenterFaceDetector, mesher: FaceMesher
) -> None:
    base = scene(astronaut_bgr)
    rng = np.random.default_rng(7)
    frames = [noisy(base, rng) for _ in range(60)]
    raw_cfg = MeshTrackerConfig(min_cutoff=1e6, beta=0.0)  # no smoothing: the raw mesh
    figures = {}
    for name, cfg in (("raw", raw_cfg), ("smoothed", MeshTrackerConfig())):
        tracker = MeshTracker(detector, mesher, cfg)
        points = []
        for i, frame in enumerate(frames):
            out = tracker.update(i, frame)
            assert [t.track_id for t in out] == [1]
            points.append(out[0].mesh.points[:, :2])
        figures[name] = rms_jitter(points[10:])
        # Detection only on the first frame and then every detect_every frames.
        assert tracker.detections_run == 1 + (len(frames) - 1) // cfg.detect_every
    assert figures["smoothed"] <= 0.5
    assert figures["smoothed"] < figures["raw"]  # the filter does something
    assert figures["raw"] > 0.02  # the noise reached the mesh (the test can fail)


def test_moving_face_is_followed_by_the_mesh(
    astronaut_bgr: NDArray[np.uint8], detector: CenterFaceDetector, mesher: FaceMesher
) -> None:
    tracker = MeshTracker(detector, mesher, MeshTrackerConfig(detect_every=30))
    reference = mesher.fit(scene(astronaut_bgr), detector.detect(scene(astronaut_bgr))[0])
    nose0 = reference.points[regions.NOSE_TIP, :2]
    face_size = reference.roi.size / 1.5
    for i in range(0, 30):
        dx = -8 * i  # 8 px per frame to the left (240 px/s at 30 fps)
        out = tracker.update(i, scene(astronaut_bgr, dx))
        assert [t.track_id for t in out] == [1]
        nose = out[0].mesh.points[regions.NOSE_TIP, :2]
        assert out[0].face.landmarks[2] == pytest.approx(tuple(nose), abs=0.01)
        assert out[0].face.box[0] < nose[0] < out[0].face.box[2]
        # Within 4 % of the face size of where the nose really is (One Euro lag included).
        assert np.hypot(*(nose - nose0 - [dx, 0])) < 0.04 * face_size, i
    assert tracker.detections_run == 1


def test_lost_face_ends_the_track_and_a_new_one_starts(
    astronaut_bgr: NDArray[np.uint8], detector: CenterFaceDetector, mesher: FaceMesher
) -> None:
    tracker = MeshTracker(detector, mesher)
    blank = np.full((H, W, 3), (120, 110, 100), np.uint8)
    face = scene(astronaut_bgr)
    ids = []
    for i in range(18):
        frame = face if i < 6 or i >= 12 else blank
        ids.append([t.track_id for t in tracker.update(i, frame)])
    assert ids[:6] == [[1]] * 6
    assert ids[6:12] == [[]] * 6
    assert ids[12:] == [[2]] * 6
    # A jump backwards is a new video.
    assert [t.track_id for t in tracker.update(0, face)] == [3]


def test_config_is_validated(detector: CenterFaceDetector, mesher: FaceMesher) -> None:
    with pytest.raises(BadParams):
        MeshTrackerConfig(detect_every=0)
    with pytest.raises(BadParams):
        MeshTrackerConfig(min_cutoff=0)
    with pytest.raises(BadParams):
        MeshTracker(detector, mesher, fps=0)
