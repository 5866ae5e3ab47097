"""``mask``: a solid ellipse over each face, dilated beyond the face box.

Nothing of the face's pixels is kept. Parameters: ``dilation`` (ellipse semi-axes as a multiple
of half the box sides; 1.5 by default, at least ``sqrt(2)`` so the box corners are covered) and
``color`` (BGR, black by default).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from pipelines.deid.geometry import CIRCUMSCRIBED, ellipse_region, fill_region
from pipelines.deid.registry import Operator, OperatorOutput, register
from pipelines.faces.detector import Face
from pipelines.params import Params


@dataclass(frozen=True)
class MaskParams:
    """Validated ``mask`` parameters."""

    dilation: float = 1.5
    color: tuple[int, int, int] = (0, 0, 0)


class MaskOperator(Operator[MaskParams]):
    """Paints a solid dilated ellipse over every face."""

    name = "mask"

    def validate(self, params: Mapping[str, object]) -> MaskParams:
        """Check ``dilation`` (sqrt(2)-3) and ``color`` (BGR 0-255)."""
        checked = Params(params, ("dilation", "color"), self.name)
        return MaskParams(
            dilation=checked.number("dilation", 1.5, round(CIRCUMSCRIBED, 4), 3.0),
            color=checked.color("color", (0, 0, 0)),
        )

    def apply(
        self, img: NDArray[np.uint8], faces: Sequence[Face], params: MaskParams
    ) -> OperatorOutput:
        """Return a copy of ``img`` with every face's ellipse filled."""
        out = img.copy()
        for face in faces:
            fill_region(out, ellipse_region(out.shape, face, params.dilation), params.color)
        return OperatorOutput(out)


register(MaskOperator())

__all__ = ["MaskOperator", "MaskParams"]
