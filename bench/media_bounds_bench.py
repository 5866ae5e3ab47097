"""Cost of bounding media parsing (issue 13, part 5), generated media only.

(a) The ISO-BMFF pre-walk (``pipelines.media.isobmff.prewalk``) against what it precedes,
    measured in the same run on the same bytes: ``av.open`` + close with the ``mov`` demuxer
    (FFmpeg reading the box tree and building its index), and the whole ``probe_video``. Clips:
    2 s 320x240 H.264 + AAC; 60 s (1440 frames) 64x48 H.264 + AAC, classic and fragmented (one
    fragment per keyframe, every 24 frames); a 3 s MOV with raw PCM (144,000 audio samples); the
    1.5 KB MP4 bomb (80 million declared samples: walk only, ``av.open`` of it takes ~19 s and
    ~5 GB). Median of ``--repeat`` interleaved rounds.
(b) ``decode_image`` peak memory on the PNG bombs (6300x6300 RGBA; 4000x4000 16-bit RGBA,
    16-bit grey, palette with tRNS): peak RSS growth over the decoded 8-bit BGR size, each in a
    fresh process (``/proc/self/clear_refs`` resets the peak).

Run: ``.venv/bin/python bench/media_bounds_bench.py`` (``--repeat N``, ``--no-png``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipelines.media.isobmff import BmffLimits, prewalk  # noqa: E402
from pipelines.media.video import VideoLimits, probe_video  # noqa: E402
from tests.attacks.test_media_bombs import mp4_sample_bomb  # noqa: E402


def clip(
    seconds: float,
    width: int,
    height: int,
    *,
    fmt: str = "mp4",
    audio: str = "aac",
    gop: int = 24,
    movflags: str = "",
) -> bytes:
    """An H.264 clip at 24 fps with a mono tone (AAC or raw PCM), in memory."""
    buf = io.BytesIO()
    options = {"movflags": movflags} if movflags else {}
    with av.open(buf, "w", format=fmt, options=options) as out:
        video = out.add_stream("libx264", rate=24, options={"preset": "ultrafast", "g": str(gop)})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        sound = out.add_stream(audio, rate=48000)
        sound.layout = "mono"
        rng = np.random.default_rng(1)
        base = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        for i in range(int(24 * seconds)):
            frame = av.VideoFrame.from_ndarray(np.roll(base, i, axis=1), format="bgr24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        total = int(seconds * 48000)
        fmt_in, dtype = ("s16", np.int16) if audio.startswith("pcm") else ("flt", np.float32)
        for start in range(0, total, 1024):
            n = min(1024, total - start)
            t = np.arange(start, start + n) / 48000
            tone = 0.3 * np.sin(2 * np.pi * 440 * t) * (32767 if dtype is np.int16 else 1)
            samples = tone.astype(dtype)[None]
            aframe = av.AudioFrame.from_ndarray(samples, format=fmt_in, layout="mono")
            aframe.sample_rate, aframe.pts = 48000, start
            out.mux(sound.encode(aframe))
        out.mux(sound.encode(None))
    return buf.getvalue()


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def open_close(data: bytes) -> None:
    with av.open(io.BytesIO(data), format="mov") as ic:
        ic.streams.video[0].frames  # noqa: B018 - the header is read by now


def walk_bench(repeat: int) -> None:
    limits = VideoLimits()
    bmff = BmffLimits.for_video(limits.max_frames, limits.max_duration_s)
    clips = {
        "2 s 320x240 H.264+AAC": clip(2, 320, 240),
        "60 s 64x48 H.264+AAC": clip(60, 64, 48),
        "60 s 64x48 fragmented": clip(
            60, 64, 48, movflags="frag_keyframe+empty_moov+default_base_moof"
        ),
        "3 s MOV raw PCM": clip(3, 64, 48, fmt="mov", audio="pcm_s16le"),
        "MP4 bomb (80M samples)": mp4_sample_bomb(),
    }
    times: dict[str, dict[str, list[float]]] = {
        name: {"walk": [], "open": [], "probe": []} for name in clips
    }
    for _ in range(repeat):
        for name, data in clips.items():
            times[name]["walk"].append(timed(lambda data=data: _walk(data, bmff)))
            if "bomb" in name:
                continue
            times[name]["open"].append(timed(lambda data=data: open_close(data)))
            times[name]["probe"].append(timed(lambda data=data: probe_video(data)))
    print(
        "| input | bytes | boxes | pre-walk | av.open | walk / open | probe_video | walk / probe |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, data in clips.items():
        boxes = _boxes(data, bmff)
        walk = statistics.median(times[name]["walk"]) * 1000
        if not times[name]["open"]:
            print(f"| {name} | {len(data)} | {boxes} | {walk:.3f} ms | (not run) | | | |")
            continue
        opened = statistics.median(times[name]["open"]) * 1000
        probe = statistics.median(times[name]["probe"]) * 1000
        print(
            f"| {name} | {len(data)} | {boxes} | {walk:.3f} ms | {opened:.3f} ms | "
            f"{walk / opened:.2f}x | {probe:.2f} ms | {walk / probe:.3f}x |"
        )


def _walk(data: bytes, limits: BmffLimits) -> None:
    with contextlib.suppress(Exception):  # the bomb is refused: that is what is being timed
        prewalk(data, limits)


def _boxes(data: bytes, limits: BmffLimits) -> str:
    try:
        return str(prewalk(data, limits).boxes)
    except Exception as exc:
        return f"refused ({getattr(exc, 'code', type(exc).__name__)})"


_PNG = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[1])
    from pipelines.media.image import decode_image
    from tests.attacks.test_media_bombs import png_bomb
    def field(key):
        line = next(l for l in open("/proc/self/status") if l.startswith(key))
        return int(line.split()[1]) * 1024
    kind, n = sys.argv[2], int(sys.argv[3])
    data = png_bomb(kind, n)
    decode_image(png_bomb(kind, 64))
    open("/proc/self/clear_refs", "w").write("5")
    before = field("VmRSS")
    import time
    started = time.perf_counter()
    img = decode_image(data)
    seconds = time.perf_counter() - started
    print(json.dumps({"bytes": len(data), "growth": field("VmHWM") - before,
                      "out": img.nbytes, "seconds": seconds}))
    """
)


def png_bench() -> None:
    print("| PNG | file | decoded BGR | peak RSS growth | ratio | time |")
    print("|---|---:|---:|---:|---:|---:|")
    for kind, n in (("rgba8", 6300), ("rgba16", 4000), ("grey16", 4000), ("palette", 4000)):
        proc = subprocess.run(
            [sys.executable, "-c", _PNG, str(ROOT), kind, str(n)],
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        mb = 1024 * 1024
        print(
            f"| {kind} {n}x{n} | {row['bytes'] / 1024:.0f} KB | {row['out'] / mb:.0f} MB | "
            f"{row['growth'] / mb:.0f} MB | {row['growth'] / row['out']:.2f}x | "
            f"{row['seconds']:.2f} s |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--no-png", action="store_true")
    args = parser.parse_args()
    print(f"python {platform.python_version()}, PyAV {av.__version__}, {platform.machine()}")
    walk_bench(args.repeat)
    if not args.no_png:
        print()
        png_bench()


if __name__ == "__main__":
    main()
