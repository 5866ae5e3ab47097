"""The stylised cartoon render of an aligned face crop.

Three steps, each with its parameters recorded in the avatar spec (:class:`RenderParams`):

1. *Smoothing*: ``passes`` rounds of a bilateral filter (edge-preserving: flattens skin and
   fabric texture, keeps the contours of eyes, mouth and hair).
2. *Colour quantisation*: k-means (``colors`` clusters, Lloyd iterations from a deterministic
   k-means++ seeding) in Lab on a 64x64 area-averaged reduction of the crop (the reduction
   averages texture away as the smoothing would); every pixel of the smoothed full-size crop
   then takes the cluster centre nearest to its colour (looked up in a table of 32x32x32 colour
   bins). The centres are the avatar's palette.
3. *Outlines*: an adaptive mean threshold of the median-blurred grey image (pixels darker than
   their ``block_size`` neighbourhood by more than ``c`` levels), with specks smaller than
   ``min_speck`` pixels removed, drawn in the darkest palette colour, darkened further.

The result is deterministic for a given crop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, cast

import cv2
import numpy as np
from numpy.typing import NDArray

from pipelines.pta.colour import lab_to_hex, to_lab

F32 = NDArray[np.float32]

#: Side of the reduction the palette is learned on.
_PALETTE_SIDE: Final = 64
_KMEANS_ITERATIONS: Final = 12
#: Bins per channel of the pixel-to-centre lookup table.
_LEVELS: Final = 32


@dataclass(frozen=True)
class RenderParams:
    """How the cartoon is drawn (recorded in the spec's ``render`` object)."""

    colors: int = 8
    passes: int = 2
    bilateral_d: int = 9
    sigma_color: float = 40.0
    sigma_space: float = 7.0
    block_size: int = 9
    c: float = 5.0
    min_speck: int = 12
    outline_darken: float = 0.45

    def to_json(self) -> dict[str, Any]:
        """The smoothing, quantisation and outline parameters as JSON."""
        return {
            "smoothing": {
                "method": "bilateral",
                "passes": self.passes,
                "d": self.bilateral_d,
                "sigma_color": self.sigma_color,
                "sigma_space": self.sigma_space,
            },
            "quantisation": {"method": "kmeans_lab", "colors": self.colors},
            "outline": {
                "method": "adaptive_mean_threshold",
                "block_size": self.block_size,
                "c": self.c,
                "min_speck": self.min_speck,
            },
        }


def smooth(crop: NDArray[np.uint8], params: RenderParams) -> NDArray[np.uint8]:
    """Edge-preserving smoothing: ``passes`` bilateral filters."""
    out = crop
    for _ in range(params.passes):
        out = cast(
            NDArray[np.uint8],
            cv2.bilateralFilter(out, params.bilateral_d, params.sigma_color, params.sigma_space),
        )
    return out


def kmeans(samples: F32, k: int, iterations: int = _KMEANS_ITERATIONS) -> F32:
    """Cluster centres of ``(N, 3)`` samples: deterministic k-means++ seeding, then Lloyd.

    Fewer distinct samples than ``k`` give fewer centres.
    """
    rng = np.random.default_rng(0)
    first = samples[int(rng.integers(samples.shape[0]))]
    chosen = [first]
    dist = np.sum((samples - first) ** 2, axis=1)
    for _ in range(1, k):
        total = float(dist.sum())
        if total <= 0:
            break
        pick = samples[int(rng.choice(samples.shape[0], p=dist / total))]
        chosen.append(pick)
        dist = np.minimum(dist, np.sum((samples - pick) ** 2, axis=1))
    centres = np.array(chosen, dtype=np.float32)
    for _ in range(iterations):
        labels = _nearest_centre(samples, centres)
        counts = np.bincount(labels, minlength=len(centres)).astype(np.float32)
        sums = np.stack(
            [np.bincount(labels, weights=samples[:, j], minlength=len(centres)) for j in range(3)],
            axis=1,
        ).astype(np.float32)
        moved = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centres)
        done = bool(np.allclose(moved, centres, atol=1e-3))
        centres = moved.astype(np.float32)
        if done:
            break
    return centres


def _nearest_centre(samples: F32, centres: F32) -> NDArray[np.intp]:
    d = (
        np.sum(samples**2, axis=1)[:, None]
        - 2 * samples @ centres.T
        + np.sum(centres**2, axis=1)[None, :]
    )
    return cast(NDArray[np.intp], np.argmin(d, axis=1))


def palette(crop: NDArray[np.uint8], params: RenderParams) -> F32:
    """The Lab cluster centres of a crop (its area-averaged reduction), darkest first."""
    small = cv2.resize(crop, (_PALETTE_SIDE, _PALETTE_SIDE), interpolation=cv2.INTER_AREA)
    centres = kmeans(to_lab(cast(NDArray[np.uint8], small)).reshape(-1, 3), params.colors)
    return centres[np.argsort(centres[:, 0], kind="stable")]


def outlines(smoothed: NDArray[np.uint8], params: RenderParams) -> NDArray[np.bool_]:
    """Outline pixels of a smoothed crop."""
    gray = cv2.medianBlur(cv2.cvtColor(smoothed, cv2.COLOR_BGR2GRAY), 5)
    binary = cv2.adaptiveThreshold(
        gray,
        255,
        cv2.ADAPTIVE_THRESH_MEAN_C,
        cv2.THRESH_BINARY_INV,
        params.block_size,
        params.c,
    )
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    big = np.zeros(count, dtype=bool)
    big[1:] = stats[1:, cv2.CC_STAT_AREA] >= params.min_speck
    lines: NDArray[np.bool_] = big[labels]
    return lines


def cartoon(
    crop: NDArray[np.uint8], params: RenderParams, centres: F32 | None = None
) -> NDArray[np.uint8]:
    """The cartoon of an aligned crop; ``centres`` (Lab, darkest first) is the palette, learned
    from the crop with :func:`palette` when not given."""
    smoothed = smooth(crop, params)
    if centres is None:
        centres = palette(crop, params)
    labels = assign(smoothed, centres)
    centre_bgr = _lab_to_bgr(centres)
    out = centre_bgr[labels].reshape(crop.shape)
    ink = (centre_bgr[0].astype(np.float32) * params.outline_darken).astype(np.uint8)
    out[outlines(smoothed, params)] = ink
    return np.ascontiguousarray(out)


def assign(image: NDArray[np.uint8], centres: F32) -> NDArray[np.intp]:
    """Index of the nearest Lab centre for every pixel (flattened), through a lookup table of
    ``_LEVELS`` cubed BGR bins: one gather per pixel instead of a distance per centre."""
    step = 256 // _LEVELS
    grid = np.arange(_LEVELS, dtype=np.uint8) * step + step // 2
    b, g, r = np.meshgrid(grid, grid, grid, indexing="ij")
    bins = np.stack([b, g, r], axis=-1).reshape(-1, 3)
    table = _nearest_centre(to_lab(bins), centres)
    shift = int(np.log2(step))
    q = (image >> shift).astype(np.intp)
    index = (q[..., 0] * _LEVELS + q[..., 1]) * _LEVELS + q[..., 2]
    return cast(NDArray[np.intp], table[index.ravel()])


def _lab_to_bgr(centres: F32) -> NDArray[np.uint8]:
    px = cv2.cvtColor(centres.reshape(-1, 1, 3).astype(np.float32), cv2.COLOR_Lab2BGR)
    bgr = np.clip(np.rint(px.reshape(-1, 3) * 255), 0, 255)
    return cast(NDArray[np.uint8], bgr.astype(np.uint8))


def palette_hex(centres: F32) -> list[str]:
    """Hex colours of Lab palette centres."""
    return [lab_to_hex(c) for c in centres.tolist()]


__all__ = [
    "RenderParams",
    "assign",
    "cartoon",
    "kmeans",
    "outlines",
    "palette",
    "palette_hex",
    "smooth",
]
