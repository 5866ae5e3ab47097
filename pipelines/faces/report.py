"""The ``detect`` report: faces, head pose and (on request) the mesh, for a photo or a video.

This JSON document (``faces.json``) is the shared interface of the ``detect`` job; its fields are
documented in the README ("detect"). Version 2:

Photo: ``{"schema": "facemedia.detect", "version": 2, "kind": "image", "width", "height",
"faces": [face, ...]}``, the faces highest detector score first, each
``{"box": [x1, y1, x2, y2], "landmarks": [[x, y] x 5], "score", "presence", "pose": {"yaw",
"pitch", "roll"}, "eye_openness": [right, left], "mouth_openness"}`` in pixels, plus with
``mesh`` ``"mesh": {"points": [[x, y, z] x 468], "iris": [[[x, y] x 5] x 2]}`` normalised
(``x / width``, ``y / height``, ``z / width``).

Video: ``{"schema", "version": 2, "kind": "video", "width", "height", "frame_count",
"duration_s", "tracks": [{"id", "first_frame", "last_frame", "frames"}], "frames": [{"index",
"t", "faces": [{"track", "box", "landmarks", "score", "predicted", "presence", "pose"}]}]}``:
every decoded frame is listed (an empty ``faces`` when none), faces tracked through the clip
(:class:`~pipelines.faces.tracking.FaceTracker`: detection every few frames, boxes predicted and
smoothed in between; ``predicted`` marks a box with no detection on that frame), the pose from
one mesh fit per face and frame. The mesh points are reported for photos only (a video's would
run to tens of megabytes).

``presence`` is the mesh network's face-presence probability, a second opinion on the
detection; ``pose`` is ``null`` where it is below 0.5 (no face in the box).
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from pipelines.faces.detector import Face, FaceDetector
from pipelines.faces.mesh import FaceMesh, FaceMesher, Roi
from pipelines.faces.tracking import FaceTracker, TrackerConfig
from pipelines.media.video import VideoLimits, iter_frames

SCHEMA: Final = "facemedia.detect"
SCHEMA_VERSION: Final = 2
_TRACKER: Final = TrackerConfig()


def face_record(face: Face, mesh: FaceMesh, with_mesh: bool = False) -> dict[str, Any]:
    """One face of the report: the detector's fields, presence, pose, openness, and with
    ``with_mesh`` the normalised mesh points and iris."""
    record = face.to_json()
    record["presence"] = round(mesh.presence, 4)
    record["pose"] = mesh.pose.to_json() if mesh.is_face else None
    record["eye_openness"] = [round(v, 3) for v in mesh.eye_openness]
    record["mouth_openness"] = round(mesh.mouth_openness, 3)
    if with_mesh:
        doc = mesh.to_json(normalised=True)
        record["mesh"] = {"points": doc["points"], "iris": doc["iris"]}
    return record


def detect_image(
    image: NDArray[np.uint8],
    detector: FaceDetector,
    mesher: FaceMesher,
    max_faces: int = 100,
    with_mesh: bool = False,
) -> dict[str, Any]:
    """The report for a decoded photo (BGR)."""
    faces = detector.detect(image)[:max_faces]
    records = [
        face_record(face, mesher.fit(image, face, iris=with_mesh), with_mesh) for face in faces
    ]
    return {
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        "kind": "image",
        "width": int(image.shape[1]),
        "height": int(image.shape[0]),
        "faces": records,
    }


def detect_video(
    data: bytes,
    detector: FaceDetector,
    mesher: FaceMesher,
    limits: VideoLimits,
    tracker: TrackerConfig = _TRACKER,
    max_faces: int = 100,
) -> dict[str, Any]:
    """The report for a video (bytes): tracked faces with per-frame boxes and pose."""
    trk = FaceTracker(detector, tracker)
    frames: list[dict[str, Any]] = []
    tracks: dict[int, dict[str, int]] = {}
    width = height = 0
    times: list[float] = []
    for index, t, frame in iter_frames(data, limits):
        height, width = frame.shape[:2]
        times.append(t)
        faces: list[dict[str, Any]] = []
        for tracked in trk.update(index, frame, t)[:max_faces]:
            mesh = mesher.fit_roi(frame, Roi.from_face(tracked.face), iris=False)
            record = tracked.face.to_json()
            record = {"track": tracked.track_id, **record, "predicted": tracked.predicted}
            record["presence"] = round(mesh.presence, 4)
            record["pose"] = mesh.pose.to_json() if mesh.is_face else None
            faces.append(record)
            span = tracks.setdefault(
                tracked.track_id, {"id": tracked.track_id, "first_frame": index, "frames": 0}
            )
            span["last_frame"] = index
            span["frames"] += 1
        frames.append({"index": index, "t": round(t, 4), "faces": faces})
    # The clip lasts until the last frame ends: its start plus the typical frame interval.
    step = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
    duration = (max(times) + step) if times else 0.0
    return {
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        "kind": "video",
        "width": int(width),
        "height": int(height),
        "frame_count": len(frames),
        "duration_s": round(duration, 4),
        "tracks": [
            {k: span[k] for k in ("id", "first_frame", "last_frame", "frames")}
            for span in sorted(tracks.values(), key=lambda s: s["id"])
        ],
        "frames": frames,
    }


__all__ = ["SCHEMA", "SCHEMA_VERSION", "detect_image", "detect_video", "face_record"]
