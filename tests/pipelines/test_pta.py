"""PTA on generated media: scikit-image's astronaut, rotated, darkened, composited, or absent."""

from __future__ import annotations

import json
from typing import Any

import cv2
import jsonschema
import numpy as np
import pytest
from numpy.typing import NDArray

from pipelines.errors import BadParams, NoFace
from pipelines.faces import CenterFaceDetector, Face
from pipelines.media import decode_image
from pipelines.pta import AVATAR_SCHEMA, SCHEMA_ID, AvatarConfig, make_avatars
from pipelines.pta.avatar import shape_class
from pipelines.pta.colour import hex_to_lab
from pipelines.pta.geometry import FaceFrame, yaw_deg

pytestmark = pytest.mark.timeout(120)

Image = NDArray[np.uint8]
VALIDATOR = jsonschema.Draft202012Validator(AVATAR_SCHEMA)


def spec_of(image: Image, detector: CenterFaceDetector, **config: Any) -> dict[str, Any]:
    result = make_avatars(image, detector.detect(image), AvatarConfig(**config))
    doc: dict[str, Any] = json.loads(json.dumps(result.spec))  # exactly what the job writes
    VALIDATOR.validate(doc)
    return doc


def rotated(image: Image, angle: float) -> Image:
    """``image`` turned ``angle`` degrees counter-clockwise (OpenCV's convention) on grey."""
    height, width = image.shape[:2]
    side = int(1.5 * max(height, width))
    canvas = np.full((side, side, 3), 128, np.uint8)
    y0, x0 = (side - height) // 2, (side - width) // 2
    canvas[y0 : y0 + height, x0 : x0 + width] = image
    matrix = cv2.getRotationMatrix2D((side / 2, side / 2), angle, 1.0)
    out = cv2.warpAffine(canvas, matrix, (side, side), borderValue=(128, 128, 128))
    return np.ascontiguousarray(out)


def test_schema_is_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(AVATAR_SCHEMA)


def test_astronaut_spec(astronaut_bgr: Image, detector: CenterFaceDetector) -> None:
    result = make_avatars(astronaut_bgr, detector.detect(astronaut_bgr))
    doc = json.loads(json.dumps(result.spec))
    VALIDATOR.validate(doc)
    assert (doc["schema"], doc["version"], doc["primary"]) == (SCHEMA_ID, 1, 0)
    assert doc["image"] == {"width": 512, "height": 512}
    assert len(doc["faces"]) == 1 and result.faces == 1
    face = doc["faces"][0]
    assert face["primary"] is True
    assert abs(face["pose"]["roll_deg"]) < 15
    assert abs(face["pose"]["yaw_deg"]) < 20
    assert face["shape"]["class"] in {"oval", "round", "square", "long", "heart"}
    assert 1.1 < face["shape"]["proportions"]["aspect_ratio"] < 1.7
    # a plausible skin tone: neither grey nor black nor white
    lightness, a, b = hex_to_lab(face["skin"]["hex"])
    assert 35 < lightness < 92
    assert np.hypot(a, b) > 8 and b > 0  # warm, chromatic
    assert 1 <= face["skin"]["palette_index"] <= 10
    assert face["hair"]["name"] in {"brown", "light_brown", "dark_brown", "blonde"}
    assert face["eyes"]["name"] != "unknown"
    render = face["render"]
    assert render["size"] == 512 and len(render["palette"]) == 8
    # in the avatar the eyes are level
    (lx, ly), (rx, ry) = render["landmarks"][:2]
    assert abs(ly - ry) < 1.0 and lx < rx
    png = decode_image(result.png)
    assert png.shape == (512, 512, 3)
    assert result.png.startswith(b"\x89PNG") and b"eXIf" not in result.png


def test_render_is_deterministic_and_sized(
    astronaut_bgr: Image, detector: CenterFaceDetector
) -> None:
    faces = detector.detect(astronaut_bgr)
    first = make_avatars(astronaut_bgr, faces, AvatarConfig(size=256))
    second = make_avatars(astronaut_bgr, faces, AvatarConfig(size=256))
    assert first.png == second.png
    assert decode_image(first.png).shape == (256, 256, 3)
    # a cartoon: few colours (palette plus outline ink)
    pixels = decode_image(first.png).reshape(-1, 3)
    assert len(np.unique(pixels, axis=0)) <= 9


@pytest.mark.parametrize("angle", [20.0, -20.0])
def test_roll_follows_rotation(
    astronaut_bgr: Image, detector: CenterFaceDetector, angle: float
) -> None:
    doc = spec_of(rotated(astronaut_bgr, angle), detector)
    assert len(doc["faces"]) == 1
    # counter-clockwise by `angle` lowers the image-left eye: roll is minus the angle
    assert doc["faces"][0]["pose"]["roll_deg"] == pytest.approx(-angle, abs=7.0)
    _lx, ly = doc["faces"][0]["render"]["landmarks"][0]
    _rx, ry = doc["faces"][0]["render"]["landmarks"][1]
    assert abs(ly - ry) < 1.0  # aligned in the avatar


def test_blank_image_is_no_face(detector: CenterFaceDetector) -> None:
    blank = np.full((480, 640, 3), 200, np.uint8)
    with pytest.raises(NoFace) as caught:
        make_avatars(blank, detector.detect(blank))
    assert caught.value.code == "no_face"


def test_multi_face_composite(face_crop: Image, detector: CenterFaceDetector) -> None:
    canvas = np.full((700, 1100, 3), (90, 120, 100), np.uint8)
    big = cv2.resize(face_crop, None, fx=1.8, fy=1.8, interpolation=cv2.INTER_CUBIC)
    small = np.ascontiguousarray(face_crop[:, ::-1])
    medium = cv2.resize(face_crop, None, fx=1.3, fy=1.3, interpolation=cv2.INTER_AREA)
    for img, (x, y) in ((small, (40, 60)), (big, (420, 200)), (medium, (850, 40))):
        canvas[y : y + img.shape[0], x : x + img.shape[1]] = img
    doc = spec_of(canvas, detector)
    faces = doc["faces"]
    assert len(faces) == 3
    areas = [(f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]) for f in faces]
    assert areas == sorted(areas, reverse=True)
    assert [f["primary"] for f in faces] == [True, False, False]
    assert [f["index"] for f in faces] == [0, 1, 2]
    x1, y1, x2, y2 = faces[0]["box"]
    assert 420 < x1 < x2 < 420 + big.shape[1] and 200 < y1 < y2 < 200 + big.shape[0]
    # the same person everywhere: the same skin tone within a step of the scale
    tones = [f["skin"]["palette_index"] for f in faces]
    assert max(tones) - min(tones) <= 1
    # max_faces keeps the largest
    assert len(spec_of(canvas, detector, max_faces=1)["faces"]) == 1


def test_darker_photo_gives_darker_tone(astronaut_bgr: Image, detector: CenterFaceDetector) -> None:
    base = spec_of(astronaut_bgr, detector)["faces"][0]["skin"]
    dark_img = np.ascontiguousarray((astronaut_bgr.astype(np.float32) * 0.55).astype(np.uint8))
    dark = spec_of(dark_img, detector)["faces"][0]["skin"]
    assert dark["lab"][0] < base["lab"][0] - 10
    assert dark["palette_index"] > base["palette_index"]


def _face(nose_dx: float) -> Face:
    return Face(
        box=(100, 80, 200, 220),
        landmarks=((130, 130), (170, 130), (150 + nose_dx, 155), (135, 180), (165, 180)),
        score=0.9,
    )


def test_yaw_sign_and_frame() -> None:
    frontal, right = _face(0.0), _face(8.0)
    assert yaw_deg(frontal, FaceFrame.of(frontal)) == pytest.approx(0.0, abs=1e-6)
    assert yaw_deg(right, FaceFrame.of(right)) == pytest.approx(21.8, abs=0.1)  # atan(0.2/0.5)
    left = _face(-8.0)
    assert yaw_deg(left, FaceFrame.of(left)) < -20
    frame = FaceFrame.of(frontal)
    assert frame.roll_deg == 0.0
    x, y = frame.to_image(*frame.to_face(123.0, 45.0))
    assert (x, y) == pytest.approx((123.0, 45.0))


@pytest.mark.parametrize(
    ("aspect", "forehead", "jaw", "expected"),
    [
        (1.6, 1.0, 0.8, "long"),
        (1.3, 1.0, 0.95, "square"),
        (1.2, 1.0, 0.8, "round"),
        (1.4, 1.0, 0.65, "heart"),
        (1.4, 0.9, 0.8, "oval"),
    ],
)
def test_shape_rules(aspect: float, forehead: float, jaw: float, expected: str) -> None:
    proportions = {"aspect_ratio": aspect, "forehead_ratio": forehead, "jaw_ratio": jaw}
    assert shape_class(proportions) == expected


def test_config_validation() -> None:
    with pytest.raises(BadParams):
        AvatarConfig(size=10)
    with pytest.raises(BadParams):
        AvatarConfig(max_faces=0)
