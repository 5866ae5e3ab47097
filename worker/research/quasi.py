"""Quasi-identifiers, generalized at capture: the raw values are never kept anywhere.

The upstream may send a few attributes with a job (``age``, ``region``, ``device``); they are
generalized here, at submit, before anything is stored:

* ``age`` → a 10-year band (``"30-39"``); not a whole number from 0 to 130 → ``None``;
* ``region`` → one of the PRC's 34 province-level divisions (canonical names in
  :data:`PROVINCES`), from its pinyin or Chinese name with or without the suffix (``"Zhejiang"``,
  ``"浙江"``, ``"浙江省"``, ``"Zhejiang Sheng"``) or from a provincial capital or a few large cities
  (``"Hangzhou"``, ``"杭州"``); anything else → ``None`` (never kept raw);
* ``device`` → a family (``ios``, ``android``, ``harmonyos``, ``windows``, ``macos``, ``linux``,
  ``other``), never a model, a device id or an IP;
* the capture month (``"YYYY-MM"``) comes from the job's creation time, not from the upstream.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

ATTRIBUTES: Final = ("age", "region", "device")
DEVICE_FAMILIES: Final = ("ios", "android", "harmonyos", "windows", "macos", "linux", "other")


class UnknownAttribute(ValueError):
    """An attribute name the service does not accept (refused before anything is stored)."""


class InvalidAttribute(UnknownAttribute):
    """A malformed value of a known attribute (``age=abc``, ``age=300``, ``region=Atlantis``):
    refused with the accepted forms, never stored as unknown. The value is never echoed."""


# The accepted forms, for the refusal message (an unrecognised device is kept as ``other``).
ACCEPTED_FORMS: Final[Mapping[str, str]] = {
    "age": "a whole number of years from 0 to 130",
    "region": "a province-level division of the PRC, in pinyin or Chinese (Zhejiang, 浙江, "
    "浙江省), or its capital or a large city (Hangzhou)",
    "device": "a device model or OS string (iPhone14,2, Pixel 8, Windows 11)",
}


# Canonical name → Chinese name, for the 34 province-level divisions.
PROVINCES: Final[Mapping[str, str]] = {
    "Beijing": "北京",
    "Tianjin": "天津",
    "Shanghai": "上海",
    "Chongqing": "重庆",
    "Hebei": "河北",
    "Shanxi": "山西",
    "Liaoning": "辽宁",
    "Jilin": "吉林",
    "Heilongjiang": "黑龙江",
    "Jiangsu": "江苏",
    "Zhejiang": "浙江",
    "Anhui": "安徽",
    "Fujian": "福建",
    "Jiangxi": "江西",
    "Shandong": "山东",
    "Henan": "河南",
    "Hubei": "湖北",
    "Hunan": "湖南",
    "Guangdong": "广东",
    "Hainan": "海南",
    "Sichuan": "四川",
    "Guizhou": "贵州",
    "Yunnan": "云南",
    "Shaanxi": "陕西",
    "Gansu": "甘肃",
    "Qinghai": "青海",
    "Taiwan": "台湾",
    "Nei Mongol": "内蒙古",
    "Guangxi": "广西",
    "Xizang": "西藏",
    "Ningxia": "宁夏",
    "Xinjiang": "新疆",
    "Hong Kong": "香港",
    "Macao": "澳门",
}

_ALIASES: Final[Mapping[str, str]] = {
    "inner mongolia": "Nei Mongol",
    "neimenggu": "Nei Mongol",
    "tibet": "Xizang",
    "macau": "Macao",
    "aomen": "Macao",
    "xianggang": "Hong Kong",
    "hk": "Hong Kong",
    "peking": "Beijing",
}

# Provincial capitals and a few large cities whose pinyin is unambiguous (Fuzhou and Suzhou are
# not: two cities each), in pinyin and Chinese.
_CITIES: Final[Mapping[str, str]] = {
    "shijiazhuang": "Hebei",
    "石家庄": "Hebei",
    "taiyuan": "Shanxi",
    "太原": "Shanxi",
    "shenyang": "Liaoning",
    "沈阳": "Liaoning",
    "dalian": "Liaoning",
    "大连": "Liaoning",
    "changchun": "Jilin",
    "长春": "Jilin",
    "harbin": "Heilongjiang",
    "哈尔滨": "Heilongjiang",
    "nanjing": "Jiangsu",
    "南京": "Jiangsu",
    "hangzhou": "Zhejiang",
    "杭州": "Zhejiang",
    "ningbo": "Zhejiang",
    "宁波": "Zhejiang",
    "hefei": "Anhui",
    "合肥": "Anhui",
    "福州": "Fujian",
    "xiamen": "Fujian",
    "厦门": "Fujian",
    "nanchang": "Jiangxi",
    "南昌": "Jiangxi",
    "jinan": "Shandong",
    "济南": "Shandong",
    "qingdao": "Shandong",
    "青岛": "Shandong",
    "zhengzhou": "Henan",
    "郑州": "Henan",
    "wuhan": "Hubei",
    "武汉": "Hubei",
    "changsha": "Hunan",
    "长沙": "Hunan",
    "guangzhou": "Guangdong",
    "广州": "Guangdong",
    "shenzhen": "Guangdong",
    "深圳": "Guangdong",
    "haikou": "Hainan",
    "海口": "Hainan",
    "chengdu": "Sichuan",
    "成都": "Sichuan",
    "guiyang": "Guizhou",
    "贵阳": "Guizhou",
    "kunming": "Yunnan",
    "昆明": "Yunnan",
    "xian": "Shaanxi",
    "西安": "Shaanxi",
    "lanzhou": "Gansu",
    "兰州": "Gansu",
    "xining": "Qinghai",
    "西宁": "Qinghai",
    "taipei": "Taiwan",
    "台北": "Taiwan",
    "hohhot": "Nei Mongol",
    "呼和浩特": "Nei Mongol",
    "nanning": "Guangxi",
    "南宁": "Guangxi",
    "lhasa": "Xizang",
    "拉萨": "Xizang",
    "yinchuan": "Ningxia",
    "银川": "Ningxia",
    "urumqi": "Xinjiang",
    "乌鲁木齐": "Xinjiang",
}

# Suffixes stripped before lookup (longest first).
_ZH_SUFFIXES: Final = (
    "维吾尔自治区",
    "特别行政区",
    "壮族自治区",
    "回族自治区",
    "自治区",
    "省",
    "市",
)
_PINYIN_SUFFIXES: Final = (
    "specialadministrativeregion",
    "autonomousregion",
    "municipality",
    "province",
    "zizhiqu",
    "sheng",
    "shi",
    "sar",
)


def _squash(text: str) -> str:
    return re.sub(r"[\s\-_'\u2019.,]", "", text.casefold())


_BY_NAME: Final[dict[str, str]] = {
    **{_squash(name): name for name in PROVINCES},
    **{zh: name for name, zh in PROVINCES.items()},
    **{_squash(alias): name for alias, name in _ALIASES.items()},
}


def generalize_region(value: str) -> str | None:
    """The canonical province-level division of ``value``, or ``None`` if not recognised."""
    text = value.strip()
    if not text or len(text) > 64:
        return None
    for candidate in (text, *(text[: -len(s)] for s in _ZH_SUFFIXES if text.endswith(s))):
        if candidate in _BY_NAME:
            return _BY_NAME[candidate]
        if candidate in _CITIES:
            return _CITIES[candidate]
    squashed = _squash(text)
    forms = [squashed] + [
        squashed[: -len(s)] for s in _PINYIN_SUFFIXES if squashed.endswith(s) and squashed != s
    ]
    for form in forms:
        if form in _BY_NAME:
            return _BY_NAME[form]
        if form in _CITIES:
            return _CITIES[form]
    return None


def generalize_age(value: str | int) -> str | None:
    """A 10-year band (``34`` → ``"30-39"``); ``None`` unless a whole number from 0 to 130."""
    text = str(value).strip()
    if not text.isdigit() or len(text) > 3:
        return None
    age = int(text)
    if age > 130:
        return None
    low = age // 10 * 10
    return f"{low}-{low + 9}"


_DEVICE_RULES: Final[tuple[tuple[str, re.Pattern[str]], ...]] = (
    ("harmonyos", re.compile(r"harmony|openharmony|hongmeng|鸿蒙")),
    ("ios", re.compile(r"iphone|ipad|ipod|\bios\b|ipados|watchos")),
    ("macos", re.compile(r"macos|mac os|macintosh|macbook|imac|\bmac\b|os x|darwin")),
    ("windows", re.compile(r"windows|\bwin(32|64|10|11)?\b")),
    (
        "android",
        re.compile(
            r"android|\bsm-[a-z0-9]|samsung|galaxy|pixel|redmi|xiaomi|\bmi \d|oppo|vivo|"
            r"oneplus|realme|\bhonor\b|motorola|nokia"
        ),
    ),
    ("linux", re.compile(r"linux|ubuntu|debian|fedora|centos")),
)


def generalize_device(value: str) -> str | None:
    """The device family of a model or OS string (``"iPhone14,2"`` → ``"ios"``); ``"other"``
    for anything unrecognised, ``None`` for an empty value. Never the model itself."""
    text = value.strip().casefold()
    if not text:
        return None
    for family, pattern in _DEVICE_RULES:
        if pattern.search(text):
            return family
    return "other"


def capture_month(created: datetime) -> str:
    """``"YYYY-MM"`` of a (timezone-aware) time."""
    return f"{created.year:04d}-{created.month:02d}"


@dataclass(frozen=True)
class QuasiIdentifiers:
    """The generalized quasi-identifiers kept with a research sample (``None`` = unknown)."""

    age_band: str | None = None
    region: str | None = None
    device_family: str | None = None
    capture_month: str | None = None

    def to_json(self) -> dict[str, str | None]:
        """A JSON-ready dict (every key present; the names releases use)."""
        return {
            "age_band": self.age_band,
            "region": self.region,
            "device_family": self.device_family,
            "capture_month": self.capture_month,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object] | None) -> QuasiIdentifiers:
        """Back from :meth:`to_json` (unknown keys ignored, non-strings dropped)."""
        data = data or {}

        def get(key: str) -> str | None:
            value = data.get(key)
            return value if isinstance(value, str) else None

        return cls(get("age_band"), get("region"), get("device_family"), get("capture_month"))

    def with_month(self, created: datetime) -> QuasiIdentifiers:
        """A copy with the capture month of ``created``."""
        return QuasiIdentifiers(
            self.age_band, self.region, self.device_family, capture_month(created)
        )


def generalize(
    attributes: Mapping[str, str] | None, created: datetime | None = None
) -> QuasiIdentifiers:
    """Generalize the upstream's attributes; raises :class:`UnknownAttribute` for a key other
    than ``age``, ``region`` or ``device`` and :class:`InvalidAttribute` for a value that is not
    understood (an empty device, an age or region outside the accepted forms); an unrecognised
    device model is ``other``. The raw values are not kept, whatever happens."""
    attrs = dict(attributes or {})
    unknown = sorted(k for k in attrs if k not in ATTRIBUTES)
    if unknown:
        raise UnknownAttribute(f"unknown key {unknown[0]!r}: accepted are {', '.join(ATTRIBUTES)}")
    quasi = QuasiIdentifiers(
        age_band=generalize_age(attrs["age"]) if "age" in attrs else None,
        region=generalize_region(str(attrs["region"])) if "region" in attrs else None,
        device_family=generalize_device(str(attrs["device"])) if "device" in attrs else None,
        capture_month=None if created is None else capture_month(created),
    )
    given = {"age": quasi.age_band, "region": quasi.region, "device": quasi.device_family}
    for key in ATTRIBUTES:  # a value given but not understood is refused, never kept as None
        if key in attrs and given[key] is None:
            raise InvalidAttribute(f"attribute {key!r} not understood: give {ACCEPTED_FORMS[key]}")
    return quasi


__all__ = [
    "ACCEPTED_FORMS",
    "ATTRIBUTES",
    "DEVICE_FAMILIES",
    "PROVINCES",
    "InvalidAttribute",
    "QuasiIdentifiers",
    "UnknownAttribute",
    "capture_month",
    "generalize",
    "generalize_age",
    "generalize_device",
    "generalize_region",
]
