"""Face detection (CenterFace through OpenCV DNN); no model is loaded at import time."""

from pipelines.faces.detector import (
    CenterFaceDetector,
    DetectorConfig,
    Face,
    FaceDetector,
    centerface_model_path,
    default_detector,
)

__all__ = [
    "CenterFaceDetector",
    "DetectorConfig",
    "Face",
    "FaceDetector",
    "centerface_model_path",
    "default_detector",
]
