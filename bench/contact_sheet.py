"""A contact sheet of every AR effect and de-identification operator on the test faces.

Rows: the test faces (scikit-image's astronaut; the same photo squeezed horizontally to 60 %,
which the mesh reads as a turned head; a generated group of the astronaut at three scales, one
mirrored). Columns: the input, then each effect setting and each operator, cropped around the
first face (the crop holds the shoulders, so the background effects show). The sheet shows
people: write it outside the repository (``/tmp``) and do not commit it.

Run: ``.venv/bin/python bench/contact_sheet.py /tmp/contact_sheet.png [--tile 256]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from skimage import data

from pipelines.ar import parse_chain
from pipelines.deid import DEID_DETECT_THRESHOLD, at_threshold, deidentify_image
from pipelines.faces import Face, default_detector

U8 = NDArray[np.uint8]

EFFECTS: list[tuple[str, list[dict[str, Any]]]] = [
    ("beautify", [{"effect": "beautify"}]),
    ("beautify max+whiten", [{"effect": "beautify", "smooth": 1.0, "whiten": 0.6}]),
    ("reshape", [{"effect": "reshape"}]),
    (
        "reshape max",
        [{"effect": "reshape", "slim": 1.0, "eyes": 1.0, "nose": 1.0, "chin": 1.0}],
    ),
    ("makeup natural", [{"effect": "makeup"}]),
    (
        "makeup full",
        [
            {
                "effect": "makeup",
                "lipstick": "crimson",
                "blush": "#e8707a",
                "eyeliner": "black",
                "eyeshadow": "#7a5a9a",
                "brows": "#3b2a20",
                "strength": 0.8,
            }
        ],
    ),
    ("glasses", [{"effect": "sticker", "name": "glasses"}]),
    ("hat", [{"effect": "sticker", "name": "hat"}]),
    ("ears", [{"effect": "sticker", "name": "ears"}]),
    ("bg blur", [{"effect": "background", "mode": "blur"}]),
    ("bg color", [{"effect": "background", "mode": "color", "color": "lightseagreen"}]),
    ("bg sunset", [{"effect": "background", "mode": "image", "image": "sunset"}]),
    ("bg bokeh", [{"effect": "background", "mode": "image", "image": "bokeh"}]),
    ("lut vintage", [{"effect": "lut", "look": "vintage"}]),
]
OPERATORS: list[tuple[str, str, dict[str, Any]]] = [
    ("deid mask", "mask", {}),
    ("deid blur", "blur", {}),
    ("deid pixelate", "pixelate", {}),
    ("deid landmarks", "landmarks_only", {"draw": True}),
]


def test_faces() -> list[tuple[str, U8]]:
    """The rows' inputs (BGR)."""
    astronaut = np.ascontiguousarray(data.astronaut()[:, :, ::-1])
    squeezed = cv2.resize(astronaut, (307, 512), interpolation=cv2.INTER_AREA)
    group = np.full((420, 900, 3), 200, np.uint8)
    group[:] = np.linspace(150, 230, 900, dtype=np.uint8)[None, :, None]
    for x, scale, mirror in ((20, 0.8, False), (330, 0.7, True), (620, 0.6, False)):
        face = astronaut[10:400, 90:420]
        if mirror:
            face = face[:, ::-1]
        small = cv2.resize(face, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        h, w = small.shape[:2]
        group[420 - h :, x : x + w] = small
    return [("astronaut", astronaut), ("squeezed 60%", squeezed), ("group", group)]


def crop_box(image: U8, face: Face) -> tuple[slice, slice]:
    """A square around the face (2.4 box sides, room for a hat above), clipped."""
    x1, y1, x2, y2 = face.box
    side = 2.4 * max(x2 - x1, y2 - y1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2 - 0.05 * side
    h, w = image.shape[:2]
    a, b = max(0, int(cx - side / 2)), max(0, int(cy - side / 2))
    return slice(b, min(h, int(b + side))), slice(a, min(w, int(a + side)))


def tile(image: U8, box: tuple[slice, slice], size: int, label: str) -> U8:
    crop = np.ascontiguousarray(image[box])
    h, w = crop.shape[:2]
    scale = size / max(h, w)
    small = cv2.resize(crop, (max(1, round(w * scale)), max(1, round(h * scale))))
    out = np.full((size + 22, size, 3), 255, np.uint8)
    out[22 : 22 + small.shape[0], : small.shape[1]] = small
    cv2.putText(out, label, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="PNG to write (outside the repository)")
    parser.add_argument("--tile", type=int, default=220, help="tile side in pixels")
    args = parser.parse_args()
    detector = default_detector()
    finder = at_threshold(detector, DEID_DETECT_THRESHOLD)
    rows: list[U8] = []
    for name, image in test_faces():
        faces = detector.detect(image)
        if not faces:
            print(f"{name}: no face found")
            continue
        box = crop_box(image, faces[0])
        tiles = [tile(image, box, args.tile, name)]
        for label, spec in EFFECTS:
            started = time.perf_counter()
            out = parse_chain(spec).apply(image.copy(), faces)
            ms = (time.perf_counter() - started) * 1000
            tiles.append(tile(out, box, args.tile, f"{label} {ms:.0f}ms"))
        deid_faces = [f for f in finder.detect(image) if f.score >= DEID_DETECT_THRESHOLD]
        for label, operator, params in OPERATORS:
            out = deidentify_image(image, deid_faces, operator, params).image
            tiles.append(tile(out, box, args.tile, label))
        rows.append(np.hstack(tiles))
    sheet = np.vstack(rows)
    cv2.imwrite(str(args.out), sheet)
    print(f"wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]})")


if __name__ == "__main__":
    main()
