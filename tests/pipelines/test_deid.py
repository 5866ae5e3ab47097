"""De-identification: operators, the k-Same batch function, alignment, the residual-face gate,
metadata and audio on outputs. Real CenterFace model; scenes generated from scikit-image's
astronaut pasted onto its coffee photo; nothing read from or written to disk."""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import av
import cv2
import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image
from skimage import data

from pipelines.deid import (
    DEFAULT_PROFILE,
    DEID_DETECT_THRESHOLD,
    KSameBatchTooSmall,
    align_face,
    at_threshold,
    deidentify_image,
    deidentify_video,
    deidentify_video_detailed,
    get_operator,
    k_same,
    k_same_clusters,
    operator_names,
    paste_back,
    residual_gate,
    residual_gate_video,
)
from pipelines.deid.align import template
from pipelines.deid.gate import DEFAULT_GATE_THRESHOLD, cleared_boxes
from pipelines.errors import BadParams
from pipelines.faces import CenterFaceDetector, Face, FaceDetector
from pipelines.media.image import decode_image, encode_image

pytestmark = pytest.mark.timeout(120)

U8 = NDArray[np.uint8]

#: Settings that must pass the gate on the scenes, and weak ones the gate must catch.
STRONG: list[tuple[str, dict[str, Any]]] = [
    ("mask", {}),
    ("landmarks_only", {}),
    ("blur", {"strength": 0.25}),
    ("pixelate", {"blocks": 6}),
]
WEAK: list[tuple[str, dict[str, Any]]] = [
    ("blur", {"strength": 0.05}),
    ("pixelate", {"blocks": 16}),
]

PRIVATE_METADATA = {
    "creation_time": "2021-03-04T05:06:07.000000Z",
    "location": "+31.2304+121.4737/",
    "com.apple.quicktime.make": "AcmePhone",
    "com.apple.quicktime.model": "AcmePhone 12 Pro",
    "title": "holiday-with-grandma",
}


def background(width: int, height: int) -> U8:
    coffee = np.ascontiguousarray(data.coffee()[:, :, ::-1])
    bg = cv2.resize(coffee, (width, height), interpolation=cv2.INTER_AREA)
    return np.asarray(cv2.GaussianBlur(bg, (0, 0), 3), dtype=np.uint8)


def make_scene(face: U8, n: int = 3, seed: int = 0, width: int = 720, height: int = 480) -> U8:
    """``n`` astronaut faces (scaled 0.8-1.2, every other one mirrored) on a blurred background."""
    rng = np.random.default_rng(seed)
    img = background(width, height)
    for i, x in enumerate(np.linspace(20, width - 200, n).astype(int)):
        scale = float(rng.uniform(0.8, 1.2))
        patch = cv2.resize(face, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        if i % 2:
            patch = patch[:, ::-1]
        y = int(rng.integers(10, height - patch.shape[0] - 10))
        img[y : y + patch.shape[0], x : x + patch.shape[1]] = patch
    return img


@pytest.fixture(scope="module")
def scene(face_crop: U8) -> U8:
    return make_scene(face_crop, n=3)


@pytest.fixture(scope="module")
def scene_faces(scene: U8, detector: CenterFaceDetector) -> list[Face]:
    faces = detector.detect(scene)
    assert len(faces) == 3
    return faces


# -- registry and validation ------------------------------------------------------------------


def test_registry_has_the_five_operators() -> None:
    assert operator_names() == ("blur", "k_same", "landmarks_only", "mask", "pixelate")
    for name in operator_names():
        assert get_operator(name).name == name


@pytest.mark.parametrize(
    ("operator", "params"),
    [
        ("mask", {"dilation": 1.0}),  # would not cover the box corners
        ("mask", {"dilation": float("nan")}),
        ("mask", {"color": [0, 0]}),
        ("mask", {"color": [0, 0, 256]}),
        ("mask", {"colour": [0, 0, 0]}),  # unknown key
        ("blur", {"strength": 0.0}),
        ("blur", {"strength": True}),
        ("blur", {"strength": "strong"}),
        ("pixelate", {"blocks": 1}),
        ("pixelate", {"blocks": 6.5}),
        ("landmarks_only", {"draw": 1}),
        ("k_same", {"k": 1}),
        ("k_same", {"size": 16}),
        ("no_such_operator", {}),
    ],
)
def test_validate_rejects_bad_params(
    scene: U8, scene_faces: list[Face], operator: str, params: Mapping[str, Any]
) -> None:
    with pytest.raises(BadParams) as info:
        deidentify_image(scene, scene_faces, operator, params)
    assert info.value.code == "bad_params"


def test_params_not_a_mapping() -> None:
    with pytest.raises(BadParams):
        get_operator("mask").validate([("dilation", 2.0)])  # type: ignore[arg-type]


# -- operators and the gate on generated scenes -----------------------------------------------


def test_source_scene_fails_the_gate(
    scene: U8, scene_faces: list[Face], detector: CenterFaceDetector
) -> None:
    result = residual_gate(scene, detector, len(scene_faces))
    assert not result.passed
    assert result.reason == "residual_face"
    assert result.residual_faces >= 3


@pytest.mark.parametrize(("operator", "params"), STRONG, ids=[f"{o}-{p}" for o, p in STRONG])
def test_operator_passes_the_gate(
    scene: U8,
    scene_faces: list[Face],
    detector: CenterFaceDetector,
    operator: str,
    params: dict[str, Any],
) -> None:
    before = scene.copy()
    result = deidentify_image(scene, scene_faces, operator, params)
    assert np.array_equal(scene, before)  # the input is not modified
    assert result.image.shape == scene.shape
    gate = residual_gate(result.image, detector, len(scene_faces))
    assert gate.passed, gate
    assert gate.reason == "ok" and gate.residual_faces == 0 and gate.frames_checked == 1
    # ... and still after a JPEG round trip (what is stored)
    encoded = decode_image(encode_image(result.image, "jpeg", 90))
    assert residual_gate(encoded, detector, len(scene_faces)).passed


@pytest.mark.parametrize(("operator", "params"), WEAK, ids=[f"{o}-{p}" for o, p in WEAK])
def test_weak_settings_are_caught_by_the_gate(
    scene: U8,
    scene_faces: list[Face],
    detector: CenterFaceDetector,
    operator: str,
    params: dict[str, Any],
) -> None:
    result = deidentify_image(scene, scene_faces, operator, params)
    gate = residual_gate(result.image, detector, len(scene_faces))
    assert not gate.passed
    assert gate.reason == "residual_face" and gate.residual_faces >= 1


def test_default_profile_passes_the_gate(
    scene: U8, scene_faces: list[Face], detector: CenterFaceDetector
) -> None:
    operator, params = DEFAULT_PROFILE
    result = deidentify_image(scene, scene_faces, operator, params)
    assert residual_gate(result.image, detector, len(scene_faces)).passed


def test_k_same_output_is_a_face_and_the_gate_catches_it(
    scene: U8, scene_faces: list[Face], detector: CenterFaceDetector
) -> None:
    # k-Same replaces each face by an average face: still a face, so the strict gate (any face
    # found fails) discards it. Its protection is the 1/k bound, measured in docs/PRIVACY.md.
    result = deidentify_image(scene, scene_faces, "k_same", {"k": 3})
    gate = residual_gate(result.image, detector, len(scene_faces))
    assert not gate.passed and gate.reason == "residual_face"


def test_gate_fails_closed_without_a_source_face(scene: U8, detector: CenterFaceDetector) -> None:
    blank = background(320, 240)
    result = residual_gate(blank, detector, source_faces=0)
    assert not result.passed and result.reason == "no_source_face"
    assert not residual_gate([], detector, source_faces=1).passed
    with pytest.raises(BadParams):
        residual_gate(scene, detector, 1, threshold=0.0)


def test_gate_runs_at_the_low_threshold(scene: U8, detector: CenterFaceDetector) -> None:
    # A face blurred just enough that the default 0.5 detector misses it is still caught by the
    # gate at 0.2: the gate does not use the caller's threshold. The blur strength is searched
    # on a fine grid; finding none in between is a failure (the scene or the detector changed),
    # never a skip.
    assert detector.config.threshold > DEFAULT_GATE_THRESHOLD
    low = CenterFaceDetector.load(
        dataclasses.replace(detector.config, threshold=DEFAULT_GATE_THRESHOLD)
    )
    faces = detector.detect(scene)
    between: list[tuple[float, U8, int]] = []
    for step in range(4, 21):  # strengths 0.04 ... 0.20
        strength = step / 100
        out = deidentify_image(scene, faces, "blur", {"strength": strength}).image
        found_low = len(low.detect(out))
        if not detector.detect(out) and found_low:
            between.append((strength, out, found_low))
    assert between, "no blur strength leaves a face only the low threshold finds"
    for strength, out, found_low in between:
        gate = residual_gate(out, detector, len(faces))
        assert not gate.passed, f"the gate passed a face left by blur strength {strength}"
        assert gate.reason == "residual_face"
        assert gate.residual_faces == found_low


def test_gate_counts_faces_down_to_its_own_threshold(scene: U8) -> None:
    # Any detector is run as given and its faces counted from the gate's threshold (0.2) up,
    # whatever the threshold the detector was built for.
    class Fixed(FaceDetector):
        def __init__(self, score: float) -> None:
            self.score = score

        def detect(self, img: U8) -> list[Face]:
            lm = ((40.0, 40.0), (60.0, 40.0), (50.0, 50.0), (42.0, 60.0), (58.0, 60.0))
            return [Face((30.0, 30.0, 70.0, 75.0), lm, self.score)]

    weak = residual_gate(scene, Fixed(0.3), source_faces=1)
    assert (weak.passed, weak.reason, weak.residual_faces) == (False, "residual_face", 1)
    assert residual_gate(scene, Fixed(0.1), source_faces=1).passed
    assert not residual_gate(scene, Fixed(0.1), source_faces=1, threshold=0.05).passed
    # on a cleared region the mesh is asked (no face there: dismissed), unless the score is sure
    cleared = [(20.0, 20.0, 80.0, 80.0)]
    mesh_says_no = residual_gate(scene, Fixed(0.3), source_faces=1, cleared=cleared)
    assert (mesh_says_no.passed, mesh_says_no.dismissed) == (True, 1)
    sure = residual_gate(scene, Fixed(0.6), source_faces=1, cleared=cleared)
    assert (sure.passed, sure.residual_faces, sure.dismissed) == (False, 1, 0)
    away = residual_gate(scene, Fixed(0.3), source_faces=1, cleared=[(200.0, 200.0, 260.0, 260.0)])
    assert (away.passed, away.dismissed) == (False, 0)  # not on a cleared region: it counts


@pytest.mark.parametrize("operator", ["mask", "landmarks_only"])
def test_mesh_second_opinion_dismisses_false_detections(
    operator: str, astronaut_bgr: U8, detector: CenterFaceDetector
) -> None:
    """On the astronaut as shipped, the masked output holds a CenterFace "face" at 0.36 beside
    the mask's lower-left edge (the collar), and landmarks_only's dots one at 0.2: the detector
    alone fails the gate; the face mesh fitted there reads no face, so the gate passes."""
    faces = at_threshold(detector, DEID_DETECT_THRESHOLD).detect(astronaut_bgr)
    out = deidentify_image(astronaut_bgr, faces, operator).image
    alone = residual_gate(out, detector, len(faces))
    assert not alone.passed and alone.residual_faces == 1
    cleared = cleared_boxes(out.shape, faces, 1.5)
    gate = residual_gate(out, detector, len(faces), cleared=cleared)
    assert gate.passed and gate.dismissed == 1, gate
    # a real face left in a cleared region is still caught (mesh presence 1.0)
    assert not residual_gate(astronaut_bgr, detector, len(faces), cleared=cleared).passed


def test_landmarks_only_returns_normalised_landmarks(scene: U8, scene_faces: list[Face]) -> None:
    result = deidentify_image(scene, scene_faces, "landmarks_only", {"draw": True})
    assert len(result.annotations) == len(scene_faces)
    height, width = scene.shape[:2]
    for annotation, face in zip(result.annotations, scene_faces, strict=True):
        assert len(annotation.landmarks) == 5
        for (nx, ny), (x, y) in zip(annotation.landmarks, face.landmarks, strict=True):
            assert 0.0 <= nx <= 1.0 and 0.0 <= ny <= 1.0
            assert nx == pytest.approx(x / width) and ny == pytest.approx(y / height)
        assert len(annotation.to_json()["landmarks"]) == 5
    # the face pixels are gone: the box interior is the fill colour apart from the drawn dots
    x1, y1, x2, y2 = (round(v) for v in scene_faces[0].box)
    inner = result.image[y1 + 2 : y2 - 2, x1 + 2 : x2 - 2].reshape(-1, 3)
    grey = np.all(inner == (128, 128, 128), axis=1).mean()
    assert grey > 0.95


def test_mask_covers_the_whole_box(scene: U8, scene_faces: list[Face]) -> None:
    result = deidentify_image(scene, scene_faces, "mask", {"color": [0, 255, 0]})
    for face in scene_faces:
        x1, y1, x2, y2 = face.box
        box = result.image[math.ceil(y1) : math.floor(y2), math.ceil(x1) : math.floor(x2)]
        assert np.all(box == (0, 255, 0))


def test_blur_sigma_scales_with_the_face(face_crop: U8, detector: CenterFaceDetector) -> None:
    # The same face at two sizes, blurred with the same strength, looks the same once resized.
    small = make_scene(face_crop, n=1, seed=3)
    large = cv2.resize(small, None, fx=2.0, fy=2.0, interpolation=cv2.INTER_CUBIC)
    fs, fl = detector.detect(small), detector.detect(large)
    assert len(fs) == 1 and len(fl) == 1
    out_s = deidentify_image(small, fs, "blur", {"strength": 0.2}).image
    out_l = deidentify_image(large, fl, "blur", {"strength": 0.2}).image
    back = cv2.resize(out_l, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_AREA)
    x1, y1, x2, y2 = (round(v) for v in fs[0].box)
    diff = np.abs(back[y1:y2, x1:x2].astype(int) - out_s[y1:y2, x1:x2].astype(int)).mean()
    orig = np.abs(small[y1:y2, x1:x2].astype(int) - out_s[y1:y2, x1:x2].astype(int)).mean()
    assert diff < 0.35 * orig


# -- k-Same ------------------------------------------------------------------------------------


def random_crops(n: int, seed: int = 0) -> list[U8]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(n)]


@pytest.mark.parametrize(("n", "k"), [(3, 3), (5, 3), (6, 3), (7, 3), (11, 2), (20, 5)])
def test_k_same_clusters_and_averages(n: int, k: int) -> None:
    crops = random_crops(n, seed=n * 100 + k)
    clusters = k_same_clusters(crops, k)
    assert sorted(i for c in clusters for i in c) == list(range(n))
    assert all(k <= len(c) < 2 * k for c in clusters)
    out = k_same(crops, k)
    assert len(out) == n
    for cluster in clusters:
        mean = np.round(np.mean([crops[i].astype(np.float64) for i in cluster], axis=0))
        for i in cluster:
            assert np.array_equal(out[i], out[cluster[0]])  # identical for every member
            assert np.array_equal(out[i], mean.astype(np.uint8))
    # no two clusters share an output; the input arrays are untouched
    assert len({out[c[0]].tobytes() for c in clusters}) == len(clusters)


def test_k_same_groups_nearest_faces() -> None:
    dark = [np.full((8, 8, 3), v, np.uint8) for v in (10, 12, 14)]
    light = [np.full((8, 8, 3), v, np.uint8) for v in (240, 242, 244)]
    crops = [dark[0], light[0], dark[1], light[1], dark[2], light[2]]
    clusters = k_same_clusters(crops, 3)
    assert sorted(map(sorted, clusters)) == [[0, 2, 4], [1, 3, 5]]


def test_k_same_refuses_small_batches(scene: U8, scene_faces: list[Face]) -> None:
    with pytest.raises(KSameBatchTooSmall) as info:
        k_same(random_crops(2), 3)
    assert isinstance(info.value, BadParams) and info.value.code == "bad_params"
    with pytest.raises(KSameBatchTooSmall):
        deidentify_image(scene, scene_faces, "k_same", {"k": 4})
    with pytest.raises(ValueError):
        k_same([random_crops(1)[0], np.zeros((8, 8, 3), np.uint8)], 2)


def test_k_same_on_a_scene_gives_every_member_the_same_face(
    face_crop: U8, detector: CenterFaceDetector
) -> None:
    img = make_scene(face_crop, n=4, seed=5, width=900)
    faces = detector.detect(img)
    assert len(faces) == 4
    out = deidentify_image(img, faces, "k_same", {"k": 2, "size": 96}).image
    crops = [align_face(img, f, 96)[0] for f in faces]
    clusters = k_same_clusters(crops, 2)
    averages = k_same(crops, 2)
    for cluster in clusters:
        realigned = [align_face(out, faces[i], 96)[0] for i in cluster]
        # what is now at each member's face is the cluster's average (up to two resamplings)
        for i, crop in zip(cluster, realigned, strict=True):
            centre = (slice(24, 72), slice(24, 72))
            err = np.abs(crop[centre].astype(int) - averages[i][centre].astype(int)).mean()
            assert err < 6.0


def test_align_face_maps_landmarks_to_the_template(scene: U8, scene_faces: list[Face]) -> None:
    face = scene_faces[0]
    crop, transform = align_face(scene, face, 128)
    assert crop.shape == (128, 128, 3)
    points = np.hstack([np.asarray(face.landmarks), np.ones((5, 1))]) @ transform.as_array().T
    assert np.abs(points - template(128)).max() < 6.0  # a similarity fit of five points
    # pasting the crop back reproduces the face region closely
    restored = paste_back(scene, crop, transform, face)
    x1, y1, x2, y2 = (round(v) for v in face.box)
    err = np.abs(restored[y1:y2, x1:x2].astype(int) - scene[y1:y2, x1:x2].astype(int)).mean()
    assert err < 12.0


# -- metadata ----------------------------------------------------------------------------------


def jpeg_with_metadata(img: U8) -> bytes:
    pil = Image.fromarray(np.ascontiguousarray(img[:, :, ::-1]))
    exif = Image.Exif()
    exif[0x010F] = "AcmePhone"  # Make
    exif[0x0110] = "AcmePhone 12 Pro"  # Model
    exif[0x9003] = "2021:03:04 05:06:07"  # DateTimeOriginal
    gps = {1: "N", 2: (31.0, 13.0, 49.0), 3: "E", 4: (121.0, 28.0, 25.0)}
    exif[0x8825] = gps
    buf = io.BytesIO()
    pil.save(buf, "JPEG", exif=exif.tobytes(), comment=b"holiday-with-grandma")
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
def test_no_image_metadata_survives(scene: U8, detector: CenterFaceDetector, fmt: str) -> None:
    source = jpeg_with_metadata(scene)
    with Image.open(io.BytesIO(source)) as im:  # the input does carry them
        assert im.getexif().get(0x010F) == "AcmePhone"
    img = decode_image(source)
    faces = detector.detect(img)
    operator, params = DEFAULT_PROFILE
    out = encode_image(deidentify_image(img, faces, operator, params).image, fmt)
    with Image.open(io.BytesIO(out)) as im:
        assert not im.getexif()
        # JFIF header fields (JPEG) and Pillow's animation defaults (WebP) are not metadata
        allowed = {"jfif", "jfif_version", "jfif_unit", "jfif_density", "dpi", "loop", "background"}
        assert set(im.info) <= allowed, im.info
        assert "exif" not in im.info and "icc_profile" not in im.info and "xmp" not in im.info
    for needle in (b"AcmePhone", b"2021:03:04", b"holiday", b"Exif\x00"):
        assert needle not in out


# -- video -------------------------------------------------------------------------------------


def make_face_clip(face: U8, frames: int = 20, fps: int = 10, audio: bool = True) -> bytes:
    """Two astronaut faces drifting across the coffee background, with metadata and a tone."""
    width, height = 480, 320
    # A smooth gradient: at the gate's low threshold CenterFace fires (scores 0.27-0.35) on the
    # blurred coffee cup beside a pasted face patch's hard edge on some frames, which the gate
    # rightly counts (fail closed); this test is about the video path, not that scene.
    ramp = np.linspace(60, 200, width, dtype=np.float64)[None, :, None]
    bg = np.broadcast_to(ramp * np.array([0.9, 1.0, 1.1]), (height, width, 3))
    bg = np.clip(bg + np.linspace(-20, 20, height)[:, None, None], 0, 255).astype(np.uint8)
    small = cv2.resize(face, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA)
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        for key, value in PRIVATE_METADATA.items():
            out.metadata[key] = value
        stream = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        astream = out.add_stream("aac", rate=48000) if audio else None
        if astream is not None:
            astream.layout = "mono"
        h, w = small.shape[:2]
        for i in range(frames):
            img = bg.copy()
            x = 20 + 4 * i
            img[30 : 30 + h, x : x + w] = small
            img[150 : 150 + h, width - w - 20 - 3 * i : width - 20 - 3 * i] = small[:, ::-1]
            frame = av.VideoFrame.from_ndarray(img, format="bgr24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if astream is not None:
            total = round(frames / fps * 48000)
            for start in range(0, total, 960):
                n = min(960, total - start)
                t = np.arange(start, start + n) / 48000
                samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
                aframe = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
                aframe.sample_rate, aframe.pts = 48000, start
                out.mux(astream.encode(aframe))
            out.mux(astream.encode(None))
    return buf.getvalue()


@pytest.fixture(scope="module")
def face_clip(face_crop: U8) -> bytes:
    return make_face_clip(face_crop)


def stream_kinds(data: bytes) -> list[str]:
    with av.open(io.BytesIO(data)) as ic:
        return [s.type for s in ic.streams]


def test_video_default_profile_passes_the_gate_and_drops_audio_and_metadata(
    face_clip: bytes, detector: CenterFaceDetector
) -> None:
    assert stream_kinds(face_clip) == ["video", "audio"]
    source = residual_gate_video(face_clip, detector, source_faces=2)
    assert not source.passed and source.first_residual_frame == 0
    operator, params = DEFAULT_PROFILE
    result = deidentify_video_detailed(face_clip, detector, operator, params)
    assert result.tracks == 2 and result.frames == 20 and result.frames_with_faces == 20
    out = result.data
    assert stream_kinds(out) == ["video"]  # audio dropped by default
    gate = residual_gate_video(out, detector, result.tracks)
    assert gate.passed, gate
    assert gate.frames_checked == 20
    with av.open(io.BytesIO(out)) as oc:
        assert set(oc.metadata) <= {"major_brand", "minor_version", "compatible_brands", "encoder"}
        for stream in oc.streams:
            assert set(stream.metadata) <= {"language", "handler_name", "vendor_id", "encoder"}
    for needle in (b"2021-03-04", b"+31.2304", b"AcmePhone", b"holiday", b"\xa9xyz"):
        assert needle not in out


def test_video_keep_audio_and_a_weak_blur_caught(
    face_clip: bytes, detector: CenterFaceDetector
) -> None:
    out = deidentify_video(face_clip, detector, "blur", {"strength": 0.05}, keep_audio=True)
    assert stream_kinds(out) == ["video", "audio"]
    gate = residual_gate_video(out, detector, 2)
    assert not gate.passed and gate.reason == "residual_face"


def test_video_k_same_refuses_frames_with_fewer_than_k_faces(
    face_clip: bytes, detector: CenterFaceDetector
) -> None:
    with pytest.raises(KSameBatchTooSmall):
        deidentify_video(face_clip, detector, "k_same", {"k": 3})


def test_registry_refuses_a_second_operator_of_the_same_name() -> None:
    from pipelines.deid import register
    from pipelines.deid.operators.mask import MaskOperator

    class Impostor(MaskOperator):
        pass

    with pytest.raises(ValueError):
        register(Impostor())
    assert type(get_operator("mask")) is MaskOperator
