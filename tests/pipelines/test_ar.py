"""AR effects on photos: locality, stickers on the eyes, LUTs and .cube parsing, chains."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from pipelines.ar import (
    EffectChain,
    Lut3D,
    apply_image,
    effect_names,
    get_effect,
    media_kind,
    parse_chain,
    parse_cube,
    to_cube,
)
from pipelines.ar.cube import identity_table
from pipelines.errors import BadParams, NoFace, UnsupportedFormat
from pipelines.faces import CenterFaceDetector, Face
from pipelines.media import decode_image, encode_image

pytestmark = pytest.mark.timeout(120)

Image = NDArray[np.uint8]
LOCAL_CHAINS = [
    [{"effect": "beautify", "smooth": 1.0, "whiten": 1.0}],
    [{"effect": "sticker", "name": "glasses"}],
    [{"effect": "sticker", "name": "hat"}],
    [{"effect": "sticker", "name": "ears"}],
    [{"effect": "reshape", "slim": 1.0, "eyes": 1.0, "nose": 1.0, "chin": 1.0}],
    [
        {
            "effect": "makeup",
            "lipstick": "red",
            "blush": "hotpink",
            "eyeliner": "black",
            "eyeshadow": "purple",
            "brows": "#332211",
            "strength": 1.0,
        }
    ],
]


@pytest.fixture(scope="module")
def scene(astronaut_bgr: Image) -> Image:
    """The astronaut on a larger textured canvas, so the face is far from every border."""
    height, width = 800, 960
    yy, xx = np.mgrid[0:height, 0:width]
    canvas = np.stack(
        [
            100 + 40 * np.sin(xx / 23.0),
            120 + 30 * np.cos(yy / 17.0),
            90 + 20 * np.sin((xx + yy) / 31),
        ],
        axis=2,
    ).astype(np.uint8)
    canvas[250:762, 200:712] = astronaut_bgr
    return canvas


@pytest.fixture(scope="module")
def scene_faces(scene: Image, detector: CenterFaceDetector) -> list[Face]:
    faces = detector.detect(scene)
    assert len(faces) == 1
    return faces


def outside(shape: tuple[int, ...], faces: list[Face], reach: float) -> NDArray[np.bool_]:
    """Pixels farther than ``reach`` box sides from every face box."""
    mask = np.ones(shape[:2], dtype=bool)
    for face in faces:
        x1, y1, x2, y2 = face.box
        pad = reach * max(face.width, face.height)
        a, b = max(0, int(np.floor(x1 - pad))), max(0, int(np.floor(y1 - pad)))
        c, d = int(np.ceil(x2 + pad)), int(np.ceil(y2 + pad))
        mask[b:d, a:c] = False
    return mask


def absdiff(a: Image, b: Image) -> NDArray[np.int16]:
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2)


@pytest.mark.parametrize("spec", LOCAL_CHAINS, ids=lambda s: s[0].get("name", s[0]["effect"]))
def test_far_pixels_unchanged(
    spec: list[dict[str, Any]], scene: Image, scene_faces: list[Face]
) -> None:
    chain = parse_chain(spec)
    out = chain.apply(scene.copy(), scene_faces)
    assert out.shape == scene.shape and out.dtype == np.uint8
    diff = absdiff(out, scene)
    reach = chain.steps[0].effect.reach
    assert diff[outside(scene.shape, scene_faces, reach)].max() <= 2
    assert (diff > 8).sum() > 200  # and it did something near the face


def test_lut_changes_the_whole_frame(scene: Image) -> None:
    chain = parse_chain([{"effect": "lut", "look": "warm"}])
    assert not chain.needs_faces
    out = chain.apply(scene.copy(), [])
    assert (absdiff(out, scene) > 2).mean() > 0.9
    # warm: more red, less blue on average
    assert out[..., 2].mean() > scene[..., 2].mean() and out[..., 0].mean() < scene[..., 0].mean()
    none = parse_chain([{"effect": "lut", "look": "warm", "strength": 0}]).apply(scene.copy(), [])
    assert np.array_equal(none, scene)


@pytest.mark.parametrize("look", ["cool", "mono", "vintage", "vivid"])
def test_builtin_looks(look: str, scene: Image) -> None:
    out = parse_chain([{"effect": "lut", "look": look}]).apply(scene.copy(), [])
    assert (absdiff(out, scene) > 2).mean() > 0.5
    if look == "mono":
        assert absdiff(out[..., [0]].repeat(3, axis=2), out).max() <= 1


@pytest.mark.parametrize("angle", [0.0, 15.0])
def test_glasses_land_on_the_eyes(angle: float, scene: Image, detector: CenterFaceDetector) -> None:
    centre = (456.0, 420.0)
    matrix = cv2.getRotationMatrix2D(centre, angle, 1.0)
    image = np.ascontiguousarray(
        cv2.warpAffine(scene, matrix, scene.shape[1::-1], borderMode=cv2.BORDER_REFLECT)
    )
    faces = detector.detect(image)
    assert len(faces) == 1
    out = parse_chain([{"effect": "sticker", "name": "glasses"}]).apply(image.copy(), faces)
    ys, xs = np.nonzero(absdiff(out, image) > 8)
    (lx, ly), (rx, ry) = faces[0].landmarks[:2]
    iod = np.hypot(rx - lx, ry - ly)
    assert np.hypot(xs.mean() - (lx + rx) / 2, ys.mean() - (ly + ry) / 2) < 4.0
    # the drawing spans both eyes and stays within about one eye distance of them
    assert xs.max() - xs.min() > 1.5 * iod * np.cos(np.radians(angle)) * 0.9
    assert np.hypot(xs - (lx + rx) / 2, ys - (ly + ry) / 2).max() < 1.3 * iod


def test_reshape_keeps_size_and_enlarges_eyes(scene: Image, scene_faces: list[Face]) -> None:
    out = parse_chain([{"effect": "reshape", "slim": 0.0, "eyes": 1.0}]).apply(
        scene.copy(), scene_faces
    )
    assert out.shape == scene.shape
    diff = absdiff(out, scene)
    ys, xs = np.nonzero(diff > 8)
    (lx, ly), (rx, ry) = scene_faces[0].landmarks[:2]
    iod = np.hypot(rx - lx, ry - ly)
    near_eye = np.minimum(np.hypot(xs - lx, ys - ly), np.hypot(xs - rx, ys - ry))
    assert len(xs) > 50 and near_eye.max() <= 0.8 * iod  # around the eyes only
    slim = parse_chain([{"effect": "reshape", "slim": 1.0, "eyes": 0.0}])
    jaw = absdiff(slim.apply(scene.copy(), scene_faces), scene)
    x1, y1, _x2, y2 = scene_faces[0].box
    assert (jaw[int(y1) : int(y2), : int(x1) - 60] > 0).sum() == 0  # left of the face: untouched
    assert (jaw > 8).sum() > 100


def test_beautify_smooths_skin(scene: Image, scene_faces: list[Face]) -> None:
    face = scene_faces[0]
    (lx, ly), (rx, _ry) = face.landmarks[:2]
    iod = rx - lx
    cheek = (  # a flat patch of the outer cheek, below and outside the left eye
        slice(int(ly + 0.3 * iod), int(ly + 0.5 * iod)),
        slice(int(lx - 0.55 * iod), int(lx - 0.15 * iod)),
    )

    def texture(img: Image) -> float:
        gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)
        return float((gray - cv2.GaussianBlur(gray, (0, 0), 1.5))[cheek].std())

    out = parse_chain([{"effect": "beautify", "smooth": 1.0, "whiten": 0.0}]).apply(
        scene.copy(), scene_faces
    )
    assert texture(out) < 0.6 * texture(scene)
    white = parse_chain([{"effect": "beautify", "smooth": 0.0, "whiten": 1.0}]).apply(
        scene.copy(), scene_faces
    )
    assert white[cheek].mean() > scene[cheek].mean() + 5


# -- .cube LUTs ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [2, 17, 33])
def test_identity_cube_leaves_pixels(size: int, scene: Image) -> None:
    text = to_cube(Lut3D(identity_table(size)))
    assert f"LUT_3D_SIZE {size}" in text
    out = parse_chain([{"effect": "lut", "cube": text}]).apply(scene.copy(), [])
    assert absdiff(out, scene).max() <= 1


def test_cube_order_domain_and_comments() -> None:
    # a table that swaps red and blue proves the red-fastest ordering
    n = 5
    table = identity_table(n)[..., ::-1]
    body = "\n".join(f"{r:.4f} {g:.4f} {b:.4f}" for r, g, b in table.reshape(-1, 3).tolist())
    text = f'# swap\nTITLE "swap"\n\nLUT_3D_SIZE {n}\nDOMAIN_MIN 0 0 0\nDOMAIN_MAX 1 1 1\n{body}\n'
    lut = parse_cube(text)
    assert lut.title == "swap" and lut.size == n
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert absdiff(lut.apply(img), np.ascontiguousarray(img[..., ::-1])).max() <= 1
    # a domain of 0..2: input 255 (1.0) reads the grid's middle
    half = parse_cube(to_cube(Lut3D(identity_table(3), domain_max=(2.0, 2.0, 2.0))))
    white = np.full((2, 2, 3), 255, np.uint8)
    assert abs(int(half.apply(white).max()) - 128) <= 1


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("0 0 0\n1 1 1\n", "no LUT_3D_SIZE"),
        ("LUT_3D_SIZE 2\n0 0 0\n", "needs 8"),
        ("LUT_3D_SIZE 2\n" + "0 0 zero\n" * 8, "line 2"),
        ("LUT_3D_SIZE 2\n" + "0 0\n" * 8, "line 2: a data line needs 3 numbers"),
        ("LUT_1D_SIZE 4\n", "1D"),
        ("LUT_3D_SIZE 300\n", "LUT_3D_SIZE"),
        ("LUT_3D_SIZE 2.5\n", "LUT_3D_SIZE"),
        ("LUT_3D_SIZE 2\nDOMAIN_MIN 1 0 0\nDOMAIN_MAX 1 1 1\n" + "0 0 0\n" * 8, "DOMAIN_MIN"),
        ("LUT_3D_SIZE 2\n" + "0 0 0\n" * 8 + "DOMAIN_MAX 1 1 1\n", "after the data"),
        ("LUT_3D_SIZE 2\n" + "nan 0 0\n" * 8, "line 2"),
        ("LUT_3D_SIZE 2\nFROB 1\n", "unknown keyword"),
    ],
)
def test_malformed_cube_is_bad_params(text: str, needle: str) -> None:
    with pytest.raises(BadParams) as caught:
        parse_chain([{"effect": "lut", "cube": text}])
    assert caught.value.code == "bad_params"
    assert "effects[0]: lut" in caught.value.message and needle in caught.value.message


# -- registry, validation and chains ---------------------------------------------------------


def test_registry() -> None:
    assert effect_names() == ["background", "beautify", "lut", "makeup", "reshape", "sticker"]
    with pytest.raises(BadParams, match="unknown effect 'sparkle'"):
        get_effect("sparkle")
    with pytest.raises(BadParams, match=r"effects\[1\]: unknown effect 'sparkle'"):
        parse_chain([{"effect": "lut", "look": "warm"}, {"effect": "sparkle"}])


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ([{"effect": "beautify", "smooth": 2}], "effects[0]: beautify: smooth"),
        ([{"effect": "beautify", "smooth": "lots"}], "beautify: smooth"),
        ([{"effect": "beautify", "glow": 1}], "beautify: unknown field(s) glow"),
        ([{"effect": "sticker"}], "sticker: name is required"),
        ([{"effect": "sticker", "name": "monocle"}], "sticker: name must be one of"),
        ([{"effect": "reshape", "eyes": True}], "reshape: eyes"),
        ([{"effect": "lut"}], "lut: give exactly one of look"),
        ([{"effect": "lut", "look": "warm", "cube": "x"}], "exactly one"),
        ([{"effect": "lut", "look": "sepia"}], "lut: look must be one of"),
        ([{"effect": "lut", "cube": 7}], "lut: cube must be"),
        ([], "from 1 to 16"),
        ([{"effect": "lut", "look": "warm"}] * 17, "from 1 to 16"),
        ("beautify", "effects must be a list"),
        ([["beautify"]], "effects[0] must be an object"),
        ({"effects": [], "x": 1}, "unknown parameter(s): x"),
    ],
)
def test_bad_params_name_the_effect_and_field(spec: Any, needle: str) -> None:
    with pytest.raises(BadParams) as caught:
        parse_chain(spec)
    assert needle in caught.value.message


def test_chain_json_round_trip_and_forms() -> None:
    chain = parse_chain({"effects": [{"effect": "beautify"}, {"effect": "sticker", "name": "hat"}]})
    normal = chain.to_json()
    assert normal == [
        {"effect": "beautify", "smooth": 0.6, "whiten": 0.0},
        {"effect": "sticker", "name": "hat", "opacity": 1.0},
    ]
    assert parse_chain(normal).to_json() == normal
    assert chain.names == ["beautify", "sticker"] and chain.needs_faces
    cube = to_cube(Lut3D(identity_table(2)))
    assert parse_chain([{"effect": "lut", "cube": cube}]).to_json()[0]["cube"] == cube


def test_chain_applies_in_order(scene: Image, scene_faces: list[Face]) -> None:
    hat_mono = parse_chain(
        [{"effect": "sticker", "name": "hat"}, {"effect": "lut", "look": "mono"}]
    )
    mono_hat = parse_chain(
        [{"effect": "lut", "look": "mono"}, {"effect": "sticker", "name": "hat"}]
    )
    first = hat_mono.apply(scene.copy(), scene_faces)
    second = mono_hat.apply(scene.copy(), scene_faces)
    # the hat's red band: grey when the filter runs after the sticker, red when before
    band = (
        absdiff(second, parse_chain([{"effect": "lut", "look": "mono"}]).apply(scene.copy(), []))
        > 30
    )
    red = second[..., 2].astype(int) - second[..., 0] > 80
    assert (band & red).sum() > 50
    assert (np.ptp(first[band & red].astype(int), axis=1) <= 2).all()


# -- whole images ----------------------------------------------------------------------------


def test_apply_image_keeps_the_format_family(
    astronaut_bgr: Image, detector: CenterFaceDetector
) -> None:
    chain = parse_chain([{"effect": "sticker", "name": "glasses"}])
    png = apply_image(encode_image(astronaut_bgr, "png"), chain, detector)
    assert (png.format, png.filename, png.content_type) == ("png", "result.png", "image/png")
    assert png.data.startswith(b"\x89PNG") and png.faces == 1
    for fmt in ("jpeg", "webp"):
        out = apply_image(encode_image(astronaut_bgr, fmt), chain, detector)
        assert out.format == "jpeg" and out.data.startswith(b"\xff\xd8")
        assert decode_image(out.data).shape == astronaut_bgr.shape


def test_faceless_image(detector: CenterFaceDetector) -> None:
    blank = encode_image(np.full((240, 320, 3), 180, np.uint8), "jpeg")
    with pytest.raises(NoFace):
        apply_image(blank, parse_chain([{"effect": "beautify"}]), detector)
    mixed = parse_chain([{"effect": "beautify"}, {"effect": "lut", "look": "cool"}])
    out = apply_image(blank, mixed, detector)
    assert out.faces == 0 and out.data.startswith(b"\xff\xd8")


def test_media_kind() -> None:
    assert media_kind(encode_image(np.zeros((8, 8, 3), np.uint8), "png")) == "image"
    with pytest.raises(UnsupportedFormat):
        media_kind(b"GIF89a....")
    with pytest.raises(UnsupportedFormat):
        media_kind(b"")


def test_effect_chain_is_a_value() -> None:
    chain = parse_chain([{"effect": "reshape"}])
    assert isinstance(chain, EffectChain) and len(chain.steps) == 1
