"""The staged k-Same material and its stored format: a job's image with every face masked out
(the same ellipse the later paste fills) plus each face's aligned crop, alignment transform and
detection (:func:`prepare`), serialised as a numpy ``.npz`` without pickles (:func:`pack`,
:func:`unpack`)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from pipelines.deid.align import AlignTransform, align_face
from pipelines.deid.geometry import ellipse_region, fill_region
from pipelines.faces.detector import Face
from pipelines.media.image import decode_image, encode_image

__all__ = ["StagedMaterial", "pack", "prepare", "unpack"]

_BACKGROUND_QUALITY = 95


@dataclass(frozen=True)
class StagedMaterial:
    """A job's image with its faces masked, plus each face's aligned crop and geometry."""

    background: NDArray[np.uint8]
    crops: tuple[NDArray[np.uint8], ...]
    transforms: tuple[AlignTransform, ...]
    faces: tuple[Face, ...]
    dilation: float


def prepare(
    img: NDArray[np.uint8], faces: Sequence[Face], size: int, dilation: float
) -> StagedMaterial:
    """Align every face (``size`` px crops) and mask it out of the image (same ellipse as the
    later paste, so nothing of the face survives outside the pasted average)."""
    if not faces:
        raise ValueError("nothing to stage: no face")
    aligned = [align_face(img, face, size) for face in faces]
    background = img.copy()
    for face in faces:
        fill_region(background, ellipse_region(background.shape, face, dilation), (0, 0, 0))
    return StagedMaterial(
        background,
        tuple(c for c, _ in aligned),
        tuple(t for _, t in aligned),
        tuple(faces),
        dilation,
    )


def pack(material: StagedMaterial) -> bytes:
    """Serialise (numpy ``.npz``, no pickles): JPEG background, raw crops, geometry."""
    buf = io.BytesIO()
    np.savez(
        buf,
        background=np.frombuffer(
            encode_image(material.background, "jpeg", _BACKGROUND_QUALITY), np.uint8
        ),
        crops=np.stack(material.crops),
        matrices=np.array([t.matrix for t in material.transforms], dtype=np.float64),
        size=np.array([material.transforms[0].size], dtype=np.int64),
        boxes=np.array([f.box for f in material.faces], dtype=np.float64),
        landmarks=np.array([f.landmarks for f in material.faces], dtype=np.float64),
        scores=np.array([f.score for f in material.faces], dtype=np.float64),
        dilation=np.array([material.dilation], dtype=np.float64),
    )
    return buf.getvalue()


def unpack(data: bytes) -> StagedMaterial:
    """The inverse of :func:`pack` (``allow_pickle=False``)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        background = decode_image(bytes(z["background"].tobytes()))
        size = int(z["size"][0])
        crops = tuple(np.ascontiguousarray(c, dtype=np.uint8) for c in z["crops"])
        transforms = tuple(
            AlignTransform(
                (float(m[0]), float(m[1]), float(m[2]), float(m[3]), float(m[4]), float(m[5])),
                size,
            )
            for m in z["matrices"]
        )
        faces = tuple(
            Face(
                (float(b[0]), float(b[1]), float(b[2]), float(b[3])),
                tuple((float(x), float(y)) for x, y in lm),
                float(sc),
            )
            for b, lm, sc in zip(z["boxes"], z["landmarks"], z["scores"], strict=True)
        )
        dilation = float(z["dilation"][0])
    return StagedMaterial(background, crops, transforms, faces, dilation)
