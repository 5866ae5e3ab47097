"""Face tracking for video: detect every N frames, predict in between, smooth over time.

:class:`FaceTracker` runs the detector on frame 0 and then every ``detect_every`` frames, plus on
the two frames after a new track appears (without a measured velocity a fast face would be left
behind for a whole detection interval). In between, each track's box is *predicted* with a
constant-velocity model on the box centre and size. The velocity is a time-weighted average of
the velocities measured between matched detections over the last third of a second; a detection
more than 7.5 % of a face size away from its prediction means the face changed course, and the
average restarts from the newest measurement. Size velocity is only extrapolated once measured
over a full detection interval (over one frame it is mostly detector noise). Landmarks ride
along with the box (stored relative to it). Detections are
associated with the tracks' predicted boxes in two stages, each solved optimally (Hungarian,
``scipy.optimize.linear_sum_assignment``):

1. IoU of at least ``iou_match``;
2. for what is left, centre distance below one face size with a size ratio within 2x, which
   keeps a fast face whose prediction is off from being re-created as a second track.

Unmatched detections start new tracks. A track that misses detections *coasts* on its motion
model and keeps producing a (``predicted``) box on every frame; it is ended only on a detection
frame, once more than ``max_missed`` frames have passed since its last matched detection, or
when its predicted box has left the frame. So a face the detector loses for a moment never
loses its box (the single-frame leaks users of per-frame detectors report). With the defaults
(``detect_every=5``, ``max_missed=10``) a face survives two missed detection rounds.

Smoothing: box corners and landmarks go through a :class:`~pipelines.faces.smoothing.
OneEuroFilter` per track, *motion-compensated*: the filter sees the coordinates minus the
track's accumulated motion (the integral of its velocity estimate, a continuous path), and the
motion is added back afterwards. A face moving at constant speed is therefore smoothed without
the lag a plain low-pass filter has (a trailing box is a privacy leak for de-identification),
while detector jitter and the corrections at detection frames are smoothed. Coordinates are fed
to the filter in units of the track's face size, so one setting works at every resolution. The
motion model uses the raw detections; smoothing never feeds back into prediction.

Lookahead: :class:`LookaheadTracker` runs a :class:`FaceTracker` a few frames ahead of the
frames it reports, for a pipeline that holds those frames
(:func:`~pipelines.media.video.transform_video_planes` with ``look`` and ``lookahead``). A face
between two detections of its track gets the box interpolated between them instead of
extrapolated from the past, and a face first found at a detection frame is also reported, at the
box it was found at, on the frames before it back to the previous detection.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment

from pipelines.errors import BadParams
from pipelines.faces.detector import Face, FaceDetector
from pipelines.faces.smoothing import OneEuroFilter

F64 = NDArray[np.float64]

#: Stage-2 association: centre distance below this many face sizes.
_MAX_CENTRE_DISTANCE = 1.0
#: Stage-2 association: sizes within this ratio.
_MAX_SIZE_RATIO = 2.0
_INFEASIBLE = 1e6
#: Memory of the velocity estimate (seconds of measurements averaged).
_VELOCITY_MEMORY_S = 0.33
#: A detection this far (in face sizes) from its prediction means the face changed course.
_MANEUVER = 0.075
_CENTRE_ONLY = np.array([1.0, 1.0, 0.0, 0.0])


@dataclass(frozen=True)
class TrackerConfig:
    """Tracker settings.

    ``detect_every``: run the detector on every N-th frame (and on the first). ``iou_match``:
    minimum IoU between a track's predicted box and a detection to associate them.
    ``max_missed``: frames a track survives without a matching detection, coasting on its motion
    model (checked on detection frames). ``min_hits``: matched detections before a track's boxes
    are reported (1 reports a face from its first detection, what de-identification needs).
    ``min_cutoff`` (Hz), ``beta`` (per face size per second), ``d_cutoff`` (Hz): the One Euro
    filter on box corners and landmarks. ``warmup``: extra detections on the frames right after
    a new track appears, to measure its velocity early (at most ``detect_every - 1``; without
    them a fast new face is not associated with its track at the next detection).
    """

    detect_every: int = 5
    iou_match: float = 0.3
    max_missed: int = 10
    min_hits: int = 1
    min_cutoff: float = 1.0
    beta: float = 1.0
    d_cutoff: float = 1.0
    warmup: int = 2

    def __post_init__(self) -> None:
        if self.detect_every < 1:
            raise BadParams("tracker detect_every must be at least 1")
        if not 0.0 < self.iou_match <= 1.0:
            raise BadParams("tracker iou_match must be in (0, 1]")
        if self.max_missed < 0:
            raise BadParams("tracker max_missed must not be negative")
        if self.min_hits < 1:
            raise BadParams("tracker min_hits must be at least 1")
        if not self.min_cutoff > 0 or not self.d_cutoff > 0 or not self.beta >= 0:
            raise BadParams("tracker smoothing cutoffs must be positive and beta non-negative")
        if self.warmup < 0:
            raise BadParams("tracker warmup must not be negative")


@dataclass(frozen=True)
class TrackedFace:
    """A face on one frame: its stable ``track_id``, the smoothed ``face`` (frame pixels) and
    whether the box was ``predicted`` (no matching detection on this frame)."""

    track_id: int
    face: Face
    predicted: bool


def _state(face: Face) -> F64:
    """``(cx, cy, w, h)`` of a face box."""
    x1, y1, x2, y2 = face.box
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dtype=np.float64)


def _corners(state: F64) -> F64:
    cx, cy, w, h = state
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dtype=np.float64)


def _iou_matrix(a: F64, b: F64) -> F64:
    """IoU between every box of ``a`` (N, 4) and of ``b`` (M, 4), corners x1 y1 x2 y2."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    out: F64 = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return out


@dataclass
class _Track:
    track_id: int
    state: F64  # (cx, cy, w, h) of the last matched detection
    velocity: F64  # d(cx, cy, w, h)/dt, per second
    relative: F64  # (5, 2) landmarks relative to the box: (p - centre) / size
    score: float
    matched_t: float  # time of the last matched detection
    matched_index: int
    scale: float  # face size at creation: the smoothing unit
    smoother: OneEuroFilter
    hits: int = 1
    first_index: int = 0
    has_velocity: bool = False
    size_settled: bool = False  # size velocity measured over a full detection interval
    velocity_weight: float = 0.0
    matched_now: bool = True
    offset: F64 = field(default_factory=lambda: np.zeros(2, dtype=np.float64))
    reported_t: float | None = None

    @property
    def span(self) -> int:
        """Frames between the track's first and last matched detections."""
        return self.matched_index - self.first_index

    def predict(self, t: float) -> F64:
        """Predicted ``(cx, cy, w, h)`` at time ``t``; sizes never shrink below one pixel.

        The size is extrapolated only once its velocity is known over a detection interval:
        a size change measured over one or two frames is mostly detector noise.
        """
        velocity = self.velocity if self.size_settled else self.velocity * _CENTRE_ONLY
        out = self.state + velocity * (t - self.matched_t)
        out[2:] = np.maximum(out[2:], 1.0)
        return out

    def landmarks(self, state: F64) -> F64:
        return state[None, :2] + self.relative * state[None, 2:]

    def correct(self, face: Face, t: float, index: int, horizon: float, detect_every: int) -> None:
        """Move to a matched detection; ``horizon`` (s) bounds the velocity's memory."""
        new = _state(face)
        dt = t - self.matched_t
        if dt > 0:
            measured = (new - self.state) / dt
            # How far the detection is from where the motion model expected it, in face sizes.
            miss = float(np.hypot(*(new[:2] - self.predict(t)[:2]))) / self.scale
            if self.has_velocity and miss > _MANEUVER:
                # The face changed course: the old velocity is wrong, keep only the new one.
                self.velocity = measured
                self.velocity_weight = dt
            elif self.has_velocity:
                # Weight each measurement by the time it spans (a velocity measured over one
                # frame is five times noisier than one measured over five), with a bounded
                # memory so that changes of speed are followed.
                weight = min(self.velocity_weight, horizon)
                self.velocity = (weight * self.velocity + dt * measured) / (weight + dt)
                self.velocity_weight = weight + dt
            else:
                self.velocity = measured
                self.velocity_weight = dt
                self.has_velocity = True
                # The motion so far was unknown (predicted still): restart the smoothing here
                # rather than let it trail the face while it catches up.
                self.smoother.reset()
        self.state = new
        self.relative = _relative(face, new)
        self.size_settled = self.size_settled or index - self.first_index >= detect_every
        self.score = face.score
        self.matched_t = t
        self.matched_index = index
        self.hits += 1


def _relative(face: Face, state: F64) -> F64:
    points = np.asarray(face.landmarks, dtype=np.float64).reshape(-1, 2)
    size = np.maximum(state[2:], 1.0)
    rel: F64 = (points - state[None, :2]) / size[None, :]
    return rel


class FaceTracker:
    """Tracks faces through a video, one :meth:`update` call per frame in order.

    Not thread-safe: use one tracker per video. ``fps`` converts frame indices to seconds when
    :meth:`update` is not given the frame's timestamp.
    """

    def __init__(
        self, detector: FaceDetector, config: TrackerConfig = TrackerConfig(), fps: float = 30.0
    ) -> None:
        if not fps > 0 or not math.isfinite(fps):
            raise BadParams("tracker fps must be positive")
        self._detector = detector
        self._config = config
        self._fps = float(fps)
        self._tracks: list[_Track] = []
        self._ids = itertools.count(1)
        self._last_detect: int | None = None
        self._last_index: int | None = None
        self.detections_run = 0
        # A new track is detected again on its next frames (at most this many) until its
        # velocity is measured: a fast face would otherwise be left behind for an interval.
        self._warmup = min(config.warmup, config.detect_every - 1)

    @property
    def config(self) -> TrackerConfig:
        """The settings this tracker runs with."""
        return self._config

    def reset(self) -> None:
        """Forget every track (a new video); track ids keep increasing."""
        self._tracks = []
        self._last_detect = None
        self._last_index = None

    def update(
        self, index: int, frame: NDArray[np.uint8], t: float | None = None
    ) -> list[TrackedFace]:
        """Advance to frame ``index`` (BGR) and return its tracked faces, by track id.

        ``t`` is the frame's timestamp in seconds (``index / fps`` when omitted; pass the pts of
        variable-frame-rate video). Indices must increase; a jump backwards resets the tracker.
        """
        height, width = frame.shape[:2]
        return self.track(index, (width, height), lambda: frame, t)

    def track(
        self,
        index: int,
        size: tuple[int, int],
        frame: Callable[[], NDArray[np.uint8]],
        t: float | None = None,
    ) -> list[TrackedFace]:
        """:meth:`update` for a frame of ``size`` (width, height) whose BGR pixels ``frame()``
        produces; it is called only on the frames the detector runs on (a video kept in YUV
        converts those frames only)."""
        if self._last_index is not None and index <= self._last_index:
            self.reset()
        self._last_index = index
        now = float(t) if t is not None else index / self._fps
        width, height = size
        cfg = self._config
        detect = (
            self._last_detect is None
            or index - self._last_detect >= cfg.detect_every
            or any(
                track.span < self._warmup and index - track.first_index <= self._warmup
                for track in self._tracks
            )
        )
        for track in self._tracks:
            track.matched_now = False
        if detect:
            self._last_detect = index
            self.detections_run += 1
            self._associate(self._detector.detect(frame()), now, index, width, height)
        return self._report(now, width, height)

    # -- association ------------------------------------------------------------------------

    def _associate(
        self, faces: list[Face], now: float, index: int, width: int, height: int
    ) -> None:
        cfg = self._config
        tracks = self._tracks
        predicted = np.array([t.predict(now) for t in tracks], dtype=np.float64).reshape(-1, 4)
        detected = np.array([_state(f) for f in faces], dtype=np.float64).reshape(-1, 4)
        pairs: list[tuple[int, int]] = []
        free_t = list(range(len(tracks)))
        free_d = list(range(len(faces)))
        if tracks and faces:
            iou = _iou_matrix(
                np.array([_corners(p) for p in predicted]).reshape(-1, 4),
                np.array([_corners(d) for d in detected]).reshape(-1, 4),
            )
            pairs += _assign(np.where(iou >= cfg.iou_match, 1.0 - iou, _INFEASIBLE))
            free_t = [i for i in free_t if i not in {p[0] for p in pairs}]
            free_d = [j for j in free_d if j not in {p[1] for p in pairs}]
        if free_t and free_d:
            cost = np.full((len(free_t), len(free_d)), _INFEASIBLE)
            for a, i in enumerate(free_t):
                size = math.sqrt(float(predicted[i, 2] * predicted[i, 3]))
                for b, j in enumerate(free_d):
                    dist = float(np.hypot(*(predicted[i, :2] - detected[j, :2]))) / size
                    ratio = math.sqrt(float(detected[j, 2] * detected[j, 3]) / (size * size))
                    if dist < _MAX_CENTRE_DISTANCE and 1 / _MAX_SIZE_RATIO <= ratio <= (
                        _MAX_SIZE_RATIO
                    ):
                        cost[a, b] = dist
            second = [(free_t[a], free_d[b]) for a, b in _assign(cost)]
            pairs += second
            free_d = [j for j in free_d if j not in {p[1] for p in second}]
        for i, j in pairs:
            tracks[i].correct(faces[j], now, index, _VELOCITY_MEMORY_S, cfg.detect_every)
            tracks[i].matched_now = True
        # End tracks that missed for too long or left the frame.
        self._tracks = [
            t
            for k, t in enumerate(tracks)
            if t.matched_now
            or (
                index - t.matched_index <= cfg.max_missed
                and _visible(_corners(predicted[k]), width, height)
            )
        ]
        for j in free_d:
            self._tracks.append(self._new_track(faces[j], now, index))

    def _new_track(self, face: Face, now: float, index: int) -> _Track:
        cfg = self._config
        state = _state(face)
        return _Track(
            track_id=next(self._ids),
            state=state,
            velocity=np.zeros(4, dtype=np.float64),
            relative=_relative(face, state),
            score=face.score,
            matched_t=now,
            matched_index=index,
            first_index=index,
            scale=max(1.0, math.sqrt(float(state[2] * state[3]))),
            smoother=OneEuroFilter(cfg.min_cutoff, cfg.beta, cfg.d_cutoff),
        )

    # -- output -----------------------------------------------------------------------------

    def _report(self, now: float, width: int, height: int) -> list[TrackedFace]:
        out: list[TrackedFace] = []
        alive: list[_Track] = []
        for track in self._tracks:
            state = track.state if track.matched_now else track.predict(now)
            corners = _corners(state)
            if not _visible(corners, width, height):
                continue  # coasted out of the picture
            alive.append(track)
            if track.reported_t is not None:
                track.offset = track.offset + track.velocity[:2] * (now - track.reported_t)
            track.reported_t = now
            raw = np.concatenate([corners, track.landmarks(state).ravel()])
            motion = np.tile(track.offset, raw.size // 2)
            smooth = track.smoother.filter(now, (raw - motion) / track.scale) * track.scale
            smooth += motion
            if track.hits < self._config.min_hits:
                continue
            box = _clip_box(smooth[:4], width, height)
            points = tuple((float(x), float(y)) for x, y in smooth[4:].reshape(-1, 2))
            face = Face(box=box, landmarks=points, score=track.score)
            out.append(TrackedFace(track.track_id, face, predicted=not track.matched_now))
        self._tracks = alive
        out.sort(key=lambda f: f.track_id)
        return out


@dataclass(frozen=True)
class _Looked:
    index: int
    t: float
    faces: list[TrackedFace]


class LookaheadTracker:
    """A :class:`FaceTracker` run ``lookahead`` frames ahead of the frames it reports.

    Call :meth:`look` on every frame as it arrives and :meth:`faces` on each frame once the next
    ``lookahead`` frames (or the end of the video) have been looked at, in order. The detector
    runs on the same frames as the online tracker's; with ``lookahead`` at least
    ``detect_every - 1`` (the default), the next detection frame of a frame is always already
    looked at, so

    * a track predicted on a frame (no detection there) whose next matched detection has been
      looked at gets its box and landmarks interpolated (by time) between its matched boxes
      before and after the frame, instead of extrapolated; a track with no matched detection
      ahead (lost, coasting) keeps the tracker's prediction;
    * a track first reported on a later frame already looked at (a face found at a detection
      frame) is also reported on this frame, ``predicted``, at its first box grown to hold that
      box moved back along the motion of its first two detections when both have been looked
      at (a face walking in): a face that appears between two detections, or that the detector sees
      only once enough of it is in the picture, is covered up to ``lookahead`` frames before it
      is found, where the online tracker leaves it uncovered until then.

    The default ``lookahead``, ``2 * detect_every - 1``, holds two detections of a new track
    (for the extrapolation back) in the window.

    Not thread-safe: one per video.
    """

    def __init__(
        self,
        detector: FaceDetector,
        config: TrackerConfig = TrackerConfig(),
        fps: float = 30.0,
        lookahead: int | None = None,
    ) -> None:
        depth = 2 * config.detect_every - 1 if lookahead is None else lookahead
        if depth < 0:
            raise BadParams("tracker lookahead must not be negative")
        self._tracker = FaceTracker(detector, config, fps)
        self._fps = float(fps)
        self._lookahead = depth
        self._window: deque[_Looked] = deque()
        self._matched: dict[int, tuple[float, Face]] = {}  # last matched report per track
        self._reported: set[int] = set()

    @property
    def lookahead(self) -> int:
        """Frames :meth:`look` must be ahead of :meth:`faces` (the frames a pipeline holds)."""
        return self._lookahead

    @property
    def detections_run(self) -> int:
        """Detector passes so far."""
        return self._tracker.detections_run

    def look(
        self,
        index: int,
        size: tuple[int, int],
        frame: Callable[[], NDArray[np.uint8]],
        t: float | None = None,
    ) -> None:
        """Track frame ``index`` (:meth:`FaceTracker.track`) and hold its faces until
        :meth:`faces` reports them."""
        found = self._tracker.track(index, size, frame, t)
        now = float(t) if t is not None else index / self._fps
        self._window.append(_Looked(index, now, found))

    def faces(self, index: int) -> list[TrackedFace]:
        """The faces of frame ``index``, the oldest frame looked at and not yet reported."""
        if not self._window or self._window[0].index != index:
            raise ValueError("faces() must follow look() in frame order")
        head = self._window.popleft()
        out: list[TrackedFace] = []
        for tracked in head.faces:
            face = tracked.face
            if not tracked.predicted:
                self._matched[tracked.track_id] = (head.t, face)
            else:
                before = self._matched.get(tracked.track_id)
                after = self._next_match(tracked.track_id)
                if before is not None and after is not None and after[0] > before[0]:
                    share = (head.t - before[0]) / (after[0] - before[0])
                    face = _interpolate(before[1], after[1], share)
            self._reported.add(tracked.track_id)
            out.append(TrackedFace(tracked.track_id, face, tracked.predicted))
        present = {tracked.track_id for tracked in head.faces}
        for looked in self._window:
            for tracked in looked.faces:
                if tracked.track_id not in present and tracked.track_id not in self._reported:
                    present.add(tracked.track_id)
                    face = self._backfill(tracked.track_id, looked.t, tracked.face, head.t)
                    out.append(TrackedFace(tracked.track_id, face, predicted=True))
        alive = present | {f.track_id for looked in self._window for f in looked.faces}
        self._matched = {k: v for k, v in self._matched.items() if k in alive}
        out.sort(key=lambda f: f.track_id)
        return out

    def _backfill(self, track_id: int, first_t: float, first: Face, t: float) -> Face:
        """A track first reported at ``first_t`` (``first``), on an earlier frame at ``t``: its
        first box, grown to also hold that box moved back to ``t`` along the motion of its
        first two matched detections when both have been looked at (a face walking in)."""
        matched = [
            (looked.t, tracked.face)
            for looked in self._window
            for tracked in looked.faces
            if tracked.track_id == track_id and not tracked.predicted and looked.t >= first_t
        ]
        if len(matched) < 2 or matched[1][0] <= matched[0][0]:
            return first
        (t0, a), (t1, b) = matched[:2]
        # The centre moved back, the size kept: the size of a face found while walking in (a
        # box cut by the picture's edge) changes too fast to extrapolate.
        share = (t - t0) / (t1 - t0)  # < 0: before the first
        dx = share * ((b.box[0] + b.box[2]) - (a.box[0] + a.box[2])) / 2
        dy = share * ((b.box[1] + b.box[3]) - (a.box[1] + a.box[3])) / 2
        x1, y1, x2, y2 = first.box
        box = (min(x1, x1 + dx), min(y1, y1 + dy), max(x2, x2 + dx), max(y2, y2 + dy))
        return Face(box=box, landmarks=first.landmarks, score=first.score)

    def _next_match(self, track_id: int) -> tuple[float, Face] | None:
        for looked in self._window:
            for tracked in looked.faces:
                if tracked.track_id == track_id and not tracked.predicted:
                    return looked.t, tracked.face
        return None


def _interpolate(a: Face, b: Face, share: float) -> Face:
    """The face ``share`` (0-1) of the way from ``a`` to ``b`` (box, landmarks)."""
    box = cast(
        tuple[float, float, float, float],
        tuple(p + share * (q - p) for p, q in zip(a.box, b.box, strict=True)),
    )
    points = tuple(
        (pa[0] + share * (pb[0] - pa[0]), pa[1] + share * (pb[1] - pa[1]))
        for pa, pb in zip(a.landmarks, b.landmarks, strict=True)
    )
    return Face(box=box, landmarks=points, score=min(a.score, b.score))


def _assign(cost: F64) -> list[tuple[int, int]]:
    """Optimal assignment, keeping only feasible pairs."""
    if cost.size == 0:
        return []
    rows, cols = linear_sum_assignment(cost)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if cost[r, c] < _INFEASIBLE]


def _visible(corners: F64, width: int, height: int) -> bool:
    x1, y1, x2, y2 = corners
    return bool(min(x2, width) - max(x1, 0.0) > 1.0 and min(y2, height) - max(y1, 0.0) > 1.0)


def _clip_box(corners: F64, width: int, height: int) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in corners)
    return (
        min(max(x1, 0.0), float(width)),
        min(max(y1, 0.0), float(height)),
        min(max(x2, 0.0), float(width)),
        min(max(y2, 0.0), float(height)),
    )


__all__ = ["FaceTracker", "LookaheadTracker", "TrackedFace", "TrackerConfig"]
