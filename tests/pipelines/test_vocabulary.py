"""One vocabulary for the pipelines: the registry type, the parameter reader and format sniffing
that job types, AR effects and de-identification operators share."""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

import pytest

from pipelines.ar import effect_names, get_effect
from pipelines.ar.base import EFFECTS
from pipelines.deid import get_operator, operator_names
from pipelines.deid.registry import OPERATORS
from pipelines.errors import BadParams, UnsupportedFormat
from pipelines.media import sniff
from pipelines.params import EFFECT, JOB, OPERATOR, Params
from pipelines.registry import Registry
from worker.jobs.errors import UnknownJobType
from worker.jobs.registry import JOB_TYPES, handler, names

ROOT = Path(__file__).resolve().parents[2]


class _Thing:
    name: ClassVar[str] = "thing"


class _Other:
    name: ClassVar[str] = "thing"


def _unknown(name: object, known: str) -> BadParams:
    return BadParams(f"no such thing {name!r}; known: {known}")


def test_registry_registers_loads_and_refuses() -> None:
    things: Registry[type[_Thing]] = Registry("thing", "pipelines.errors", _unknown)
    assert things.register(_Thing) is _Thing
    things.register(_Thing)  # the same class again: no-op
    assert things.get("thing") is _Thing and "thing" in things
    assert things.names() == ("thing",)
    with pytest.raises(ValueError, match="thing 'thing' registered twice"):
        things.register(_Other)  # type: ignore[arg-type]
    with pytest.raises(BadParams, match="no such thing 'nope'; known: thing"):
        things.get("nope")
    with pytest.raises(BadParams):
        things.get(["thing"])


def test_the_three_registries_are_one_type() -> None:
    assert all(isinstance(r, Registry) for r in (EFFECTS, OPERATORS, JOB_TYPES))
    assert names() == ["ar", "deid", "detect", "pta"] and handler("detect").name == "detect"
    assert effect_names() == ["background", "beautify", "lut", "makeup", "reshape", "sticker"]
    assert operator_names() == ("blur", "k_same", "landmarks_only", "mask", "pixelate")
    assert get_effect("lut").name == "lut" and get_operator("blur").name == "blur"
    with pytest.raises(UnknownJobType, match="unknown job type 'x'; known: ar, deid, detect, pta"):
        handler("x")


@pytest.mark.parametrize(
    ("wording", "owner", "message"),
    [
        (JOB, "", "unknown parameter(s): a, z"),
        (EFFECT, "fx", "fx: unknown field(s) a, z; allowed: k, n"),
        (OPERATOR, "op", "op: unknown parameter(s) a, z; allowed: k, n"),
    ],
)
def test_params_unknown_keys_keep_each_familys_wording(
    wording: object, owner: str, message: str
) -> None:
    with pytest.raises(BadParams) as caught:
        Params({"z": 1, "a": 2, "k": 3}, ("n", "k"), owner, wording)  # type: ignore[arg-type]
    assert caught.value.message == message


def test_params_rules() -> None:
    p = Params({"f": 0.5, "i": 3, "b": True, "c": [1, 2, 3], "s": "x"}, "fibcs", "op", OPERATOR)
    assert p.number("f", 0.0, 0.0, 1.0) == 0.5 and p.integer("i", 0, 0, 9) == 3
    assert p.boolean("b", False) is True and p.color("c", (0, 0, 0)) == (1, 2, 3)
    assert p.choice("s", ("x", "y"), "y") == "x" and p.number("absent", 0.25, 0, 1) == 0.25
    bad = [
        ({"f": True}, lambda q: q.number("f", 0, 0, 1), "op: f must be a number"),
        ({"f": float("nan")}, lambda q: q.number("f", 0, 0, 1), "op: f must be between 0 and 1"),
        ({"f": 10**400}, lambda q: q.number("f", 0, 0, 1), "op: f must be between 0 and 1"),
        ({"i": 2.0}, lambda q: q.integer("i", 0, 0, 9), "op: i must be an integer"),
        ({"i": 10}, lambda q: q.integer("i", 0, 0, 9), "op: i must be between 0 and 9"),
        ({"b": 1}, lambda q: q.boolean("b", False), "op: b must be true or false"),
        ({"c": [1, 2]}, lambda q: q.color("c", (0, 0, 0)), "op: c must be three integers"),
        ({"s": ["x"]}, lambda q: q.choice("s", ("x", "y"), "y"), "op: s must be one of x, y"),
    ]
    for params, read, message in bad:
        with pytest.raises(BadParams) as caught:
            read(Params(params, "fibcs", "op", OPERATOR))
        assert caught.value.message.startswith(message), caught.value.message
    with pytest.raises(BadParams, match=r"^op: parameters must be a mapping$"):
        Params([("f", 1)], "f", "op")
    with pytest.raises(BadParams, match=r"^quality must be an integer from 1 to 100$"):
        Params({"quality": 0}, ("quality",), wording=JOB).integer("quality", 90, 1, 100)
    with pytest.raises(BadParams, match=r"^fx: s must be a number from 0 to 1$"):
        Params({"s": "x"}, ("s",), "fx", EFFECT).number("s", 0.5, 0.0, 1.0)


def ftyp(major: bytes, *compatible: bytes) -> bytes:
    payload = major + b"\x00\x00\x00\x00" + b"".join(compatible)
    return (8 + len(payload)).to_bytes(4, "big") + b"ftyp" + payload + b"\x00" * 16


def test_sniffing_images_and_videos() -> None:
    assert sniff.media_kind(ftyp(b"heic", b"mif1")) == "image"
    assert sniff.media_kind(ftyp(b"isom", b"mp42")) == "video"
    assert sniff.media_kind(ftyp(b"qt  ")) == "video"
    assert sniff.sniff_video_container(ftyp(b"qt  ")) == "mov"
    assert sniff.media_kind(b"\x1a\x45\xdf\xa3" + b"\x00" * 8) == "video"
    for still in (b"heic", b"mif1", b"avif", b"jpeg"):
        with pytest.raises(UnsupportedFormat, match="still image"):
            sniff.sniff_video_container(ftyp(still))
    with pytest.raises(UnsupportedFormat, match="a video, not an image"):
        sniff.sniff_image_format(ftyp(b"isom", b"mp42"))
    with pytest.raises(UnsupportedFormat, match="neither"):
        sniff.media_kind(b"GIF89a" + b"\x00" * 16)


def test_brand_tables_and_magic_live_in_one_module() -> None:
    """The ISO-BMFF brand tables and the EBML magic are written once, in media/sniff.py."""
    brand = re.compile(rb'b"(heic|mif1|avif|isom|mp42)"|\\x1a\\x45\\xdf\\xa3')
    holders = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "pipelines").rglob("*.py")
        if brand.search(path.read_bytes())
    )
    assert holders == ["pipelines/media/sniff.py"]
