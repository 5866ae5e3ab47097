"""``k_same``: k-Same-Pixel (Newton, Sweeney & Malin, 2005).

Faces are aligned by their landmarks (:func:`~pipelines.deid.align.align_face`), grouped into
clusters of at least ``k`` faces, and every face is replaced by the pixel average of its cluster:
the *same* image for every member, warped back to each member's pose. Any recogniser given a
de-identified face and the k originals of its cluster can therefore do no better than a 1/k guess
(each de-identified face is a function of the cluster only, not of the member).

Clustering (:func:`k_same_clusters`) is the greedy scheme of the paper: while at least ``2k``
faces remain, take the first remaining face and its ``k - 1`` nearest remaining faces (Euclidean
distance in pixel space) as a cluster; the last ``k`` to ``2k - 1`` faces form the final cluster.
Every cluster therefore has between ``k`` and ``2k - 1`` members. A batch of fewer than ``k``
faces is refused (:class:`KSameBatchTooSmall`): nothing can be averaged into anonymity.

In one image, the batch is the image's faces (so an image with fewer than ``k`` faces is refused;
a single-face job needs crops of several jobs batched together, which is the worker's side). In a
video, each frame's tracked faces are one batch. Parameters: ``k`` (2-64, default 3), ``size``
(aligned crop side, 64-512, default 128), ``dilation`` (paste-back ellipse, 1.5).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from pipelines.deid.align import DEFAULT_SIZE, align_face, paste_into
from pipelines.deid.geometry import CIRCUMSCRIBED
from pipelines.deid.registry import Operator, OperatorOutput, register
from pipelines.errors import BadParams
from pipelines.faces.detector import Face
from pipelines.params import Params


class KSameBatchTooSmall(BadParams):
    """k-Same was given fewer faces than ``k``."""

    default_message = "k-Same needs at least k faces in a batch"


@dataclass(frozen=True)
class KSameParams:
    """Validated ``k_same`` parameters."""

    k: int = 3
    size: int = DEFAULT_SIZE
    dilation: float = 1.5


def _check_batch(crops: Sequence[NDArray[np.uint8]], k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise BadParams("k must be a positive integer")
    if len(crops) < k:
        raise KSameBatchTooSmall(f"k-Same needs at least k={k} faces, got {len(crops)}")
    shape = crops[0].shape
    for crop in crops:
        if not isinstance(crop, np.ndarray) or crop.dtype != np.uint8 or crop.shape != shape:
            raise ValueError("k-Same crops must be uint8 arrays of one shape")


def k_same_clusters(crops: Sequence[NDArray[np.uint8]], k: int) -> list[list[int]]:
    """Greedy k-Same clustering of ``crops``: lists of indices, each of ``k`` to ``2k - 1``."""
    _check_batch(crops, k)
    vectors = np.stack([c.reshape(-1).astype(np.float32) for c in crops])
    remaining = list(range(len(crops)))
    clusters: list[list[int]] = []
    while len(remaining) >= 2 * k:
        seed = remaining[0]
        others = np.array(remaining[1:])
        dist = np.linalg.norm(vectors[others] - vectors[seed], axis=1)
        nearest = others[np.argsort(dist, kind="stable")[: k - 1]]
        cluster = [seed, *sorted(int(i) for i in nearest)]
        clusters.append(cluster)
        taken = set(cluster)
        remaining = [i for i in remaining if i not in taken]
    clusters.append(remaining)
    return clusters


def k_same(crops: Sequence[NDArray[np.uint8]], k: int) -> list[NDArray[np.uint8]]:
    """k-Same-Pixel over aligned crops: each crop replaced by its cluster's average.

    Returns one array per input crop, in input order; members of one cluster receive identical
    arrays. Fewer than ``k`` crops raise :class:`KSameBatchTooSmall`.
    """
    clusters = k_same_clusters(crops, k)
    out: list[NDArray[np.uint8] | None] = [None] * len(crops)
    for cluster in clusters:
        total = np.zeros(crops[0].shape, dtype=np.float64)
        for i in cluster:
            total += crops[i]
        average = np.clip(np.round(total / len(cluster)), 0, 255).astype(np.uint8)
        for i in cluster:
            out[i] = average.copy()
    return [a for a in out if a is not None]


class KSameOperator(Operator[KSameParams]):
    """Replaces the faces of an image by k-Same-Pixel cluster averages."""

    name = "k_same"

    def validate(self, params: Mapping[str, object]) -> KSameParams:
        """Check ``k`` (2-64), ``size`` (64-512) and ``dilation`` (sqrt(2)-3)."""
        checked = Params(params, ("k", "size", "dilation"), self.name)
        return KSameParams(
            k=checked.integer("k", 3, 2, 64),
            size=checked.integer("size", DEFAULT_SIZE, 64, 512),
            dilation=checked.number("dilation", 1.5, round(CIRCUMSCRIBED, 4), 3.0),
        )

    def apply(
        self, img: NDArray[np.uint8], faces: Sequence[Face], params: KSameParams
    ) -> OperatorOutput:
        """Return ``img`` with its faces k-Same-averaged (no faces: an unchanged copy)."""
        if not faces:
            return OperatorOutput(img.copy())
        if len(faces) < params.k:
            raise KSameBatchTooSmall(
                f"k-Same needs at least k={params.k} faces in the image, found {len(faces)}"
            )
        aligned = [align_face(img, face, params.size) for face in faces]
        averaged = k_same([crop for crop, _ in aligned], params.k)
        out = img.copy()
        for face, (_, transform), crop in zip(faces, aligned, averaged, strict=True):
            paste_into(out, crop, transform, face, params.dilation)
        return OperatorOutput(out)


register(KSameOperator())

__all__ = ["KSameBatchTooSmall", "KSameOperator", "KSameParams", "k_same", "k_same_clusters"]
