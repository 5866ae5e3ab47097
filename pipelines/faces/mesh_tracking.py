"""Face-mesh tracking for video: each frame's crop comes from the previous frame's mesh.

:class:`MeshTracker` follows every face with the mesh network alone once it has been found:

1. For each track, the mesh is fitted (one pass) on the crop MediaPipe derives from the
   track's previous *raw* mesh (:meth:`pipelines.faces.mesh.Roi.from_points`). A fit whose
   face-presence falls below :data:`~pipelines.faces.mesh.PRESENCE_THRESHOLD` ends the track
   (the face left, turned away or was covered).
2. The detector runs only on the first frame, on a frame where a track was lost, while no face
   is tracked, and every ``detect_every`` frames (to pick up newcomers). A detection overlapping
   a track's mesh box (IoU of at least ``iou_same``, or its centre inside that box) is that
   track; any other starts a new track with a full (refined) fit from the detector's box.
   Two tracks that converge on one face (their crops' centres closer than a third of a crop)
   are merged, the older one kept.
3. Reported points are smoothed per track with a One Euro filter
   (:class:`~pipelines.faces.smoothing.OneEuroFilter`) on all coordinates (and the iris), fed
   in units of the track's crop size so one setting works at every resolution; pose and
   openness are recomputed from the smoothed points. Smoothing never feeds back: the next crop
   comes from the raw mesh.

Not thread-safe: one tracker per video.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from pipelines.errors import BadParams
from pipelines.faces.detector import Face, FaceDetector
from pipelines.faces.mesh import (
    PRESENCE_THRESHOLD,
    FaceMesh,
    FaceMesher,
    Roi,
    build_mesh,
)
from pipelines.faces.regions import face_of
from pipelines.faces.smoothing import OneEuroFilter

F64 = NDArray[np.float64]


@dataclass(frozen=True)
class MeshTrackerConfig:
    """Mesh tracker settings.

    ``detect_every``: run the detector at least every N frames (and on loss). ``iou_same``: IoU
    between a detection and a track's mesh box above which they are the same face.
    ``max_tracks``: faces followed at most (the largest detections first). ``iris``: fit the iris
    on every frame. ``min_cutoff`` (Hz), ``beta`` (per crop size per second), ``d_cutoff`` (Hz):
    the One Euro filter on the points (tuned on a 720p clip of the astronaut: 0.08 px RMS
    jitter when still, 0.1 px lag at 240 px/s, 3 px on the frame where the motion starts).
    """

    detect_every: int = 10
    iou_same: float = 0.3
    max_tracks: int = 8
    iris: bool = False
    min_cutoff: float = 1.0
    beta: float = 20.0
    d_cutoff: float = 1.0

    def __post_init__(self) -> None:
        if self.detect_every < 1:
            raise BadParams("mesh tracker detect_every must be at least 1")
        if not 0.0 < self.iou_same <= 1.0:
            raise BadParams("mesh tracker iou_same must be in (0, 1]")
        if self.max_tracks < 1:
            raise BadParams("mesh tracker max_tracks must be at least 1")
        OneEuroFilter(self.min_cutoff, self.beta, self.d_cutoff)  # the filter's own checks


@dataclass(frozen=True)
class TrackedMesh:
    """A face on one frame: its stable ``track_id``, its smoothed ``mesh``, the detector-style
    ``face`` made from it (:func:`pipelines.faces.regions.face_of`), and ``detected``: true on
    the frame its track was found by the detector."""

    track_id: int
    mesh: FaceMesh
    face: Face
    detected: bool


@dataclass
class _Track:
    track_id: int
    roi: Roi  # next crop (from the last raw mesh)
    raw: FaceMesh
    scale: float  # smoothing unit: crop size at creation
    smoother: OneEuroFilter
    detected: bool = True


def mesh_box(mesh: FaceMesh) -> tuple[float, float, float, float]:
    """The bounding box ``(x1, y1, x2, y2)`` of a mesh's points."""
    xy = mesh.points[:, :2]
    x1, y1 = (float(v) for v in xy.min(axis=0))
    x2, y2 = (float(v) for v in xy.max(axis=0))
    return x1, y1, x2, y2


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _same_face(face: Face, box: tuple[float, float, float, float], iou: float) -> bool:
    cx = (face.box[0] + face.box[2]) / 2
    cy = (face.box[1] + face.box[3]) / 2
    inside = box[0] <= cx <= box[2] and box[1] <= cy <= box[3]
    return inside or _iou(face.box, box) >= iou


class MeshTracker:
    """Tracks face meshes through a video, one :meth:`update` call per frame in order."""

    def __init__(
        self,
        detector: FaceDetector,
        mesher: FaceMesher,
        config: MeshTrackerConfig = MeshTrackerConfig(),
        fps: float = 30.0,
    ) -> None:
        if not fps > 0 or not math.isfinite(fps):
            raise BadParams("mesh tracker fps must be positive")
        if config.iris and not mesher.config.iris:
            raise BadParams("mesh tracker: iris asked of a mesher loaded without it")
        self._detector = detector
        self._mesher = mesher
        self._config = config
        self._fps = float(fps)
        self._tracks: list[_Track] = []
        self._ids = itertools.count(1)
        self._last_detect: int | None = None
        self._last_index: int | None = None
        self.detections_run = 0
        self.meshes_run = 0

    @property
    def config(self) -> MeshTrackerConfig:
        """The settings this tracker runs with."""
        return self._config

    def reset(self) -> None:
        """Forget every track (a new video); track ids keep increasing."""
        self._tracks = []
        self._last_detect = None
        self._last_index = None

    def update(
        self, index: int, frame: NDArray[np.uint8], t: float | None = None
    ) -> list[TrackedMesh]:
        """Advance to frame ``index`` (BGR) and return its tracked meshes, by track id.

        ``t`` is the frame's timestamp in seconds (``index / fps`` when omitted). Indices must
        increase; a jump backwards resets the tracker.
        """
        if self._last_index is not None and index <= self._last_index:
            self.reset()
        self._last_index = index
        now = float(t) if t is not None else index / self._fps
        cfg = self._config
        lost = False
        alive: list[_Track] = []
        for track in self._tracks:
            mesh = self._mesher.fit_roi(frame, track.roi, iris=cfg.iris)
            self.meshes_run += 1
            if mesh.presence < PRESENCE_THRESHOLD:
                lost = True
                continue
            track.raw = mesh
            track.roi = Roi.from_points(mesh.points)
            track.detected = False
            alive.append(track)
        self._tracks = _merge(alive)
        if (
            not self._tracks
            or lost
            or self._last_detect is None
            or index - self._last_detect >= cfg.detect_every
        ):
            self._detect(frame, index)
        return [self._report(track, now) for track in sorted(self._tracks, key=_by_id)]

    def _detect(self, frame: NDArray[np.uint8], index: int) -> None:
        cfg = self._config
        self._last_detect = index
        self.detections_run += 1
        faces = sorted(self._detector.detect(frame), key=lambda f: -f.width * f.height)
        boxes = [mesh_box(track.raw) for track in self._tracks]
        for face in faces:
            if len(self._tracks) >= cfg.max_tracks:
                break
            if any(_same_face(face, box, cfg.iou_same) for box in boxes):
                continue
            mesh = self._mesher.fit(frame, face, iris=cfg.iris)
            self.meshes_run += 2 if self._mesher.config.refine else 1
            if mesh.presence < PRESENCE_THRESHOLD:
                continue
            track = _Track(
                track_id=next(self._ids),
                roi=Roi.from_points(mesh.points),
                raw=mesh,
                scale=max(mesh.roi.size, 1.0),
                smoother=OneEuroFilter(cfg.min_cutoff, cfg.beta, cfg.d_cutoff),
            )
            self._tracks.append(track)
            boxes.append(mesh_box(mesh))

    def _report(self, track: _Track, now: float) -> TrackedMesh:
        raw = track.raw
        parts = [raw.points.astype(np.float64).ravel()]
        if raw.iris is not None:
            parts.append(raw.iris.astype(np.float64).ravel())
        vector = np.concatenate(parts)
        smooth = track.smoother.filter(now, vector / track.scale) * track.scale
        points = smooth[: raw.points.size].reshape(raw.points.shape)
        iris = None if raw.iris is None else smooth[raw.points.size :].reshape(raw.iris.shape)
        mesh = build_mesh(points, raw.presence, raw.roi, raw.image_size, iris)
        return TrackedMesh(track.track_id, mesh, face_of(mesh), detected=track.detected)


def _by_id(track: _Track) -> int:
    return track.track_id


def _merge(tracks: list[_Track]) -> list[_Track]:
    """Drop the younger of two tracks whose crops converged on one face."""
    kept: list[_Track] = []
    for track in sorted(tracks, key=_by_id):
        if all(
            math.hypot(track.roi.cx - other.roi.cx, track.roi.cy - other.roi.cy)
            >= other.roi.size / 3
            for other in kept
        ):
            kept.append(track)
    return kept


__all__ = ["MeshTracker", "MeshTrackerConfig", "TrackedMesh", "mesh_box"]
