"""Where the face models live: files inside installed wheels, found by path, never imported.

The MediaPipe models (Apache License 2.0, see docs/MODELS.md) ship inside the ``mediapipe``
wheel, installed with ``--no-deps`` (its declared dependencies are not needed to read a
``.tflite`` file with OpenCV). The package is located with ``importlib.util.find_spec``, which
finds a top-level package's directory without running its ``__init__`` (mediapipe's would import
its heavy dependencies). A missing file raises :class:`ModelMissing` naming the file and the
install command; nothing ever falls back silently.

``python -m pipelines.faces.install_check`` checks every file and exits 1 with that message
when one is missing (``make install`` and the Docker build run it).

:func:`tessellation` reads the mesh's triangles from the same wheel's
``face_mesh_connections.py`` as text (the file lists each triangle's three edges in order).
"""

from __future__ import annotations

import functools
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from pipelines.errors import PipelineError

#: The pinned wheel that ships the models (also pinned in the Makefile and the Dockerfile).
MEDIAPIPE_REQUIREMENT: Final = "mediapipe==0.10.21"
_INSTALL_HINT: Final = f"install it with: pip install --no-deps {MEDIAPIPE_REQUIREMENT}"


class ModelMissing(PipelineError):
    """A model file the face pipelines need is not installed (a deployment fault, not bad
    input: the job fails ``internal_error``)."""

    code = "internal_error"
    default_message = "a face model file is not installed"


@dataclass(frozen=True)
class ModelFile:
    """One model file: the package that ships it and its path inside that package."""

    name: str
    package: str
    relative: str

    @property
    def filename(self) -> str:
        """The file's base name."""
        return self.relative.rsplit("/", 1)[-1]


#: 468-point face mesh; input 1x3x192x192 RGB in [0, 1]; outputs ``conv2d_21`` (1404 = 468 x 3
#: crop pixels) and ``conv2d_31`` (face-presence logit).
FACE_LANDMARK: Final = ModelFile(
    "face_landmark", "mediapipe", "modules/face_landmark/face_landmark.tflite"
)
#: Iris landmarks; input 1x3x64x64 RGB in [0, 1] (a left eye; a right eye is mirrored first);
#: outputs ``output_eyes_contours_and_brows`` (71 x 3) and ``output_iris`` (5 x 3).
IRIS_LANDMARK: Final = ModelFile(
    "iris_landmark", "mediapipe", "modules/iris_landmark/iris_landmark.tflite"
)
#: Person segmentation; input 1x3x256x256 RGB in [0, 1]; output ``activation_10`` 1x1x256x256
#: person probability.
SELFIE_SEGMENTATION: Final = ModelFile(
    "selfie_segmentation",
    "mediapipe",
    "modules/selfie_segmentation/selfie_segmentation.tflite",
)
#: The mesh's triangulation, as Python source (read as text, never imported).
MESH_CONNECTIONS: Final = ModelFile(
    "face_mesh_connections", "mediapipe", "python/solutions/face_mesh_connections.py"
)

MODELS: Final = (FACE_LANDMARK, IRIS_LANDMARK, SELFIE_SEGMENTATION, MESH_CONNECTIONS)


def package_dir(package: str) -> Path:
    """The directory of an installed top-level package, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or ()) if spec is not None else []
    if not locations:
        raise ModelMissing(f"the {package} package (which ships the face models) is not installed")
    return Path(locations[0])


def model_path(model: ModelFile) -> Path:
    """The path of ``model`` inside its package; :class:`ModelMissing` if it is not there."""
    try:
        root = package_dir(model.package)
    except ModelMissing as exc:
        raise ModelMissing(f"{exc.message}; {_INSTALL_HINT}") from None
    path = root / model.relative
    if not path.is_file():
        raise ModelMissing(
            f"{model.filename} was not found in the {model.package} package ({path}); "
            f"{_INSTALL_HINT}"
        )
    return path


def face_landmark_path() -> Path:
    """``face_landmark.tflite``."""
    return model_path(FACE_LANDMARK)


def iris_landmark_path() -> Path:
    """``iris_landmark.tflite``."""
    return model_path(IRIS_LANDMARK)


def selfie_segmentation_path() -> Path:
    """``selfie_segmentation.tflite``."""
    return model_path(SELFIE_SEGMENTATION)


def read_tflite(path: Path) -> Any:
    """Read a TFLite graph with OpenCV DNN's classic engine, which exposes every output of a
    graph (the new engine only the first). OpenCV 5.0 calls it ``ENGINE_CLASSIC``, 5.1 renamed
    it ``ENGINE_OPENCV``."""
    import cv2

    engine = getattr(cv2.dnn, "ENGINE_CLASSIC", None)
    if engine is None:
        engine = cv2.dnn.ENGINE_OPENCV
    return cv2.dnn.readNetFromTFLite(str(path), engine=engine)


_EDGE = re.compile(r"\((\d+),\s*(\d+)\)")


@functools.cache
def tessellation() -> NDArray[np.int32]:
    """The mesh's triangles, ``(852, 3)`` int32 vertex indices (read-only).

    Read from ``FACEMESH_TESSELATION`` in mediapipe's ``face_mesh_connections.py``, whose source
    lists each triangle as its three edges ``(a, b), (b, c), (c, a)`` in order; the parse checks
    that every triple closes. The eyes and the mouth are holes (no triangle spans them).
    """
    text = model_path(MESH_CONNECTIONS).read_text(encoding="utf-8")
    start = text.find("FACEMESH_TESSELATION")
    end = text.find("])", start)
    if start < 0 or end < 0:
        raise ModelMissing("FACEMESH_TESSELATION was not found in face_mesh_connections.py")
    edges = [(int(a), int(b)) for a, b in _EDGE.findall(text, start, end)]
    if not edges or len(edges) % 3:
        raise ModelMissing("face_mesh_connections.py: the tessellation is not a triangle list")
    triangles = []
    for k in range(0, len(edges), 3):
        (a, b), (b2, c), (c2, a2) = edges[k : k + 3]
        if b != b2 or c != c2 or a != a2:
            raise ModelMissing("face_mesh_connections.py: a tessellation triple does not close")
        triangles.append((a, b, c))
    out = np.array(triangles, dtype=np.int32)
    out.setflags(write=False)
    return out


def check_models() -> list[Path]:
    """Every model file's path; :class:`ModelMissing` for the first one missing."""
    paths = [model_path(model) for model in MODELS]
    if tessellation().max() >= 468:
        raise ModelMissing("face_mesh_connections.py: the tessellation has unexpected indices")
    return paths


__all__ = [
    "FACE_LANDMARK",
    "IRIS_LANDMARK",
    "MEDIAPIPE_REQUIREMENT",
    "MESH_CONNECTIONS",
    "MODELS",
    "SELFIE_SEGMENTATION",
    "ModelFile",
    "ModelMissing",
    "check_models",
    "face_landmark_path",
    "iris_landmark_path",
    "model_path",
    "package_dir",
    "selfie_segmentation_path",
    "tessellation",
]
