"""Shared fixtures for the pipelines tests: generated media only, never files on disk."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray
from skimage import data

from pipelines.faces import CenterFaceDetector, default_detector

# Region of scikit-image's astronaut (512x512) around the face, with some background; the face
# box CenterFace reports inside this crop is about 90 px wide.
FACE_CROP = (slice(30, 210), slice(150, 300))
FACE_FRACTION = 90 / 150  # face box width / crop width


@pytest.fixture(scope="session")
def astronaut_bgr() -> NDArray[np.uint8]:
    """The astronaut photo shipped with scikit-image, as BGR."""
    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])


@pytest.fixture(scope="session")
def face_crop(astronaut_bgr: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """The astronaut's face with a margin of background (180x150 BGR)."""
    return np.ascontiguousarray(astronaut_bgr[FACE_CROP])


@pytest.fixture(scope="session")
def detector() -> CenterFaceDetector:
    """The process-wide default detector (loaded once for the whole session)."""
    return default_detector()
