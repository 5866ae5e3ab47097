"""Photo to avatar: choose a face, fit its mesh, measure the avatar spec, draw the outputs.

The spec (:class:`pipelines.pta.spec.AvatarSpec`) is measured on the photo
(:mod:`pipelines.pta.measure`); everything drawn — ``avatar.svg``, ``avatar.png``
(:mod:`pipelines.pta.render`) and ``avatar.glb`` (:mod:`pipelines.pta.gltf`) — is drawn from
the spec alone, so no pixel of the photo reaches an output.

On a group photo the avatar is made for one face: ``"largest"`` (the default: the largest box)
or an index into the detector's list (the ``detect`` job's ``faces`` order); the spec's
``source`` says which and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np
from numpy.typing import NDArray

from pipelines.errors import BadParams, NoFace
from pipelines.faces.detector import Face
from pipelines.faces.mesh import FaceMesher, default_mesher
from pipelines.faces.segmentation import segment_person
from pipelines.pta import colour, measure
from pipelines.pta.gltf import render_glb
from pipelines.pta.render import render_png, render_svg
from pipelines.pta.spec import STYLES, AvatarSpec, EyeParams, RenderParams, SourceInfo

#: How the face is chosen: ``"largest"`` or an index.
FaceChoice = str | int
LARGEST: Final = "largest"


@dataclass(frozen=True)
class AvatarConfig:
    """Which face (``face``), and the default drawing (``style``, PNG ``size``)."""

    face: FaceChoice = LARGEST
    style: str = STYLES[0]
    size: int = 512

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise BadParams(f"style must be one of {', '.join(STYLES)}")
        if not 64 <= self.size <= 2048:
            raise BadParams("size must be from 64 to 2048 pixels")
        if self.face != LARGEST and (
            isinstance(self.face, bool) or not isinstance(self.face, int) or self.face < 0
        ):
            raise BadParams('face must be "largest" or a face index from 0')


@dataclass(frozen=True)
class AvatarOutputs:
    """The spec and the files drawn from it."""

    spec: AvatarSpec
    svg: bytes
    png: bytes
    glb: bytes


def choose_face(faces: Sequence[Face], choice: FaceChoice) -> tuple[int, str]:
    """Index of the chosen face and how it was chosen; ``NoFace`` when there is none, and
    ``BadParams`` for an index past the faces found."""
    if not faces:
        raise NoFace("no face was found in the photo")
    if choice == LARGEST:
        areas = [f.width * f.height for f in faces]
        return int(np.argmax(areas)), "largest"
    assert isinstance(choice, int)
    if choice >= len(faces):
        raise BadParams(f"face index {choice} is out of range: {len(faces)} face(s) found")
    return choice, "index"


def measure_spec(
    image: NDArray[np.uint8],
    faces: Sequence[Face],
    config: AvatarConfig = AvatarConfig(),
    mesher: FaceMesher | None = None,
) -> AvatarSpec:
    """The avatar spec of the chosen face of a BGR photo."""
    index, chosen_by = choose_face(faces, config.face)
    fitted = (mesher or default_mesher()).fit(image, faces[index])
    geo = measure.geometry(fitted)
    x0, y0, x1, y1 = measure.head_crop(image.shape, faces[index].box)
    scale = measure.working_scale(fitted)
    crop = np.ascontiguousarray(image[y0:y1, x0:x1])
    if scale < 1.0:
        size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
        crop = np.ascontiguousarray(cv2.resize(crop, size, interpolation=cv2.INTER_AREA))
    mesh = measure.shifted(fitted, x0, y0, scale)
    lab = colour.to_lab(measure.white_balance(crop, measure.white_balance_gains(image)))
    skin = measure.skin(lab, mesh)
    pose = fitted.pose
    return AvatarSpec(
        face=geo.face,
        eyes=EyeParams(
            shape=geo.eyes_shape,
            size=geo.eye_size,
            opening=geo.eye_opening,
            spacing=geo.eye_spacing,
            tilt_deg=geo.eye_tilt_deg,
            iris=measure.iris(lab, mesh),
        ),
        brows=geo.brows,
        nose=geo.nose,
        mouth=geo.mouth,
        skin=skin,
        hair=measure.hair(lab, segment_person(crop), mesh, skin.lab),
        glasses=measure.glasses(crop, mesh),
        render=RenderParams(style=config.style, size=config.size),
        source=SourceInfo(
            faces_found=len(faces),
            face=index,
            chosen_by=chosen_by,
            pose_deg=(round(pose.yaw, 2), round(pose.pitch, 2), round(pose.roll, 2)),
        ),
    )


def draw(spec: AvatarSpec) -> AvatarOutputs:
    """Every output drawn from the spec alone."""
    return AvatarOutputs(
        spec=spec, svg=render_svg(spec), png=render_png(spec), glb=render_glb(spec)
    )


def make_avatar(
    image: NDArray[np.uint8], faces: Sequence[Face], config: AvatarConfig = AvatarConfig()
) -> AvatarOutputs:
    """Measure the chosen face and draw the avatar."""
    return draw(measure_spec(image, faces, config))


__all__ = [
    "LARGEST",
    "AvatarConfig",
    "AvatarOutputs",
    "FaceChoice",
    "choose_face",
    "draw",
    "make_avatar",
    "measure_spec",
]
