"""The de-identification operators, one module each; importing this package registers them."""

from pipelines.deid.operators import blur, k_same, landmarks_only, mask, pixelate

__all__ = ["blur", "k_same", "landmarks_only", "mask", "pixelate"]
