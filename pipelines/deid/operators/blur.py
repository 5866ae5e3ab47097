"""``blur``: a Gaussian blur over each face, its strength scaled to the face size.

The standard deviation is ``sigma = strength * max(box width, box height)``, so the same setting
removes the same amount of detail from a face of any resolution (a fixed-size kernel would
barely touch a 1080p close-up). Pixels inside the dilated ellipse are replaced by the blurred
ones; the blur sees the surrounding context (3 sigma), so no hard border of unblurred pixels is
averaged in at the rectangle's edge. Large sigmas are computed at a reduced resolution (the
region is downscaled by area so that sigma becomes 4 pixels, blurred, and upscaled), which is a
Gaussian of the same width to within the interpolation: against an exact full-resolution
Gaussian, PSNR 52 / 46 / 40 dB at sigma 11.5 / 23 / 45 px on a 485x439 face region (55 / 51 /
44 dB at 8 pixels, which cost 2-4x more CPU: issue 16).

Light blurring is not de-identification (a recogniser re-identifies faces blurred with a small
sigma); see docs/PRIVACY.md for the measured settings. Parameters: ``strength`` (0.02-1.0,
default 0.25) and ``dilation`` (1.5).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np
from numpy.typing import NDArray

from pipelines.deid.geometry import CIRCUMSCRIBED, composite, ellipse_region, resize_exact
from pipelines.deid.registry import Operator, OperatorOutput, register
from pipelines.faces.detector import Face
from pipelines.params import Params

#: Largest sigma (pixels) applied at full resolution; larger ones run on a downscaled region.
_DIRECT_SIGMA: Final = 4.0


@dataclass(frozen=True)
class BlurParams:
    """Validated ``blur`` parameters."""

    strength: float = 0.25
    dilation: float = 1.5


def gaussian(img: NDArray[np.uint8], sigma: float) -> NDArray[np.uint8]:
    """Gaussian blur of ``img`` with standard deviation ``sigma`` pixels (edges replicated)."""
    if sigma <= _DIRECT_SIGMA:
        out = cv2.GaussianBlur(img, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
        return np.asarray(out, dtype=np.uint8)
    height, width = img.shape[:2]
    factor = sigma / _DIRECT_SIGMA
    small = resize_exact(img, round(width / factor), round(height / factor), cv2.INTER_AREA)
    # Area downscaling already averaged over ~factor pixels (a box of variance factor^2/12).
    rest = math.sqrt(max(_DIRECT_SIGMA**2 - 1.0 / 12.0, 0.25))
    small = np.asarray(
        cv2.GaussianBlur(small, (0, 0), rest, borderType=cv2.BORDER_REPLICATE), dtype=np.uint8
    )
    return resize_exact(small, width, height, cv2.INTER_LINEAR)


def sigma_for(face: Face, params: BlurParams) -> float:
    """The Gaussian's standard deviation (pixels) for ``face``: ``strength`` times the box's
    longer side, at least 0.5 (the one place this rule lives; the planar video path uses it)."""
    return max(0.5, params.strength * max(face.width, face.height))


class BlurOperator(Operator[BlurParams]):
    """Blurs every face with a Gaussian whose sigma is a fraction of the face size."""

    name = "blur"

    def validate(self, params: Mapping[str, object]) -> BlurParams:
        """Check ``strength`` (0.02-1.0) and ``dilation`` (sqrt(2)-3)."""
        checked = Params(params, ("strength", "dilation"), self.name)
        return BlurParams(
            strength=checked.number("strength", 0.25, 0.02, 1.0),
            dilation=checked.number("dilation", 1.5, round(CIRCUMSCRIBED, 4), 3.0),
        )

    def apply(
        self, img: NDArray[np.uint8], faces: Sequence[Face], params: BlurParams
    ) -> OperatorOutput:
        """Return a copy of ``img`` with every face's ellipse blurred."""
        out = img.copy()
        for face in faces:
            sigma = sigma_for(face, params)
            region = ellipse_region(out.shape, face, params.dilation, margin=3.0 * sigma)
            if region.empty:
                continue
            rows, cols = region.slices()
            # Blur the original pixels (not a neighbour's already-blurred ones) for each face.
            composite(out, region, gaussian(np.ascontiguousarray(img[rows, cols]), sigma))
        return OperatorOutput(out)


register(BlurOperator())

__all__ = ["BlurOperator", "BlurParams", "gaussian", "sigma_for"]
