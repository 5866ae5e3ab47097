"""``pixelate``: each face replaced by a mosaic of coarse blocks.

The block size is a fraction of the face: ``blocks`` is the number of blocks across the larger
side of the face box (fewer blocks, stronger). The mosaic is the area average of each block of the
dilated ellipse's bounding rectangle (aligned to its top-left corner), shown inside the
ellipse. Coarse pixelation alone is known to be re-identifiable; see docs/PRIVACY.md for the
measured settings. Parameters: ``blocks`` (2-64, default 6) and ``dilation`` (1.5).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from pipelines.deid.geometry import CIRCUMSCRIBED, Region, composite, ellipse_region, resize_exact
from pipelines.deid.registry import Operator, OperatorOutput, register
from pipelines.faces.detector import Face
from pipelines.params import Params


@dataclass(frozen=True)
class PixelateParams:
    """Validated ``pixelate`` parameters."""

    blocks: int = 6
    dilation: float = 1.5


def mosaic(img: NDArray[np.uint8], block: float) -> NDArray[np.uint8]:
    """``img`` as blocks of ``block`` pixels, each the area average of its pixels."""
    height, width = img.shape[:2]
    small = resize_exact(img, math.ceil(width / block), math.ceil(height / block), cv2.INTER_AREA)
    return resize_exact(small, width, height, cv2.INTER_NEAREST)


def block_for(face: Face, params: PixelateParams) -> float:
    """The mosaic's block side (pixels) for ``face``: the box's longer side over ``blocks``, at
    least 1 (the one place this rule lives; the planar video path uses it)."""
    return max(1.0, max(face.width, face.height) / params.blocks)


class PixelateOperator(Operator[PixelateParams]):
    """Pixelates every face into ``blocks`` blocks across its larger side."""

    name = "pixelate"

    def validate(self, params: Mapping[str, object]) -> PixelateParams:
        """Check ``blocks`` (2-64) and ``dilation`` (sqrt(2)-3)."""
        checked = Params(params, ("blocks", "dilation"), self.name)
        return PixelateParams(
            blocks=checked.integer("blocks", 6, 2, 64),
            dilation=checked.number("dilation", 1.5, round(CIRCUMSCRIBED, 4), 3.0),
        )

    def apply(
        self, img: NDArray[np.uint8], faces: Sequence[Face], params: PixelateParams
    ) -> OperatorOutput:
        """Return a copy of ``img`` with every face's ellipse pixelated."""
        out = img.copy()
        for face in faces:
            region = ellipse_region(out.shape, face, params.dilation)
            if region.empty:
                continue
            block = block_for(face, params)
            _pixelate(out, img, region, block)
        return OperatorOutput(out)


def _pixelate(out: NDArray[np.uint8], src: NDArray[np.uint8], region: Region, block: float) -> None:
    rows, cols = region.slices()
    composite(out, region, mosaic(np.ascontiguousarray(src[rows, cols]), block))


register(PixelateOperator())

__all__ = ["PixelateOperator", "PixelateParams", "block_for", "mosaic"]
