"""k-anonymity over the release quasi-identifiers: full-domain generalization, then suppression.

Each quasi-identifier has a generalization hierarchy (level 0 is the value as captured):

| attribute | 0 | 1 | 2 | 3 |
|---|---|---|---|---|
| ``age_band`` | 10-year band ``30-39`` | 20-year band ``20-39`` | ``*`` | |
| ``region`` | province ``Zhejiang`` | macro-region ``East China`` | ``*`` | |
| ``device_family`` | family ``ios`` | ``mobile`` / ``desktop`` | ``*`` | |
| ``capture_month`` | ``2026-11`` | quarter ``2026-Q4`` | year ``2026`` | ``*`` |

A missing (null) value is ``*`` at every level. :func:`anonymize` searches the whole lattice of
level vectors (3 x 3 x 3 x 4 = 108 nodes), keeps the nodes that need at most ``max_suppression``
of the samples suppressed, and picks the one with the least generalization (sum of normalised
levels; ties: fewer suppressed). Equivalence classes still smaller than k are then suppressed.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["QUASI", "Anonymized", "anonymize", "generalize"]

QUASI: tuple[str, ...] = ("age_band", "region", "device_family", "capture_month")
STAR = "*"

# Macro-regions of the PRC (the usual seven-region division, with Hong Kong, Macau and Taiwan
# in South and East China).
_MACRO: dict[str, tuple[str, ...]] = {
    "North China": ("Beijing", "Tianjin", "Hebei", "Shanxi", "Inner Mongolia", "Nei Mongol"),
    "Northeast China": ("Liaoning", "Jilin", "Heilongjiang"),
    "East China": (
        "Shanghai",
        "Jiangsu",
        "Zhejiang",
        "Anhui",
        "Fujian",
        "Jiangxi",
        "Shandong",
        "Taiwan",
    ),
    "South-Central China": (
        "Henan",
        "Hubei",
        "Hunan",
        "Guangdong",
        "Guangxi",
        "Hainan",
        "Hong Kong",
        "Macau",
        "Macao",
    ),
    "Southwest China": ("Chongqing", "Sichuan", "Guizhou", "Yunnan", "Tibet", "Xizang"),
    "Northwest China": ("Shaanxi", "Gansu", "Qinghai", "Ningxia", "Xinjiang"),
}
_PROVINCE_TO_MACRO = {p.lower(): m for m, ps in _MACRO.items() for p in ps}

_MOBILE = frozenset({"ios", "ipados", "android", "harmonyos", "mobile"})
_DESKTOP = frozenset({"windows", "macos", "linux", "chromeos", "desktop"})

_AGE_RE = re.compile(r"^(\d{1,3})-(\d{1,3})$")
_MONTH_RE = re.compile(r"^(\d{4})-(\d{2})$")


def _age(value: str, level: int) -> str:
    if level == 0:
        return value
    m = _AGE_RE.match(value)
    if level >= 2 or m is None:
        return STAR
    low = int(m.group(1)) // 20 * 20
    return f"{low}-{low + 19}"


def _region(value: str, level: int) -> str:
    if level == 0:
        return value
    if level >= 2:
        return STAR
    return _PROVINCE_TO_MACRO.get(value.strip().lower(), STAR)


def _device(value: str, level: int) -> str:
    if level == 0:
        return value
    if level >= 2:
        return STAR
    v = value.strip().lower()
    return "mobile" if v in _MOBILE else "desktop" if v in _DESKTOP else STAR


def _month(value: str, level: int) -> str:
    if level == 0:
        return value
    m = _MONTH_RE.match(value)
    if level >= 3 or m is None:
        return STAR
    if level == 2:
        return m.group(1)
    return f"{m.group(1)}-Q{(int(m.group(2)) - 1) // 3 + 1}"


_HIERARCHY: dict[str, tuple[int, Callable[[str, int], str]]] = {
    "age_band": (2, _age),
    "region": (2, _region),
    "device_family": (2, _device),
    "capture_month": (3, _month),
}


def generalize(quasi: Mapping[str, Any], levels: Mapping[str, int]) -> dict[str, str]:
    """The quasi-identifiers of one sample at the given levels (missing → ``*``)."""
    out: dict[str, str] = {}
    for attr in QUASI:
        top, fn = _HIERARCHY[attr]
        value = quasi.get(attr)
        level = min(max(int(levels.get(attr, 0)), 0), top)
        out[attr] = STAR if value is None or str(value) == "" else fn(str(value), level)
    return out


@dataclass(frozen=True)
class Anonymized:
    """The outcome: ``kept`` maps a row index to its generalized quasi-identifiers."""

    k: int
    levels: Mapping[str, int]
    kept: Mapping[int, Mapping[str, str]]
    suppressed: tuple[int, ...]
    k_achieved: int
    class_sizes: tuple[int, ...]

    @property
    def histogram(self) -> dict[int, int]:
        """Equivalence-class size → number of classes of that size."""
        return dict(sorted(Counter(self.class_sizes).items()))


def _key(g: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(g[a] for a in QUASI)


def anonymize(
    rows: Sequence[Mapping[str, Any]], k: int, max_suppression: float = 0.1
) -> Anonymized:
    """Generalize then suppress so that every kept equivalence class has at least ``k`` rows.

    Works on the distinct captured combinations with their counts, so the lattice search costs
    108 x (distinct combinations), not 108 x rows.
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    n = len(rows)
    if n == 0:
        return Anonymized(k, {a: 0 for a in QUASI}, {}, (), 0, ())
    budget = int(max_suppression * n)
    base = [generalize(r, {a: 0 for a in QUASI}) for r in rows]
    distinct = Counter(_key(g) for g in base)
    best: tuple[tuple[int, float, int], dict[str, int]] | None = None
    ranges = [range(_HIERARCHY[a][0] + 1) for a in QUASI]
    for combo in itertools.product(*ranges):
        levels = dict(zip(QUASI, combo, strict=True))
        sizes: Counter[tuple[str, ...]] = Counter()
        for key, count in distinct.items():
            sizes[_key(generalize(dict(zip(QUASI, key, strict=True)), levels))] += count
        small = sum(c for c in sizes.values() if c < k)
        loss = sum(lv / _HIERARCHY[a][0] for a, lv in levels.items())
        # within budget first, then least generalization, then fewest suppressed
        fits = small <= budget and small < n
        rank = (0 if fits else 1, loss if fits else small, small)
        if best is None or rank < best[0]:
            best = (rank, levels)
    assert best is not None
    levels = best[1]
    gen = [generalize(g, levels) for g in base]
    counts = Counter(_key(g) for g in gen)
    kept = {i: g for i, g in enumerate(gen) if counts[_key(g)] >= k}
    suppressed = tuple(i for i in range(n) if i not in kept)
    kept_sizes = tuple(sorted(c for c in counts.values() if c >= k))
    return Anonymized(
        k=k,
        levels=levels,
        kept=kept,
        suppressed=suppressed,
        k_achieved=min(kept_sizes) if kept_sizes else 0,
        class_sizes=kept_sizes,
    )
