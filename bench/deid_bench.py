"""Throughput of the de-identification operators (``pipelines.deid``) on a 1080p frame.

The frame is generated: scikit-image's coffee photo (blurred) at 1920x1080 with six astronaut
faces pasted at crop widths of 210-420 px. Faces are detected once with CenterFace; each
operator is then timed on the frame with those faces (``deidentify_image``: parameter validation
and the operator, a new output array each call), and compared with the baseline measured in the
same run, interleaved: a raw JPEG decode + encode of the same frame with OpenCV
(``cv2.imdecode`` + ``cv2.imencode``, quality 90), the least a worker does with a photo. The
residual-face gate (CenterFace at 0.2 over the whole frame) is timed the same way.

Run: ``.venv/bin/python bench/deid_bench.py`` (prints a markdown table; ``--repeat N``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from skimage import data

from pipelines.deid import DEFAULT_PROFILE, deidentify_image, residual_gate
from pipelines.deid.gate import gate_detector
from pipelines.faces import default_detector

U8 = NDArray[np.uint8]

SETTINGS: list[tuple[str, dict[str, Any]]] = [
    (DEFAULT_PROFILE[0], dict(DEFAULT_PROFILE[1])),
    ("landmarks_only", {}),
    ("blur", {"strength": 0.1}),
    ("blur", {"strength": 0.25}),
    ("pixelate", {"blocks": 10}),
    ("pixelate", {"blocks": 6}),
    ("k_same", {"k": 2}),
    ("k_same", {"k": 3}),
]


def frame_1080p() -> U8:
    coffee = np.ascontiguousarray(data.coffee()[:, :, ::-1])
    img = cv2.resize(coffee, (1920, 1080), interpolation=cv2.INTER_CUBIC)
    img = np.asarray(cv2.GaussianBlur(img, (0, 0), 4), dtype=np.uint8)
    astronaut = np.ascontiguousarray(data.astronaut()[:, :, ::-1])
    face = astronaut[30:210, 150:300]
    x = 40
    for i, scale in enumerate((1.4, 1.8, 2.8, 2.2, 1.6, 2.0)):
        patch = cv2.resize(face, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        if i % 2:
            patch = patch[:, ::-1]
        h, w = patch.shape[:2]
        y = 60 if i % 2 else 1080 - h - 60
        img[y : y + h, x : x + w] = patch
        x += w // 2 + 150
    return img


def timed(fns: Sequence[Callable[[], object]], repeat: int) -> list[float]:
    """Median wall time (ms) of each function, interleaved, after one warm-up round."""
    for fn in fns:
        fn()
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, out in zip(fns, samples, strict=True):
            start = time.perf_counter()
            fn()
            out.append((time.perf_counter() - start) * 1000)
    return [statistics.median(s) for s in samples]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)  # one Celery child per core, as in production

    img = frame_1080p()
    detector = default_detector()
    faces = detector.detect(img)
    jpeg = bytes(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    gate = gate_detector(detector, 0.2)
    masked = deidentify_image(img, faces, *DEFAULT_PROFILE).image

    def baseline() -> object:
        decoded = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        return cv2.imencode(".jpg", decoded, [cv2.IMWRITE_JPEG_QUALITY, 90])

    def operator(name: str, params: dict[str, Any]) -> Callable[[], object]:
        return lambda: deidentify_image(img, faces, name, params)

    fns: list[Callable[[], object]] = [baseline]
    fns += [operator(name, params) for name, params in SETTINGS]
    fns.append(lambda: residual_gate(masked, gate, len(faces)))
    times = timed(fns, args.repeat)
    base = times[0]
    widths = sorted(round(f.width) for f in faces)
    print(
        f"1920x1080 frame, {len(faces)} faces (box widths {widths[0]}-{widths[-1]} px), "
        f"cv2.setNumThreads(1), median of {args.repeat} interleaved rounds"
    )
    print()
    print("| step | ms / frame | frames/s | ratio to raw decode+encode |")
    print("|---|---:|---:|---:|")
    print(f"| raw JPEG decode + encode (cv2, q90) | {base:.1f} | {1000 / base:.1f} | 1.00 |")
    labels = [
        f"{n} ({', '.join(f'{k}={v}' for k, v in p.items()) or 'defaults'})" for n, p in SETTINGS
    ]
    labels.append("residual gate (CenterFace at 0.2)")
    for label, ms in zip(labels, times[1:], strict=True):
        print(f"| {label} | {ms:.1f} | {1000 / ms:.1f} | {ms / base:.2f} |")


if __name__ == "__main__":
    main()
