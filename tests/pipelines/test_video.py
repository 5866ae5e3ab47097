"""Video probe/decode/transform against real codecs, with clips generated in memory by PyAV."""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import av
import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from pipelines.errors import (
    BadParams,
    CorruptMedia,
    PipelineError,
    TooLarge,
    TooLong,
    UnsupportedFormat,
)
from pipelines.media.video import (
    VideoInfo,
    VideoLimits,
    iter_frames,
    probe_video,
    sniff_video_container,
    transform_video,
)

pytestmark = pytest.mark.timeout(60)

PRIVATE_METADATA = {
    "creation_time": "2021-03-04T05:06:07.000000Z",
    "location": "+31.2304+121.4737/",
    "com.apple.quicktime.make": "AcmePhone",
    "com.apple.quicktime.model": "AcmePhone 12 Pro",
    "title": "holiday-with-grandma",
}
FAST_OPTIONS = {
    "libx264": {"preset": "ultrafast"},
    "libvpx": {"deadline": "realtime", "cpu-used": "8"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8"},
}


def pattern(index: int, width: int, height: int) -> NDArray[np.uint8]:
    """A frame with large flat blocks (survives lossy coding) and a bar that moves per frame."""
    img = np.zeros((height, width, 3), np.uint8)
    img[: height // 2, : width // 2] = (40, 40, 200)  # red, top-left
    img[: height // 2, width // 2 :] = (40, 200, 40)  # green, top-right
    img[height // 2 :, : width // 2] = (200, 40, 40)  # blue, bottom-left
    img[height // 2 :, width // 2 :] = (220, 220, 220)  # light grey, bottom-right
    x = (index * 7) % max(1, width - 16)
    img[height // 4 : height // 4 + 16, x : x + 16] = (0, 0, 0)
    return img


def make_clip(
    *,
    fmt: str = "mp4",
    codec: str = "libx264",
    width: int = 320,
    height: int = 240,
    frames: int = 48,
    fps: int = 24,
    pix_fmt: str = "yuv420p",
    audio: str | None = "aac",
    pts_ms: Sequence[int] | None = None,
    rotation: tuple[float, bool] | None = None,
    metadata: dict[str, str] | None = None,
) -> bytes:
    """Encode a clip into memory: ``pattern`` frames and an optional 440 Hz mono tone.

    ``pts_ms`` gives explicit (variable) frame timestamps in milliseconds; ``rotation`` is
    ``(counter-clockwise degrees, hflip)`` written as the stream's display matrix.
    """
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        for key, value in (metadata or {}).items():
            out.metadata[key] = value
        stream = out.add_stream(codec, rate=fps, options=FAST_OPTIONS.get(codec, {}))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        time_base = Fraction(1, 1000) if pts_ms is not None else Fraction(1, fps)
        stream.codec_context.time_base = time_base
        if rotation is not None:
            stream.set_display_rotation(rotation[0], hflip=rotation[1])
        astream = None
        if audio is not None:
            astream = out.add_stream(audio, rate=48000)
            astream.layout = "mono"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(pattern(i, width, height), format="bgr24")
            frame.pts = pts_ms[i] if pts_ms is not None else i
            frame.time_base = time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if astream is not None:
            seconds = (pts_ms[-1] / 1000 + 1 / fps) if pts_ms is not None else frames / fps
            total = round(seconds * 48000)
            for start in range(0, total, 960):
                n = min(960, total - start)
                t = np.arange(start, start + n) / 48000
                samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
                aframe = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
                aframe.sample_rate = 48000
                aframe.pts = start
                out.mux(astream.encode(aframe))
            out.mux(astream.encode(None))
    return buf.getvalue()


def decode_all(data: bytes) -> tuple[list[NDArray[np.uint8]], list[float]]:
    with av.open(io.BytesIO(data)) as ic:
        frames = [
            (f.to_ndarray(format="bgr24"), float(f.pts * f.time_base)) for f in ic.decode(video=0)
        ]
    return [f for f, _ in frames], [t for _, t in frames]


def audio_summary(data: bytes) -> tuple[str, float] | None:
    """``(codec, seconds of decoded samples)`` of the first audio stream, or None."""
    with av.open(io.BytesIO(data)) as ic:
        if not ic.streams.audio:
            return None
        stream = ic.streams.audio[0]
        name = stream.codec_context.name
        samples = sum(f.samples for f in ic.decode(stream))
        return name, samples / stream.codec_context.sample_rate


def top_level_boxes(data: bytes) -> list[str]:
    boxes, pos = [], 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8].decode("latin-1")
        if size == 1:
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
        elif size == 0:
            size = len(data) - pos
        boxes.append(kind)
        pos += size
    assert pos == len(data), "boxes do not tile the file"
    return boxes


def mean_abs(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def identity(index: int, t: float, frame: NDArray[np.uint8]) -> NDArray[np.uint8]:
    return frame


SMALL_CLIPS = {
    "mp4": make_clip(frames=8, width=96, height=64),
    "webm": make_clip(
        fmt="webm", codec="libvpx-vp9", audio="libopus", frames=8, width=96, height=64
    ),
}


@pytest.fixture(scope="module")
def mp4_clip() -> bytes:
    return make_clip(metadata=PRIVATE_METADATA)


# ------------------------------------------------------------------ probe


def test_probe_mp4(mp4_clip: bytes) -> None:
    info = probe_video(mp4_clip)
    assert info == VideoInfo(
        container="mp4",
        codec="h264",
        width=320,
        height=240,
        rotation=0,
        fps=24.0,
        frames=48,
        duration_s=2.0,
        has_audio=True,
    )


@pytest.mark.parametrize(
    ("fmt", "codec", "audio", "kind", "codec_name"),
    [
        ("mov", "libx264", "aac", "mov", "h264"),
        ("webm", "libvpx-vp9", "libopus", "webm", "vp9"),
        ("webm", "libvpx", None, "webm", "vp8"),
        ("matroska", "libx264", "aac", "matroska", "h264"),
    ],
)
def test_probe_containers(
    fmt: str, codec: str, audio: str | None, kind: str, codec_name: str
) -> None:
    data = make_clip(fmt=fmt, codec=codec, audio=audio, frames=24)
    assert sniff_video_container(data) == kind
    info = probe_video(data)
    assert (info.container, info.codec, info.width, info.height) == (kind, codec_name, 320, 240)
    assert info.frames == 24
    assert info.duration_s == pytest.approx(1.0, abs=0.002)  # Matroska stores milliseconds
    assert info.has_audio is (audio is not None)


# ------------------------------------------------------------------ transform: round trip


def test_identity_roundtrip_mp4(mp4_clip: bytes) -> None:
    out = transform_video(mp4_clip, identity)
    # moov before mdat: streamable without a second request.
    boxes = top_level_boxes(out)
    assert boxes[0] == "ftyp"
    assert boxes.index("moov") < boxes.index("mdat")
    info_in, info_out = probe_video(mp4_clip), probe_video(out)
    assert info_out.frames == info_in.frames == 48
    assert abs(info_out.duration_s - info_in.duration_s) <= 1 / 24
    assert (info_out.width, info_out.height, info_out.rotation) == (320, 240, 0)
    frames_in, pts_in = decode_all(mp4_clip)
    frames_out, pts_out = decode_all(out)
    assert len(frames_out) == 48
    assert pts_out == pytest.approx(pts_in, abs=1e-3)
    # Same colours (same conversion both ways, BT.709 tagged): only coding noise.
    assert max(mean_abs(a, b) for a, b in zip(frames_in, frames_out, strict=True)) < 3.0
    # Audio: kept, AAC, same length (copied packets).
    a_in, a_out = audio_summary(mp4_clip), audio_summary(out)
    assert a_in is not None and a_out is not None
    assert a_out[0] == "aac"
    assert a_out[1] == pytest.approx(a_in[1], abs=0.03)


def test_no_metadata_copied(mp4_clip: bytes) -> None:
    with av.open(io.BytesIO(mp4_clip)) as ic:  # the input does carry them
        assert ic.metadata.get("creation_time", "").startswith("2021-03-04")
        assert "location" in ic.metadata
    out = transform_video(mp4_clip, identity)
    with av.open(io.BytesIO(out)) as oc:
        keys = set(oc.metadata)
        assert keys <= {"major_brand", "minor_version", "compatible_brands", "encoder"}, keys
        for stream in oc.streams:
            assert set(stream.metadata) <= {"language", "handler_name", "vendor_id", "encoder"}
    for value in (
        b"2021-03-04",
        b"+31.2304",
        b"AcmePhone",
        b"holiday",
        b"\xa9xyz",  # QuickTime location atom
        b"com.apple.quicktime",
    ):
        assert value not in out, value
    # mvhd/tkhd creation times are zero (1904 epoch), not the input's.
    at = out.index(b"mvhd")
    version = out[at + 4]
    created = (
        struct.unpack(">Q", out[at + 8 : at + 16])[0]
        if version == 1
        else struct.unpack(">I", out[at + 8 : at + 12])[0]
    )
    assert created == 0


@pytest.mark.parametrize(
    ("fmt", "codec", "audio"),
    [
        ("mov", "libx264", "aac"),
        ("webm", "libvpx-vp9", "libopus"),
        ("webm", "libvpx", None),
        ("matroska", "libx264", "aac"),
    ],
)
def test_identity_roundtrip_containers(fmt: str, codec: str, audio: str | None) -> None:
    data = make_clip(fmt=fmt, codec=codec, audio=audio, frames=36)
    out = transform_video(data, identity)
    info_in, info_out = probe_video(data), probe_video(out)
    assert info_out.container == "mp4" and info_out.codec == "h264"
    assert info_out.frames == info_in.frames == 36
    assert abs(info_out.duration_s - info_in.duration_s) <= 1 / 24
    _, pts_in = decode_all(data)
    _, pts_out = decode_all(out)
    assert pts_out == pytest.approx(pts_in, abs=1e-3)
    a_in, a_out = audio_summary(data), audio_summary(out)
    if audio is None:
        assert a_out is None
    else:
        assert a_in is not None and a_out is not None
        assert a_out[0] == "aac"  # Opus re-encoded, AAC copied
        assert a_out[1] == pytest.approx(a_in[1], abs=0.05)


def bt709_clip(frames: int = 12) -> bytes:
    """An H.264 clip converted with the BT.709 matrix and tagged so (what HD cameras write)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=24, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        cc = stream.codec_context
        cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = 1, 1, 1, 1
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(pattern(i, 320, 240), format="bgr24")
            frame = frame.reformat(format="yuv420p", dst_colorspace="ITU709", dst_color_range=1)
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


@pytest.mark.parametrize("source", ["bt709", "mjpeg-full-range", "bt601-untagged"])
def test_colours_survive(source: str) -> None:
    """What a player shows for the output matches what it shows for the input (tags honoured)."""
    if source == "bt709":
        data = bt709_clip()
    elif source == "mjpeg-full-range":
        data = make_clip(fmt="mov", codec="mjpeg", pix_fmt="yuvj420p", frames=12, audio=None)
    else:
        data = make_clip(frames=12, audio=None)
    out = transform_video(data, identity)
    frames_in, _ = decode_all(data)
    frames_out, _ = decode_all(out)
    for before, after in zip(frames_in, frames_out, strict=True):
        for y, x in ((30, 40), (30, 280), (200, 40), (200, 280)):  # inside the flat blocks
            assert np.abs(after[y, x].astype(int) - before[y, x]).max() <= 6, (source, y, x)
    with av.open(io.BytesIO(out)) as oc:
        cc = oc.streams.video[0].codec_context
        assert (cc.colorspace, cc.color_range) == (6, 1)  # BT.601 matrix, limited range
    if source == "bt709":
        assert (cc.color_primaries, cc.color_trc) == (1, 1)


def test_keep_audio_false_drops_audio(mp4_clip: bytes) -> None:
    out = transform_video(mp4_clip, identity, keep_audio=False)
    assert audio_summary(out) is None
    assert probe_video(out).frames == 48


def test_variable_frame_rate_keeps_timestamps() -> None:
    rng = np.random.default_rng(7)
    steps = rng.choice([20, 33, 41, 67, 100], size=40)
    pts_ms = [0, *np.cumsum(steps[:-1]).tolist()]
    for fmt in ("mp4", "matroska"):
        data = make_clip(fmt=fmt, frames=40, pts_ms=pts_ms, audio="aac")
        _, pts_in = decode_all(data)
        assert pts_in == pytest.approx([p / 1000 for p in pts_ms], abs=1e-3)  # the input is VFR
        out = transform_video(data, identity)
        _, pts_out = decode_all(out)
        assert len(pts_out) == 40
        assert pts_out == pytest.approx(pts_in, abs=1e-3)
        assert probe_video(out).duration_s == pytest.approx(probe_video(data).duration_s, abs=0.05)
        # iter_frames reports the same timestamps to the callback.
        assert [t for _, t, _ in iter_frames(data)] == pytest.approx(pts_in, abs=1e-3)


def test_fn_changes_pixels(mp4_clip: bytes) -> None:
    seen: list[tuple[int, float]] = []

    def draw(index: int, t: float, frame: NDArray[np.uint8]) -> NDArray[np.uint8]:
        seen.append((index, t))
        cv2.rectangle(frame, (200, 150), (300, 220), (255, 255, 255), thickness=-1)
        return frame

    out = transform_video(mp4_clip, draw)
    assert [i for i, _ in seen] == list(range(48))
    assert [t for _, t in seen] == pytest.approx([i / 24 for i in range(48)], abs=1e-6)
    frames_in, _ = decode_all(mp4_clip)
    frames_out, _ = decode_all(out)
    for before, after in zip(frames_in, frames_out, strict=True):
        assert after[160:210, 210:290].min() > 235  # white where drawn
        assert before[160:210, 210:290].max() < 235  # it was grey/dark before
        assert mean_abs(before[:100, :150], after[:100, :150]) < 3.0  # elsewhere unchanged


def test_fn_must_return_same_shape(mp4_clip: bytes) -> None:
    with pytest.raises(ValueError, match="shape"):
        transform_video(mp4_clip, lambda i, t, f: f[:10])


def test_fn_errors_propagate_unchanged(mp4_clip: bytes) -> None:
    def fail(index: int, t: float, frame: NDArray[np.uint8]) -> NDArray[np.uint8]:
        if index == 10:
            raise BadParams("effect parameters rejected mid-way")
        return frame

    with pytest.raises(BadParams, match="mid-way"):
        transform_video(mp4_clip, fail)


@pytest.mark.parametrize("kwargs", [{"crf": 60}, {"crf": -1}, {"preset": "ludicrous"}])
def test_bad_encoder_params(mp4_clip: bytes, kwargs: dict[str, Any]) -> None:
    with pytest.raises(BadParams):
        transform_video(mp4_clip, identity, **kwargs)


# ------------------------------------------------------------------ rotation


@pytest.mark.parametrize(
    ("ccw", "hflip", "rotation", "oracle"),
    [
        (90.0, False, 270, lambda img: np.rot90(img, 1)),
        (-90.0, False, 90, lambda img: np.rot90(img, -1)),  # a portrait phone clip
        (180.0, False, 180, lambda img: np.rot90(img, 2)),
        (0.0, True, 0, lambda img: img[:, ::-1]),
    ],
)
def test_rotation_metadata_applied(ccw: float, hflip: bool, rotation: int, oracle: Any) -> None:
    """The display matrix written by PyAV is honoured; numpy gives the expected upright image."""
    data = make_clip(frames=6, rotation=(ccw, hflip), audio=None)
    info = probe_video(data)
    swapped = rotation in (90, 270)
    assert info.rotation == rotation
    assert (info.width, info.height) == ((240, 320) if swapped else (320, 240))
    for index, _, frame in iter_frames(data):
        expected = np.ascontiguousarray(oracle(pattern(index, 320, 240)))
        assert frame.shape == expected.shape
        assert mean_abs(frame, expected) < 4.0
    shapes: list[tuple[int, ...]] = []

    def record(index: int, t: float, frame: NDArray[np.uint8]) -> NDArray[np.uint8]:
        shapes.append(frame.shape)
        return frame

    out = transform_video(data, record)
    assert set(shapes) == {(info.height, info.width, 3)}
    with av.open(io.BytesIO(out)) as oc:
        first = next(oc.decode(video=0))
        assert first.rotation == 0  # upright pixels, no rotation metadata
        assert (first.width, first.height) == (info.width, info.height)
        expected = np.ascontiguousarray(oracle(pattern(0, 320, 240)))
        # Two lossy generations (input clip, output clip) against the ideal picture.
        assert mean_abs(first.to_ndarray(format="bgr24"), expected) < 6.0


# ------------------------------------------------------------------ odd sizes


@pytest.mark.parametrize(
    ("fmt", "codec", "pix_fmt"),
    [("webm", "libvpx-vp9", "yuv420p"), ("mp4", "libx264", "yuv444p")],
)
def test_odd_size_is_padded_by_one_replicated_pixel(fmt: str, codec: str, pix_fmt: str) -> None:
    data = make_clip(
        fmt=fmt, codec=codec, pix_fmt=pix_fmt, width=321, height=241, frames=12, audio=None
    )
    info = probe_video(data)
    assert (info.width, info.height) == (321, 241)
    shapes = set()

    def record(index: int, t: float, frame: NDArray[np.uint8]) -> NDArray[np.uint8]:
        shapes.add(frame.shape)
        return frame

    out = transform_video(data, record, keep_audio=False)
    assert shapes == {(241, 321, 3)}  # the callback sees the exact size
    frames_in, _ = decode_all(data)
    frames_out, _ = decode_all(out)
    assert len(frames_out) == 12
    for before, after in zip(frames_in, frames_out, strict=True):
        assert after.shape == (242, 322, 3)
        assert mean_abs(after[:241, :321], before) < 3.0
        assert mean_abs(after[241, :321], after[240, :321]) < 3.0  # replicated row
        assert mean_abs(after[:241, 321], after[:241, 320]) < 3.0  # replicated column


# ------------------------------------------------------------------ limits and bad input


def test_too_long() -> None:
    data = make_clip(frames=72, audio=None)  # 3 s
    with pytest.raises(TooLong):
        probe_video(data, VideoLimits(max_duration_s=2.0))
    with pytest.raises(TooLong):
        transform_video(data, identity, VideoLimits(max_frames=50))
    assert probe_video(data, VideoLimits(max_duration_s=3.0)).frames == 72


def test_too_long_without_header_duration() -> None:
    """A WebM whose header has no frame count is measured by demuxing."""
    data = make_clip(fmt="webm", codec="libvpx-vp9", frames=72, audio=None)
    with pytest.raises(TooLong):
        probe_video(data, VideoLimits(max_frames=50))


def test_too_large_resolution_and_bytes() -> None:
    data = make_clip(width=640, height=480, frames=4, audio=None)
    with pytest.raises(TooLarge):
        probe_video(data, VideoLimits(max_width=320, max_height=240))
    with pytest.raises(TooLarge):
        transform_video(data, identity, VideoLimits(max_bytes=len(data) - 1))
    # Portrait passes a landscape limit: long side vs width, short side vs height.
    portrait = make_clip(width=240, height=320, frames=4, audio=None)
    assert probe_video(portrait, VideoLimits(max_width=320, max_height=240)).height == 320


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not a video at all, just some text" * 10,
        b"\x89PNG\r\n\x1a\n" + bytes(100),
        b"\xff\xd8\xff\xe0" + bytes(100),
        b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64),
        b"#EXTM3U\n#EXTINF:10,\nhttp://example.invalid/a.ts\n",
    ],
)
def test_not_a_video(data: bytes) -> None:
    with pytest.raises(UnsupportedFormat):
        probe_video(data)
    with pytest.raises(UnsupportedFormat):
        transform_video(data, identity)


def test_truncated_classic_mp4(mp4_clip: bytes) -> None:
    """moov at the end (PyAV's default): half the file has no index."""
    assert top_level_boxes(mp4_clip)[-1] == "moov"
    with pytest.raises(CorruptMedia):
        probe_video(mp4_clip[: len(mp4_clip) // 2])
    with pytest.raises(CorruptMedia):
        transform_video(mp4_clip[: len(mp4_clip) // 2], identity)


def test_truncated_streamable_mp4(mp4_clip: bytes) -> None:
    """moov first: the index survives but points past the end of the data."""
    streamable = transform_video(mp4_clip, identity)
    for cut in (len(streamable) // 2, len(streamable) - 100):
        with pytest.raises(CorruptMedia):
            transform_video(streamable[:cut], identity)


def test_truncated_webm() -> None:
    data = make_clip(fmt="webm", codec="libvpx-vp9", audio=None, frames=24)
    with pytest.raises((CorruptMedia, UnsupportedFormat)):
        transform_video(data[: len(data) // 3], identity)
    with pytest.raises(CorruptMedia):
        transform_video(data[:40], identity)


@pytest.mark.parametrize("keep", [0.3, 0.5, 0.71875, 0.9, 0.99])
def test_truncated_webm_with_audio(keep: float) -> None:
    """The Segment's declared size gives a cut Matroska file away (found by hypothesis)."""
    data = SMALL_CLIPS["webm"]
    with pytest.raises(CorruptMedia):
        transform_video(data[: int(keep * len(data))], identity)


def test_live_webm_with_unknown_sizes_is_accepted() -> None:
    """Browser MediaRecorder files declare no sizes: nothing to check, and they must work."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="webm", options={"live": "1"}) as out:
        stream = out.add_stream("libvpx-vp9", rate=24, options=FAST_OPTIONS["libvpx-vp9"])
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(pattern(i, 96, 64), format="bgr24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    data = buf.getvalue()
    segment_size = data[data.index(b"\x18\x53\x80\x67") + 4]
    assert segment_size == 0x01  # an 8-byte size follows: unknown (all ones)
    assert probe_video(transform_video(data, identity)).frames == 10


def test_audio_only_file_is_refused() -> None:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=48000)
        stream.layout = "mono"
        for start in range(0, 48000, 1024):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="flt", layout="mono"
            )
            frame.sample_rate, frame.pts = 48000, start
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    with pytest.raises(CorruptMedia, match="no video stream"):
        probe_video(buf.getvalue())


def test_bad_limits() -> None:
    with pytest.raises(BadParams):
        VideoLimits(max_duration_s=0)
    with pytest.raises(BadParams):
        VideoLimits(max_width=-1)


def test_iter_frames_matches_probe(mp4_clip: bytes) -> None:
    info = probe_video(mp4_clip)
    items = list(iter_frames(mp4_clip))
    assert [i for i, _, _ in items] == list(range(info.frames))
    assert all(f.shape == (240, 320, 3) and f.dtype == np.uint8 for _, _, f in items)
    assert items[-1][1] == pytest.approx(47 / 24)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.sampled_from(sorted(SMALL_CLIPS)),
    edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=16),
    keep=st.one_of(st.none(), st.floats(0, 1)),
)
def test_damaged_input_fails_cleanly(
    which: str, edits: list[tuple[float, int]], keep: float | None
) -> None:
    """Random byte edits and truncations: a PipelineError or a valid output, nothing else."""
    data = bytearray(SMALL_CLIPS[which])
    for where, value in edits:
        data[int(where * len(data))] = value
    if keep is not None:
        data = data[: int(keep * len(data))]
    try:
        out = transform_video(bytes(data), identity)
    except PipelineError:
        return
    assert probe_video(out).frames >= 1


def box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


@pytest.mark.parametrize("wide", [False, True])
def test_faststart_moves_moov_and_shifts_chunk_offsets(wide: bool) -> None:
    """stco (32-bit) and co64 (64-bit) offsets follow mdat when moov moves in front of it."""
    from pipelines.media.video.mp4box import _faststart

    ftyp = box(b"ftyp", b"isom\x00\x00\x02\x00isom")
    free = box(b"free", b"")
    media = b"A" * 100 + b"B" * 50
    mdat = box(b"mdat", media)
    mdat_payload = len(ftyp) + len(free) + 8
    offsets = [mdat_payload, mdat_payload + 100]
    fmt, kind = (">Q", b"co64") if wide else (">I", b"stco")
    table = (
        b"\x00\x00\x00\x00" + struct.pack(">I", 2) + b"".join(struct.pack(fmt, o) for o in offsets)
    )
    moov = box(b"moov", box(b"trak", box(b"mdia", box(b"minf", box(b"stbl", box(kind, table))))))
    original = ftyp + free + mdat + moov
    out = _faststart(original)
    assert top_level_boxes(out) == ["ftyp", "moov", "mdat"]
    assert len(out) == len(original) - len(free)
    at = out.index(kind) + 4 + 8
    width = struct.calcsize(fmt)
    moved = [struct.unpack(fmt, out[at + i * width : at + (i + 1) * width])[0] for i in range(2)]
    assert out[moved[0] : moved[0] + 100] == b"A" * 100
    assert out[moved[1] : moved[1] + 50] == b"B" * 50
    assert _faststart(out) == out  # already streamable: unchanged


# ------------------------------------------------------------------ ISO-BMFF pre-walk


def pcm_mov(seconds: float = 3.0, rate: int = 48000) -> bytes:
    """A MOV with raw PCM audio: one constant-size sample per audio sample (144,000 in 3 s)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mov") as out:
        video = out.add_stream("libx264", rate=24, options=FAST_OPTIONS["libx264"])
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = out.add_stream("pcm_s16le", rate=rate)
        audio.layout = "mono"
        for i in range(int(24 * seconds)):
            frame = av.VideoFrame.from_ndarray(pattern(i, 64, 48), format="bgr24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        total = int(seconds * rate)
        for start in range(0, total, 1024):
            n = min(1024, total - start)
            samples = np.zeros((1, n), np.int16)
            aframe = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            aframe.sample_rate, aframe.pts = rate, start
            out.mux(audio.encode(aframe))
        out.mux(audio.encode(None))
    return buf.getvalue()


def fragmented_mp4(frames: int = 12) -> bytes:
    buf = io.BytesIO()
    movflags = {"movflags": "frag_keyframe+empty_moov+default_base_moof"}
    with av.open(buf, "w", format="mp4", options=movflags) as out:
        stream = out.add_stream("libx264", rate=24, options={"preset": "ultrafast", "g": "4"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(pattern(i, 64, 48), format="bgr24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


def test_prewalk_passes_real_clips() -> None:
    """Classic and fragmented MP4, MOV, and a MOV whose raw PCM track has more samples than the
    per-track limit (FFmpeg indexes raw audio by chunk, so it is bounded by its duration)."""
    from pipelines.media.isobmff import BmffLimits, prewalk

    limits = BmffLimits.for_video(VideoLimits().max_frames, VideoLimits().max_duration_s)
    classic = prewalk(SMALL_CLIPS["mp4"], limits)
    assert (classic.tracks, classic.samples[0], classic.fragments) == (2, 8, 0)
    assert prewalk(make_clip(fmt="mov", frames=8), limits).tracks == 2
    frag = fragmented_mp4()
    summary = prewalk(frag, limits)
    assert summary.fragments == 3 and summary.samples == (12,)
    assert probe_video(frag).frames == 12
    pcm = pcm_mov()
    assert prewalk(pcm, limits).samples[1] == 144_000 > limits.max_samples
    assert probe_video(pcm).has_audio


def test_every_open_of_an_input_is_prewalked(
    mp4_clip: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each ``av.open`` of an MP4/MOV input (probe, rotation, decode or transcode) follows a
    pre-walk of the same bytes; WebM is not walked (Matroska is not ISO-BMFF)."""
    import pipelines.media.video.container as container

    walked: list[int] = []
    opened: list[int] = []
    real_walk, real_open = container.prewalk, container.av.open

    def walk(data: bytes, limits: Any) -> Any:
        walked.append(len(data))
        return real_walk(data, limits)

    def open_(target: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("mode", args[0] if args else "r") == "r":
            opened.append(len(target.getvalue()))
        return real_open(target, *args, **kwargs)

    monkeypatch.setattr(container, "prewalk", walk)
    monkeypatch.setattr(container.av, "open", open_)
    transform_video(mp4_clip, identity)
    list(iter_frames(mp4_clip))
    assert opened and walked == opened
    walked.clear()
    opened.clear()
    probe_video(SMALL_CLIPS["webm"])
    assert opened and walked == []


def test_out_of_memory_while_transcoding_is_too_large() -> None:
    """Under a data ceiling just above what the process holds, a 1080p transcode runs out of
    memory (opening the decoder's threads, a frame, the encoder): the error is ``too_large``,
    never ``corrupt_media``."""
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    code = textwrap.dedent(
        """
        import io, resource, numpy as np, av
        from pipelines.errors import PipelineError
        from pipelines.media.video import transform_video
        buf = io.BytesIO()
        with av.open(buf, "w", format="mp4") as out:
            s = out.add_stream("libx264", rate=24, options={"preset": "ultrafast"})
            s.width, s.height, s.pix_fmt = 1920, 1080, "yuv420p"
            for i in range(4):
                f = av.VideoFrame.from_ndarray(np.full((1080, 1920, 3), 9 * i, np.uint8),
                                               format="bgr24")
                f.pts = i
                out.mux(s.encode(f))
            out.mux(s.encode(None))
        clip = buf.getvalue()
        data = int(next(l for l in open("/proc/self/status")
                        if l.startswith("VmData")).split()[1]) * 1024
        codes = []
        for margin in (8, 48, 128):  # running out at different points of the transcode
            limit = (data + (margin << 20), resource.RLIM_INFINITY)
            resource.setrlimit(resource.RLIMIT_DATA, limit)
            try:
                transform_video(clip, lambda i, t, f: f)
                codes.append("ok")
            except PipelineError as exc:
                codes.append(exc.code)
            resource.setrlimit(resource.RLIMIT_DATA, (resource.RLIM_INFINITY,) * 2)
        print(" ".join(codes))
        """
    )
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120
    )
    last = proc.stdout.strip().splitlines()[-1:]
    assert last == ["too_large too_large too_large"], proc.stderr[-2000:]
