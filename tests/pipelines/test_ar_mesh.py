"""AR effects on the face mesh: makeup, beautify's skin mask and colour, reshape's field on a
real face, stickers placed in 3D by the head pose, and the background's compositing.

Faces: scikit-image's astronaut (and the photo squeezed horizontally, and mirrored). The
background's compositing is tested on generated frames with known masks."""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from pipelines.ar import parse_chain
from pipelines.ar.effects.background import (
    BACKDROPS,
    MaskSmoother,
    blurred_background,
    built_in_backdrop,
    composite,
    refine,
)
from pipelines.ar.effects.reshape import ReshapeParams, control_points, reshape_field
from pipelines.ar.effects.sticker import GLASSES_Z, IOD_CM, pieces
from pipelines.ar.regions import face_width
from pipelines.errors import BadParams
from pipelines.faces import CenterFaceDetector, Face
from pipelines.faces import regions as R
from pipelines.faces.mesh import FaceMesh, HeadTransform, default_mesher

pytestmark = pytest.mark.timeout(180)

Image = NDArray[np.uint8]
F32 = NDArray[np.float32]


@pytest.fixture(scope="module")
def face(astronaut_bgr: Image, detector: CenterFaceDetector) -> tuple[Face, FaceMesh]:
    faces = detector.detect(astronaut_bgr)
    assert len(faces) == 1
    mesh = default_mesher().fit(astronaut_bgr, faces[0])
    assert mesh.is_face
    return faces[0], mesh


def apply(spec: list[dict[str, Any]], image: Image, face: tuple[Face, FaceMesh]) -> Image:
    return parse_chain(spec).apply(image.copy(), [face[0]], [face[1]])


def region(shape: tuple[int, ...], mesh: FaceMesh, *regions: R.Region) -> NDArray[np.bool_]:
    out = np.zeros(shape[:2], bool)
    for r in regions:
        out |= R.region_mask(shape, mesh, r) > 0.5
    return out


def lab(image: Image) -> F32:
    return cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)


def diff(a: Image, b: Image) -> NDArray[np.int16]:
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2)


def erode(mask: NDArray[np.bool_], px: int) -> NDArray[np.bool_]:
    kernel = np.ones((2 * px + 1, 2 * px + 1), np.uint8)
    return cv2.erode(mask.astype(np.uint8), kernel).astype(bool)


# -- makeup ----------------------------------------------------------------------------------


def test_makeup_params_colours() -> None:
    chain = parse_chain([{"effect": "makeup", "lipstick": "Crimson", "brows": "#321"}])
    assert chain.to_json() == [
        {
            "effect": "makeup",
            "lipstick": "#dc143c",
            "brows": "#332211",
            "strength": 0.7,
        }
    ]
    assert parse_chain(chain.to_json()).to_json() == chain.to_json()
    natural = parse_chain([{"effect": "makeup"}]).to_json()[0]
    assert natural["lipstick"] and natural["blush"] and "eyeliner" not in natural
    for bad, needle in [
        ({"lipstick": "blood"}, "makeup: lipstick must be a hex colour"),
        ({"blush": "#12345"}, "makeup: blush must be a hex colour"),
        ({"blush": [1, 2, 3]}, "makeup: blush must be a hex colour"),
        ({"strength": 2}, "makeup: strength must be a number from 0 to 1"),
        ({"glitter": "gold"}, "makeup: unknown field(s) glitter"),
    ]:
        with pytest.raises(BadParams) as caught:
            parse_chain([{"effect": "makeup", **bad}])
        assert needle in caught.value.message


def test_lipstick_on_the_lips_only_texture_kept(
    astronaut_bgr: Image, face: tuple[Face, FaceMesh]
) -> None:
    mesh = face[1]
    out = apply([{"effect": "makeup", "lipstick": "#c8102e", "strength": 1.0}], astronaut_bgr, face)
    lips = erode(region(out.shape, mesh, R.LIPS_OUTER) & ~region(out.shape, mesh, R.LIPS_INNER), 1)
    teeth = erode(region(out.shape, mesh, R.LIPS_INNER), 2)
    assert lips.sum() > 60 and teeth.sum() > 60  # the astronaut smiles: teeth show
    before, after = lab(astronaut_bgr), lab(out)
    # the lips take the colour's hue (a*, b* of #c8102e: about 69, 46)
    assert after[lips][:, 1].mean() > before[lips][:, 1].mean() + 15
    # the inner mouth (teeth) is not painted
    assert diff(out, astronaut_bgr)[teeth].mean() < 2.0

    # texture kept: the lightness detail of the lips survives
    def detail(img_lab: F32) -> float:
        light = img_lab[:, :, 0]
        return float((light - cv2.GaussianBlur(light, (0, 0), 2.0))[lips].std())

    assert detail(after) > 0.6 * detail(before)
    # nothing changes outside the face oval's box grown by 5 %
    oval = R.FACE_OVAL.points(mesh)
    pad = 0.05 * np.ptp(oval[:, 0]) + 1
    outside = np.ones(out.shape[:2], bool)
    outside[
        int(oval[:, 1].min() - pad) : int(oval[:, 1].max() + pad) + 1,
        int(oval[:, 0].min() - pad) : int(oval[:, 0].max() + pad) + 1,
    ] = False
    assert diff(out, astronaut_bgr)[outside].max() == 0


@pytest.mark.parametrize(
    ("product", "colour", "where"),
    [
        ("blush", "hotpink", (R.RIGHT_CHEEK, R.LEFT_CHEEK)),
        ("brows", "#201010", (R.RIGHT_BROW, R.LEFT_BROW)),
        ("eyeliner", "black", ()),
        ("eyeshadow", "purple", ()),
    ],
)
def test_each_product_paints_its_place(
    product: str,
    colour: str,
    where: tuple[R.Region, ...],
    astronaut_bgr: Image,
    face: tuple[Face, FaceMesh],
) -> None:
    mesh = face[1]
    out = apply([{"effect": "makeup", product: colour, "strength": 1.0}], astronaut_bgr, face)
    changed = diff(out, astronaut_bgr) > 6
    assert changed.sum() > 40
    lips = region(out.shape, mesh, R.LIPS_OUTER)
    assert not changed[lips].any()  # only the lipstick touches the lips
    if where:
        inside = region(out.shape, mesh, *where)
        assert changed[inside].mean() > 0.5
    ys, xs = np.nonzero(changed)
    eyes = np.array([R.RIGHT_EYE.points(mesh).mean(axis=0), R.LEFT_EYE.points(mesh).mean(axis=0)])
    if product in ("eyeliner", "eyeshadow"):  # around the eyes, above their centres mostly
        d = np.min(np.hypot(xs[:, None] - eyes[:, 0], ys[:, None] - eyes[:, 1]), axis=1)
        eye_w = float(np.hypot(*(mesh.points[33, :2] - mesh.points[133, :2])))
        assert d.max() < 1.3 * eye_w
        assert (ys < eyes[:, 1].max()).mean() > 0.6
    if product == "eyeliner":  # dark
        assert lab(out)[changed][:, 0].mean() < lab(astronaut_bgr)[changed][:, 0].mean() - 10


# -- beautify --------------------------------------------------------------------------------


def test_beautify_keeps_the_cheek_colour_and_the_features(
    astronaut_bgr: Image, face: tuple[Face, FaceMesh]
) -> None:
    """Mean cheek colour shift at the defaults: CIE76 Delta E (Euclidean distance in CIE Lab)
    <= 3; the eyes, brows and lips are left sharp; the skin's texture is smoothed."""
    mesh = face[1]
    out = apply([{"effect": "beautify"}], astronaut_bgr, face)
    cheeks = region(out.shape, mesh, R.RIGHT_CHEEK, R.LEFT_CHEEK)
    before, after = lab(astronaut_bgr)[cheeks].mean(axis=0), lab(out)[cheeks].mean(axis=0)
    delta_e = float(np.linalg.norm(after - before))
    assert delta_e <= 3.0, delta_e
    features = erode(
        region(out.shape, mesh, R.RIGHT_EYE, R.LEFT_EYE, R.LIPS_INNER, R.RIGHT_BROW, R.LEFT_BROW), 2
    )
    assert diff(out, astronaut_bgr)[features].mean() < 2.5

    def texture(img: Image) -> float:
        grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)
        return float((grey - cv2.GaussianBlur(grey, (0, 0), 1.5))[cheeks].std())

    assert texture(out) < 0.8 * texture(astronaut_bgr)
    # whitening is its own control: off by default, lighter (not greyer) when asked for
    white = apply([{"effect": "beautify", "smooth": 0.0, "whiten": 1.0}], astronaut_bgr, face)
    lw, lb = lab(white)[cheeks].mean(axis=0), lab(astronaut_bgr)[cheeks].mean(axis=0)
    assert lw[0] > lb[0] + 5 and math.hypot(lw[1], lw[2]) > 0.85 * math.hypot(lb[1], lb[2])


# -- reshape ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [ReshapeParams(), ReshapeParams(1.0, 1.0, 1.0, 1.0)],
    ids=["default", "max"],
)
def test_reshape_field_on_a_face(
    params: ReshapeParams, astronaut_bgr: Image, face: tuple[Face, FaceMesh]
) -> None:
    """On the astronaut's mesh: the field is continuous (its gradient jumps between neighbouring
    pixels by less than 6 % of the largest move; a seam or a cut-off jumps by the whole move),
    never folds, and is zero farther than its margin from the face oval's hull; the pixels
    there are unchanged."""
    mesh = face[1]
    field = reshape_field(mesh, params, astronaut_bgr.shape)
    assert field is not None
    biggest = float(np.abs(control_points(mesh, params)[1]).max())
    assert biggest > 0.5
    for d in (field.dx, field.dy):
        jump = max(
            float(np.abs(np.diff(d, 2, axis=0)).max()), float(np.abs(np.diff(d, 2, axis=1)).max())
        )
        assert jump < 0.06 * biggest, (jump, biggest)
    dx_dy, dx_dx = np.gradient(field.dx)
    dy_dy, dy_dx = np.gradient(field.dy)
    assert float(((1 + dx_dx) * (1 + dy_dy) - dx_dy * dy_dx).min()) > 0.5
    hull = cv2.convexHull(R.FACE_OVAL.points(mesh).astype(np.float32))
    inside = np.zeros(astronaut_bgr.shape[:2], np.uint8)
    cv2.fillConvexPoly(inside, np.round(hull).astype(np.int32), 255)
    dist = cv2.distanceTransform(cv2.bitwise_not(inside), cv2.DIST_L2, 5)
    far = dist > 0.22 * face_width(mesh) + 6  # the margin, plus the moved points' spread
    spec = [
        {"effect": "reshape", **{k: getattr(params, k) for k in ("slim", "eyes", "nose", "chin")}}
    ]
    out = apply(spec, astronaut_bgr, face)
    assert diff(out, astronaut_bgr)[far].max() == 0
    assert (diff(out, astronaut_bgr) > 8).sum() > 100


# -- stickers in 3D --------------------------------------------------------------------------


def _eye_centres(mesh: FaceMesh) -> NDArray[np.float64]:
    return np.array([R.RIGHT_EYE.points(mesh).mean(axis=0), R.LEFT_EYE.points(mesh).mean(axis=0)])


def _lens_centres(transform: HeadTransform) -> NDArray[np.float64]:
    return transform.project(
        np.array([[-IOD_CM / 2, 2.64, GLASSES_Z], [IOD_CM / 2, 2.64, GLASSES_Z]])
    )


@pytest.mark.parametrize("variant", ["frontal", "squeezed", "mirrored"])
def test_glasses_anchor_on_the_mesh_eyes(
    variant: str, astronaut_bgr: Image, detector: CenterFaceDetector
) -> None:
    image = astronaut_bgr
    if variant == "squeezed":
        image = np.ascontiguousarray(cv2.resize(image, (307, 512), interpolation=cv2.INTER_AREA))
    elif variant == "mirrored":
        image = np.ascontiguousarray(image[:, ::-1])
    found = detector.detect(image)
    mesh = default_mesher().fit(image, found[0])
    eyes = _eye_centres(mesh)
    iod = float(np.hypot(*(eyes[1] - eyes[0])))
    lenses = _lens_centres(mesh.transform)
    assert np.hypot(*(lenses - eyes).T).max() < 0.2 * iod
    out = parse_chain([{"effect": "sticker", "name": "glasses"}]).apply(image.copy(), found, [mesh])
    ys, xs = np.nonzero(diff(out, image) > 20)
    mid = eyes.mean(axis=0)
    assert abs(xs.mean() - mid[0]) < 0.25 * iod and abs(ys.mean() - mid[1]) < 0.25 * iod
    assert np.ptp(xs) > 1.5 * iod  # both lenses and the frame


def _yawed(transform: HeadTransform, degrees: float) -> HeadTransform:
    """The same head turned by ``degrees`` about its own vertical axis."""
    a = math.radians(degrees)
    turn = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    return HeadTransform(transform.rotation @ turn, transform.translation, transform.camera)


def test_glasses_foreshorten_and_stay_attached_on_a_profile(face: tuple[Face, FaceMesh]) -> None:
    frontal = face[1].transform
    front0 = next(p for p in pieces("glasses", frontal) if p.art.canvas.shape[1] > 300)
    width0 = float(np.ptp(front0.corners[:, 0]))
    assert len(pieces("glasses", frontal)) == 3  # front and both temples (seen edge-on)
    for yaw in (-60.0, 60.0):
        turned = _yawed(frontal, yaw)
        parts = pieces("glasses", turned)
        assert len(parts) == 2  # the far temple is hidden behind the head
        (front,) = [p for p in parts if p.art.canvas.shape[1] > 300]
        (temple_piece,) = [p for p in parts if p is not front]
        width = float(np.ptp(front.corners[:, 0]))
        assert 0.35 * width0 < width < 0.7 * width0  # cos(60) = 0.5, with perspective
        # attached: both eyes of the turned head are behind the front piece, near the lenses
        # (the lenses sit 1.7 cm in front of the eyes: they shift by that parallax, no more)
        eyes = turned.project(np.array([[-3.16, 2.64, 3.63], [3.16, 2.64, 3.63]]))
        quad = front.corners.astype(np.float32).reshape(-1, 1, 2)
        for x, y in eyes:
            assert cv2.pointPolygonTest(quad, (float(x), float(y)), False) > 0
        frontal_iod = float(np.hypot(*np.diff(_lens_centres(frontal), axis=0)[0]))
        assert np.hypot(*(_lens_centres(turned) - eyes).T).max() < 0.3 * frontal_iod
        # the near temple runs from the frame back towards the ear (away from the nose)
        temple = temple_piece.corners
        nose = turned.project(np.array([[0.0, -1.13, 7.48]]))[0]
        assert abs(temple[:, 0].mean() - nose[0]) > abs(front.corners[:, 0].mean() - nose[0])


def test_hat_follows_roll_and_stays_on_the_head(face: tuple[Face, FaceMesh]) -> None:
    transform = face[1].transform
    (hat,) = pieces("hat", transform)
    top = transform.project(np.array([[0.0, 8.26, 4.48]]))[0]  # forehead top, landmark 10
    # the brim's bottom edge is near the forehead top, above the eyes; the hat's centre above
    assert hat.corners[2:, 1].mean() < top[1] + 25 and hat.corners[:2, 1].mean() < top[1] - 40
    assert abs(hat.corners[:, 0].mean() - top[0]) < 10
    a = math.radians(20)
    roll = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    tilted = HeadTransform(roll @ transform.rotation, transform.translation, transform.camera)
    (hat2,) = pieces("hat", tilted)
    bottom = hat2.corners[3] - hat2.corners[2]  # bottom edge, right to left
    angle = math.degrees(math.atan2(-bottom[1], -bottom[0]))
    base = hat.corners[3] - hat.corners[2]
    angle0 = math.degrees(math.atan2(-base[1], -base[0]))
    assert abs((angle - angle0) - 20) < 4


# -- background ------------------------------------------------------------------------------


def person_frame() -> tuple[Image, F32]:
    """A red disc (the "person") on a textured green background, and its exact mask."""
    yy, xx = np.mgrid[0:240, 0:320]
    frame = np.zeros((240, 320, 3), np.uint8)
    frame[..., 1] = (140 + 60 * np.sin(xx / 7.0) * np.cos(yy / 5.0)).astype(np.uint8)
    inside = (xx - 160) ** 2 + (yy - 120) ** 2 < 70**2
    frame[inside] = (30, 30, 220)
    return frame, inside.astype(np.float32)


def test_composite_and_halo_free_blur() -> None:
    frame, mask = person_frame()
    back = np.full_like(frame, 255)
    out = composite(frame, mask, back)
    assert np.array_equal(out[mask == 1], frame[mask == 1])
    assert (out[mask == 0] == 255).all()
    blurred = blurred_background(frame, mask, 8.0)
    ring = (cv2.dilate(mask, np.ones((9, 9), np.uint8)) > 0) & (mask == 0)
    # normalised convolution: no red from the person bleeds into the background around it
    assert blurred[ring][:, 2].mean() < 12
    plain = cv2.GaussianBlur(frame, (0, 0), 8.0)
    assert plain[ring][:, 2].mean() > 40  # (a plain blur does bleed)
    assert blurred[mask == 0][:, 1].std() < frame[mask == 0][:, 1].std() * 0.5  # it is blurred


def test_refine_snaps_a_coarse_mask_to_the_edges() -> None:
    frame, mask = person_frame()
    coarse = cv2.resize(cv2.resize(mask, (20, 15), interpolation=cv2.INTER_AREA), (320, 240))
    refined = refine(coarse, frame, radius=6)
    error_coarse = np.abs(coarse - mask).mean()
    error_refined = np.abs(refined - mask).mean()
    assert error_refined < 0.6 * error_coarse


def test_mask_smoother_damps_flicker_and_follows_motion() -> None:
    rng = np.random.default_rng(2)
    _, mask = person_frame()
    smoother = MaskSmoother()
    outputs = []
    for _ in range(12):
        noisy = np.clip(mask + rng.normal(0, 0.08, mask.shape), 0, 1).astype(np.float32)
        outputs.append(smoother(noisy))
    flicker_in = 0.08
    flicker_out = float(np.std(np.diff(np.stack(outputs[4:]), axis=0)) / math.sqrt(2))
    assert flicker_out < 0.6 * flicker_in
    moved = np.roll(mask, 40, axis=1)
    assert np.abs(smoother(moved) - moved).mean() < 0.02  # a real motion is followed at once
    smoother.reset()
    assert smoother(mask) is not None


def test_backdrops_are_drawn_and_hold_no_face(detector: CenterFaceDetector) -> None:
    drawn = [built_in_backdrop(name, 640, 360) for name in BACKDROPS]
    for art in drawn:
        assert art.shape == (360, 640, 3) and art.std() > 5
        assert detector.detect(art) == []
    assert np.array_equal(built_in_backdrop("bokeh", 640, 360), drawn[0])  # deterministic
    assert built_in_backdrop("ocean", 2000, 1000).shape == (1000, 2000, 3)


@pytest.mark.parametrize(
    "spec",
    [
        {"mode": "blur"},
        {"mode": "color", "color": "rebeccapurple"},
        {"mode": "image", "image": "sunset"},
    ],
)
def test_background_effect_keeps_the_person(
    spec: dict[str, Any], astronaut_bgr: Image, face: tuple[Face, FaceMesh]
) -> None:
    chain = parse_chain([{"effect": "background", **spec}])
    assert not chain.needs_faces and not chain.needs_mesh
    out = chain.apply(astronaut_bgr.copy(), [])
    mesh = face[1]
    skin = erode(R.skin_mask(out.shape, mesh) > 0.5, 3)
    assert diff(out, astronaut_bgr)[skin].mean() < 2.0  # the face is the person's
    corner = diff(out, astronaut_bgr)[:60, :60]  # wall behind the astronaut, top left
    assert corner.mean() > (2 if spec["mode"] == "blur" else 30)
    if spec["mode"] == "color":
        assert np.abs(out[:40, :40].astype(int) - (153, 51, 102)).max() <= 2


def test_background_params() -> None:
    assert parse_chain([{"effect": "background"}]).to_json() == [
        {"effect": "background", "mode": "blur", "color": "#ffffff", "image": "studio"}
    ]
    for bad, needle in [
        ({"mode": "sepia"}, "background: mode must be one of blur, color, image"),
        ({"image": "beach"}, "background: image must be one of bokeh, ocean, studio, sunset"),
        ({"color": "#zzz"}, "background: color must be a hex colour"),
        ({"url": "x"}, "unknown field(s) url"),
    ]:
        with pytest.raises(BadParams) as caught:
            parse_chain([{"effect": "background", **bad}])
        assert needle in caught.value.message


def test_background_is_stable_on_a_still_clip(astronaut_bgr: Image) -> None:
    """Eight frames of the same photo with fresh sensor noise (sigma 3): the refined person
    mask flickers frame to frame along the person's edge; the effect's temporal smoothing
    (one instance per job) cuts that flicker by more than a third. A new clip (``reset``)
    starts from its own first mask."""
    from pipelines.faces.segmentation import segment_person

    rng = np.random.default_rng(5)
    frames = [
        np.clip(
            astronaut_bgr.astype(np.int16) + rng.normal(0, 3, astronaut_bgr.shape), 0, 255
        ).astype(np.uint8)
        for _ in range(8)
    ]
    raw = [refine(segment_person(f), f) for f in frames]
    smoother = MaskSmoother()
    smoothed = [smoother(m) for m in raw]
    band = (raw[0] > 0.05) & (raw[0] < 0.95)  # the person's edge
    assert band.sum() > 1000

    def flicker(masks: list[F32]) -> float:
        return float(np.abs(np.diff(np.stack(masks[2:]), axis=0)).mean(axis=0)[band].mean())

    assert flicker(raw) > 0.005  # there is flicker to remove
    assert flicker(smoothed) < 0.65 * flicker(raw), (flicker(smoothed), flicker(raw))
    spec = [{"effect": "background", "mode": "color", "color": "black"}]
    chain = parse_chain(spec)
    first = chain.apply(frames[0].copy(), [])
    chain.apply(frames[1].copy(), [])
    chain.reset()
    assert np.array_equal(chain.apply(frames[0].copy(), []), first)
