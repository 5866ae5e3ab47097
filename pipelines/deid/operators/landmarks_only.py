"""``landmarks_only``: the face is removed; its five landmarks are kept as an annotation.

Each face's dilated ellipse is filled with a solid colour (as ``mask`` does) and the five
landmarks (left eye, right eye, nose tip, left and right mouth corner) are returned, normalised
to the image (``x / width``, ``y / height``, clipped to ``[0, 1]``), in the order of the faces.
Parameters: ``dilation`` (1.5), ``color`` (BGR, mid grey), ``draw`` (false: when true, the
landmarks are also drawn as small dots on the filled region).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from pipelines.deid.geometry import CIRCUMSCRIBED, ellipse_region, fill_region
from pipelines.deid.registry import FaceAnnotation, Operator, OperatorOutput, register
from pipelines.faces.detector import Face
from pipelines.params import Params


@dataclass(frozen=True)
class LandmarksOnlyParams:
    """Validated ``landmarks_only`` parameters."""

    dilation: float = 1.5
    color: tuple[int, int, int] = (128, 128, 128)
    draw: bool = False


def normalised_landmarks(face: Face, width: int, height: int) -> tuple[tuple[float, float], ...]:
    """The face's landmarks as ``(x / width, y / height)``, clipped to ``[0, 1]``."""
    return tuple(
        (min(1.0, max(0.0, x / width)), min(1.0, max(0.0, y / height))) for x, y in face.landmarks
    )


class LandmarksOnlyOperator(Operator[LandmarksOnlyParams]):
    """Removes every face and keeps its normalised landmarks."""

    name = "landmarks_only"

    def validate(self, params: Mapping[str, object]) -> LandmarksOnlyParams:
        """Check ``dilation`` (sqrt(2)-3), ``color`` (BGR 0-255) and ``draw`` (bool)."""
        checked = Params(params, ("dilation", "color", "draw"), self.name)
        return LandmarksOnlyParams(
            dilation=checked.number("dilation", 1.5, round(CIRCUMSCRIBED, 4), 3.0),
            color=checked.color("color", (128, 128, 128)),
            draw=checked.boolean("draw", False),
        )

    def apply(
        self, img: NDArray[np.uint8], faces: Sequence[Face], params: LandmarksOnlyParams
    ) -> OperatorOutput:
        """Return the image with faces filled and one annotation per face."""
        out = img.copy()
        height, width = out.shape[:2]
        annotations: list[FaceAnnotation] = []
        for face in faces:
            fill_region(out, ellipse_region(out.shape, face, params.dilation), params.color)
            annotations.append(FaceAnnotation(normalised_landmarks(face, width, height)))
        if params.draw:
            for face in faces:
                radius = max(1, round(min(face.width, face.height) / 40))
                for x, y in face.landmarks:
                    cv2.circle(out, (round(x), round(y)), radius, (255, 255, 255), -1, cv2.LINE_AA)
        return OperatorOutput(out, tuple(annotations))


register(LandmarksOnlyOperator())

__all__ = ["LandmarksOnlyOperator", "LandmarksOnlyParams", "normalised_landmarks"]
