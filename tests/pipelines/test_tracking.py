"""Face tracking and One Euro smoothing: scripted detectors and the real CenterFace model."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from pipelines.errors import BadParams
from pipelines.faces.detector import CenterFaceDetector, Face, FaceDetector
from pipelines.faces.smoothing import OneEuroFilter
from pipelines.faces.tracking import FaceTracker, LookaheadTracker, TrackedFace, TrackerConfig

pytestmark = pytest.mark.timeout(60)

FRAME_H, FRAME_W = 360, 640


def make_face(cx: float, cy: float, size: float = 80.0, score: float = 0.9) -> Face:
    """A square face box with plausibly placed landmarks."""
    half = size / 2
    rel = [(-0.2, -0.1), (0.2, -0.1), (0.0, 0.1), (-0.15, 0.3), (0.15, 0.3)]
    return Face(
        box=(cx - half, cy - half, cx + half, cy + half),
        landmarks=tuple((cx + dx * size, cy + dy * size) for dx, dy in rel),
        score=score,
    )


def stamped_frame(index: int) -> NDArray[np.uint8]:
    """A small black frame carrying its index in the first two pixels (read by ScriptedDetector)."""
    frame = np.zeros((FRAME_H, FRAME_W, 3), np.uint8)
    frame[0, 0, 0], frame[0, 0, 1] = index % 256, index // 256
    return frame


class ScriptedDetector(FaceDetector):
    """Returns ``script(index)`` for the frame whose index is stamped in it; records the calls."""

    def __init__(self, script: Callable[[int], list[Face]]) -> None:
        self.script = script
        self.calls: list[int] = []

    def detect(self, img: NDArray[np.uint8]) -> list[Face]:
        index = int(img[0, 0, 0]) + 256 * int(img[0, 0, 1])
        self.calls.append(index)
        return self.script(index)


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def run(tracker: FaceTracker, frames: int) -> list[list[TrackedFace]]:
    return [tracker.update(i, stamped_frame(i)) for i in range(frames)]


# ------------------------------------------------------------------ One Euro filter


def test_one_euro_first_sample_and_constant() -> None:
    f = OneEuroFilter(min_cutoff=1.0, beta=0.5)
    assert f.value is None
    np.testing.assert_array_equal(f.filter(0.0, [3.0, -2.0]), [3.0, -2.0])
    for i in range(1, 50):
        out = f.filter(i / 30, [3.0, -2.0])
    np.testing.assert_allclose(out, [3.0, -2.0])


def test_one_euro_removes_jitter_of_a_still_signal() -> None:
    rng = np.random.default_rng(0)
    f = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    noisy = 10.0 + rng.normal(0, 1.0, size=300)
    out = np.array([f.filter(i / 30, [v])[0] for i, v in enumerate(noisy)])
    assert np.std(out[30:]) < 0.35 * np.std(noisy[30:])
    assert abs(np.mean(out[30:]) - 10.0) < 0.3


def test_one_euro_beta_reduces_lag_on_fast_motion() -> None:
    def lag(beta: float) -> float:
        f = OneEuroFilter(min_cutoff=1.0, beta=beta)
        out = [f.filter(i / 30, [100.0 * i / 30])[0] for i in range(60)]
        return 100.0 * 59 / 30 - out[-1]

    assert lag(0.0) > 10.0  # a plain 1 Hz low-pass trails a 100 units/s ramp by ~16 units
    assert lag(1.0) < 0.2 * lag(0.0)


def test_one_euro_matches_reference_equations() -> None:
    """Two steps computed by hand from Casiez et al.'s equations."""
    f = OneEuroFilter(min_cutoff=1.0, beta=0.1, d_cutoff=1.0)
    f.filter(0.0, [0.0])
    dt = 0.1

    def alpha(cutoff: float) -> float:
        tau = 1 / (2 * np.pi * cutoff)
        return 1 / (1 + tau / dt)

    dx_hat = alpha(1.0) * (5.0 - 0.0) / dt
    x_hat = alpha(1.0 + 0.1 * abs(dx_hat)) * 5.0
    assert f.filter(dt, [5.0])[0] == pytest.approx(x_hat)


def test_one_euro_repeated_time_and_reset() -> None:
    f = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    f.filter(0.0, [0.0])
    first = f.filter(0.1, [10.0])
    np.testing.assert_array_equal(f.filter(0.1, [99.0]), first)  # same timestamp: no update
    np.testing.assert_array_equal(f.filter(0.2, [1.0, 2.0]), [1.0, 2.0])  # new shape: restart
    f.reset()
    np.testing.assert_array_equal(f.filter(5.0, [7.0]), [7.0])


@pytest.mark.parametrize(
    "kwargs", [{"min_cutoff": 0.0}, {"beta": -1.0}, {"d_cutoff": -2.0}, {"min_cutoff": np.inf}]
)
def test_one_euro_bad_params(kwargs: dict[str, float]) -> None:
    with pytest.raises(BadParams):
        OneEuroFilter(**kwargs)


# ------------------------------------------------------------------ tracker, scripted detector


@pytest.mark.parametrize(
    "kwargs",
    [{"detect_every": 0}, {"iou_match": 0.0}, {"max_missed": -1}, {"min_hits": 0}, {"beta": -1}],
)
def test_tracker_config_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(BadParams):
        TrackerConfig(**kwargs)  # type: ignore[arg-type]


def test_linear_motion_with_dropped_detections() -> None:
    dropped = {7, 12, 22, 27}  # two single misses and two consecutive detection rounds

    def truth(i: int) -> Face:
        return make_face(60 + 4.0 * i, 150 + 1.0 * i)

    detector = ScriptedDetector(lambda i: [] if i in dropped else [truth(i)])
    tracker = FaceTracker(detector, TrackerConfig(detect_every=5, max_missed=10))
    out = run(tracker, 60)
    assert all(len(faces) == 1 for faces in out), [len(f) for f in out]
    assert {faces[0].track_id for faces in out} == {1}
    for i, faces in enumerate(out):
        assert iou(faces[0].face.box, truth(i).box) > 0.8, i
        matched = i in detector.calls and i not in dropped
        assert faces[0].predicted is (not matched)


def test_detector_runs_every_n_frames_after_warmup() -> None:
    detector = ScriptedDetector(lambda i: [make_face(200 + i, 180)])
    tracker = FaceTracker(detector, TrackerConfig(detect_every=5))
    run(tracker, 40)
    # Frames 0, 1, 2 measure the new face's velocity; then every fifth frame.
    assert detector.calls == [0, 1, 2, 7, 12, 17, 22, 27, 32, 37]
    assert tracker.detections_run == len(detector.calls)


def test_one_off_false_positive_costs_two_extra_detections() -> None:
    def script(i: int) -> list[Face]:
        found = [make_face(150, 150)]
        if i == 7:
            found.append(make_face(450, 200, size=50, score=0.55))  # seen once, never again
        return found

    detector = ScriptedDetector(script)
    out = run(FaceTracker(detector, TrackerConfig(detect_every=5, max_missed=10)), 40)
    assert detector.calls == [0, 1, 2, 7, 8, 9, 14, 19, 24, 29, 34, 39]
    counts = [len(f) for f in out]
    # The phantom coasts until the first detection round more than 10 frames after frame 7.
    assert counts == [1] * 7 + [2] * (19 - 7) + [1] * (40 - 19)


def test_detect_every_frame() -> None:
    detector = ScriptedDetector(lambda i: [make_face(200, 180)])
    out = run(FaceTracker(detector, TrackerConfig(detect_every=1)), 10)
    assert detector.calls == list(range(10))
    assert not any(faces[0].predicted for faces in out)


def test_track_coasts_then_ends_after_max_missed() -> None:
    gone_after = 20

    def script(i: int) -> list[Face]:
        return [make_face(150 + 2.0 * i, 180)] if i <= gone_after else []

    detector = ScriptedDetector(script)
    out = run(FaceTracker(detector, TrackerConfig(detect_every=5, max_missed=10)), 60)
    last_match = max(i for i in detector.calls if i <= gone_after)
    alive = [i for i, faces in enumerate(out) if faces]
    # Boxes on every frame until the detection round that finds the track missed too long.
    first_dead = min(i for i in detector.calls if i - last_match > 10)
    assert alive == list(range(first_dead))
    # The coasting box kept moving with the face's velocity.
    coast = out[first_dead - 1][0]
    assert coast.predicted
    expected = make_face(150 + 2.0 * (first_dead - 1), 180)
    assert iou(coast.face.box, expected.box) > 0.8


def test_crossing_faces_keep_their_ids() -> None:
    def faces(i: int) -> list[Face]:
        # A moves right, B moves left; their boxes overlap most at frame 28.
        a = make_face(40 + 10.0 * i, 170)
        b = make_face(600 - 10.0 * i, 190)
        return [b, a] if i % 2 else [a, b]  # detector order carries no identity

    detector = ScriptedDetector(faces)
    out = run(FaceTracker(detector, TrackerConfig(detect_every=5)), 55)
    ids_left_at_start = min(out[3], key=lambda f: f.face.box[0]).track_id
    for i, tracked in enumerate(out):
        assert len(tracked) == 2, i
        by_id = {t.track_id: t for t in tracked}
        a_truth, _ = faces(i) if i % 2 == 0 else faces(i)[::-1]
        assert iou(by_id[ids_left_at_start].face.box, a_truth.box) > 0.5, i
    assert {t.track_id for f in out for t in f} == {1, 2}


def test_new_face_and_min_hits() -> None:
    def script(i: int) -> list[Face]:
        found = [make_face(150, 150)]
        if i >= 7:
            found.append(make_face(450, 200, size=60))
        return found

    detector = ScriptedDetector(script)
    out = run(FaceTracker(detector, TrackerConfig(detect_every=5, min_hits=2)), 30)
    # Each face is reported from its second detection on (frame 1 for the first face).
    assert detector.calls[:2] == [0, 1]
    second = [i for i in detector.calls if i >= 7][1]
    assert [len(f) for f in out] == [0] + [1] * (second - 1) + [2] * (30 - second)
    assert {t.track_id for t in out[-1]} == {1, 2}


def test_stop_and_go() -> None:
    def truth(i: int) -> Face:
        x = 100 + 8.0 * min(i, 20)  # moves, then stops dead at frame 20
        return make_face(x, 180)

    out = run(FaceTracker(ScriptedDetector(lambda i: [truth(i)])), 45)
    assert all(len(f) == 1 for f in out)
    # Constant-velocity prediction overshoots a face that stops between two detections; the
    # next detection resets the velocity.
    assert min(iou(f[0].face.box, truth(i).box) for i, f in enumerate(out)) > 0.5
    assert all(iou(out[i][0].face.box, truth(i).box) > 0.9 for i in range(35, 45))


def test_random_detector_dropouts_never_leave_a_frame_without_a_box() -> None:
    rng = np.random.default_rng(3)
    miss = set(np.flatnonzero(rng.random(200) < 0.3).tolist()) - {0}  # the face is found once

    def truth(i: int) -> Face:
        return make_face(320 + 150 * np.sin(i / 25), 180 + 60 * np.cos(i / 40))

    detector = ScriptedDetector(lambda i: [] if i in miss else [truth(i)])
    out = run(FaceTracker(detector, TrackerConfig(detect_every=3, max_missed=12)), 200)
    assert all(len(f) == 1 for f in out)
    assert len({f[0].track_id for f in out}) == 1
    # Coasting along a curve through two missed rounds drifts, but stays on the face.
    assert min(iou(f[0].face.box, truth(i).box) for i, f in enumerate(out)) > 0.45


def test_face_leaving_the_frame_ends_the_track() -> None:
    detector = ScriptedDetector(lambda i: [make_face(500 + 20.0 * i, 180)] if i < 8 else [])
    out = run(FaceTracker(detector, TrackerConfig(detect_every=5, max_missed=100)), 20)
    assert out[0] and not out[-1]  # coasted out of the picture, then dropped
    for faces in out:
        for t in faces:
            x1, y1, x2, y2 = t.face.box
            assert 0 <= x1 <= x2 <= FRAME_W and 0 <= y1 <= y2 <= FRAME_H


def test_timestamps_and_reset_on_index_going_back() -> None:
    detector = ScriptedDetector(lambda i: [make_face(200 + 3 * i, 180)])
    tracker = FaceTracker(detector, TrackerConfig(detect_every=2), fps=25)
    first = [tracker.update(i, stamped_frame(i), t=i * 0.04)[0].track_id for i in range(6)]
    again = tracker.update(0, stamped_frame(0))
    assert set(first) == {1}
    assert again[0].track_id == 2 and not again[0].predicted  # a new video: new track


# ------------------------------------------------------------------ tracker, real detector


class CachingDetector(FaceDetector):
    """The real detector, each distinct frame detected once (shared by several trackers)."""

    def __init__(self, inner: FaceDetector) -> None:
        self.inner = inner
        self.cache: dict[bytes, list[Face]] = {}

    def detect(self, img: NDArray[np.uint8]) -> list[Face]:
        key = hashlib.sha1(img.tobytes()).digest()
        if key not in self.cache:
            self.cache[key] = self.inner.detect(img)
        return self.cache[key]


@pytest.fixture(scope="module")
def moving_astronaut(
    face_crop: NDArray[np.uint8],
) -> tuple[list[NDArray[np.uint8]], list[NDArray[np.float64]]]:
    """30 frames: the astronaut's face crop sliding at sub-pixel positions over a grey canvas,
    with sensor noise; returns frames and the crop's top-left offset per frame."""
    frames, offsets = [], []
    for i in range(30):
        x, y = 20 + 14.3 * i, 90 + 1.7 * i
        canvas = np.full((FRAME_H, FRAME_W, 3), 128, np.uint8)
        shift = np.float32([[1, 0, x], [0, 1, y]])
        cv2.warpAffine(
            face_crop,
            shift,
            (FRAME_W, FRAME_H),
            dst=canvas,
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_TRANSPARENT,
        )
        noise = np.random.default_rng(i).normal(0, 4, canvas.shape)
        frames.append(np.clip(canvas + noise.round(), 0, 255).astype(np.uint8))
        offsets.append(np.array([x, y]))
    return frames, offsets


def landmark_jitter(
    landmarks: list[NDArray[np.float64]], offsets: list[NDArray[np.float64]]
) -> float:
    """Std of frame-to-frame landmark steps once the known linear motion is removed."""
    residual = np.array([lm - off for lm, off in zip(landmarks, offsets, strict=True)])
    return float(np.diff(residual, axis=0).std(axis=0).mean())


def test_real_detector_tracking_covers_the_face_and_reduces_jitter(
    detector: CenterFaceDetector,
    face_crop: NDArray[np.uint8],
    moving_astronaut: tuple[list[NDArray[np.uint8]], list[NDArray[np.float64]]],
) -> None:
    frames, offsets = moving_astronaut
    (still,) = detector.detect(face_crop)  # the face box inside the crop
    truth = [tuple(np.array(still.box) + np.array([o[0], o[1], o[0], o[1]])) for o in offsets]
    cached = CachingDetector(detector)
    raw = [cached.detect(f) for f in frames]
    assert all(len(r) == 1 for r in raw)
    raw_jitter = landmark_jitter([np.array(r[0].landmarks) for r in raw], offsets)

    for every in (5, 1):
        tracker = FaceTracker(cached, TrackerConfig(detect_every=every), fps=30)
        out = [tracker.update(i, f) for i, f in enumerate(frames)]
        assert all(len(faces) == 1 for faces in out), every
        assert {faces[0].track_id for faces in out} == {1}
        overlaps = [iou(faces[0].face.box, t) for faces, t in zip(out, truth, strict=True)]
        assert min(overlaps) > 0.5, (every, min(overlaps))
        smooth_jitter = landmark_jitter([np.array(f[0].face.landmarks) for f in out], offsets)
        assert smooth_jitter < 0.8 * raw_jitter, (every, smooth_jitter, raw_jitter)
        if every == 5:
            assert tracker.detections_run <= 9  # 0, 1, 2, then every fifth frame


# ------------------------------------------------------------------ lookahead


def run_ahead(tracker: LookaheadTracker, frames: int) -> list[list[TrackedFace]]:
    """Look ``tracker.lookahead`` frames ahead of the frames reported, as a video pipeline
    holding frames does."""
    out: list[list[TrackedFace]] = []
    for i in range(frames + tracker.lookahead):
        if i < frames:
            frame = stamped_frame(i)
            tracker.look(i, (FRAME_W, FRAME_H), lambda frame=frame: frame)
        if i >= tracker.lookahead:
            out.append(tracker.faces(i - tracker.lookahead))
    return out


def test_lookahead_detects_every_n_frames_without_warmup_and_interpolates() -> None:
    """An accelerating face: between detections the box is interpolated between the two
    detections around it, closer to the face than the online tracker's extrapolation."""

    def truth(i: int) -> Face:
        return make_face(60 + 0.25 * i * i, 150 + 2.0 * i)

    detector = ScriptedDetector(lambda i: [truth(i)])
    tracker = LookaheadTracker(detector, TrackerConfig(detect_every=5))
    assert tracker.lookahead == 9
    ahead = run_ahead(tracker, 40)
    assert detector.calls == [0, 1, 2, *range(7, 40, 5)]  # the online tracker's schedule
    assert tracker.detections_run == len(detector.calls)
    online_detector = ScriptedDetector(lambda i: [truth(i)])
    online = run(FaceTracker(online_detector, TrackerConfig(detect_every=5)), 40)
    assert all(len(faces) == 1 for faces in ahead)
    # Up to the last detection (after it both extrapolate); the smoothed boxes lag an
    # accelerating face at the detections themselves, as the online tracker's do.
    worst_ahead = min(iou(ahead[i][0].face.box, truth(i).box) for i in range(36))
    worst_online = min(iou(online[i][0].face.box, truth(i).box) for i in range(36))
    assert worst_ahead > 0.8, worst_ahead
    assert worst_ahead > worst_online + 0.04, (worst_ahead, worst_online)
    for i in range(3, 37):  # predicted frames between two detections: interpolated
        if (i - 2) % 5:
            last = i - (i - 2) % 5
            before, after = ahead[last][0].face.box, ahead[last + 5][0].face.box
            share = (i - last) / 5
            expected = [p + share * (q - p) for p, q in zip(before, after, strict=True)]
            assert ahead[i][0].predicted
            assert np.allclose(ahead[i][0].face.box, expected), i


def test_lookahead_masks_a_new_face_on_the_frames_before_it_is_found() -> None:
    """A face walking in at frame 8 (10 px per frame) is first detected at frame 12 (detections
    on frames 0, 1, 2, 7, 12: the first face's warm-up), where the online tracker starts
    covering it; the lookahead tracker reports it on the frames before too (back to
    ``lookahead`` frames: 9, from frame 3), at its first box grown to hold the box extrapolated
    back from its first two detections, which contains the face on each of its frames."""
    appear = 8

    def walking(i: int) -> Face:
        return make_face(450 - 10.0 * (i - 12), 200)

    detector = ScriptedDetector(
        lambda i: [make_face(200, 150)] + ([walking(i)] if i >= appear else [])
    )
    tracker = LookaheadTracker(detector, TrackerConfig(detect_every=5))
    assert tracker.lookahead == 9
    ahead = run_ahead(tracker, 24)
    online = run(FaceTracker(ScriptedDetector(detector.script), TrackerConfig()), 24)
    assert [len(f) for f in online] == [1] * 12 + [2] * 12
    assert [len(f) for f in ahead] == [1] * 3 + [2] * 21
    found = ahead[12][1]
    assert not found.predicted
    for i in range(3, 12):
        assert ahead[i][1].track_id == found.track_id and ahead[i][1].predicted
    for i in range(appear, 12):
        x1, y1, x2, y2 = ahead[i][1].face.box
        t1, u1, t2, u2 = walking(i).box
        assert x1 <= t1 + 1e-6 and y1 <= u1 + 1e-6 and x2 >= t2 - 1e-6 and y2 >= u2 - 1e-6, i
    # A window back to the previous detection only: from frame 8, first at the first box alone
    # (the second detection, at 13, is not in the window yet).
    short = run_ahead(LookaheadTracker(ScriptedDetector(detector.script), lookahead=4), 24)
    assert [len(f) for f in short] == [1] * 8 + [2] * 16
    assert short[8][1].face.box == short[12][1].face.box


def test_lookahead_coasts_a_lost_face_and_checks_the_order() -> None:
    """A face the detector loses keeps a (predicted) box; faces() must follow look()."""
    detector = ScriptedDetector(lambda i: [] if i in {10, 15} else [make_face(100 + 3 * i, 150)])
    tracker = LookaheadTracker(detector, TrackerConfig(detect_every=5, max_missed=10))
    ahead = run_ahead(tracker, 30)
    assert all(len(faces) == 1 for faces in ahead)
    assert {faces[0].track_id for faces in ahead} == {1}
    for i, faces in enumerate(ahead):
        assert iou(faces[0].face.box, make_face(100 + 3 * i, 150).box) > 0.8, i
    with pytest.raises(ValueError, match="frame order"):
        tracker.faces(3)
    with pytest.raises(BadParams):
        LookaheadTracker(detector, TrackerConfig(), lookahead=-1)
    with pytest.raises(BadParams):
        TrackerConfig(warmup=-1)
