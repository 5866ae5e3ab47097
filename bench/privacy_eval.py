"""Privacy evaluation of the de-identification operators (``pipelines.deid``).

Per operator and strength, on generated multi-face scenes:

* **residual detection** with a detector independent of the CenterFace model the pipeline uses:
  dlib's HOG + linear SVM frontal face detector (``dlib.get_frontal_face_detector``, upsampled
  once). A detection counts when it overlaps a source face (its centre inside the source box
  dilated 1.5x); the rate is per source face. (dlib's CNN detector, MMOD, was tried and dropped:
  1.7 s per half-size scene on this CPU and no face found at that size.)
* the **residual-face gate** of the pipeline itself (CenterFace at threshold 0.2 over the whole
  image): the share of scenes that pass;
* **re-identification** with dlib's ResNet face recogniser
  (``dlib_face_recognition_resnet_model_v1`` with the 5-point shape predictor, both from
  ``face-recognition-models``). Every identity is
  enrolled from a separate clean image (the face alone, unscaled, unmirrored, on grey). Each
  de-identified face is embedded *at its known source box* (the attacker is told where the face
  was, so a failed detection does not count as protection) and matched against the gallery: it is
  re-identified when its nearest enrolled identity is the true one at distance below the standard
  0.6.

Gate precision: the gate is run twice on every output, by the detector alone and with the face
mesh's second opinion on the regions a clearing operator (``mask``, ``landmarks_only``) painted
solid (``cleared``, see ``pipelines/deid/gate.py``). A *false discard* (clearing operators
only: after blur or pixelation what CenterFace finds is the blurred face itself) is a scene the
gate fails although every pasted face was found and cleared, and none of them is detected by
dlib's HOG or re-identified: only a false detection failed it.

Scenes: two families. *Pasted faces*: faces of ``N_IDENTITIES`` people — scikit-image's
astronaut and faces from scikit-image's ``lfw_subset`` (25x25 grey Labeled-Faces-in-the-Wild
crops, padded by reflection and upscaled to 130 px; low resolution, so the recogniser separates
them less well than full photos: the ``none`` row shows the baseline; the indices are faces
CenterFace finds at three positions) — four distinct people per scene at scales 0.85-1.15, every
other one mirrored, on scikit-image's coffee photo (blurred), 960x540. The faces de-identified
are those CenterFace finds at the de-identification threshold (``DEID_DETECT_THRESHOLD``, 0.3);
the columns "all faces" count every pasted face (a face the detector missed stays in the image),
the columns "kept faces" only those in scenes that pass the gate. *Portraits*: the whole
astronaut photo (face, collar, suit: where the low-threshold gate finds a false face beside the
mask) at scales 0.45-0.8, every other one mirrored, with one LFW face beside it, on the same
background. Nothing is downloaded; nothing is written.

Needs the ``eval`` extra (``pip install -e '.[eval]'``: ``dlib-bin``, ``face-recognition-models``).
Run: ``.venv/bin/python bench/privacy_eval.py`` (prints a markdown table; ``--scenes N`` per
family, ``--operators mask,blur`` to run only those settings).
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from skimage import data

from pipelines.deid import (
    DEFAULT_PROFILE,
    DEID_DETECT_THRESHOLD,
    KSameBatchTooSmall,
    at_threshold,
    deidentify_image,
    get_operator,
    residual_gate,
)
from pipelines.deid.gate import CLEARING_OPERATORS, cleared_boxes
from pipelines.faces import CenterFaceDetector, Face, default_detector

U8 = NDArray[np.uint8]
F64 = NDArray[np.float64]

N_IDENTITIES = 9
FACES_PER_SCENE = 4
WIDTH, HEIGHT = 960, 540
MATCH_DISTANCE = 0.6
# LFW subset images 0-99 are faces; these are spread over those CenterFace finds in the scenes.
LFW_INDICES = (1, 12, 20, 33, 46, 62, 75, 90)

SETTINGS: list[tuple[str, dict[str, Any]]] = [
    ("none", {}),
    ("blur", {"strength": 0.03}),
    ("blur", {"strength": 0.06}),
    ("blur", {"strength": 0.1}),
    ("blur", {"strength": 0.15}),
    ("blur", {"strength": 0.25}),
    ("blur", {"strength": 0.4}),
    ("pixelate", {"blocks": 16}),
    ("pixelate", {"blocks": 10}),
    ("pixelate", {"blocks": 6}),
    ("pixelate", {"blocks": 4}),
    (DEFAULT_PROFILE[0], dict(DEFAULT_PROFILE[1])),
    ("landmarks_only", {}),
    ("k_same", {"k": 2}),
    ("k_same", {"k": 4}),
]


def identity_faces() -> list[U8]:
    """One face patch (BGR) per identity: the astronaut, then upscaled grey LFW faces."""
    astronaut = np.ascontiguousarray(data.astronaut()[:, :, ::-1])
    faces = [np.ascontiguousarray(astronaut[30:210, 150:300])]
    lfw = data.lfw_subset()
    for i in LFW_INDICES[: N_IDENTITIES - 1]:
        grey = np.clip(lfw[i] * 255.0, 0, 255).astype(np.uint8)
        padded = cv2.copyMakeBorder(grey, 4, 4, 4, 4, cv2.BORDER_REFLECT)
        big = cv2.resize(padded, (130, 130), interpolation=cv2.INTER_CUBIC)
        faces.append(cv2.cvtColor(big, cv2.COLOR_GRAY2BGR))
    return faces


def background() -> U8:
    coffee = np.ascontiguousarray(data.coffee()[:, :, ::-1])
    bg = cv2.resize(coffee, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
    return np.asarray(cv2.GaussianBlur(bg, (0, 0), 3), dtype=np.uint8)


Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Scene:
    image: U8
    truth: list[tuple[int, Box]]  # (identity, face box) of every pasted face
    family: str = "pasted"


def make_scene(faces: Sequence[U8], face_in_patch: Sequence[Box], seed: int) -> Scene:
    rng = np.random.default_rng(seed)
    img = background()
    ids = [int(i) for i in rng.choice(len(faces), FACES_PER_SCENE, replace=False)]
    slot = WIDTH // FACES_PER_SCENE
    truth: list[tuple[int, Box]] = []
    for n, identity in enumerate(ids):
        scale = float(rng.uniform(0.85, 1.15))
        patch = cv2.resize(faces[identity], None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        if n % 2:
            patch = patch[:, ::-1]
        h, w = patch.shape[:2]
        x = n * slot + int(rng.integers(10, max(11, slot - w - 10)))
        y = int(rng.integers(20, HEIGHT - h - 20))
        img[y : y + h, x : x + w] = patch
        rx1, ry1, rx2, ry2 = (v * scale for v in face_in_patch[identity])
        if n % 2:
            rx1, rx2 = w - rx2, w - rx1
        truth.append((identity, (x + rx1, y + ry1, x + rx2, y + ry2)))
    return Scene(img, truth)


def make_portrait(
    faces: Sequence[U8], face_in_patch: Sequence[Box], astronaut_box: Box, seed: int
) -> Scene:
    """The whole astronaut photo (identity 0) scaled and maybe mirrored, with one LFW face."""
    rng = np.random.default_rng(1000 + seed)
    img = background()
    photo = np.ascontiguousarray(data.astronaut()[:, :, ::-1])
    scale = float(rng.uniform(0.45, 0.8))
    patch = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    mirror = bool(seed % 2)
    if mirror:
        patch = patch[:, ::-1]
    h, w = patch.shape[:2]
    x = int(rng.integers(0, WIDTH // 2 - w)) if w < WIDTH // 2 else 0
    y = HEIGHT - h
    img[y:, x : x + w] = patch
    rx1, ry1, rx2, ry2 = (v * scale for v in astronaut_box)
    if mirror:
        rx1, rx2 = w - rx2, w - rx1
    truth: list[tuple[int, Box]] = [(0, (x + rx1, y + ry1, x + rx2, y + ry2))]
    other = int(rng.integers(1, len(faces)))
    lfw = faces[other]
    ph, pw = lfw.shape[:2]
    ox, oy = (
        int(rng.integers(WIDTH // 2 + 20, WIDTH - pw - 20)),
        int(rng.integers(20, HEIGHT - ph - 20)),
    )
    img[oy : oy + ph, ox : ox + pw] = lfw
    fx1, fy1, fx2, fy2 = face_in_patch[other]
    truth.append((other, (ox + fx1, oy + fy1, ox + fx2, oy + fy2)))
    return Scene(img, truth, "portrait")


def model_dir() -> Path:
    """The models folder of ``face-recognition-models``, found without importing the package
    (its ``__init__`` imports ``pkg_resources``, which current setuptools no longer ships)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("face-recognition-models is not installed (pip install -e '.[eval]')")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


class Recogniser:
    """dlib's ResNet embedding at a given box (5-point landmarks by dlib's shape predictor)."""

    def __init__(self, dlib: Any, models: Path) -> None:
        self._dlib = dlib
        self._shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self._net = dlib.face_recognition_model_v1(
            str(models / "dlib_face_recognition_resnet_model_v1.dat")
        )

    def embed(self, rgb: U8, box: tuple[float, float, float, float]) -> F64:
        x1, y1, x2, y2 = (round(v) for v in box)
        rect = self._dlib.rectangle(x1, y1, x2, y2)
        shape = self._shape(rgb, rect)
        return np.asarray(self._net.compute_face_descriptor(rgb, shape), dtype=np.float64)


def square_box(box: Box) -> Box:
    """A square box around a face box (dlib's shape predictor expects squares)."""
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half = max(x2 - x1, y2 - y1) / 2
    return (cx - half, cy - half, cx + half, cy + half)


def overlaps(rect: Any, box: Box) -> bool:
    cx = (rect.left() + rect.right()) / 2
    cy = (rect.top() + rect.bottom()) / 2
    x1, y1, x2, y2 = box
    mx, my = (x2 - x1) * 0.25, (y2 - y1) * 0.25
    return bool(x1 - mx <= cx <= x2 + mx and y1 - my <= cy <= y2 + my)


def matched(scene: Scene, faces: Sequence[Face]) -> int:
    """How many pasted faces have a detection whose centre lies in their box."""
    centres = [((f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2) for f in faces]
    return sum(
        any(x1 <= cx <= x2 and y1 <= cy <= y2 for cx, cy in centres)
        for _, (x1, y1, x2, y2) in scene.truth
    )


@dataclass
class Row:
    operator: str
    params: dict[str, Any]
    faces: int = 0
    hog: int = 0
    reid: int = 0
    kept_faces: int = 0
    kept_hog: int = 0
    kept_reid: int = 0
    refused: int = 0
    gate_passed: int = 0
    mesh_passed: int = 0
    mesh_kept_faces: int = 0
    mesh_kept_hog: int = 0
    mesh_kept_reid: int = 0
    clean_scenes: int = 0
    false_discards: int = 0
    mesh_false_discards: int = 0
    scenes: int = 0
    distance_sum: float = 0.0
    seconds: float = 0.0


def evaluate(n_scenes: int, operators: set[str] | None = None) -> tuple[list[Row], dict[str, Any]]:
    """Run every setting over ``n_scenes`` scenes; the rows and a few facts about the data."""
    import dlib  # the eval extra; imported here so the module imports without it

    models = model_dir()
    hog = dlib.get_frontal_face_detector()
    recogniser = Recogniser(dlib, models)
    detector: CenterFaceDetector = default_detector()

    identities = identity_faces()
    gallery = []
    face_in_patch: list[Box] = []
    for patch in identities:
        canvas = np.full((300, 300, 3), 128, np.uint8)
        h, w = patch.shape[:2]
        y0, x0 = (300 - h) // 2, (300 - w) // 2
        canvas[y0 : y0 + h, x0 : x0 + w] = patch
        found = detector.detect(canvas)
        if not found:
            raise SystemExit("an enrolment face was not detected")
        box = found[0].box
        gallery.append(recogniser.embed(np.ascontiguousarray(canvas[:, :, ::-1]), square_box(box)))
        face_in_patch.append((box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0))
    enrolled = np.stack(gallery)
    upper = np.triu_indices(len(gallery), 1)
    pairwise = np.linalg.norm(enrolled[:, None] - enrolled[None], axis=2)[upper]
    info: dict[str, Any] = {
        "gallery_min_distance": float(pairwise.min()),
        "gallery_pairs_below": int((pairwise < MATCH_DISTANCE).sum()),
        "gallery_pairs": int(pairwise.size),
    }

    astronaut = np.ascontiguousarray(data.astronaut()[:, :, ::-1])
    astronaut_box = detector.detect(astronaut)[0].box
    scenes = [make_scene(identities, face_in_patch, seed) for seed in range(n_scenes)]
    scenes += [make_portrait(identities, face_in_patch, astronaut_box, s) for s in range(n_scenes)]
    deid_detector = at_threshold(detector, DEID_DETECT_THRESHOLD)
    detected = [deid_detector.detect(scene.image) for scene in scenes]
    info["pasted"] = sum(len(s.truth) for s in scenes)
    info["detected"] = sum(matched(s, d) for s, d in zip(scenes, detected, strict=True))
    info["spurious"] = sum(len(d) for d in detected) - info["detected"]

    rows = []
    for operator, params in SETTINGS:
        if operators is not None and operator not in operators:
            continue
        row = Row(operator, params)
        start = time.perf_counter()
        for scene, faces in zip(scenes, detected, strict=True):
            if operator == "none":
                image = scene.image
            else:
                try:
                    image = deidentify_image(scene.image, faces, operator, params).image
                except KSameBatchTooSmall:  # fewer than k faces found in this scene
                    row.refused += 1
                    continue
            # what is stored: a JPEG at quality 90
            _, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
            image = np.asarray(cv2.imdecode(buf, cv2.IMREAD_COLOR), dtype=np.uint8)
            rgb = np.ascontiguousarray(image[:, :, ::-1])
            hog_rects = list(hog(rgb, 1))
            row.scenes += 1
            passed = residual_gate(image, detector, len(faces)).passed
            cleared = []
            if operator in CLEARING_OPERATORS:
                dilation = get_operator(operator).validate(params).dilation
                cleared = cleared_boxes(image.shape, faces, dilation)
            mesh_passed = residual_gate(image, detector, len(faces), cleared=cleared).passed
            row.gate_passed += passed
            row.mesh_passed += mesh_passed
            clean = operator != "none" and matched(scene, faces) == len(scene.truth)
            for identity, box in scene.truth:
                dist = np.linalg.norm(enrolled - recogniser.embed(rgb, square_box(box)), axis=1)
                residual = any(overlaps(r, box) for r in hog_rects)
                reid = int(np.argmin(dist)) == identity and dist[identity] < MATCH_DISTANCE
                row.faces += 1
                row.hog += residual
                row.reid += reid
                row.distance_sum += float(dist[identity])
                clean = clean and not residual and not reid
                if passed:
                    row.kept_faces += 1
                    row.kept_hog += residual
                    row.kept_reid += reid
                if mesh_passed:
                    row.mesh_kept_faces += 1
                    row.mesh_kept_hog += residual
                    row.mesh_kept_reid += reid
            row.clean_scenes += clean
            row.false_discards += clean and not passed
            row.mesh_false_discards += clean and not mesh_passed
        row.seconds = time.perf_counter() - start
        rows.append(row)
    return rows, info


def describe(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "defaults"


def rate(count: int, total: int) -> str:
    return f"{count}/{total} ({100 * count / total:.0f} %)" if total else "0/0"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=24, help="scenes per family")
    parser.add_argument("--operators", default="", help="comma-separated operators (default: all)")
    args = parser.parse_args(argv)
    only = {o for o in args.operators.split(",") if o} or None
    rows, info = evaluate(args.scenes, only)
    default_op, default_params = DEFAULT_PROFILE
    print(
        f"{2 * args.scenes} scenes, {info['pasted']} faces pasted, {info['detected']} found by "
        f"CenterFace ({DEID_DETECT_THRESHOLD}) and de-identified ({info['spurious']} spurious "
        f"detections); gallery of {N_IDENTITIES} identities, closest pair "
        f"{info['gallery_min_distance']:.3f}, "
        f"{info['gallery_pairs_below']}/{info['gallery_pairs']} pairs below {MATCH_DISTANCE}"
    )
    print()
    print(
        "| operator | params | residual (dlib HOG), all faces | re-identified, all faces "
        "| gate passed (scenes) | residual, kept faces | re-identified, kept faces "
        "| mean distance to own enrolment | scenes refused |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    table: list[str] = []
    for row in rows:
        name = row.operator
        if row.operator == default_op and row.params == dict(default_params):
            name = f"**{name} (default profile)**"
        print(
            f"| {name} | {describe(row.params)} | {rate(row.hog, row.faces)} "
            f"| {rate(row.reid, row.faces)} | {row.gate_passed}/{row.scenes} "
            f"| {rate(row.kept_hog, row.kept_faces)} | {rate(row.kept_reid, row.kept_faces)} "
            f"| {row.distance_sum / row.faces:.3f} | {row.refused} |"
        )
        clearing = row.operator in CLEARING_OPERATORS
        table.append(
            f"| {name} | {describe(row.params)} | {row.gate_passed}/{row.scenes} "
            f"| {row.mesh_passed}/{row.scenes} "
            f"| {rate(row.false_discards, row.clean_scenes) if clearing else '-'} "
            f"| {rate(row.mesh_false_discards, row.clean_scenes) if clearing else '-'} "
            f"| {rate(row.mesh_kept_hog, row.mesh_kept_faces)} "
            f"| {rate(row.mesh_kept_reid, row.mesh_kept_faces)} |"
        )
    print()
    print(
        "| operator | params | gate passed, detector | gate passed, with mesh "
        "| false discards, detector | false discards, with mesh | residual, kept (mesh) "
        "| re-identified, kept (mesh) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    print("\n".join(table))


if __name__ == "__main__":
    main()
