"""The face mesh (MediaPipe models through OpenCV DNN): real models on generated scenes from
scikit-image's astronaut; pose conventions checked on projected canonical faces."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from pipelines.errors import BadParams
from pipelines.faces import regions
from pipelines.faces.canonical import canonical_face_model
from pipelines.faces.detector import CenterFaceDetector, Face
from pipelines.faces.mesh import (
    NUM_POINTS,
    PRESENCE_THRESHOLD,
    FaceMesh,
    FaceMesher,
    HeadTransform,
    Roi,
    default_mesher,
    head_transform,
    pose_from_transform,
)
from pipelines.faces.models import (
    FACE_LANDMARK,
    MEDIAPIPE_REQUIREMENT,
    ModelFile,
    ModelMissing,
    check_models,
    model_path,
    tessellation,
)
from pipelines.faces.segmentation import segment_person

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mesher() -> FaceMesher:
    return default_mesher()


@pytest.fixture(scope="module")
def astronaut_face(astronaut_bgr: NDArray[np.uint8], detector: CenterFaceDetector) -> Face:
    faces = detector.detect(astronaut_bgr)
    assert len(faces) == 1
    return faces[0]


@pytest.fixture(scope="module")
def astronaut_mesh(
    astronaut_bgr: NDArray[np.uint8], astronaut_face: Face, mesher: FaceMesher
) -> FaceMesh:
    return mesher.fit(astronaut_bgr, astronaut_face)


def rotate(img: NDArray[np.uint8], degrees: float) -> NDArray[np.uint8]:
    """Rotate counter-clockwise (OpenCV's sign) about the centre, same size, border replicated."""
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return np.asarray(cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE), np.uint8)


# ----- no model at import, model files found by path ----------------------------------------


def test_importing_the_face_modules_loads_no_model() -> None:
    code = textwrap.dedent(
        """
        import sys
        import pipelines.faces, pipelines.faces.mesh, pipelines.faces.regions
        import pipelines.faces.segmentation, pipelines.faces.mesh_tracking
        import pipelines.faces.report, pipelines.faces.models, pipelines.faces.canonical
        from pipelines.faces.mesh import default_mesher
        from pipelines.faces.segmentation import default_segmenter
        from pipelines.faces.models import tessellation
        from pipelines.faces.canonical import _vertices
        assert "mediapipe" not in sys.modules, "mediapipe was imported"
        for cached in (default_mesher, default_segmenter, tessellation, _vertices):
            assert cached.cache_info().currsize == 0, cached
        print("clean")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "clean"


def test_model_files_are_found_without_importing_mediapipe() -> None:
    paths = check_models()
    assert [p.name for p in paths[:3]] == [
        "face_landmark.tflite",
        "iris_landmark.tflite",
        "selfie_segmentation.tflite",
    ]
    assert all(p.is_file() and p.stat().st_size > 100_000 for p in paths[:3])
    assert "mediapipe" not in sys.modules


def test_a_missing_model_file_is_a_clear_error() -> None:
    with pytest.raises(ModelMissing) as info:
        model_path(ModelFile("nope", FACE_LANDMARK.package, "modules/nope/nope.tflite"))
    assert "nope.tflite" in info.value.message and MEDIAPIPE_REQUIREMENT in info.value.message
    with pytest.raises(ModelMissing, match="not installed"):
        model_path(ModelFile("nope", "no_such_package_facemedia", "x.tflite"))


def test_install_check_fails_the_install_when_a_model_is_missing(tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "pipelines.faces.install_check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count("face models: ok") == 4
    # A mediapipe package without the model files shadows the real one.
    (tmp_path / "mediapipe").mkdir()
    (tmp_path / "mediapipe" / "__init__.py").write_text("")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    bad = subprocess.run(
        [sys.executable, "-m", "pipelines.faces.install_check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )
    assert bad.returncode == 1
    assert "face_landmark.tflite was not found" in bad.stderr
    assert "pip install --no-deps" in bad.stderr


def test_the_pinned_model_wheel_is_the_one_the_install_uses() -> None:
    lines = (ROOT / "requirements-models.txt").read_text().splitlines()
    pins = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert pins == [MEDIAPIPE_REQUIREMENT]
    makefile = (ROOT / "Makefile").read_text()
    dockerfile = (ROOT / "Dockerfile").read_text()
    for text in (makefile, dockerfile):
        assert "--no-deps -r requirements-models.txt" in text
        assert "pipelines.faces.install_check" in text


def test_canonical_face_and_triangles() -> None:
    v = canonical_face_model().astype(np.float64)
    assert v.shape == (NUM_POINTS, 3)
    mirrored = v * [-1, 1, 1]
    nearest = np.linalg.norm(mirrored[:, None] - v[None], axis=2).min(axis=1)
    assert nearest.max() < 1e-5  # mirror-symmetric: a mistyped coordinate would break it
    assert v[4, 2] == v[:, 2].max()  # the nose tip is the point nearest the camera
    assert v[10, 1] > v[4, 1] > v[152, 1]  # forehead above nose above chin
    assert v[263, 0] > 0 > v[33, 0]  # x points to the subject's left
    tri = tessellation()
    assert tri.shape == (852, 3) and set(tri.ravel().tolist()) == set(range(NUM_POINTS))


# ----- the mesh on a photo -------------------------------------------------------------------


def test_mesh_lands_on_the_face(astronaut_face: Face, astronaut_mesh: FaceMesh) -> None:
    mesh = astronaut_mesh
    assert mesh.points.shape == (NUM_POINTS, 3) and mesh.points.dtype == np.float32
    assert mesh.presence > 0.9 and mesh.is_face
    assert mesh.image_size == (512, 512)
    # Iris centres (subject's right eye = image left) on the detector's eye landmarks.
    assert mesh.iris is not None and mesh.iris.shape == (2, 5, 2)
    size = astronaut_face.width
    for side in (regions.RIGHT_IRIS, regions.LEFT_IRIS):
        centre = np.array(regions.iris_centre(mesh, side))
        assert np.hypot(*(centre - astronaut_face.landmarks[side])) < 0.05 * size
    # The nose tip on the detector's nose, mouth corners on its mouth corners.
    nose = mesh.points[regions.NOSE_TIP, :2]
    assert np.hypot(*(nose - astronaut_face.landmarks[2])) < 0.08 * size
    for index, landmark in ((regions.MOUTH_RIGHT, 3), (regions.MOUTH_LEFT, 4)):
        corner = mesh.points[index, :2]
        assert np.hypot(*(corner - astronaut_face.landmarks[landmark])) < 0.1 * size
    # Nearly every point inside the detector's box (enlarged by 10 %).
    x1, y1, x2, y2 = astronaut_face.box
    m = 0.1 * size
    xy = mesh.points[:, :2]
    inside = (xy[:, 0] > x1 - m) & (xy[:, 0] < x2 + m) & (xy[:, 1] > y1 - m) & (xy[:, 1] < y2 + m)
    assert inside.mean() > 0.97
    # Eyes open, smiling mouth open (teeth show).
    assert all(0.2 < v < 0.5 for v in mesh.eye_openness)
    assert 0.05 < mesh.mouth_openness < 0.5


def test_the_detector_crop_is_calibrated_to_the_mesh_crop(
    astronaut_face: Face, astronaut_mesh: FaceMesh
) -> None:
    first, refined = Roi.from_face(astronaut_face), astronaut_mesh.roi
    assert 0.9 < refined.size / first.size < 1.1
    assert math.hypot(refined.cx - first.cx, refined.cy - first.cy) < 0.05 * first.size
    assert abs(refined.angle - first.angle) < math.radians(3)


def test_frontal_pose_and_roll_under_known_rotation(
    astronaut_bgr: NDArray[np.uint8],
    astronaut_mesh: FaceMesh,
    detector: CenterFaceDetector,
    mesher: FaceMesher,
) -> None:
    base = astronaut_mesh.pose
    assert abs(base.yaw) < 10 and abs(base.pitch) < 12 and abs(base.roll) < 8
    for degrees in (-35.0, 20.0):
        img = rotate(astronaut_bgr, degrees)
        faces = detector.detect(img)
        assert faces
        pose = mesher.fit(img, faces[0]).pose
        # Counter-clockwise image rotation = the face turns anticlockwise: roll decreases.
        assert pose.roll == pytest.approx(base.roll - degrees, abs=3.0)
        assert pose.yaw == pytest.approx(base.yaw, abs=3.0)
        assert pose.pitch == pytest.approx(base.pitch, abs=3.0)


def test_pose_under_mirroring(
    astronaut_bgr: NDArray[np.uint8], detector: CenterFaceDetector, mesher: FaceMesher
) -> None:
    # Roll the head first so the mirror image has a clearly opposite roll.
    img = rotate(astronaut_bgr, 15.0)
    flipped = np.ascontiguousarray(img[:, ::-1])
    pose = mesher.fit(img, detector.detect(img)[0]).pose
    mirrored = mesher.fit(flipped, detector.detect(flipped)[0]).pose
    assert pose.roll < -8 and mirrored.roll > 8
    assert mirrored.roll == pytest.approx(-pose.roll, abs=3.0)
    assert mirrored.yaw == pytest.approx(-pose.yaw, abs=3.0)
    assert mirrored.pitch == pytest.approx(pose.pitch, abs=3.0)


def synthetic_points(yaw: float, pitch: float, roll: float, size: int = 640) -> NDArray[np.float32]:
    """The canonical face turned by known angles (the conventions of HeadPose) and projected."""
    y, p, r = (math.radians(a) for a in (yaw, pitch, roll))
    # OpenCV camera frame: x right, y down, z away. yaw>0 turns the nose to the image right,
    # pitch>0 lifts the chin (nose up), roll>0 turns the face clockwise in the image.
    ry = np.array([[math.cos(y), 0, -math.sin(y)], [0, 1, 0], [math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    rotation = rz @ rx @ ry
    camera = np.array([[size, 0, size / 2], [0, size, size / 2], [0, 0, 1]], dtype=np.float64)
    transform = HeadTransform(rotation, np.array([0.0, 0.0, 60.0]), camera)
    xy = transform.project(canonical_face_model())
    points = np.zeros((NUM_POINTS, 3), np.float32)
    points[:, :2] = xy
    return points


@pytest.mark.parametrize(
    ("yaw", "pitch", "roll"), [(0, 0, 0), (25, 0, 0), (-30, 0, 0), (0, 15, 0), (0, -20, 0),
                               (0, 0, 30), (20, -10, -25)]
)  # fmt: skip
def test_pose_conventions_on_a_projected_canonical_face(
    yaw: float, pitch: float, roll: float
) -> None:
    points = synthetic_points(yaw, pitch, roll)
    nose, left_eye, right_eye = points[4, :2], points[263, :2], points[33, :2]
    eyes_mid = (left_eye + right_eye) / 2
    if yaw > 0 and roll == 0:
        assert nose[0] > eyes_mid[0]  # turned to the image right
    if pitch > 0 and roll == 0 and yaw == 0:
        assert nose[1] < points[1, 1] + 1  # chin up: the nose rises
    pose = pose_from_transform(head_transform(points, (640, 640)))
    assert pose.yaw == pytest.approx(yaw, abs=0.5)
    assert pose.pitch == pytest.approx(pitch, abs=0.5)
    assert pose.roll == pytest.approx(roll, abs=0.5)


def test_presence_is_low_on_a_non_face(mesher: FaceMesher) -> None:
    rng = np.random.default_rng(3)
    noise = rng.integers(0, 256, (400, 400, 3), dtype=np.uint8)
    wall = np.full((400, 400, 3), (90, 140, 200), np.uint8)
    stripes = np.zeros((400, 400, 3), np.uint8)
    stripes[:, ::20] = 255
    fake = Face(
        (100, 100, 260, 290), ((150, 170), (210, 170), (180, 210), (150, 250), (210, 250)), 0.9
    )
    for img in (noise, wall, stripes):
        mesh = mesher.fit(img, fake)
        assert mesh.presence < 0.1 and not mesh.is_face
    assert PRESENCE_THRESHOLD == 0.5


def test_mesh_json(astronaut_mesh: FaceMesh) -> None:
    doc = astronaut_mesh.to_json(normalised=True)
    pts = np.array(doc["points"])
    assert pts.shape == (NUM_POINTS, 3) and doc["normalised"] is True
    assert (pts[:, :2] > 0).all() and (pts[:, :2] < 1).all()
    assert np.allclose(pts[:, 0] * 512, astronaut_mesh.points[:, 0], atol=0.01)
    assert set(doc["pose"]) == {"yaw", "pitch", "roll"}
    assert np.array(doc["iris"]).shape == (2, 5, 2)
    assert "points" not in repr(astronaut_mesh) and "iris" not in repr(astronaut_mesh)
    pixels = astronaut_mesh.to_json(normalised=False)
    assert np.allclose(np.array(pixels["points"]), astronaut_mesh.points, atol=0.01)


def test_roi_round_trip() -> None:
    roi = Roi(cx=100.0, cy=80.0, size=64.0, angle=math.radians(30))
    m = roi.matrix(192)
    centre = m @ np.array([100.0, 80.0, 1.0])
    assert np.allclose(centre, [96, 96])
    # A point along the face's x axis lands on the crop's horizontal through the centre.
    along = m @ np.array([100 + 32 * math.cos(roi.angle), 80 + 32 * math.sin(roi.angle), 1.0])
    assert np.allclose(along, [192, 96])
    with pytest.raises(BadParams):
        default_mesher().fit_roi(np.zeros((10, 10, 3), np.uint8), Roi(5, 5, 0.0, 0.0))


# ----- regions and masks ---------------------------------------------------------------------


def test_left_regions_mirror_the_right_ones() -> None:
    v = canonical_face_model().astype(np.float64)
    mirror = np.linalg.norm((v * [-1, 1, 1])[:, None] - v[None], axis=2).argmin(axis=1)
    names = {r.name: r for r in regions.REGIONS}
    for name, region in names.items():
        if name.startswith("right_"):
            left = names["left_" + name.removeprefix("right_")]
            assert [int(mirror[i]) for i in region.indices] == list(left.indices)
        elif not name.startswith("left_"):
            assert sorted(int(mirror[i]) for i in region.indices) == sorted(region.indices)
    assert all(0 <= i < NUM_POINTS for r in regions.REGIONS for i in r.indices)


def test_ibug_68_subset_is_mirror_consistent() -> None:
    v = canonical_face_model().astype(np.float64)
    mirror = np.linalg.norm((v * [-1, 1, 1])[:, None] - v[None], axis=2).argmin(axis=1)
    # iBUG's own left-right pairs (0 <-> 16, 17 <-> 26, 36 <-> 45, 48 <-> 54, ...).
    ibug_mirror = list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30]
    ibug_mirror += [35, 34, 33, 32, 31, 45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    ibug_mirror += [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65]
    assert len(regions.IBUG_68) == 68 and sorted(ibug_mirror) == list(range(68))
    for k, index in enumerate(regions.IBUG_68):
        assert int(mirror[index]) == regions.IBUG_68[ibug_mirror[k]], k


def test_face_of_a_mesh_matches_the_detector(
    astronaut_face: Face, astronaut_mesh: FaceMesh
) -> None:
    face = regions.face_of(astronaut_mesh)
    a, b = face.box, astronaut_face.box
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(
        0.0, min(a[3], b[3]) - max(a[1], b[1])
    )
    union = face.width * face.height + astronaut_face.width * astronaut_face.height - inter
    assert inter / union > 0.8
    for mine, theirs in zip(face.landmarks, astronaut_face.landmarks, strict=True):
        assert np.hypot(mine[0] - theirs[0], mine[1] - theirs[1]) < 0.1 * astronaut_face.width
    assert face.score == astronaut_mesh.presence


def test_skin_mask_and_region_masks(
    astronaut_bgr: NDArray[np.uint8], astronaut_mesh: FaceMesh
) -> None:
    shape = astronaut_bgr.shape
    skin = regions.skin_mask(shape, astronaut_mesh, feather_px=3)
    assert skin.shape == shape[:2] and skin.dtype == np.float32
    assert float(skin.min()) >= 0.0 and float(skin.max()) <= 1.0

    def at(mask: NDArray[np.float32], xy: NDArray[np.floating]) -> float:
        return float(mask[round(float(xy[1])), round(float(xy[0]))])

    for side in (regions.RIGHT_IRIS, regions.LEFT_IRIS):
        assert at(skin, np.array(regions.iris_centre(astronaut_mesh, side))) < 0.01
    lips = regions.LIPS_OUTER.points(astronaut_mesh).mean(axis=0)
    assert at(skin, lips) < 0.01
    for cheek in (regions.RIGHT_CHEEK, regions.LEFT_CHEEK):
        centre = cheek.points(astronaut_mesh).mean(axis=0)
        assert at(skin, centre) == pytest.approx(1.0)
        assert at(regions.region_mask(shape, astronaut_mesh, cheek), centre) == pytest.approx(1.0)
    # Skin looks like skin: the masked mean is warm (red > blue) and bright.
    weights = skin[..., None]
    b, g, r = (astronaut_bgr * weights).sum(axis=(0, 1)) / weights.sum()
    assert r > g > b and r > 150
    # Feathering makes a soft edge; none is a hard (anti-aliased) polygon.
    hard = regions.region_mask(shape, astronaut_mesh, regions.FACE_OVAL)
    soft = regions.region_mask(shape, astronaut_mesh, regions.FACE_OVAL, feather_px=8)
    partial = lambda m: int(((m > 0.02) & (m < 0.98)).sum())  # noqa: E731
    assert partial(soft) > 3 * partial(hard)
    assert abs(float(soft.sum()) - float(hard.sum())) < 0.05 * float(hard.sum())
    with pytest.raises(BadParams, match="line"):
        regions.region_mask(shape, astronaut_mesh, regions.JAW_LINE)


def test_person_segmentation(astronaut_bgr: NDArray[np.uint8], astronaut_face: Face) -> None:
    mask = segment_person(astronaut_bgr)
    assert mask.shape == astronaut_bgr.shape[:2] and mask.dtype == np.float32
    x1, y1, x2, y2 = (int(v) for v in astronaut_face.box)
    assert float(mask[y1:y2, x1:x2].mean()) > 0.9
    assert float(mask[:60, 440:].mean()) < 0.1  # the grey wall top right
    wall = np.full((300, 200, 3), (90, 140, 200), np.uint8)
    assert float(segment_person(wall).max()) < 0.1
