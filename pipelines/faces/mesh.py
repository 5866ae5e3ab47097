"""The 468-point face mesh (MediaPipe ``face_landmark.tflite``) and iris landmarks, run by
OpenCV's DNN module, with head pose, eye and mouth openness.

How a face is fitted (:meth:`FaceMesher.fit`):

1. A square region of interest (:class:`Roi`) is cut from the detector's box, rotated so the eye
   line (the detector's two eye landmarks) is horizontal, and resampled to 192 x 192.
2. The network gives 468 points ``(x, y, z)`` in crop pixels and a face-presence logit; the
   points are mapped back to image pixels (``z`` scaled like ``x``).
3. With ``refine`` (the default) the crop is cut again from the mesh itself (MediaPipe's rule:
   the points' bounding box in the frame of the eye-corner line 33 -> 263, enlarged 1.5 times)
   and the network runs a second time: the first crop only has to be roughly right. A tracker
   (:mod:`pipelines.faces.mesh_tracking`) feeds that mesh-derived region of the previous frame
   straight to :meth:`FaceMesher.fit_roi`.
4. Iris (optional, on by default): a 64 x 64 crop around each eye (2.3 times the eye-corner
   distance, rotated by the corner line; the subject's left eye mirrored, as the model expects a
   right one), five points per eye: centre first, then the iris contour.
5. Head pose: ``cv2.solvePnP`` (SQPnP) of the mesh's rigid points (above the mouth) against the
   canonical face (:mod:`pipelines.faces.canonical`) with a pinhole camera of focal length
   ``max(width, height)`` centred on the image.

Conventions. ``points[:, :2]`` are image pixels; ``points[:, 2]`` is MediaPipe's relative depth
in the same pixel scale, *negative towards the camera* (the nose tip has the smallest ``z``).
Mesh indices are MediaPipe's (anatomical: landmark 33 is the outer corner of the subject's
*right* eye, on the image left of an unmirrored frontal photo); :mod:`pipelines.faces.regions`
names the index sets. See :class:`HeadPose` for the angle signs.

No model is loaded at import time: :func:`default_mesher` loads the networks on first call.
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass, field
from typing import Any, Final

import cv2
import numpy as np
from numpy.typing import NDArray

from pipelines.errors import BadParams
from pipelines.faces.canonical import canonical_face_model
from pipelines.faces.detector import Face, as_bgr
from pipelines.faces.models import face_landmark_path, iris_landmark_path, read_tflite

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]

#: Number of mesh points.
NUM_POINTS: Final = 468
#: Side of the mesh network's input.
MESH_INPUT: Final = 192
#: Side of the iris network's input.
IRIS_INPUT: Final = 64
#: Presence (0-1) below which a fitted mesh is not a face.
PRESENCE_THRESHOLD: Final = 0.5
#: Region of interest around a mesh: its rotated bounding box enlarged this much (MediaPipe).
MESH_ROI_SCALE: Final = 1.5
#: Region of interest from a CenterFace box: the box's longer side times this, calibrated so the
#: first crop matches the mesh-derived one (on the astronaut and insightface's group photo the
#: refined crop is 0.96-1.14 times as large, its centre within 4 % of the crop's side).
DETECTOR_ROI_SCALE: Final = 1.3
#: Downward shift of the CenterFace box centre, in box heights, to the mesh-derived centre.
DETECTOR_ROI_SHIFT: Final = 0.04
#: Iris crop: the eye-corner distance times this (MediaPipe).
IRIS_ROI_SCALE: Final = 2.3

# Landmarks used below (MediaPipe indices).
_RIGHT_EYE_CORNERS: Final = (33, 133)  # outer, inner (image left in a frontal photo)
_LEFT_EYE_CORNERS: Final = (362, 263)  # inner, outer
_RIGHT_EYE_LIDS: Final = ((160, 144), (159, 145), (158, 153))  # (upper, lower) pairs
_LEFT_EYE_LIDS: Final = ((387, 373), (386, 374), (385, 380))
_MOUTH_INNER: Final = (13, 14)  # upper, lower inner lip midpoints
_MOUTH_CORNERS: Final = (61, 291)
#: Canonical ``y`` (cm) above which points count as rigid for the pose (the mouth and jaw move).
_RIGID_ABOVE_Y: Final = -3.0

_MESH_OUTPUTS: Final = ("conv2d_21", "conv2d_31")
_IRIS_OUTPUTS: Final = ("output_eyes_contours_and_brows", "output_iris")


@dataclass(frozen=True)
class HeadPose:
    """Head orientation in degrees, relative to the camera looking at the face.

    ``yaw``: positive when the face turns towards the image right (the nose points right; the
    subject looks to their own left in an unmirrored photo). ``pitch``: positive when the face
    tilts up (chin up, the nose points up). ``roll``: positive when the face is rotated clockwise
    in the image (its eye line, read from the image-left eye to the image-right eye, goes down).
    Mirroring an image negates ``yaw`` and ``roll`` and keeps ``pitch``.
    """

    yaw: float
    pitch: float
    roll: float

    def to_json(self) -> dict[str, float]:
        """``{"yaw", "pitch", "roll"}`` rounded to 0.1 degree."""
        return {
            "yaw": round(self.yaw, 1),
            "pitch": round(self.pitch, 1),
            "roll": round(self.roll, 1),
        }


@dataclass(frozen=True, eq=False)
class HeadTransform:
    """The rigid transform behind :class:`HeadPose`, for placing 3D objects on the head.

    A canonical-face point ``p`` (cm; ``x`` to the subject's left, ``y`` up, ``z`` towards the
    camera) lands in the image at ``project(camera @ (rotation @ (p * (1, -1, -1)) +
    translation))``: ``rotation`` and ``translation`` (cm) are in OpenCV's camera frame (``x``
    right, ``y`` down, ``z`` away from the camera), ``camera`` the 3x3 intrinsics used.
    :meth:`project` does it.
    """

    rotation: F64
    translation: F64
    camera: F64

    def project(self, canonical_points: NDArray[Any]) -> F64:
        """Image pixels ``(N, 2)`` of canonical-frame points ``(N, 3)`` (cm)."""
        pts = np.asarray(canonical_points, dtype=np.float64).reshape(-1, 3) * _TO_OPENCV
        cam = pts @ self.rotation.T + self.translation
        uvw = cam @ self.camera.T
        out: F64 = uvw[:, :2] / np.maximum(uvw[:, 2:3], 1e-9)
        return out


_TO_OPENCV: Final = np.array([1.0, -1.0, -1.0])


@dataclass(frozen=True)
class Roi:
    """A square crop region: centre ``(cx, cy)`` and side ``size`` in image pixels, ``angle`` the
    rotation (radians, clockwise in the image) that makes the face upright."""

    cx: float
    cy: float
    size: float
    angle: float

    @staticmethod
    def from_face(face: Face) -> Roi:
        """The first crop for a detector face: box centre and size, angle of the eye line."""
        x1, y1, x2, y2 = face.box
        (lx, ly), (rx, ry) = face.landmarks[0], face.landmarks[1]
        angle = math.atan2(ry - ly, rx - lx)
        height = y2 - y1
        return Roi(
            cx=(x1 + x2) / 2,
            cy=(y1 + y2) / 2 + DETECTOR_ROI_SHIFT * height,
            size=max(x2 - x1, height, 1.0) * DETECTOR_ROI_SCALE,
            angle=angle,
        )

    @staticmethod
    def from_points(points: NDArray[Any], scale: float = MESH_ROI_SCALE) -> Roi:
        """MediaPipe's crop around a mesh: angle of the eye corners 33 -> 263, the points'
        bounding box in that frame, its longer side times ``scale``."""
        xy = np.asarray(points, dtype=np.float64)[:, :2]
        d = xy[_LEFT_EYE_CORNERS[1]] - xy[_RIGHT_EYE_CORNERS[0]]
        angle = math.atan2(float(d[1]), float(d[0]))
        c, s = math.cos(angle), math.sin(angle)
        upright = xy @ np.array([[c, -s], [s, c]])  # rotate by -angle
        lo, hi = upright.min(axis=0), upright.max(axis=0)
        mid = (lo + hi) / 2
        centre = mid @ np.array([[c, s], [-s, c]])  # rotate back by +angle
        return Roi(
            cx=float(centre[0]),
            cy=float(centre[1]),
            size=max(float((hi - lo).max()), 1.0) * scale,
            angle=angle,
        )

    def matrix(self, side: int) -> F64:
        """The 2x3 affine map from image pixels to a ``side`` x ``side`` upright crop."""
        k = side / self.size
        c, s = math.cos(self.angle) * k, math.sin(self.angle) * k
        half = side / 2
        return np.array(
            [
                [c, s, half - c * self.cx - s * self.cy],
                [-s, c, half + s * self.cx - c * self.cy],
            ],
            dtype=np.float64,
        )


@dataclass(frozen=True, eq=False)
class FaceMesh:
    """One fitted face.

    ``points``: ``(468, 3)`` float32, image pixels (see the module docstring for ``z``).
    ``presence``: the network's face-presence probability (0-1; below
    :data:`PRESENCE_THRESHOLD` the crop holds no face). ``pose``: :class:`HeadPose`.
    ``eye_openness``: (subject's right eye, subject's left eye), each the eyelid gap over the
    eye-corner distance (about 0.25-0.35 open, below 0.1 closed). ``mouth_openness``: inner-lip
    gap over mouth width (0 closed, about 0.5 wide open). ``iris``: ``(2, 5, 2)`` image pixels
    (subject's right eye first; per eye the centre, then four contour points) or ``None``.
    ``roi``: the crop the points came from. ``image_size``: ``(width, height)`` of the image.
    ``transform``: the head's rigid transform (:class:`HeadTransform`).
    """

    points: F32 = field(repr=False)  # face geometry is personal data: never in a repr or log
    presence: float
    pose: HeadPose
    eye_openness: tuple[float, float]
    mouth_openness: float
    iris: F32 | None = field(repr=False)
    roi: Roi
    image_size: tuple[int, int]
    transform: HeadTransform = field(repr=False)

    @property
    def is_face(self) -> bool:
        """Presence at or above :data:`PRESENCE_THRESHOLD`."""
        return self.presence >= PRESENCE_THRESHOLD

    def to_json(self, normalised: bool = True) -> dict[str, Any]:
        """A JSON-ready dict: presence, pose, openness, and the points and iris.

        ``normalised``: ``x / width``, ``y / height`` and ``z / width`` (MediaPipe's normalised
        landmarks), 5 decimals; otherwise image pixels, 2 decimals.
        """
        width, height = self.image_size
        if normalised:
            scale = np.array([1 / width, 1 / height, 1 / width], dtype=np.float64)
            digits = 5
        else:
            scale = np.ones(3, dtype=np.float64)
            digits = 2
        pts = np.round(self.points.astype(np.float64) * scale, digits)
        iris = None
        if self.iris is not None:
            iris = np.round(self.iris.astype(np.float64) * scale[:2], digits).tolist()
        return {
            "presence": round(self.presence, 4),
            "pose": self.pose.to_json(),
            "eye_openness": [round(v, 3) for v in self.eye_openness],
            "mouth_openness": round(self.mouth_openness, 3),
            "normalised": normalised,
            "points": pts.tolist(),
            "iris": iris,
        }


@dataclass(frozen=True)
class MesherConfig:
    """``refine``: fit a second time from the first mesh's own crop (stills; the tracker passes
    its crop directly). ``iris``: run the iris network."""

    refine: bool = True
    iris: bool = True


class FaceMesher:
    """Fits :class:`FaceMesh` es with OpenCV DNN; build with :meth:`load` or
    :func:`default_mesher`. Safe to call from several threads (each network behind a lock)."""

    def __init__(
        self, mesh_net: cv2.dnn.Net, iris_net: cv2.dnn.Net | None, config: MesherConfig
    ) -> None:
        self._mesh = mesh_net
        self._iris = iris_net
        self._config = config
        self._mesh_lock = threading.Lock()
        self._iris_lock = threading.Lock()

    @classmethod
    def load(cls, config: MesherConfig = MesherConfig()) -> FaceMesher:
        """Read the networks from the installed model files (``ModelMissing`` if absent)."""
        mesh = read_tflite(face_landmark_path())
        iris = read_tflite(iris_landmark_path()) if config.iris else None
        return cls(mesh, iris, config)

    @property
    def config(self) -> MesherConfig:
        """The settings this mesher runs with."""
        return self._config

    def fit(self, bgr: NDArray[np.uint8], face: Face, *, iris: bool | None = None) -> FaceMesh:
        """Fit the mesh to a detected face (crop from its box, rotated by its eye line).

        ``iris``: run the iris network (default: the config's ``iris``; ``True`` needs a mesher
        loaded with it).
        """
        img = as_bgr(bgr)
        roi = Roi.from_face(face)
        if self._config.refine:
            points, _ = self._run_mesh(img, roi)
            roi = Roi.from_points(points)
        return self.fit_roi(img, roi, iris=iris)

    def fit_all(
        self, bgr: NDArray[np.uint8], faces: list[Face], *, iris: bool | None = None
    ) -> list[FaceMesh]:
        """:meth:`fit` for every face, in order."""
        img = as_bgr(bgr)
        return [self.fit(img, face, iris=iris) for face in faces]

    def fit_roi(self, bgr: NDArray[np.uint8], roi: Roi, *, iris: bool | None = None) -> FaceMesh:
        """Fit the mesh in one pass on the crop ``roi`` (a tracker's prediction)."""
        img = as_bgr(bgr)
        if not (math.isfinite(roi.size) and roi.size > 0):
            raise BadParams("mesh crop size must be positive")
        points, presence = self._run_mesh(img, roi)
        height, width = img.shape[:2]
        want_iris = self._config.iris if iris is None else iris
        if want_iris and self._iris is None:
            raise BadParams("this mesher was loaded without the iris network")
        iris_points = self._run_iris(img, points) if want_iris else None
        return build_mesh(points, presence, roi, (width, height), iris_points)

    def _run_mesh(self, img: NDArray[np.uint8], roi: Roi) -> tuple[F32, float]:
        matrix, blob = _crop_blob(img, roi, MESH_INPUT)
        with self._mesh_lock:
            self._mesh.setInput(blob)
            raw, logit = self._mesh.forward(list(_MESH_OUTPUTS))
        crop_pts = np.asarray(raw, dtype=np.float64).reshape(NUM_POINTS, 3)
        presence = _sigmoid(float(np.asarray(logit).ravel()[0]))
        out = np.empty((NUM_POINTS, 3), dtype=np.float32)
        out[:, :2] = _to_image(matrix, crop_pts[:, :2])
        out[:, 2] = crop_pts[:, 2] * (roi.size / MESH_INPUT)
        return out, presence

    def _run_iris(self, img: NDArray[np.uint8], points: F32) -> F32:
        assert self._iris is not None
        out = np.empty((2, 5, 2), dtype=np.float32)
        for k, (a, b, mirror) in enumerate(
            ((*_RIGHT_EYE_CORNERS, False), (*_LEFT_EYE_CORNERS, True))
        ):
            pa, pb = points[a, :2].astype(np.float64), points[b, :2].astype(np.float64)
            d = pb - pa
            centre = (pa + pb) / 2
            roi = Roi(
                cx=float(centre[0]),
                cy=float(centre[1]),
                size=max(float(np.hypot(*d)), 1.0) * IRIS_ROI_SCALE,
                angle=math.atan2(float(d[1]), float(d[0])),
            )
            matrix, blob = _crop_blob(img, roi, IRIS_INPUT, mirror=mirror)
            with self._iris_lock:
                self._iris.setInput(blob)
                _, raw = self._iris.forward(list(_IRIS_OUTPUTS))
            iris = np.asarray(raw, dtype=np.float64).reshape(5, 3)[:, :2].copy()
            if mirror:
                iris[:, 0] = IRIS_INPUT - iris[:, 0]
            out[k] = _to_image(matrix, iris)
        return out


def _crop_blob(
    img: NDArray[np.uint8], roi: Roi, side: int, mirror: bool = False
) -> tuple[F64, NDArray[np.float32]]:
    """The ``side`` x ``side`` upright crop of ``roi`` (mirrored if asked) as a network input
    (1x3xHxW RGB in [0, 1]), and the affine map from image to crop pixels."""
    matrix = roi.matrix(side)
    crop = cv2.warpAffine(
        img, matrix, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    if mirror:
        crop = cv2.flip(crop, 1)
    blob = cv2.dnn.blobFromImage(crop, scalefactor=1.0 / 255.0, swapRB=True)
    return matrix, np.asarray(blob, dtype=np.float32)


def _to_image(matrix: F64, crop_points: F64) -> F64:
    """Crop pixels back to image pixels through the inverse of ``matrix``."""
    inverse = cv2.invertAffineTransform(matrix)
    out: F64 = crop_points @ inverse[:, :2].T + inverse[:, 2]
    return out


def build_mesh(
    points: NDArray[Any],
    presence: float,
    roi: Roi,
    image_size: tuple[int, int],
    iris: NDArray[Any] | None = None,
) -> FaceMesh:
    """A :class:`FaceMesh` from points (image pixels): pose, openness and transform derived from
    them (a tracker rebuilds its smoothed meshes with it)."""
    pts = np.asarray(points, dtype=np.float32).reshape(NUM_POINTS, 3)
    iris_pts = None if iris is None else np.asarray(iris, dtype=np.float32).reshape(2, 5, 2)
    transform = head_transform(pts, image_size)
    return FaceMesh(
        points=pts,
        presence=float(presence),
        pose=pose_from_transform(transform),
        eye_openness=eye_openness(pts),
        mouth_openness=mouth_openness(pts),
        iris=iris_pts,
        roi=roi,
        image_size=(int(image_size[0]), int(image_size[1])),
        transform=transform,
    )


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _distance(points: F32, a: int, b: int) -> float:
    return float(np.hypot(*(points[a, :2].astype(np.float64) - points[b, :2])))


def eye_openness(points: F32) -> tuple[float, float]:
    """(subject's right, subject's left) eyelid gap over eye width (mean of three lid pairs)."""

    def ratio(lids: tuple[tuple[int, int], ...], corners: tuple[int, int]) -> float:
        width = max(_distance(points, *corners), 1e-6)
        return float(np.mean([_distance(points, u, v) for u, v in lids])) / width

    return ratio(_RIGHT_EYE_LIDS, _RIGHT_EYE_CORNERS), ratio(_LEFT_EYE_LIDS, _LEFT_EYE_CORNERS)


def mouth_openness(points: F32) -> float:
    """Inner-lip gap over mouth width."""
    return _distance(points, *_MOUTH_INNER) / max(_distance(points, *_MOUTH_CORNERS), 1e-6)


@functools.cache
def _rigid_indices() -> NDArray[np.intp]:
    return np.flatnonzero(canonical_face_model()[:, 1] > _RIGID_ABOVE_Y)


def head_transform(points: NDArray[Any], image_size: tuple[int, int]) -> HeadTransform:
    """Solve the head's rotation and translation from mesh points (image pixels) by SQPnP
    against the canonical face's rigid points, with a focal length of ``max(width, height)``."""
    width, height = image_size
    focal = float(max(width, height))
    camera = np.array(
        [[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]], dtype=np.float64
    )
    rigid = _rigid_indices()
    obj = canonical_face_model()[rigid].astype(np.float64) * _TO_OPENCV
    img = np.asarray(points, dtype=np.float64)[rigid, :2]
    ok, rvec, tvec = cv2.solvePnP(obj, img, camera, None, flags=cv2.SOLVEPNP_SQPNP)
    rotation: F64 = np.eye(3)
    translation: F64 = np.array([0.0, 0.0, 1.0])
    if ok:
        rotation = np.asarray(cv2.Rodrigues(rvec)[0], dtype=np.float64)
        translation = np.asarray(tvec, dtype=np.float64).reshape(3)
    return HeadTransform(
        rotation=rotation,
        translation=translation,
        camera=camera,
    )


def pose_from_transform(transform: HeadTransform) -> HeadPose:
    """Yaw, pitch and roll (see :class:`HeadPose`) of a head transform, relative to the line of
    sight from the camera to the head (so a face looking into the lens is ``(0, 0, 0)`` wherever
    it is in the frame, and cropping or scaling the image does not change its pose).

    The rotation is decomposed as ``roll(z) . pitch(x) . yaw(y)``: the head turns, then nods,
    then the whole picture rotates in plane, so an in-plane rotation of the image changes only
    ``roll``.
    """
    ray = transform.translation / max(float(np.linalg.norm(transform.translation)), 1e-9)
    rot = _align_z(ray).T @ transform.rotation
    pitch = -math.degrees(math.asin(max(-1.0, min(1.0, float(rot[2, 1])))))
    yaw = -math.degrees(math.atan2(-float(rot[2, 0]), float(rot[2, 2])))
    roll = math.degrees(math.atan2(-float(rot[0, 1]), float(rot[1, 1])))
    return HeadPose(yaw=yaw, pitch=pitch, roll=roll)


def _align_z(direction: F64) -> F64:
    """The smallest rotation taking the camera's ``z`` axis onto ``direction`` (unit)."""
    z = np.array([0.0, 0.0, 1.0])
    axis = np.cross(z, direction)
    sin = float(np.linalg.norm(axis))
    cos = float(np.dot(z, direction))
    if sin < 1e-12:
        return np.eye(3)
    rvec = axis / sin * math.atan2(sin, cos)
    rotation, _ = cv2.Rodrigues(rvec)
    return np.asarray(rotation, dtype=np.float64)


@functools.lru_cache(maxsize=1)
def default_mesher() -> FaceMesher:
    """The process-wide mesher with default settings, loaded on first call and then reused."""
    return FaceMesher.load()


__all__ = [
    "MESH_INPUT",
    "NUM_POINTS",
    "PRESENCE_THRESHOLD",
    "FaceMesh",
    "FaceMesher",
    "HeadPose",
    "HeadTransform",
    "MesherConfig",
    "Roi",
    "build_mesh",
    "default_mesher",
    "eye_openness",
    "head_transform",
    "mouth_openness",
    "pose_from_transform",
]
