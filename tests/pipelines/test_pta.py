"""PTA on generated media: scikit-image's astronaut (mirrored, scaled, brightened, re-encoded,
composited into a group) and ``lfw_subset``'s identities; the avatar drawn from its spec alone."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import cv2
import jsonschema
import numpy as np
import pytest
from numpy.typing import NDArray
from skimage import data

from pipelines.errors import BadParams, NoFace
from pipelines.faces import CenterFaceDetector
from pipelines.pta import AVATAR_SCHEMA, SCHEMA_ID, AvatarSpec
from pipelines.pta.avatar import AvatarConfig, choose_face, draw, measure_spec
from pipelines.pta.examples import with_changes
from pipelines.pta.render import MEANS, render_png, render_svg
from pipelines.pta.schema import SCHEMA_FILE, schema_text
from pipelines.pta.spec import STYLES

pytestmark = pytest.mark.timeout(300)

#: Where the tests keep what they fetch from package registries (the insightface wheel).
CACHE = Path(os.environ.get("FACEMEDIA_TEST_CACHE", Path.home() / ".cache" / "facemedia-test"))
#: insightface's wheel ships sample photos (a group of six, a portrait); its code is MIT, the
#: photos carry no licence of their own: read from the wheel in memory, never committed.
INSIGHTFACE = "insightface==2.1"

Image = NDArray[np.uint8]
VALIDATOR = jsonschema.Draft202012Validator(AVATAR_SCHEMA)


def spec_of(image: Image, detector: CenterFaceDetector, **config: Any) -> AvatarSpec:
    spec = measure_spec(image, detector.detect(image), AvatarConfig(**config))
    VALIDATOR.validate(spec.to_json())
    return spec


@pytest.fixture(scope="module")
def astronaut_spec(astronaut_bgr: Image, detector: CenterFaceDetector) -> AvatarSpec:
    return spec_of(astronaut_bgr, detector)


def variants(image: Image) -> dict[str, Image]:
    """The same person: mirrored, scaled to 60 %, brightened 25 %, JPEG quality 40."""
    h, w = image.shape[:2]
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 40])
    assert ok
    return {
        "mirrored": np.ascontiguousarray(image[:, ::-1]),
        "scaled": cv2.resize(image, (int(w * 0.6), int(h * 0.6)), interpolation=cv2.INTER_AREA),
        "brightened": np.clip(image.astype(np.float32) * 1.25, 0, 255).astype(np.uint8),
        "jpeg40": cv2.imdecode(jpeg, cv2.IMREAD_COLOR),
    }


@pytest.fixture(scope="module")
def insightface_images() -> dict[str, Image]:
    """The sample photos inside insightface's wheel (``pip download --no-deps`` into the cache
    when missing), decoded in memory: ``group`` (six people) and ``portrait``."""
    wheels = sorted(CACHE.glob("insightface-2.1-*.whl"))
    if not wheels:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "-q",
                "-d",
                str(CACHE),
                INSIGHTFACE,
            ],
            check=True,
            timeout=240,
        )
        wheels = sorted(CACHE.glob("insightface-2.1-*.whl"))
    assert wheels, "pip download insightface produced no wheel"
    names = {
        "group": "insightface/data/images/t1.jpg",
        "portrait": "insightface/data/images/Tom_Hanks_54745.png",
    }
    with zipfile.ZipFile(wheels[0]) as wheel:
        return {
            key: cv2.imdecode(np.frombuffer(wheel.read(name), np.uint8), cv2.IMREAD_COLOR)
            for key, name in names.items()
        }


def continuous(spec: AvatarSpec) -> dict[str, float]:
    """The measured continuous parameters (the ones the drawing caricatures)."""
    out = {}
    for key in MEANS:
        group, name = key.split(".")
        out[key] = float(getattr(getattr(spec, group), name))
    return out


def discrete(spec: AvatarSpec) -> tuple[str, str, str, bool]:
    return (spec.face.shape, spec.eyes.shape, spec.hair.style, spec.glasses.present)


def distance(a: AvatarSpec, b: AvatarSpec) -> float:
    """Distance of two parameter vectors, each parameter relative to its population mean
    (the tilt, in degrees, over 10 degrees)."""
    va, vb = continuous(a), continuous(b)
    total = 0.0
    for key, mean in MEANS.items():
        scale = 10.0 if key == "eyes.tilt_deg" else mean
        total += ((va[key] - vb[key]) / scale) ** 2
    return math.sqrt(total)


def test_schema_file_is_the_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(AVATAR_SCHEMA)
    assert SCHEMA_FILE.read_text() == schema_text()  # python -m pipelines.pta.schema rewrites it


def test_astronaut_spec(astronaut_spec: AvatarSpec) -> None:
    doc = json.loads(json.dumps(astronaut_spec.to_json()))
    assert (doc["schema"], doc["version"]) == (SCHEMA_ID, 2)
    assert doc["source"] == {
        "faces_found": 1,
        "face": 0,
        "chosen_by": "largest",
        "pose_deg": doc["source"]["pose_deg"],
    }
    spec = astronaut_spec
    # plausible adult proportions (inter-ocular distances, as the mesh measures them)
    assert 1.8 < spec.face.width < 2.6 and 2.1 < spec.face.height < 3.2
    assert spec.face.chin_width < spec.face.jaw_width < spec.face.cheekbone_width * 1.05
    assert 0.35 < spec.eyes.size < 0.55 and 0.4 < spec.eyes.spacing < 0.7
    assert 0.5 < spec.nose.width < 0.9 and 0.8 < spec.mouth.width < 1.3
    assert 2 <= spec.skin.monk <= 5  # a light, warm skin
    assert spec.hair.style == "short" and "brown" in spec.hair.colour.name
    assert spec.eyes.iris.name in {"dark_brown", "brown", "hazel"}
    assert spec.glasses.present is False
    assert AvatarSpec.from_json(doc) == spec


@pytest.mark.parametrize("who", ["astronaut", "portrait", "lfw"])
def test_same_person_same_avatar(
    who: str,
    astronaut_bgr: Image,
    insightface_images: dict[str, Image],
    detector: CenterFaceDetector,
) -> None:
    photo = {
        "astronaut": astronaut_bgr,
        "portrait": insightface_images["portrait"],
        "lfw": _lfw_faces(1)[0],
    }[who]
    first = spec_of(photo, detector)
    base = continuous(first)
    for name, image in variants(photo).items():
        spec = spec_of(image, detector)
        assert discrete(spec) == discrete(first), name
        assert abs(spec.skin.monk - first.skin.monk) <= 1, name
        for key, value in continuous(spec).items():
            if key == "eyes.tilt_deg":
                assert abs(value - base[key]) <= 1.5, (name, key)  # degrees, near 0: absolute
            else:
                assert value == pytest.approx(base[key], rel=0.10), (name, key)


def _lfw_faces(count: int) -> list[Image]:
    """``lfw_subset``'s first face crops (25x25 grey), enlarged onto a grey canvas."""
    out = []
    for crop in data.lfw_subset()[:count]:
        big = cv2.resize((crop * 255).astype(np.uint8), (200, 200), interpolation=cv2.INTER_CUBIC)
        canvas = np.full((400, 400), 128, np.uint8)
        canvas[100:300, 100:300] = big
        out.append(cv2.cvtColor(canvas, cv2.COLOR_GRAY2BGR))
    return out


def test_different_people_are_further_apart(
    astronaut_bgr: Image,
    astronaut_spec: AvatarSpec,
    insightface_images: dict[str, Image],
    detector: CenterFaceDetector,
) -> None:
    group = insightface_images["group"]
    portrait = insightface_images["portrait"]
    in_group = detector.detect(group)
    assert len(in_group) == 6
    people = {
        "astronaut": astronaut_spec,
        "portrait": spec_of(portrait, detector),
        **{f"group{i}": measure_spec(group, in_group, AvatarConfig(face=i)) for i in range(6)},
        **{f"lfw{i}": spec_of(img, detector) for i, img in enumerate(_lfw_faces(6))},
    }
    same = []
    for name, photo in (
        ("astronaut", astronaut_bgr),
        ("portrait", portrait),
        ("lfw0", _lfw_faces(1)[0]),
    ):
        same += [distance(people[name], spec_of(v, detector)) for v in variants(photo).values()]
    names = list(people)
    different = [
        distance(people[a], people[b]) for i, a in enumerate(names) for b in names[i + 1 :]
    ]
    assert max(same) < min(different), (sorted(same)[-3:], sorted(different)[:3])


def test_group_of_six(insightface_images: dict[str, Image], detector: CenterFaceDetector) -> None:
    group = insightface_images["group"]
    faces = detector.detect(group)
    default = spec_of(group, detector)
    largest = max(range(len(faces)), key=lambda i: faces[i].width * faces[i].height)
    assert (default.source.faces_found, default.source.face, default.source.chosen_by) == (
        6,
        largest,
        "largest",
    )
    specs = [spec_of(group, detector, face=i) for i in range(6)]
    assert [s.source.face for s in specs] == list(range(6))
    assert all(s.source.chosen_by == "index" for s in specs)
    assert not any(s.glasses.present for s in specs)  # nobody wears glasses there
    assert len({s.face.width for s in specs}) == 6  # six different measurements


def test_group_photo_picks_largest_or_index(face_crop: Image, detector: CenterFaceDetector) -> None:
    canvas = np.full((700, 1100, 3), (90, 120, 100), np.uint8)
    big = cv2.resize(face_crop, None, fx=2.4, fy=2.4, interpolation=cv2.INTER_CUBIC)
    small = cv2.resize(face_crop, None, fx=1.3, fy=1.3, interpolation=cv2.INTER_AREA)
    canvas[60 : 60 + small.shape[0], 40 : 40 + small.shape[1]] = small[:, ::-1]
    canvas[180 : 180 + big.shape[0], 500 : 500 + big.shape[1]] = big
    faces = detector.detect(canvas)
    assert len(faces) == 2
    largest = max(range(2), key=lambda i: faces[i].width * faces[i].height)
    assert choose_face(faces, "largest") == (largest, "largest")
    spec = spec_of(canvas, detector)
    assert (spec.source.faces_found, spec.source.face, spec.source.chosen_by) == (
        2,
        largest,
        "largest",
    )
    other = spec_of(canvas, detector, face=1 - largest)
    assert (other.source.face, other.source.chosen_by) == (1 - largest, "index")
    with pytest.raises(BadParams, match="out of range"):
        choose_face(faces, 2)
    with pytest.raises(NoFace):
        choose_face([], "largest")


def test_glasses_are_seen(
    astronaut_bgr: Image, astronaut_spec: AvatarSpec, detector: CenterFaceDetector
) -> None:
    from pipelines.faces.mesh import default_mesher

    faces = detector.detect(astronaut_bgr)
    mesh = default_mesher().fit(astronaut_bgr, faces[0])
    framed = astronaut_bgr.copy()
    p = mesh.points[:, :2]
    for outer, inner in ((33, 133), (263, 362)):
        a, b = p[outer], p[inner]
        centre = (a + b) / 2
        half = float(np.linalg.norm(b - a)) * 0.75
        cv2.ellipse(
            framed,
            (round(centre[0]), round(centre[1])),
            (round(half), round(half * 0.7)),
            0,
            0,
            360,
            (20, 20, 20),
            3,
            cv2.LINE_AA,
        )
    cv2.line(
        framed,
        tuple(np.round(p[133] + [0, -4]).astype(int).tolist()),
        tuple(np.round(p[362] + [0, -4]).astype(int).tolist()),
        (20, 20, 20),
        3,
        cv2.LINE_AA,
    )
    spec = spec_of(framed, detector)
    assert spec.glasses.present and not astronaut_spec.glasses.present


def test_render_is_byte_identical_and_styled(astronaut_spec: AvatarSpec) -> None:
    doc = json.loads(json.dumps(astronaut_spec.to_json()))
    again = AvatarSpec.from_json(doc)
    outputs = draw(astronaut_spec)
    assert draw(again) == outputs  # svg, png and glb from the spec alone
    assert outputs.svg.startswith(b"<svg") and b"<image" not in outputs.svg
    png = cv2.imdecode(np.frombuffer(outputs.png, np.uint8), cv2.IMREAD_COLOR)
    assert png.shape == (512, 512, 3)
    assert outputs.png.startswith(b"\x89PNG") and b"tEXt" not in outputs.png
    flat, toon = (render_png(astronaut_spec, style) for style in STYLES)
    assert flat != toon and render_svg(astronaut_spec, "toon") != outputs.svg
    small = cv2.imdecode(np.frombuffer(render_png(astronaut_spec, size=128), np.uint8), 1)
    assert small.shape == (128, 128, 3)


def test_spec_changes_change_the_drawing(astronaut_spec: AvatarSpec) -> None:
    wide = with_changes(astronaut_spec, face={"jaw_width": 2.3})
    bald = with_changes(astronaut_spec, hair={"style": "bald"})
    base = render_svg(astronaut_spec)
    assert render_svg(wide) != base and render_svg(bald) != base


@pytest.mark.parametrize(
    ("path", "value"),
    [(("version",), 1), (("face", "shape"), "blob"), (("skin", "monk"), 11), (("extra",), 1)],
)
def test_bad_spec_is_refused(astronaut_spec: AvatarSpec, path: tuple[str, ...], value: Any) -> None:
    doc = json.loads(json.dumps(astronaut_spec.to_json()))
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(BadParams) as caught:
        AvatarSpec.from_json(doc)
    assert caught.value.code == "bad_params" and "schema v2" in caught.value.message


def test_blank_image_is_no_face(detector: CenterFaceDetector) -> None:
    blank = np.full((480, 640, 3), 200, np.uint8)
    with pytest.raises(NoFace):
        measure_spec(blank, detector.detect(blank))


def test_config_validation() -> None:
    for bad in ({"size": 10}, {"style": "anime"}, {"face": -1}, {"face": True}, {"face": "all"}):
        with pytest.raises(BadParams):
            AvatarConfig(**bad)
