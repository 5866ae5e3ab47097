"""The One Euro filter (Casiez, Roussel, Vogel, CHI 2012) for jitter-free landmarks and boxes.

A first-order low-pass filter whose cutoff frequency rises with the signal's speed: slow
movements are smoothed hard (jitter removed), fast movements barely (little lag).

    alpha(fc, dt) = 1 / (1 + tau / dt),   tau = 1 / (2 pi fc)
    dx_hat = lerp(dx_hat_prev, (x - x_hat_prev) / dt, alpha(d_cutoff, dt))
    fc     = min_cutoff + beta * |dx_hat|
    x_hat  = lerp(x_hat_prev, x, alpha(fc, dt))

The filter works element-wise on arrays (each coordinate gets its own adaptive cutoff). Times are
in seconds, cutoffs in hertz; ``beta`` is in 1 / (signal units per second), so it depends on the
units of ``x`` (the tracker feeds coordinates in face sizes, not pixels, so one setting works at
every resolution).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from pipelines.errors import BadParams

F64 = NDArray[np.float64]


def _alpha(cutoff: F64 | float, dt: float) -> F64:
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, dtype=np.float64))
    return np.asarray(1.0 / (1.0 + tau / dt), dtype=np.float64)


class OneEuroFilter:
    """One Euro filter over arrays of any fixed shape.

    ``min_cutoff`` (Hz) sets the smoothing of a still signal (lower: less jitter, more lag),
    ``beta`` how quickly the cutoff rises with speed (higher: less lag when moving), ``d_cutoff``
    (Hz) the smoothing of the speed estimate itself.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0) -> None:
        if not min_cutoff > 0 or not d_cutoff > 0 or not beta >= 0:
            raise BadParams("One Euro filter: cutoffs must be positive and beta non-negative")
        if not all(math.isfinite(v) for v in (min_cutoff, beta, d_cutoff)):
            raise BadParams("One Euro filter parameters must be finite")
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        self._t: float | None = None
        self._x: F64 | None = None
        self._dx: F64 | None = None

    def reset(self) -> None:
        """Forget the history; the next sample passes through unchanged."""
        self._t = self._x = self._dx = None

    @property
    def value(self) -> F64 | None:
        """The last filtered value (``None`` before the first sample)."""
        return None if self._x is None else self._x.copy()

    def filter(self, t: float, x: ArrayLike) -> F64:
        """Filter sample ``x`` taken at time ``t`` (seconds); returns the smoothed value.

        The first sample is returned unchanged. A sample not later than the previous one (a
        repeated timestamp) returns the previous value without updating the state. A sample
        whose shape differs from the previous ones restarts the filter.
        """
        value = np.array(x, dtype=np.float64)
        if self._x is None or self._t is None or self._x.shape != value.shape:
            self._t, self._x, self._dx = float(t), value, np.zeros_like(value)
            return value.copy()
        dt = float(t) - self._t
        if not dt > 0:
            return self._x.copy()
        assert self._dx is not None
        dx = (value - self._x) / dt
        dx_hat = self._dx + _alpha(self.d_cutoff, dt) * (dx - self._dx)
        cutoff = self.min_cutoff + self.beta * np.abs(dx_hat)
        x_hat = self._x + _alpha(cutoff, dt) * (value - self._x)
        self._t, self._x, self._dx = float(t), x_hat, dx_hat
        return x_hat.copy()


__all__ = ["OneEuroFilter"]
