"""Issue 13, part 5 — media parsing bounded before it allocates, tried from the outside.

Every input here is a crafted file written by the test with real codecs (PyAV/libx264, zlib,
libjpeg) and, where memory is the point, handed to the real ``facemedia run`` in a fresh process
(``FACEMEDIA_HOME`` in a temporary directory), whose peak RSS is read from ``/proc`` as it exits:

- the MP4 bomb: a valid 64x48 H.264 MP4 from PyAV whose sample tables are rewritten by hand to
  declare 80 million constant-size samples (1.5 KB on disk; unguarded, ``av.open`` builds an
  80-million-entry index, ~5 GB). It must end ``failed``/``too_long`` with its original deleted,
  in well under a second of pipeline time and with a small peak; tables whose entry counts are
  patched past their box (stsz, stsc, stts, stco, ctts, stss, elst, trun) are ``corrupt_media``;
- PNG bombs (164 KB 6300x6300 RGBA, 16-bit RGBA, 16-bit grey, palette with tRNS) decode with a
  peak of at most 3x their 8-bit BGR size plus a constant;
- truncated JPEGs (cut, or cut with an end-of-image marker appended so libjpeg "decodes" the
  rest as grey) are ``corrupt_media`` through the job;
- an unknown allocation bomb (a legitimately huge image, accepted by its header) under a low
  ``decode_memory_limit_mb`` fails ``too_large`` and the process lives, while a normal photo
  under the same ceiling succeeds; the default ceiling passes a 12 MP photo and a 1080p clip;
- a Celery prefork child sets the ceiling when it starts.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
from PIL import Image

from pipelines.errors import CorruptMedia, TooLong
from pipelines.media.isobmff import BmffLimits, prewalk
from pipelines.media.video import VideoLimits, probe_video

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]
BOMB_SAMPLES = 80_000_000

# ----- MP4 boxes, by hand ------------------------------------------------------------------------

_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf", b"moof", b"traf"}
Box = list[Any]  # [type, payload bytes | list of child boxes]


def h264_mp4(
    frames: int = 2, width: int = 64, height: int = 48, gop: int = 12, **options: str
) -> bytes:
    """A small valid H.264 MP4 written by PyAV (``options``: muxer options, e.g. movflags)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4", options=options) as out:
        codec_options = {"preset": "ultrafast", "g": str(gop)}
        stream = out.add_stream("libx264", rate=24, options=codec_options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            img = np.full((height, width, 3), (40 * i) % 256, np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="bgr24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


def parse_boxes(buf: bytes, start: int = 0, end: int | None = None) -> list[Box]:
    end = len(buf) if end is None else end
    boxes: list[Box] = []
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", buf, pos)
        size = end - pos if size == 0 else size
        body = (
            parse_boxes(buf, pos + 8, pos + size)
            if kind in _CONTAINERS
            else buf[pos + 8 : pos + size]
        )
        boxes.append([kind, body])
        pos += size
    return boxes


def serialize(boxes: list[Box]) -> bytes:
    out = []
    for kind, body in boxes:
        payload = serialize(body) if isinstance(body, list) else body
        out.append(struct.pack(">I4s", 8 + len(payload), kind) + payload)
    return b"".join(out)


def leaves(boxes: list[Box]) -> list[Box]:
    found: list[Box] = []
    for box in boxes:
        found.extend(leaves(box[1]) if isinstance(box[1], list) else [box])
    return found


def rewrite(data: bytes, tables: dict[bytes, Callable[[bytes], bytes]]) -> bytes:
    """Rewrite the payload of every leaf box named in ``tables`` (the moov follows the mdat in
    PyAV's output, so chunk offsets stay valid whatever the moov's new size)."""
    tree = parse_boxes(data)
    for box in leaves(tree):
        if box[0] in tables:
            box[1] = tables[box[0]](box[1])
    return serialize(tree)


def mp4_sample_bomb(count: int = BOMB_SAMPLES) -> bytes:
    """80 million constant-size samples in one chunk, one time-to-sample run: every table one
    entry long, so nothing is cut short and FFmpeg indexes every declared sample."""
    return rewrite(
        h264_mp4(),
        {
            b"stsz": lambda _: struct.pack(">III", 0, 16, count),
            b"stts": lambda _: struct.pack(">IIII", 0, 1, count, 512),
            b"stsc": lambda _: struct.pack(">IIIII", 0, 1, 1, count, 1),
            b"stss": lambda _: struct.pack(">II", 0, 0),
        },
    )


def patch_count(data: bytes, kind: bytes, count: int) -> bytes:
    """Overwrite the entry count of every ``kind`` table in place (the table stays as long)."""
    at = {b"stsz": 8, b"stz2": 8, b"elst": 4, b"trun": 4}.get(kind, 4)
    return rewrite(data, {kind: lambda body: body[:at] + struct.pack(">I", count) + body[at + 4 :]})


def with_edit_list(data: bytes) -> bytes:
    """Give the video track an edit list (PyAV writes none for a clip that starts at zero)."""
    tree = parse_boxes(data)
    moov = next(b for b in tree if b[0] == b"moov")
    trak = next(b for b in moov[1] if b[0] == b"trak")
    elst = struct.pack(">IIIIhh", 0, 1, 1000, 0, 1, 0)
    trak[1].insert(1, [b"edts", [[b"elst", elst]]])
    return serialize(tree)


# ----- running things in a fresh process ------------------------------------------------------

# The real CLI (typer's runner, in one fresh process for several runs): prints each run's JSON
# summary, then the process's peak RSS and wall time.
_CLI = textwrap.dedent(
    """
    import json, sys, time
    from typer.testing import CliRunner
    from worker.cli import app
    started = time.perf_counter()
    runs = json.loads(sys.argv[1])
    for path, job in runs:
        result = CliRunner().invoke(app, ["run", path, "--job", job, "--json"])
        summary = result.stdout.strip().splitlines()[-1]
        # the documented exit codes: 0 the job succeeded, 1 it ran and failed
        expected = 0 if json.loads(summary)["status"] == "succeeded" else 1
        assert result.exit_code == expected, (result.output[-2000:], repr(result.exception))
        print("SUMMARY " + summary)
    hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
    print("MEASURED " + json.dumps({
        "peak_rss_mb": int(hwm.split()[1]) / 1024,
        "seconds": time.perf_counter() - started,
    }))
    """
)


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("FACEMEDIA_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env["FACEMEDIA_HOME"] = str(home)
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def facemedia_run(
    runs: list[tuple[Path, str]], home: Path, **env: str
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """``facemedia run PATH --job JOB --json`` for each run, in one fresh process: the summaries
    and the process's measurements."""
    proc = subprocess.run(
        [sys.executable, "-c", _CLI, json.dumps([[str(p), job] for p, job in runs])],
        cwd=home.parent,
        env=_env(home, **env),
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    lines = proc.stdout.splitlines()
    summaries = [json.loads(line[8:]) for line in lines if line.startswith("SUMMARY ")]
    measured = json.loads(next(line for line in lines if line.startswith("MEASURED "))[9:])
    return summaries, measured


def python_json(code: str, **env: str) -> Any:
    """Run ``code`` in a fresh interpreter; it prints one JSON line last."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def stored_originals(home: Path) -> list[Path]:
    root = home / "store" / "originals"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


# ----- the MP4 bomb -----------------------------------------------------------------------------


def test_the_mp4_bomb_is_real() -> None:
    """Unguarded, FFmpeg allocates in proportion to the declared count: the same bomb scaled down
    to 2 million samples grows ``av.open``'s peak RSS by more than 40 bytes a declared sample
    (80 million: over 3 GB; measured 4.8 GB and 19 s), from a file of about 1.5 KB."""
    assert len(mp4_sample_bomb()) < 2400
    scaled = mp4_sample_bomb(2_000_000)
    result = python_json(
        f"""
        import io, json, av
        def field(key):
            return int(next(l for l in open("/proc/self/status")
                            if l.startswith(key)).split()[1]) * 1024
        data = bytes.fromhex("{scaled.hex()}")
        open("/proc/self/clear_refs", "w").write("5")
        before = field("VmRSS")
        with av.open(io.BytesIO(data), format="mov") as ic:
            frames = ic.streams.video[0].frames
        print(json.dumps({{"frames": frames, "growth": field("VmHWM") - before}}))
        """
    )
    assert result["frames"] == 2_000_000
    assert result["growth"] > 40 * 2_000_000, result


def test_mp4_bomb_refused_before_ffmpeg_in_little_time_and_memory() -> None:
    result = python_json(
        f"""
        import json, time
        from pipelines.errors import PipelineError
        from pipelines.media.video import probe_video
        bomb = bytes.fromhex("{mp4_sample_bomb().hex()}")
        status = lambda: int(next(l for l in open("/proc/self/status")
                                  if l.startswith("VmHWM")).split()[1]) * 1024
        rss = lambda: int(next(l for l in open("/proc/self/status")
                               if l.startswith("VmRSS")).split()[1]) * 1024
        open("/proc/self/clear_refs", "w").write("5")  # reset the peak
        before = rss()
        started = time.perf_counter()
        try:
            probe_video(bomb)
            code = "accepted"
        except PipelineError as exc:
            code = exc.code
        print(json.dumps({{"code": code, "seconds": time.perf_counter() - started,
                          "growth": status() - before}}))
        """
    )
    assert result["code"] == "too_long"
    assert result["seconds"] < 0.5
    assert result["growth"] < 16 * 1024 * 1024


def test_mp4_bomb_through_the_job_fails_too_long_and_deletes_the_original(tmp_path: Path) -> None:
    path = tmp_path / "bomb.mp4"
    path.write_bytes(mp4_sample_bomb())
    home = tmp_path / "home"
    # The pre-walk alone: no memory ceiling behind it in this process.
    [summary], measured = facemedia_run([(path, "ar")], home, FACEMEDIA_DECODE_MEMORY_LIMIT_MB="0")
    assert (summary["status"], summary["error_code"]) == ("failed", "too_long")
    assert summary["original_deleted"] and summary["outputs"] == []
    assert stored_originals(home) == []
    # The whole CLI process (imports, ledger, keys) stays small; unguarded it reached ~5 GB.
    assert measured["peak_rss_mb"] < 600, measured
    assert measured["seconds"] < 60, measured


@pytest.mark.parametrize("kind", [b"stsz", b"stsc", b"stts", b"stco", b"stss", b"ctts"])
def test_sample_table_counts_past_their_box_are_corrupt(kind: bytes) -> None:
    clip = h264_mp4(frames=4)
    if kind == b"ctts":  # ultrafast writes no B-frames: add a composition offset table
        clip = _with_ctts(clip)
    bomb = patch_count(clip, kind, BOMB_SAMPLES)
    with pytest.raises(CorruptMedia, match="table declares more entries than its box"):
        prewalk(bomb, BmffLimits.for_video(7200, 60.0))
    with pytest.raises(CorruptMedia):
        probe_video(bomb)


def _with_ctts(clip: bytes) -> bytes:
    tree = parse_boxes(clip)
    for box in tree:
        if box[0] == b"moov":
            trak = next(b for b in box[1] if b[0] == b"trak")
            stbl = next(b for b in leaves_containers(trak) if b[0] == b"stbl")
            stbl[1].append([b"ctts", struct.pack(">IIII", 0, 1, 4, 0)])
    return serialize(tree)


def leaves_containers(box: Box) -> list[Box]:
    found: list[Box] = []
    for child in box[1]:
        if isinstance(child[1], list):
            found.append(child)
            found.extend(leaves_containers(child))
    return found


def test_edit_list_counts_are_bounded() -> None:
    clip = with_edit_list(h264_mp4())
    probe_video(clip)  # one edit: a normal clip
    with pytest.raises(CorruptMedia, match="elst table declares more entries"):
        probe_video(patch_count(clip, b"elst", BOMB_SAMPLES))
    many = rewrite(
        clip,
        {b"elst": lambda _: struct.pack(">II", 0, 1000) + struct.pack(">IIhh", 1, 0, 1, 0) * 1000},
    )
    with pytest.raises(CorruptMedia, match="edit list has 1000 entries"):
        probe_video(many)


def test_fragmented_mp4_sample_counts_are_bounded() -> None:
    frag = h264_mp4(frames=6, gop=2, movflags="frag_keyframe+empty_moov+default_base_moof")
    assert probe_video(frag).frames == 6
    # A trun whose per-sample table cannot fit: corrupt.
    with pytest.raises(CorruptMedia, match="trun table declares more entries"):
        probe_video(patch_count(frag, b"trun", BOMB_SAMPLES))

    # A trun with no per-sample fields (every sample takes the defaults) costs no table bytes:
    # 80 million samples in 12 bytes. Refused by count.
    def empty_trun(body: bytes) -> bytes:
        flags = int.from_bytes(body[1:4], "big") & 0x1  # keep only the data offset
        offset = body[8:12]
        return bytes([0]) + flags.to_bytes(3, "big") + struct.pack(">I", BOMB_SAMPLES) + offset

    with pytest.raises(TooLong, match="80000000 trun entries"):
        probe_video(rewrite(frag, {b"trun": empty_trun}))


def test_compressed_movie_header_is_refused() -> None:
    clip = h264_mp4()
    tree = parse_boxes(clip)
    for box in tree:
        if box[0] == b"moov":
            box[1] = [[b"cmov", b"\x00" * 16]]
    with pytest.raises(Exception) as caught:
        probe_video(serialize(tree))
    assert getattr(caught.value, "code", None) == "unsupported_format"


def test_box_size_edge_cases_are_walked_like_ffmpeg() -> None:
    limits = BmffLimits.for_video(7200, 60.0)
    clip = h264_mp4()
    # 64-bit largesize on the moov, and size 0 ("to the end of the file") on the last box.
    tree = parse_boxes(clip)
    moov_at = [b[0] for b in tree].index(b"moov")
    parts = []
    for i, (kind, body) in enumerate(tree):
        payload = serialize(body) if isinstance(body, list) else body
        if i == moov_at:
            parts.append(struct.pack(">I4sQ", 1, kind, 16 + len(payload)) + payload)
        else:
            parts.append(struct.pack(">I4s", 8 + len(payload), kind) + payload)
    wide = b"".join(parts)
    assert prewalk(wide, limits).tracks == 1
    bombed = patch_count(clip, b"stco", BOMB_SAMPLES)
    tree = parse_boxes(bombed)
    last = tree[-1]
    payload = serialize(last[1]) if isinstance(last[1], list) else last[1]
    to_end = serialize(tree[:-1]) + struct.pack(">I4s", 0, last[0]) + payload
    with pytest.raises(CorruptMedia):
        prewalk(to_end, limits)
    # Too deeply nested, and too many boxes.
    deep = b""
    for _ in range(12):
        deep = struct.pack(">I4s", 8 + len(deep), b"udta") + deep
    with pytest.raises(CorruptMedia, match="nested too deeply"):
        prewalk(deep, limits)
    with pytest.raises(CorruptMedia, match="more than 100 boxes"):
        prewalk(clip + struct.pack(">I4s", 8, b"free") * 200, BmffLimits(1000, 1000, max_boxes=100))


def test_limits_follow_the_video_limits() -> None:
    """A clip over the frame limit is refused by the pre-walk from its tables alone."""
    clip = h264_mp4(frames=30)
    limits = VideoLimits(max_frames=10, max_duration_s=0.01)  # 2 x max(10, 10) = 20 samples
    with pytest.raises(TooLong, match="declares 30"):
        probe_video(clip, limits)


# ----- PNG bombs --------------------------------------------------------------------------------


def test_png_bombs_peak_at_most_three_times_their_output() -> None:
    """The 164 KB 6300x6300 RGBA bomb (it peaked at 1.4 GB, 10x its output) and 4000x4000 16-bit
    RGBA, 16-bit grey and palette+tRNS PNGs: the decode's peak RSS growth is at most 3x the 8-bit
    BGR output plus 64 MB, and the pixels are right."""
    result = python_json(
        """
        import json, struct, zlib, io
        from pipelines.media.image import decode_image
        from tests.attacks.test_media_bombs import png_bomb
        def field(key):
            return int(next(l for l in open("/proc/self/status")
                            if l.startswith(key)).split()[1]) * 1024
        decode_image(png_bomb("rgba8", 64))  # every code path imported and warm
        out = {}
        for kind, n in (("rgba8", 6300), ("rgba16", 4000), ("grey16", 4000), ("palette", 4000)):
            data = png_bomb(kind, n)
            open("/proc/self/clear_refs", "w").write("5")  # reset the peak
            before = field("VmRSS")
            img = decode_image(data)
            out[kind] = {"size": len(data), "growth": field("VmHWM") - before,
                         "nbytes": img.nbytes, "shape": list(img.shape),
                         "first": img[0, 0].tolist(), "last": img[-1, -1].tolist()}
            del img
        print(json.dumps(out))
        """
    )
    expected = {
        "rgba8": [152, 177, 227],  # (200, 100, 50) at alpha 128 on white, as BGR
        "rgba16": [139, 174, 227],
        "grey16": [156, 156, 156],  # 40000 of 65535
        "palette": [0, 0, 255],  # opaque red index
    }
    for kind, row in result.items():
        side = 6300 if kind == "rgba8" else 4000
        assert row["shape"] == [side, side, 3], kind
        assert row["first"] == expected[kind], (kind, row)
        assert row["growth"] <= 3 * row["nbytes"] + 64 * 1024 * 1024, (kind, row)
    assert result["rgba8"]["size"] < 200_000


def png_bomb(kind: str, n: int = 6300) -> bytes:
    """A PNG of ``n`` x ``n`` identical rows, compressed as a stream (nothing of image size is
    held here)."""
    if kind == "rgba8":
        color_type, depth, row, extra = 6, 8, bytes([200, 100, 50, 128]) * n, b""
    elif kind == "rgba16":
        color_type, depth, row = 6, 16, struct.pack(">4H", 50000, 20000, 1000, 30000) * n
        extra = b""
    elif kind == "grey16":
        color_type, depth, row, extra = 0, 16, struct.pack(">H", 40000) * n, b""
    elif kind == "palette":
        color_type, depth = 3, 8
        row = bytes([0, 1, 2, 3]) * (n // 4) + bytes(n % 4)
        extra = _chunk(b"PLTE", bytes([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9]))
        extra += _chunk(b"tRNS", bytes([255, 128, 0, 255]))
    else:
        raise ValueError(kind)
    packer = zlib.compressobj(9)
    line = b"\x00" + row
    idat = b"".join(packer.compress(line) for _ in range(n)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", n, n, depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + extra
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


# ----- truncated JPEG through the job ----------------------------------------------------------


def _jpeg(mode: str = "RGB") -> bytes:
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).convert(mode).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("mode", "cut"),
    [
        ("RGB", "end_marker"),  # cut, then EOI appended: libjpeg fills the rest with grey
        ("RGB", "plain"),  # cut mid-scan
        ("CMYK", "end_marker"),  # decoded by Pillow, which says nothing at all
    ],
)
def test_truncated_jpeg_fails_corrupt_media_through_the_job(
    embedded: Any, mode: str, cut: str
) -> None:
    whole = _jpeg(mode)
    data = whole[: len(whole) * 6 // 10] + (b"\xff\xd9" if cut == "end_marker" else b"")
    job_id = embedded.client.submit(data, "detect", {}, subject_id="bomb-subject")
    status = embedded.service.status(job_id)
    assert (status["status"], status["error_code"]) == ("failed", "corrupt_media"), status
    assert status["original_deleted"]
    # The same photo whole is a photo with a face.
    job_id = embedded.client.submit(whole, "detect", {}, subject_id="bomb-subject")
    assert embedded.service.status(job_id)["status"] == "succeeded"


# ----- the memory ceiling ----------------------------------------------------------------------


def test_unknown_bomb_under_the_ceiling_is_too_large_not_a_killed_process(tmp_path: Path) -> None:
    """A 6300x6300 RGBA PNG passes every header check; under a 700 MiB ceiling its decode cannot
    get the memory, and the job fails ``too_large`` in a process that goes on to report it. A
    normal photo under the same ceiling is processed (the ceiling leaves room for real work)."""
    ceiling = {"FACEMEDIA_DECODE_MEMORY_LIMIT_MB": "700"}
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(_jpeg())
    big = tmp_path / "big.png"
    big.write_bytes(png_bomb("rgba8"))
    runs = [(photo, "detect"), (big, "detect"), (photo, "detect")]
    [before, summary, after], measured = facemedia_run(runs, tmp_path / "home", **ceiling)
    for normal in (before, after):  # the process lives on and still works after the bomb
        assert (normal["status"], normal["faces"]) == ("succeeded", 1), normal
    assert (summary["status"], summary["error_code"]) == ("failed", "too_large"), summary
    assert summary["original_deleted"]
    assert stored_originals(tmp_path / "home") == []
    assert measured["peak_rss_mb"] < 700, measured


def test_default_ceiling_passes_a_12mp_photo_and_a_1080p_clip(tmp_path: Path) -> None:
    from skimage import data

    face = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    photo = tmp_path / "photo12mp.jpg"
    photo.write_bytes(cv2.imencode(".jpg", cv2.resize(face, (4000, 3000)))[1].tobytes())
    frame = cv2.resize(face, (1920, 1080))
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=30, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        for i in range(6):
            vf = av.VideoFrame.from_ndarray(np.roll(frame, 8 * i, axis=1), format="bgr24")
            vf.pts = i
            out.mux(stream.encode(vf))
        out.mux(stream.encode(None))
    clip = tmp_path / "clip1080p.mp4"
    clip.write_bytes(buf.getvalue())
    [photo_run, clip_run], _ = facemedia_run([(photo, "detect"), (clip, "ar")], tmp_path / "home")
    assert (photo_run["status"], photo_run["faces"]) == ("succeeded", 1), photo_run
    assert (clip_run["status"], clip_run["faces"]) == ("succeeded", 1), clip_run


def test_a_prefork_child_sets_the_ceiling_when_it_starts(tmp_path: Path) -> None:
    result = python_json(
        """
        import json, resource
        from worker.celery_app import _child_init
        _child_init()
        print(json.dumps(resource.getrlimit(resource.RLIMIT_DATA)[0]))
        """,
        FACEMEDIA_HOME=str(tmp_path / "home"),
        FACEMEDIA_DECODE_MEMORY_LIMIT_MB="1234",
    )
    assert result == 1234 * 1024 * 1024
