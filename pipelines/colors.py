"""Colours as users write them: ``#rrggbb`` or ``#rgb`` hex, or a CSS named colour.

:func:`css_color` normalises one to ``#rrggbb`` (lower case), or returns ``None`` for anything
else; :func:`to_bgr` turns the normalised form into the BGR triple OpenCV draws with. The names
are CSS Color Module Level 4's 148 named colours (Pillow's ``ImageColor.colormap``, imported on
first use). Parameters read them with :meth:`pipelines.params.Params.css_color`.
"""

from __future__ import annotations

import functools
import re
from typing import Final

_HEX: Final = re.compile(r"#(?:[0-9a-f]{3}|[0-9a-f]{6})")


@functools.cache
def css_names() -> dict[str, str]:
    """The CSS named colours, ``name -> #rrggbb``."""
    from PIL import ImageColor

    return {
        name: value.lower()
        for name, value in ImageColor.colormap.items()
        if isinstance(value, str) and _HEX.fullmatch(value.lower())
    }


def css_color(value: object) -> str | None:
    """``value`` as ``#rrggbb`` when it is hex (``#rgb`` or ``#rrggbb``) or a CSS colour name
    (case and surrounding blanks ignored); ``None`` otherwise."""
    if not isinstance(value, str) or len(value) > 32:
        return None
    text = value.strip().lower()
    if _HEX.fullmatch(text):
        return text if len(text) == 7 else "#" + "".join(c * 2 for c in text[1:])
    return css_names().get(text)


def to_bgr(hex_color: str) -> tuple[int, int, int]:
    """The ``(b, g, r)`` triple of a normalised ``#rrggbb`` colour."""
    value = int(hex_color[1:], 16)
    return value & 0xFF, (value >> 8) & 0xFF, value >> 16


__all__ = ["css_color", "css_names", "to_bgr"]
