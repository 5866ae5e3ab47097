"""Video path benchmark (issue 16): the pipelines against a raw PyAV transcode, in one run.

Generated clips only (in memory): 1280x720 (and 1920x1080) at 30 fps, H.264 + a stereo AAC tone,
astronaut faces (scikit-image) sliding over a panning texture with sensor noise, the true face
boxes known on every frame (``make_clip``; two faces, or six for the per-face cost).

Every row is bytes in -> bytes out, timed in this process (wall and CPU of every thread), in
interleaved rounds (each round runs every row once), median over the rounds; ratios are
throughput against the baseline of the same clip in the same run:

* baseline: a raw PyAV loop, decode -> libx264 (crf 23, veryfast, yuv420p, threaded decode),
  AAC packets copied (``raw_transcode``); no probe, no limits, decoded frames handed to the
  encoder as they are.
* ``transform_video_planes`` with an identity callback (the decoder's I420 planes), and
  ``transform_video`` with an identity BGR callback (the BGR round trip every BGR callback pays).
* ``deid``: ``deidentify_video_detailed`` (detection at 0.3, the lookahead tracker detecting
  every 5 frames, the operator on the planes), the default profile (``mask``) and ``blur``; the
  same ``mask`` with the online tracker (``lookahead=False``, before issue 16's third pass) and
  with the lookahead tracker detecting every ``--option-every`` frames (default 7: an option
  measured for a decision, not the default).
* a third clip (``--no-enter`` skips it): the two faces walk in from outside the picture.
* ``ar``: ``apply_video`` with beautify + glasses sticker (face mesh).

Quality, checked on every deid output: *coverage* is the share of (frame, true face) pairs whose
centre half differs from the source by more than 8 grey levels (pairs whose centre half is
outside the picture not counted); *non-face PSNR* is measured
against the decoded source frames over the pixels outside every true face box grown by half its
size on each side plus 16 px (the default operators' ellipse, dilation 1.5, reaches a quarter of
the box beyond it; the other quarter allows for the tracker's box error), and compared with the
same PSNR of the plain transcode over the same pixels (goal: within 0.1 dB).
``tests/pipelines/test_video_planes.py`` runs the same checks (``deid_quality``) on a small clip.

OpenCV runs one thread (``--cv-threads``, default 1), as in a Celery child
(``worker/celery_app.py``); FFmpeg and libx264 pick their own thread counts, the same for every
row. The machine is shared: read the ratios and the load printed with each round.

``--schedules`` prints instead, for each clip, how much of every visible true face box the
default mask's ellipse covers under the online and the lookahead tracker at several detection
intervals (detections computed once per frame and replayed, so only the schedules differ).

Run: ``.venv/bin/python bench/video_bench.py`` (``--rounds``, ``--frames``, ``--no-six``,
``--no-1080``, ``--no-enter``, ``--no-ar``, ``--option-every``, ``--schedules``,
``--cv-threads``).
"""

from __future__ import annotations

import argparse
import io
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import av
import cv2
import numpy as np
from skimage import data

from pipelines.ar import apply_video, parse_chain
from pipelines.deid import DEFAULT_PROFILE, deidentify_video_detailed
from pipelines.deid.gate import at_threshold
from pipelines.deid.geometry import ellipse_region
from pipelines.faces.detector import CenterFaceDetector, Face, FaceDetector
from pipelines.faces.tracking import FaceTracker, LookaheadTracker, TrackedFace, TrackerConfig
from pipelines.media.video import (
    VideoLimits,
    iter_frames,
    probe_video,
    transform_video,
    transform_video_planes,
)

Box = tuple[float, float, float, float]
CRF, PRESET = 23, "veryfast"
#: Non-face region for the PSNR check: outside the true boxes grown by this share of their size.
GROW = 0.5


@dataclass(frozen=True)
class Clip:
    data: bytes
    frames: int
    fps: int
    truth: list[list[Box]]  # per frame, per face


def make_clip(
    frames: int,
    width: int,
    height: int,
    fps: int,
    detector: FaceDetector,
    faces: int = 2,
    enter: bool = False,
) -> Clip:
    """Astronaut faces moving over a panning texture with sensor noise, plus a stereo tone.

    Two faces (scale 1.5 and 1.0, the second mirrored) cross the frame; with ``faces`` other
    than 2, that many smaller faces (0.7-1.0) drift in a grid of three columns. With ``enter``
    the two faces start outside the picture and walk in from the left and from the right (the
    second appearing at a frame between two detections), at about 8 px per frame at 720p."""
    astronaut = np.ascontiguousarray(data.astronaut()[:, :, ::-1])
    crop = np.ascontiguousarray(astronaut[30:210, 150:300])
    sizes = (0.7, 1.0, 0.85, 0.75, 0.95, 0.8)
    scales = [1.5, 1.0] if faces == 2 else [sizes[i % len(sizes)] for i in range(faces)]
    sprites = [
        cv2.resize(crop, None, fx=k, fy=k, interpolation=cv2.INTER_CUBIC) if k != 1.0 else crop
        for k in scales
    ]
    sprites = [np.ascontiguousarray(sp[:, ::-1]) if i % 2 else sp for i, sp in enumerate(sprites)]
    inner = []
    for sprite in sprites:
        found = detector.detect(sprite)
        if not found:
            raise RuntimeError("the detector finds no face in the sprite")
        inner.append(found[0].box)

    def spots(u: float) -> list[tuple[float, float]]:
        if enter:
            walk = u * width * 0.9
            return [
                (-210 + walk, height * 0.12 + 40 * np.sin(6 * u)),
                (width + 60 - walk, height * 0.45),
            ]
        if faces == 2:
            return [
                (40 + u * (width - 360), height * 0.12 + 40 * np.sin(6 * u)),
                (width - 220 - u * (width - 300), height * 0.45 + u * height * 0.2),
            ]
        rows = -(-faces // 3)
        cell_w, cell_h = width / 3, height / rows
        return [
            (
                (i % 3 + 0.1 + 0.25 * (u if i % 2 else 1 - u)) * cell_w,
                (i // 3) * cell_h + 20 + 15 * np.sin(4 * u + i),
            )
            for i in range(faces)
        ]

    pan = 2  # pixels per frame: the camera pans, so inter prediction has work to do
    yy, xx = np.mgrid[0:height, 0 : width + pan * frames]
    background = np.stack(
        [
            96 + 40 * np.sin(xx / 37.0) * np.cos(yy / 53.0),
            110 + 30 * np.cos(xx / 71.0 + yy / 29.0),
            120 + 35 * np.sin((xx + yy) / 45.0),
        ],
        axis=2,
    ).astype(np.uint8)

    truth: list[list[Box]] = []
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    with av.open(buf, "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=fps, options={"crf": "14", "preset": "veryfast"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = out.add_stream("aac", rate=48000)
        audio.layout = "stereo"
        for i in range(frames):
            frame = np.ascontiguousarray(background[:, pan * i : pan * i + width])
            u = i / max(1, frames - 1)
            boxes: list[Box] = []
            for sprite, box, (x, y) in zip(sprites, inner, spots(u), strict=True):
                shift = np.float32([[1, 0, x], [0, 1, y]])
                cv2.warpAffine(
                    sprite,
                    shift,
                    (width, height),
                    dst=frame,
                    flags=cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_TRANSPARENT,
                )
                boxes.append((box[0] + x, box[1] + y, box[2] + x, box[3] + y))
            noise = rng.normal(0, 3.0, size=frame.shape).round().astype(np.int16)  # sensor noise
            frame = np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8)
            truth.append(boxes)
            vf = av.VideoFrame.from_ndarray(frame, format="bgr24")
            vf.pts = i
            out.mux(video.encode(vf))
        out.mux(video.encode(None))
        total = round(frames / fps * 48000)
        for start in range(0, total, 1024):
            n = min(1024, total - start)
            t = np.arange(start, start + n) / 48000
            tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            af = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
            af.sample_rate, af.pts = 48000, start
            out.mux(audio.encode(af))
        out.mux(audio.encode(None))
    return Clip(buf.getvalue(), frames, fps, truth)


def iou(a: Box, b: Box) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def box_coverage(found: list[list[Box]], truth: list[list[Box]]) -> float:
    pairs = [(f, t) for fs, ts in zip(found, truth, strict=True) for t in ts for f in [fs]]
    hits = sum(1 for fs, t in pairs if any(iou(b, t) > 0.3 for b in fs))
    return hits / len(pairs)


def pixel_coverage(before: bytes, after: bytes, truth: list[list[Box]]) -> tuple[float, int]:
    """Share of (frame, face) pairs whose face centre changed by > 8 levels; output frame count."""
    originals = [f for _, _, f in iter_frames(before)]
    changed = total = count = 0
    with av.open(io.BytesIO(after)) as ic:
        for i, frame in enumerate(ic.decode(video=0)):
            count += 1
            if i >= len(originals):
                continue
            out = frame.to_ndarray(format="bgr24")
            for x1, y1, x2, y2 in truth[i]:
                w, h = x2 - x1, y2 - y1
                ys = slice(int(y1 + 0.25 * h), int(y2 - 0.25 * h))
                xs = slice(int(x1 + 0.25 * w), int(x2 - 0.25 * w))
                diff = np.abs(out[ys, xs].astype(np.int16) - originals[i][ys, xs]).mean()
                total += 1
                changed += int(diff > 8)
    return changed / max(1, total), count


def raw_transcode(clip: bytes, numpy_roundtrip: bool) -> bytes:
    """The baseline: PyAV decode -> libx264 with the same settings, AAC packets copied.

    With ``numpy_roundtrip`` every frame goes through the same BGR array conversions as
    ``transform_video`` (swscale to bgr24, OpenCV BGR -> I420). No probing, no limits, no
    rotation, moov left at the end.
    """
    out = io.BytesIO()
    with av.open(io.BytesIO(clip)) as ic, av.open(out, "w", format="mp4") as oc:
        vs, ia = ic.streams.video[0], ic.streams.audio[0]
        vs.thread_type = "AUTO"
        options = {"crf": str(CRF), "preset": PRESET}
        ov = oc.add_stream("libx264", rate=vs.average_rate, options=options)
        ov.width, ov.height, ov.pix_fmt = vs.codec_context.width, vs.codec_context.height, "yuv420p"
        ov.codec_context.time_base = vs.time_base
        oa = oc.add_stream_from_template(ia)
        for packet in ic.demux(vs, ia):
            if packet.stream is ia:
                if packet.size:
                    packet.stream = oa
                    oc.mux(packet)
                continue
            for frame in packet.decode():
                if numpy_roundtrip:
                    img = frame.to_ndarray(format="bgr24")
                    i420 = cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420)
                    new = av.VideoFrame.from_ndarray(i420, format="yuv420p")
                    new.pts, new.time_base = frame.pts, frame.time_base
                    frame = new
                oc.mux(ov.encode(frame))
        oc.mux(ov.encode(None))
    return out.getvalue()


def run_deface(clip: bytes, extra: list[str]) -> tuple[float, bytes]:
    """Wall time of the deface CLI on the clip (temp files: deface only takes paths)."""
    exe = Path(sys.executable).with_name("deface")
    with tempfile.TemporaryDirectory(prefix="video-bench-") as tmp:
        src, dst = Path(tmp) / "in.mp4", Path(tmp) / "out.mp4"
        src.write_bytes(clip)
        start = time.perf_counter()
        subprocess.run(
            [str(exe), str(src), "-o", str(dst), "--keep-audio", *extra],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return time.perf_counter() - start, dst.read_bytes()


def psnr(mse: float) -> float:
    return float("inf") if mse <= 0 else 10 * math.log10(255.0**2 / mse)


@dataclass(frozen=True)
class Quality:
    """Coverage of the true faces and the PSNR of everything else, against the source."""

    coverage: float
    nonface_psnr: float
    frames: int


def deid_quality(source: bytes, output: bytes, truth: list[list[Box]], grow: float) -> Quality:
    """Coverage (a (frame, face) pair counts when the centre half of the true box differs from
    the source by more than 8 grey levels on average) and the PSNR of the pixels outside every
    face's operator region: the true box grown by ``grow`` times its size on each side (for an
    ellipse of dilation ``d``, ``grow = (d - 1) / 2``) plus 16 px. Use ``grow=0`` for a plain
    transcode measured against the same source: the region is the same only with the same
    ``grow``, so compare outputs at one ``grow``."""
    originals = iter_frames(source)
    covered = pairs = 0
    sq_err = 0.0
    count = pixels = 0
    with av.open(io.BytesIO(output)) as ic:
        for frame, (_, _, before) in zip(ic.decode(video=0), originals, strict=False):
            after = frame.to_ndarray(format="bgr24")[: before.shape[0], : before.shape[1]]
            keep = np.ones(before.shape[:2], dtype=bool)
            height, width = before.shape[:2]
            for x1, y1, x2, y2 in truth[count]:
                w, h = x2 - x1, y2 - y1
                # The centre half of the box, inside the picture (a face walking in counts
                # once a quarter of it is in).
                ys = slice(max(0, int(y1 + 0.25 * h)), min(height, int(y2 - 0.25 * h)))
                xs = slice(max(0, int(x1 + 0.25 * w)), min(width, int(x2 - 0.25 * w)))
                if ys.stop > ys.start and xs.stop > xs.start:
                    diff = np.abs(after[ys, xs].astype(np.int16) - before[ys, xs]).mean()
                    pairs += 1
                    covered += int(diff > 8)
                gx, gy = grow * w + 16, grow * h + 16
                keep[
                    max(0, int(y1 - gy)) : int(y2 + gy) + 1, max(0, int(x1 - gx)) : int(x2 + gx) + 1
                ] = False
            err = (after.astype(np.float64) - before)[keep]
            sq_err += float((err * err).sum())
            pixels += int(err.size)
            count += 1
    return Quality(covered / max(1, pairs), psnr(sq_err / max(1, pixels)), count)


@dataclass(frozen=True)
class Timing:
    wall: float
    cpu: float


def timed(fn: Callable[[], object]) -> tuple[Timing, object]:
    """Wall and CPU seconds (every thread of this process) of one call, and its result."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return Timing(wall, cpu), out


@dataclass
class Row:
    clip: str
    name: str
    run: Callable[[], bytes]
    goal: float | None = None
    grow: float | None = None  # deid rows: the operator's region growth, for deid_quality
    times: list[Timing] = field(default_factory=list)
    output: bytes = b""


def load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


class _Replay(FaceDetector):
    """Replays one clip's detections, frame by frame (``frame`` set before each call)."""

    def __init__(self, found: list[list[Face]]) -> None:
        self.found = found
        self.frame = 0

    def detect(self, img: np.ndarray) -> list[Face]:  # type: ignore[type-arg]
        return self.found[self.frame]


def schedules(label: str, clip: Clip, detector: FaceDetector) -> None:
    """How much of each true face box the default mask's ellipse covers on each frame, for the
    online tracker and the lookahead tracker at several detection intervals. The detector (at
    the deid threshold) runs once on every frame; each schedule replays those detections, so
    the schedules differ only in which frames they detect on and how they fill the others.
    Counted: (frame, face) pairs whose box's centre half is in the picture."""
    frames = [bgr for _, _, bgr in iter_frames(clip.data)]
    height, width = frames[0].shape[:2]
    deid_detector = at_threshold(detector, 0.3)
    replay = _Replay([deid_detector.detect(f) for f in frames])
    dilation = float(DEFAULT_PROFILE[1]["dilation"])  # type: ignore[arg-type]
    print(f"{label}: {len(frames)} frames, true box share covered by the mask ellipse")
    print(
        "| tracker | detect every | detector passes | pairs | min | mean | pairs < 0.99 | < 0.9 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for ahead, every in ((False, 5), (True, 5), (True, 6), (True, 7), (True, 8), (False, 7)):
        config = TrackerConfig(detect_every=every)
        found: list[list[TrackedFace]] = []
        if ahead:
            tracker = LookaheadTracker(replay, config, fps=clip.fps)
            depth = tracker.lookahead
            for i in range(len(frames) + depth):
                if i < len(frames):
                    replay.frame = i
                    tracker.look(i, (width, height), lambda: frames[0])
                if i >= depth:
                    found.append(tracker.faces(i - depth))
            passes = tracker.detections_run
        else:
            online = FaceTracker(replay, config, fps=clip.fps)
            for i in range(len(frames)):
                replay.frame = i
                found.append(online.track(i, (width, height), lambda: frames[0]))
            passes = online.detections_run
        shares = []
        for i, faces in enumerate(found):
            mask = np.zeros((height, width), bool)
            for tracked in faces:
                region = ellipse_region((height, width), tracked.face, dilation)
                if not region.empty:
                    mask[region.y0 : region.y1, region.x0 : region.x1] |= region.mask > 0
            for x1, y1, x2, y2 in clip.truth[i]:
                w, h = x2 - x1, y2 - y1
                if min(width, x2 - w / 4) - max(0, x1 + w / 4) < 1:
                    continue
                if min(height, y2 - h / 4) - max(0, y1 + h / 4) < 1:
                    continue
                box = mask[max(0, round(y1)) : round(y2), max(0, round(x1)) : round(x2)]
                shares.append(float(box.mean()))
        share = np.array(shares)
        name = "lookahead" if ahead else "online"
        print(
            f"| {name} | {every} | {passes} | {share.size} | {share.min():.3f} | "
            f"{share.mean():.4f} | {int((share < 0.99).sum())} | {int((share < 0.9).sum())} |"
        )
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-six", action="store_true", help="skip the six-face clip")
    parser.add_argument("--no-1080", action="store_true", help="skip the 1080p clip")
    parser.add_argument("--no-ar", action="store_true", help="skip the ar rows")
    parser.add_argument("--no-enter", action="store_true", help="skip the clip whose faces walk in")
    parser.add_argument(
        "--option-every",
        type=int,
        default=7,
        help="also time deid with the lookahead tracker detecting every N frames (0: no)",
    )
    parser.add_argument(
        "--schedules",
        action="store_true",
        help="print how well each tracker schedule covers the true faces (and exit)",
    )
    parser.add_argument(
        "--cv-threads",
        type=int,
        default=1,
        help="cv2.setNumThreads (1: what a Celery child runs with, worker/celery_app.py)",
    )
    args = parser.parse_args(argv)
    cv2.setNumThreads(args.cv_threads)

    detector = CenterFaceDetector.load()
    clips = {"720p, 2 faces": make_clip(args.frames, 1280, 720, args.fps, detector)}
    if not args.no_six:
        clips["720p, 6 faces"] = make_clip(args.frames, 1280, 720, args.fps, detector, faces=6)
    if not args.no_1080:
        clips["1080p, 2 faces"] = make_clip(args.frames, 1920, 1080, args.fps, detector)
    if not args.no_enter:
        clips["720p, 2 faces entering"] = make_clip(
            args.frames, 1280, 720, args.fps, detector, enter=True
        )
    limits = VideoLimits(max_width=1920, max_height=1080)
    chain = parse_chain([{"effect": "beautify"}, {"effect": "sticker", "name": "glasses"}])
    mask_name, mask_params = DEFAULT_PROFILE
    blur_params = {"strength": 0.1}
    if args.schedules:
        for label, clip in clips.items():
            schedules(label, clip, detector)
        return 0
    print(
        f"Python {platform.python_version()}, PyAV {av.__version__}, OpenCV {cv2.__version__}, "
        f"{platform.machine()} {os.cpu_count()} cpu; cv2 threads {cv2.getNumThreads()}; "
        f"load {load()} at start"
    )
    for label, clip in clips.items():
        info = probe_video(clip.data, limits)
        size = f"{info.width}x{info.height}, {len(clip.data) / 1e6:.1f} MB"
        print(f"clip {label}: {info.frames} frames {size}")

    rows: list[Row] = []
    for label, clip in clips.items():
        data_ = clip.data
        rows.append(
            Row(
                label,
                "raw PyAV decode -> libx264 (baseline)",
                lambda d=data_: raw_transcode(d, False),
            )
        )
        entering = label.endswith("entering")
        if label == "720p, 2 faces":
            rows.append(
                Row(
                    label,
                    "transform_video_planes, identity",
                    lambda d=data_: transform_video_planes(d, lambda i, t, p: None, limits),
                    0.95,
                )
            )
            rows.append(
                Row(
                    label,
                    "transform_video (BGR), identity",
                    lambda d=data_: transform_video(d, lambda i, t, f: f, limits),
                )
            )
        rows.append(
            Row(
                label,
                f"deid {mask_name}, online tracker (before the lookahead)",
                lambda d=data_: (
                    deidentify_video_detailed(
                        d,
                        detector,
                        mask_name,
                        mask_params,
                        limits,
                        keep_audio=True,
                        lookahead=False,
                    ).data
                ),
                0.7,
                GROW,
            )
        )
        rows.append(
            Row(
                label,
                f"deid {mask_name} (default profile)",
                lambda d=data_: (
                    deidentify_video_detailed(
                        d, detector, mask_name, mask_params, limits, keep_audio=True
                    ).data
                ),
                0.7,
                GROW,
            )
        )
        if args.option_every:
            every = TrackerConfig(detect_every=args.option_every)
            rows.append(
                Row(
                    label,
                    f"deid {mask_name}, lookahead, detect every {args.option_every} (option)",
                    lambda d=data_, c=every: (
                        deidentify_video_detailed(
                            d,
                            detector,
                            mask_name,
                            mask_params,
                            limits,
                            keep_audio=True,
                            tracker=c,
                        ).data
                    ),
                    0.7,
                    GROW,
                )
            )
        if not label.startswith("720p, 6") and not entering:
            rows.append(
                Row(
                    label,
                    "deid blur strength 0.1",
                    lambda d=data_: (
                        deidentify_video_detailed(
                            d, detector, "blur", blur_params, limits, keep_audio=True
                        ).data
                    ),
                    0.7,
                    GROW,
                )
            )
        if not args.no_ar and not entering:
            rows.append(
                Row(
                    label,
                    "ar beautify + glasses (mesh)",
                    lambda d=data_: apply_video(d, chain, detector, limits).data,
                    0.45,
                )
            )

    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}, load {load()}", flush=True)
        for row in rows:
            took, out = timed(row.run)
            row.times.append(took)
            row.output = cast(bytes, out)
    print(f"load {load()} at the end\n")

    baseline = {row.clip: row for row in rows if row.name.startswith("raw")}
    head = ["clip", "path", "fps (median)", "ratio wall", "ratio CPU", "rounds (ratio wall)"]
    head += ["goal", "coverage", "non-face PSNR (plain transcode)"]
    print("| " + " | ".join(head) + " |")
    print("|---|---|---:|---:|---:|---|---|---:|---:|")
    per_face: dict[str, dict[str, float]] = {}
    for row in rows:
        base = baseline[row.clip]
        frames = clips[row.clip].frames
        wall = statistics.median(t.wall for t in row.times)
        cpu = statistics.median(t.cpu for t in row.times)
        ratio = statistics.median(
            b.wall / t.wall for b, t in zip(base.times, row.times, strict=True)
        )
        ratio_cpu = statistics.median(
            b.cpu / t.cpu for b, t in zip(base.times, row.times, strict=True)
        )
        per_round = ", ".join(
            f"{b.wall / t.wall:.2f}" for b, t in zip(base.times, row.times, strict=True)
        )
        goal = (
            "-"
            if row.goal is None
            else f">= {row.goal:.2f}: {'met' if ratio >= row.goal else 'NOT met'}"
        )
        cover = psnr_cell = "-"
        if row.grow is not None:
            q = deid_quality(clips[row.clip].data, row.output, clips[row.clip].truth, row.grow)
            plain = deid_quality(clips[row.clip].data, base.output, clips[row.clip].truth, row.grow)
            ok = q.nonface_psnr >= plain.nonface_psnr - 0.1
            cover = f"{q.coverage:.3f}"
            psnr_cell = (
                f"{q.nonface_psnr:.2f} dB ({plain.nonface_psnr:.2f}; {'ok' if ok else 'WORSE'})"
            )
        cells = [row.clip, row.name, f"{frames / wall:.1f}", f"{ratio:.2f}x", f"{ratio_cpu:.2f}x"]
        print("| " + " | ".join([*cells, per_round, goal, cover, psnr_cell]) + " |")
        per_face.setdefault(row.name.split(" (")[0].split(" strength")[0], {})[row.clip] = (
            cpu - statistics.median(t.cpu for t in base.times)
        ) / frames
    print()
    for name, by_clip in per_face.items():
        two, six = by_clip.get("720p, 2 faces"), by_clip.get("720p, 6 faces")
        if two is not None and six is not None and not name.startswith("raw"):
            print(
                f"{name}: CPU over the raw transcode per frame, {1000 * two:.1f} ms with 2 faces "
                f"and {1000 * six:.1f} ms with 6: {250 * (six - two):.2f} ms per extra face"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
