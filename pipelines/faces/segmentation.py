"""Person segmentation with MediaPipe's ``selfie_segmentation.tflite`` run by OpenCV DNN.

The whole image is resized to the network's 256 x 256 input (RGB in [0, 1]; the aspect ratio is
not kept, as in MediaPipe's graph); the network's per-pixel person probability is resized back
to the image (bilinear). The model was trained on selfies and video calls (one or a few people,
near the camera); far or small people get low scores. The network is loaded on first use.
"""

from __future__ import annotations

import functools
import threading
from typing import Final

import cv2
import numpy as np
from numpy.typing import NDArray

from pipelines.faces.detector import as_bgr
from pipelines.faces.models import read_tflite, selfie_segmentation_path

F32 = NDArray[np.float32]

#: Side of the network's input.
SEGMENTATION_INPUT: Final = 256
_OUTPUT: Final = "activation_10"


class PersonSegmenter:
    """Runs the segmentation network; safe to call from several threads (guarded by a lock)."""

    def __init__(self, net: cv2.dnn.Net) -> None:
        self._net = net
        self._lock = threading.Lock()

    @classmethod
    def load(cls) -> PersonSegmenter:
        """Read the network from the installed model file (``ModelMissing`` if absent)."""
        return cls(read_tflite(selfie_segmentation_path()))

    def segment(self, bgr: NDArray[np.uint8]) -> F32:
        """Person probability, float32 ``HxW`` in ``[0, 1]``, for a BGR (or gray/BGRA) image."""
        img = as_bgr(bgr)
        height, width = img.shape[:2]
        if height == 0 or width == 0:
            return np.zeros((height, width), dtype=np.float32)
        small = cv2.resize(
            img, (SEGMENTATION_INPUT, SEGMENTATION_INPUT), interpolation=cv2.INTER_AREA
        )
        blob = cv2.dnn.blobFromImage(small, scalefactor=1.0 / 255.0, swapRB=True)
        with self._lock:
            self._net.setInput(blob)
            raw = self._net.forward(_OUTPUT)
        prob = np.asarray(raw, dtype=np.float32).reshape(SEGMENTATION_INPUT, SEGMENTATION_INPUT)
        mask = cv2.resize(prob, (width, height), interpolation=cv2.INTER_LINEAR)
        out: F32 = np.clip(mask, 0.0, 1.0).astype(np.float32, copy=False)
        return out


@functools.lru_cache(maxsize=1)
def default_segmenter() -> PersonSegmenter:
    """The process-wide segmenter, loaded on first call and then reused."""
    return PersonSegmenter.load()


def segment_person(bgr: NDArray[np.uint8]) -> F32:
    """Person probability (float32 ``HxW`` in ``[0, 1]``) with the process-wide segmenter."""
    return default_segmenter().segment(bgr)


__all__ = ["SEGMENTATION_INPUT", "PersonSegmenter", "default_segmenter", "segment_person"]
