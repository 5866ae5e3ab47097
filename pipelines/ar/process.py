"""AR on media bytes: sniff image or video, find (or track) the faces, apply the chain, encode.

Images keep their family: PNG in gives PNG out, every other image format (JPEG, WebP, HEIF)
gives JPEG. Videos (MP4, MOV, WebM, Matroska) give an H.264 MP4 with the same frames, timestamps,
duration and audio (:func:`pipelines.media.video.transform_video`); faces are tracked through
the clip (:class:`pipelines.faces.tracking.FaceTracker`), so effects follow them between
detections. Faces are searched for only when some effect needs them. When every effect of the
chain needs faces and none is found (in the photo, or on any frame of the clip), the input is
refused with :class:`~pipelines.errors.NoFace`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np
from numpy.typing import NDArray

from pipelines.ar.chain import EffectChain
from pipelines.errors import NoFace
from pipelines.faces.detector import Face, FaceDetector
from pipelines.faces.mesh import default_mesher
from pipelines.faces.mesh_tracking import MeshTracker
from pipelines.faces.tracking import FaceTracker, TrackerConfig
from pipelines.media.image import ImageLimits, decode_image, encode_image
from pipelines.media.sniff import MediaKind, media_kind, sniff_image_format
from pipelines.media.video import VideoLimits, transform_video

_IMAGE_LIMITS: Final = ImageLimits()
_VIDEO_LIMITS: Final = VideoLimits()
_TRACKER: Final = TrackerConfig()
OutputKind = Literal["jpeg", "png", "mp4"]


@dataclass(frozen=True)
class ArResult:
    """The encoded result and what was seen: ``faces`` found in the photo or distinct face
    tracks in the clip, ``frames`` processed and how many of them had a face."""

    data: bytes = field(repr=False)
    format: OutputKind
    kind: MediaKind
    faces: int
    frames: int
    frames_with_faces: int

    @property
    def filename(self) -> str:
        """``result.jpg``, ``result.png`` or ``result.mp4``."""
        return "result." + {"jpeg": "jpg", "png": "png", "mp4": "mp4"}[self.format]

    @property
    def content_type(self) -> str:
        """The media type of :attr:`data`."""
        return {"jpeg": "image/jpeg", "png": "image/png", "mp4": "video/mp4"}[self.format]


def _refuse_faceless(chain: EffectChain) -> None:
    if all(step.effect.needs_faces for step in chain.steps):
        raise NoFace("no face was found for the effects to apply to")


def apply_image(
    data: bytes,
    chain: EffectChain,
    detector: FaceDetector,
    limits: ImageLimits = _IMAGE_LIMITS,
    quality: int = 90,
) -> ArResult:
    """Apply ``chain`` to a photo; PNG out for PNG in, JPEG (``quality``) otherwise."""
    fmt = sniff_image_format(data)
    image = decode_image(data, limits)
    faces: list[Face] = detector.detect(image) if chain.needs_faces else []
    if chain.needs_faces and not faces:
        _refuse_faceless(chain)
    out = chain.apply(image, faces)
    encoded = encode_image(out, "png") if fmt == "png" else encode_image(out, "jpeg", quality)
    return ArResult(
        encoded, "png" if fmt == "png" else "jpeg", "image", len(faces), 1, int(bool(faces))
    )


def apply_video(
    data: bytes,
    chain: EffectChain,
    detector: FaceDetector,
    limits: VideoLimits = _VIDEO_LIMITS,
    tracker: TrackerConfig = _TRACKER,
    *,
    crf: int = 23,
    preset: str = "veryfast",
) -> ArResult:
    """Apply ``chain`` to every frame of a clip, on the faces tracked through it: by their
    meshes (:class:`~pipelines.faces.mesh_tracking.MeshTracker`: one mesh pass per face from
    the last mesh, the detector on loss and every few frames, One Euro smoothing, so effects
    hold still on a still face) when an effect needs the mesh, by their boxes otherwise."""
    trk = FaceTracker(detector, tracker) if chain.needs_faces and not chain.needs_mesh else None
    mesh_trk = MeshTracker(detector, default_mesher()) if chain.needs_mesh else None
    tracks: set[int] = set()
    counts = {"frames": 0, "with_faces": 0}

    def fn(index: int, t: float, frame: NDArray[np.uint8]) -> NDArray[np.uint8]:
        counts["frames"] += 1
        if mesh_trk is not None:
            followed = mesh_trk.update(index, frame, t)
            tracks.update(m.track_id for m in followed)
            counts["with_faces"] += int(bool(followed))
            return chain.apply(frame, [m.face for m in followed], [m.mesh for m in followed])
        if trk is None:
            return chain.apply(frame, [])
        tracked = trk.update(index, frame, t)
        tracks.update(f.track_id for f in tracked)
        counts["with_faces"] += int(bool(tracked))
        return chain.apply(frame, [f.face for f in tracked])

    out = transform_video(data, fn, limits, keep_audio=True, crf=crf, preset=preset)
    if chain.needs_faces and not tracks:
        _refuse_faceless(chain)
    return ArResult(out, "mp4", "video", len(tracks), counts["frames"], counts["with_faces"])


def apply_media(
    data: bytes,
    chain: EffectChain,
    detector: FaceDetector,
    image_limits: ImageLimits = _IMAGE_LIMITS,
    video_limits: VideoLimits = _VIDEO_LIMITS,
    tracker: TrackerConfig = _TRACKER,
    quality: int = 90,
) -> ArResult:
    """Sniff ``data`` and run :func:`apply_image` or :func:`apply_video`."""
    if media_kind(data) == "image":
        return apply_image(data, chain, detector, image_limits, quality)
    return apply_video(data, chain, detector, video_limits, tracker)


__all__ = ["ArResult", "MediaKind", "apply_image", "apply_media", "apply_video", "media_kind"]
