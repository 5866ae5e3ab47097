"""The I420 video path: ``transform_video_planes``, ``Planes`` and de-identification on planes.

Real codecs (libx264, mjpeg, AAC) on clips generated in memory; the de-identification check uses
the real CenterFace detector on the bench's generated clip (``bench/video_bench.py``: astronaut
faces over a panning texture, true boxes known) and the bench's own quality measure.
"""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
import pytest
from numpy.typing import NDArray

from bench.video_bench import GROW, deid_quality, make_clip, raw_transcode
from pipelines.deid import DEFAULT_PROFILE, deidentify_video_detailed
from pipelines.errors import BadParams
from pipelines.faces.detector import CenterFaceDetector
from pipelines.media.video import (
    Planes,
    YuvMatrix,
    iter_frames,
    probe_video,
    transform_video,
    transform_video_planes,
)

pytestmark = pytest.mark.timeout(300)

U8 = NDArray[np.uint8]
BLOCKS = ((40, 40, 200), (40, 200, 40), (200, 40, 40), (220, 220, 220))


def blocks(width: int, height: int) -> U8:
    """Four flat colour blocks (they survive 4:2:0 and lossy coding inside)."""
    img = np.zeros((height, width, 3), np.uint8)
    hh, hw = height // 2, width // 2
    for (ys, xs), colour in zip(
        (
            (slice(0, hh), slice(0, hw)),
            (slice(0, hh), slice(hw, None)),
            (slice(hh, None), slice(0, hw)),
            (slice(hh, None), slice(hw, None)),
        ),
        BLOCKS,
        strict=True,
    ):
        img[ys, xs] = colour
    return img


def clip(
    *,
    fmt: str = "mp4",
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    size: tuple[int, int] = (160, 96),
    frames: int = 8,
    bt709: bool = False,
    rotate_ccw: float | None = None,
    audio: bool = False,
) -> bytes:
    width, height = size
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        options = {"preset": "ultrafast"} if codec == "libx264" else {}
        stream = out.add_stream(codec, rate=24, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.time_base = Fraction(1, 24)
        if bt709:
            cc = stream.codec_context
            cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = 1, 1, 1, 1
        if rotate_ccw is not None:
            stream.set_display_rotation(rotate_ccw)
        tone = out.add_stream("aac", rate=48000) if audio else None
        if tone is not None:
            tone.layout = "mono"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(blocks(width, height), format="bgr24")
            if bt709:
                frame = frame.reformat(format=pix_fmt, dst_colorspace="ITU709", dst_color_range=1)
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if tone is not None:
            for start in range(0, frames * 2000, 1000):
                samples = np.zeros((1, 1000), np.float32)
                aframe = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
                aframe.sample_rate, aframe.pts = 48000, start
                out.mux(tone.encode(aframe))
            out.mux(tone.encode(None))
    return buf.getvalue()


def shown(data: bytes) -> list[U8]:
    """What a player shows: the frames converted to BGR by FFmpeg, honouring the tags."""
    with av.open(io.BytesIO(data)) as ic:
        return [f.to_ndarray(format="bgr24") for f in ic.decode(video=0)]


def untouched(index: int, t: float, planes: Planes) -> None:
    return None


@pytest.mark.parametrize(
    ("source", "tags"),
    [("bt601-untagged", (6, 1)), ("bt709", (1, 1)), ("mjpeg-full-range", (6, 2))],
)
def test_identity_on_planes_keeps_pictures_timing_and_colour_tags(
    source: str, tags: tuple[int, int]
) -> None:
    if source == "mjpeg-full-range":
        data = clip(fmt="mov", codec="mjpeg", pix_fmt="yuvj420p")
    else:
        data = clip(bt709=source == "bt709", audio=True)
    seen: list[tuple[int, float, str, bool]] = []

    def record(index: int, t: float, planes: Planes) -> None:
        seen.append((index, t, planes.colour.matrix, planes.colour.full_range))

    out = transform_video_planes(data, record)
    assert [(i, round(t, 6)) for i, t, _, _ in seen] == [(i, round(i / 24, 6)) for i in range(8)]
    assert {(m, r) for _, _, m, r in seen} == {
        ("bt709" if source == "bt709" else "bt601", source == "mjpeg-full-range")
    }
    before, after = shown(data), shown(out)
    assert len(after) == len(before) == 8
    for a, b in zip(before, after, strict=True):
        for y, x in ((20, 40), (20, 120), (70, 40), (70, 120)):  # inside the flat blocks
            assert np.abs(a[y, x].astype(int) - b[y, x]).max() <= 4, (source, y, x)
    with av.open(io.BytesIO(out)) as oc:
        cc = oc.streams.video[0].codec_context
        assert (cc.colorspace, cc.color_range) == tags
        assert bool(oc.streams.audio) == (source != "mjpeg-full-range")
    assert probe_video(out).duration_s == pytest.approx(probe_video(data).duration_s, abs=0.01)


def test_planes_are_upright_exact_size_and_padding_copies_the_processed_picture() -> None:
    # A portrait phone clip (rotated) and an odd-sized 4:4:4 clip (converted to 4:2:0 first).
    for data, size in (
        (clip(size=(160, 96), rotate_ccw=-90.0), (96, 160)),
        (clip(size=(161, 97), pix_fmt="yuv444p"), (161, 97)),
    ):
        shapes: set[tuple[tuple[int, ...], tuple[int, ...]]] = set()

        def paint(index: int, t: float, planes: Planes, shapes: set[object] = shapes) -> None:
            shapes.add((planes.y.shape, planes.u.shape))
            planes.y[-1, :] = 255  # the picture's last row, white
            planes.y[:, -1] = 255

        out = transform_video_planes(data, paint)
        width, height = size
        assert shapes == {((height, width), ((height + 1) // 2, (width + 1) // 2))}
        frames = [f for _, _, f in iter_frames(out)]
        grey = frames[0].mean(axis=2)
        assert grey.shape == (height + height % 2, width + width % 2)
        assert grey[height - 1, : width - 2].min() > 200  # painted
        assert grey[-1, : width - 2].min() > 200  # padding (if any) replicates it
        # Upright: BLOCKS[0] (red) top-left for the odd clip; the rotated one turned clockwise.
        corner = frames[0][4, 4].astype(int)
        expected = BLOCKS[2] if size == (96, 160) else BLOCKS[0]
        assert np.abs(corner - expected).max() < 30, corner


@pytest.mark.parametrize(
    "colour",
    [YuvMatrix(), YuvMatrix("bt709"), YuvMatrix("bt709", True), YuvMatrix("bt2020", False)],
)
def test_bgr_of_a_rectangle_round_trips(colour: YuvMatrix) -> None:
    height, width = 64, 96
    luma = np.zeros((height, width), np.uint8)
    cb = np.zeros((height // 2, width // 2), np.uint8)
    cr = np.zeros((height // 2, width // 2), np.uint8)
    planes = Planes(luma, cb, cr, width, height, colour)
    picture = blocks(width, height)
    planes.put_bgr(picture)
    assert np.abs(planes.bgr().astype(int) - picture).max() <= 2
    rect = planes.rect(9, 5, 41, 30)  # grown to whole chroma samples
    assert rect == (8, 4, 42, 30)
    patch = planes.bgr(rect)
    assert patch.shape == (26, 34, 3)
    planes.put_bgr(np.full_like(patch, 255), rect)
    assert planes.bgr()[4:30, 8:42].min() >= 253
    assert np.abs(planes.bgr()[40:, 60:].astype(int) - picture[40:, 60:]).max() <= 2
    black = colour.encode((0, 0, 0))
    assert black == ((0, 128, 128) if colour.full_range else (16, 128, 128))


def test_transform_video_and_planes_agree() -> None:
    data = clip(size=(160, 96))
    bgr_out = shown(transform_video(data, lambda i, t, f: f))
    planes_out = shown(transform_video_planes(data, untouched))
    for a, b in zip(bgr_out, planes_out, strict=True):
        assert np.abs(a.astype(int) - b).mean() < 1.5


@pytest.fixture(scope="module")
def detector() -> CenterFaceDetector:
    return CenterFaceDetector.load()


@pytest.mark.parametrize(
    ("operator", "params"),
    [(DEFAULT_PROFILE[0], dict(DEFAULT_PROFILE[1])), ("blur", {"strength": 0.1})],
)
def test_deid_on_planes_covers_every_face_and_keeps_the_rest(
    detector: CenterFaceDetector, operator: str, params: dict[str, object]
) -> None:
    """The issue's coverage rule on a short clip: every (frame, face) pair covered, and the
    non-face region as close to the source as a plain transcode's (within 0.1 dB)."""
    generated = make_clip(24, 960, 540, 30, detector)
    result = deidentify_video_detailed(generated.data, detector, operator, params, keep_audio=True)
    assert result.frames == 24 and result.frames_with_faces == 24 and result.tracks == 2
    quality = deid_quality(generated.data, result.data, generated.truth, GROW)
    plain = deid_quality(
        generated.data, raw_transcode(generated.data, False), generated.truth, GROW
    )
    assert quality.frames == plain.frames == 24
    assert quality.coverage == 1.0
    assert plain.coverage == 0.0  # the measure sees an untouched face as uncovered
    assert quality.nonface_psnr >= plain.nonface_psnr - 0.1, (quality, plain)


@pytest.mark.parametrize(
    ("operator", "params"),
    [("blur", {"strength": 0.1}), ("blur", {"strength": 0.5}), ("pixelate", {"blocks": 5})],
)
def test_planar_operators_are_the_image_operators_on_each_plane(
    operator: str, params: dict[str, object]
) -> None:
    """Each plane gets exactly what the image operator does to a one-channel image with the
    face in that plane's coordinates: one definition of sigma and block size
    (``sigma_for``/``block_for``), none re-stated for video."""
    from dataclasses import replace

    from pipelines.deid.planar import apply_planes
    from pipelines.deid.registry import get_operator
    from pipelines.faces.detector import Face

    rng = np.random.default_rng(7)
    y = rng.integers(0, 256, (240, 320), dtype=np.uint8)
    u, v = (rng.integers(0, 256, (120, 160), dtype=np.uint8) for _ in range(2))
    points = tuple((100.0 + 8 * k, 90.0 + 5 * k) for k in range(5))
    faces = [
        Face((60.0, 40.0, 170.0, 180.0), points, 0.9),
        Face((150.0, 100.0, 230.0, 190.0), points, 0.8),  # overlaps the first
    ]
    halves = [
        replace(
            f,
            box=(f.box[0] / 2, f.box[1] / 2, f.box[2] / 2, f.box[3] / 2),
            landmarks=tuple((a / 2, b / 2) for a, b in f.landmarks),
        )
        for f in faces
    ]
    op = get_operator(operator)
    checked = op.validate(params)
    planes = Planes(y.copy(), u.copy(), v.copy(), 320, 240, YuvMatrix())
    apply_planes(op, planes, faces, checked)
    assert np.array_equal(planes.luma, op.apply(y, faces, checked).image)
    assert np.array_equal(planes.cb, op.apply(u, halves, checked).image)
    assert np.array_equal(planes.cr, op.apply(v, halves, checked).image)
    assert not np.array_equal(planes.luma, y)


def test_a_failing_callback_leaves_no_transcode_thread_behind() -> None:
    """The decoding and encoding threads stop and are joined when the callback raises (and the
    error is the callback's own), so a failed job leaves nothing running."""
    import threading

    data = clip(frames=24, audio=True)

    def fail(index: int, t: float, planes: Planes) -> None:
        if index == 5:
            raise KeyError("callback failed")

    with pytest.raises(KeyError, match="callback failed"):
        transform_video_planes(data, fail)
    names = {thread.name for thread in threading.enumerate()}
    assert not names & {"video-decode", "video-encode"}
    out = transform_video_planes(data, untouched)  # and the next transcode runs normally
    assert probe_video(out).frames == 24


def test_lookahead_runs_look_ahead_of_the_callback_and_keeps_the_output() -> None:
    """``look`` sees each frame (untouched) ``lookahead`` frames before ``fn`` does, the frames
    and audio come out as without it, and the window is bounded."""
    data = clip(frames=12, audio=True)
    events: list[tuple[str, int]] = []
    seen_by_look: list[float] = []

    def look(index: int, t: float, planes: Planes) -> None:
        events.append(("look", index))
        seen_by_look.append(float(planes.y.mean()))

    def paint(index: int, t: float, planes: Planes) -> None:
        events.append(("fn", index))
        planes.y[...] = 16

    out = transform_video_planes(data, paint, look=look, lookahead=3)
    expected = [("look", i) for i in range(3)]
    for i in range(3, 12):
        expected += [("look", i), ("fn", i - 3)]
    expected += [("fn", i) for i in range(9, 12)]
    assert events == expected
    assert min(seen_by_look) > 40  # look saw the decoded picture, not the painted one
    plain = transform_video_planes(data, paint)
    assert [f.tobytes() for f in shown(out)] == [f.tobytes() for f in shown(plain)]
    with av.open(io.BytesIO(out)) as a, av.open(io.BytesIO(plain)) as b:
        assert sum(1 for _ in a.demux(audio=0)) == sum(1 for _ in b.demux(audio=0)) > 1
    with pytest.raises(BadParams, match="lookahead"):
        transform_video_planes(data, untouched, look=look, lookahead=31)
