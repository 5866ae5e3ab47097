"""Faces: detection (CenterFace), the 468-point mesh with iris and head pose, named mesh
regions, person segmentation (MediaPipe models), all run by OpenCV DNN. No model is loaded at
import time."""

from pipelines.faces.detector import (
    CenterFaceDetector,
    DetectorConfig,
    Face,
    FaceDetector,
    centerface_model_path,
    default_detector,
)
from pipelines.faces.mesh import FaceMesh, FaceMesher, HeadPose, MesherConfig, default_mesher
from pipelines.faces.models import ModelMissing

__all__ = [
    "CenterFaceDetector",
    "DetectorConfig",
    "Face",
    "FaceDetector",
    "FaceMesh",
    "FaceMesher",
    "HeadPose",
    "MesherConfig",
    "ModelMissing",
    "centerface_model_path",
    "default_detector",
    "default_mesher",
]
