"""De-identification: operators registered by name, image and video application, and the
residual-face gate. Pure media code: arrays and bytes in, arrays, bytes and records out.

Operators (``pipelines.deid.operators``, one module each): ``blur``, ``pixelate``, ``mask``,
``landmarks_only`` and ``k_same``. Nothing is loaded at import time.
"""

from pipelines.deid.align import AlignTransform, align_face, paste_back
from pipelines.deid.api import (
    DEFAULT_PROFILE,
    DEID_DETECT_THRESHOLD,
    DeidResult,
    DeidVideo,
    deidentify_image,
    deidentify_video,
    deidentify_video_detailed,
)
from pipelines.deid.gate import GateResult, at_threshold, residual_gate, residual_gate_video
from pipelines.deid.operators.k_same import KSameBatchTooSmall, k_same, k_same_clusters
from pipelines.deid.registry import (
    FaceAnnotation,
    Operator,
    OperatorOutput,
    get_operator,
    operator_names,
    register,
)

__all__ = [
    "DEFAULT_PROFILE",
    "DEID_DETECT_THRESHOLD",
    "AlignTransform",
    "DeidResult",
    "DeidVideo",
    "FaceAnnotation",
    "GateResult",
    "KSameBatchTooSmall",
    "Operator",
    "OperatorOutput",
    "align_face",
    "at_threshold",
    "deidentify_image",
    "deidentify_video",
    "deidentify_video_detailed",
    "get_operator",
    "k_same",
    "k_same_clusters",
    "operator_names",
    "paste_back",
    "register",
    "residual_gate",
    "residual_gate_video",
]
