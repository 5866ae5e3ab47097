"""The 3D avatar: a glTF 2.0 binary (``avatar.glb``) head built from an :class:`AvatarSpec` alone.

The head is a smooth deformed sphere whose widths at the forehead, cheekbones, jaw and chin, and
whose height, follow the measured proportions (inter-ocular distance = 63 mm, the adult mean),
with a nose, brows, lips and a mouth cavity; no photo texture, only materials coloured from the
measured classes (:mod:`pipelines.pta.palette`). The eyes are separate nodes (``EyeLeft``,
``EyeRight``: sclera, iris in the measured colour, pupil) so an animation can turn them; the
hair (or a cap) and glasses are their own primitives and node.

Morph targets on the ``Head`` mesh are named after ARKit blendshapes (``extras.targetNames``):
``eyeBlinkLeft``, ``eyeBlinkRight`` (the lids close), ``mouthSmileLeft``, ``mouthSmileRight``
(a mouth corner rises and widens) and ``jawOpen`` (chin, lower lip and the mouth's floor drop).
Left and right are the avatar's own: its left is +X (glTF: +Y up, the face looks along +Z,
metres). The file is deterministic: the same spec gives the same bytes.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from pipelines.pta import palette
from pipelines.pta.spec import AvatarSpec

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]
I32 = NDArray[np.int64]

#: ARKit blendshape names of the morph targets, in order.
TARGETS: Final = ("eyeBlinkLeft", "eyeBlinkRight", "mouthSmileLeft", "mouthSmileRight", "jawOpen")
#: Metres per inter-ocular distance.
IOD_M: Final = 0.063
#: Eyeball radius (m).
EYE_R: Final = 0.0155
_ARRAY_BUFFER: Final = 34962
_ELEMENT_ARRAY_BUFFER: Final = 34963
_FLOAT: Final = 5126
_UINT: Final = 5125


def _sphere(rings: int, segments: int) -> tuple[F64, I32]:
    """Unit UV sphere: poles at +-Y, longitude 0 towards +Z; no degenerate triangles."""
    verts = [(0.0, 1.0, 0.0)]
    for i in range(1, rings):
        theta = math.pi * i / rings
        for j in range(segments):
            phi = 2 * math.pi * j / segments
            verts.append(
                (math.sin(theta) * math.sin(phi), math.cos(theta), math.sin(theta) * math.cos(phi))
            )
    verts.append((0.0, -1.0, 0.0))
    bottom = len(verts) - 1
    tris: list[tuple[int, int, int]] = []

    def ring(i: int, j: int) -> int:
        return 1 + (i - 1) * segments + (j % segments)

    for j in range(segments):
        tris.append((0, ring(1, j), ring(1, j + 1)))
        tris.append((bottom, ring(rings - 1, j + 1), ring(rings - 1, j)))
    for i in range(1, rings - 1):
        for j in range(segments):
            a, b = ring(i, j), ring(i, j + 1)
            c, d = ring(i + 1, j), ring(i + 1, j + 1)
            tris.append((a, c, b))
            tris.append((b, c, d))
    return np.array(verts, dtype=np.float64), np.array(tris, dtype=np.int64)


def _normals(pos: F64, tris: I32) -> F64:
    n = np.zeros_like(pos)
    face = np.cross(pos[tris[:, 1]] - pos[tris[:, 0]], pos[tris[:, 2]] - pos[tris[:, 0]])
    for k in range(3):
        np.add.at(n, tris[:, k], face)
    length = np.linalg.norm(n, axis=1, keepdims=True)
    fallback = np.tile(np.array([[0.0, 0.0, 1.0]]), (len(pos), 1))
    out: F64 = np.where(length > 1e-12, n / np.maximum(length, 1e-12), fallback)
    return out


def _subset(pos: F64, tris: I32, keep: NDArray[np.bool_]) -> tuple[F64, I32]:
    """The triangles whose three vertices are kept, re-indexed."""
    chosen = tris[keep[tris].all(axis=1)]
    used = np.unique(chosen)
    remap = np.full(len(pos), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return pos[used], remap[chosen]


@dataclass
class _Part:
    """One primitive: positions, triangles, material, and a displacement per morph target."""

    name: str
    pos: F64
    tris: I32
    material: int
    targets: dict[str, F64] = field(default_factory=dict)


@dataclass(frozen=True)
class _Head:
    """Measured proportions in metres."""

    half_height: float
    half_width: float
    depth: float
    forehead: float
    cheek: float
    jaw: float
    chin: float
    eye_y: float
    nose_y: float
    mouth_y: float
    eye_x: float
    nose_len: float
    nose_w: float
    mouth_w: float
    lips: float


def _head(spec: AvatarSpec) -> _Head:
    f = spec.face

    def c(v: float, lo: float, hi: float) -> float:
        return min(hi, max(lo, v)) * IOD_M

    width = c(f.width, 1.8, 2.8)
    # the mesh's face height stops at the upper forehead (about 0.85 IOD above the eyes); the
    # skull goes on about 1.6 IOD above them (a little less than in life: a stylised head)
    eyes_to_chin = c(f.height, 2.3, 3.6) - 0.85 * IOD_M
    half_height = (eyes_to_chin + 1.6 * IOD_M) / 2
    eye_y = eyes_to_chin - half_height
    nose_len = c(spec.nose.length, 0.55, 1.1)
    nose_y = eye_y - nose_len * 0.85
    chin_len = c(f.chin_length, 0.4, 0.95)
    mouth_y = max(-half_height + chin_len + 0.012, nose_y - 0.016)
    return _Head(
        half_height=half_height,
        half_width=width / 2 * 1.25,
        depth=0.098,
        forehead=min(1.0, c(f.forehead_width, 1.5, 2.6) / width),
        cheek=min(1.0, c(f.cheekbone_width, 1.7, 2.7) / width),
        jaw=min(0.95, c(f.jaw_width, 1.2, 2.4) / width),
        chin=min(0.7, c(f.chin_width, 0.6, 1.5) / width),
        eye_y=eye_y,
        nose_y=nose_y,
        mouth_y=mouth_y,
        eye_x=(spec.eyes.spacing + spec.eyes.size) / 2 * IOD_M * 0.95,
        nose_len=nose_len,
        nose_w=c(spec.nose.width, 0.4, 0.85),
        mouth_w=c(spec.mouth.width, 0.6, 1.1),
        lips=c(spec.mouth.lip_fullness, 0.12, 0.5),
    )


def _skull(h: _Head) -> tuple[F64, I32, Callable[[F64], F64]]:
    """The head surface and the function that places points on it (front surface depth)."""
    unit, tris = _sphere(40, 64)
    y = unit[:, 1] * h.half_height
    yn = unit[:, 1]
    # width ratio by height: chin, jaw, cheekbones, eyes, forehead, crown
    eye_n, mouth_n = h.eye_y / h.half_height, h.mouth_y / h.half_height
    ratio = np.interp(
        yn,
        [-1.0, -0.85, mouth_n, (eye_n + mouth_n) / 2, eye_n + 0.05, eye_n + 0.45, 1.0],
        [h.chin * 1.6, h.chin * 1.55, h.jaw, h.cheek, 1.0, h.forehead, h.forehead],
    )
    x = unit[:, 0] * h.half_width * ratio / np.maximum(np.sqrt(1 - yn**2), 0.35) ** 0.35
    depth_ratio = np.interp(yn, [-1.0, -0.5, 0.0, 1.0], [0.72, 0.93, 1.0, 1.0])
    z = unit[:, 2] * h.depth * depth_ratio
    front = z > 0
    z = np.where(front, z * 0.92, z)
    pos = np.stack([x, y, z], axis=1)
    base = pos.copy()  # the face without the nose: where lips, brows and eyes sit
    # the nose: a smooth ridge from the brow to the tip
    nx = pos[:, 0] / (h.nose_w * 0.45)
    ridge = np.clip((pos[:, 1] - h.nose_y) / (h.eye_y - h.nose_y), -0.25, 1.0)
    profile = np.where(ridge < 0, 1 + ridge * 4, 1 - 0.55 * ridge) * (ridge > -0.25)
    bump = 0.03 * np.exp(-(nx**2) * (1 + 3 * np.clip(ridge, 0, 1))) * profile
    pos[:, 2] += np.where(front, bump * unit[:, 2], 0.0)

    def surface(points: F64) -> F64:
        """Depth of the head's front surface (without the nose) at the points' (x, y)."""
        out = np.empty(len(points))
        for i, (px, py) in enumerate(points[:, :2]):
            near = front & (np.abs(base[:, 1] - py) < 0.004)
            if not near.any():
                out[i] = h.depth * 0.8
                continue
            candidates = base[near]
            best = np.argmin(np.abs(candidates[:, 0] - px))
            out[i] = candidates[best, 2]
        return out

    return pos, tris, surface


def _eyelids(h: _Head) -> tuple[F64, I32, dict[str, F64]]:
    """Upper lids: shells over the eyeballs, rotated down over them by the blink targets."""
    unit, tris = _sphere(16, 24)
    keep = (unit[:, 1] > -0.02) & (unit[:, 2] > -0.5)
    shell, shell_tris = _subset(unit, tris, keep)
    parts, blink_l, blink_r, all_tris = [], [], [], []
    offset = 0
    for side in (1, -1):  # +X is the avatar's left
        centre = np.array([side * h.eye_x, h.eye_y, 0.0])
        p = _about_x(shell * EYE_R * 1.08, -40.0)  # open: the lid's edge above the iris
        closed = _about_x(shell * EYE_R * 1.08, 32.0)  # closed: the edge below it
        parts.append(p + centre)
        delta = closed - p
        zero = np.zeros_like(delta)
        blink_l.append(delta if side == 1 else zero)
        blink_r.append(delta if side == -1 else zero)
        all_tris.append(shell_tris + offset)
        offset += len(p)
    return (
        np.concatenate(parts),
        np.concatenate(all_tris),
        {"eyeBlinkLeft": np.concatenate(blink_l), "eyeBlinkRight": np.concatenate(blink_r)},
    )


def _about_x(points: F64, degrees: float) -> F64:
    """``points`` turned about the X axis (positive: the front, +Z, goes down)."""
    a = math.radians(degrees)
    ca, sa = math.cos(a), math.sin(a)
    out = points.copy()
    out[:, 1] = points[:, 1] * ca - points[:, 2] * sa
    out[:, 2] = points[:, 1] * sa + points[:, 2] * ca
    return out


def _torus(
    major: float, minor: float, rings: int = 48, sides: int = 12, sx: float = 1.0, sy: float = 1.0
) -> tuple[F64, I32]:
    verts, tris = [], []
    for i in range(rings):
        u = 2 * math.pi * i / rings
        for j in range(sides):
            v = 2 * math.pi * j / sides
            r = major + minor * math.cos(v)
            verts.append((r * math.cos(u) * sx, r * math.sin(u) * sy, minor * math.sin(v)))
    for i in range(rings):
        for j in range(sides):
            a = i * sides + j
            b = ((i + 1) % rings) * sides + j
            c = i * sides + (j + 1) % sides
            d = ((i + 1) % rings) * sides + (j + 1) % sides
            tris += [(a, b, c), (c, b, d)]
    return np.array(verts, dtype=np.float64), np.array(tris, dtype=np.int64)


def _mouth(h: _Head, surface: Callable[[F64], F64]) -> list[tuple[str, F64, I32, str]]:
    """Upper and lower lips (flattened ellipsoids meeting at the mouth line) and the mouth
    cavity behind them."""
    half = h.mouth_w / 2 * 0.8
    unit, tris = _sphere(12, 32)
    front_z = float(surface(np.array([[0.0, h.mouth_y]]))[0])
    upper = unit * np.array([half, h.lips * 0.28, 0.004])
    upper[:, 1] *= 1 - 0.25 * np.exp(-((unit[:, 0] / 0.25) ** 2))  # the cupid's bow
    upper += np.array([0.0, h.mouth_y + h.lips * 0.24, front_z - 0.0015])
    lower = unit * np.array([half * 0.92, h.lips * 0.34, 0.0045])
    lower += np.array([0.0, h.mouth_y - h.lips * 0.28, front_z - 0.0015])
    both = np.concatenate([upper, lower])
    both_tris = np.concatenate([tris, tris + len(upper)])
    cavity = unit * np.array([half * 0.85, h.lips * 0.5, 0.012])
    cavity += np.array([0.0, h.mouth_y, front_z - 0.012])
    return [("lips", both, both_tris, "lips"), ("mouth", cavity, tris, "mouth")]


def _smile(pos: F64, h: _Head, side: int) -> F64:
    half = h.mouth_w / 2
    t = np.clip(side * pos[:, 0] / half, 0, None) ** 2
    near = np.exp(-(((pos[:, 1] - h.mouth_y) / 0.02) ** 2)) * (np.abs(pos[:, 0]) < half * 1.6)
    w = t * near
    out = np.zeros_like(pos)
    out[:, 0] = side * 0.004 * w
    out[:, 1] = 0.007 * w
    out[:, 2] = -0.002 * w
    return out


def _jaw(pos: F64, h: _Head, front_only: bool) -> F64:
    below = np.clip((h.mouth_y - 0.003 - pos[:, 1]) / 0.01, 0, 1)
    w = below * (pos[:, 2] > 0 if front_only else 1.0)
    w = w * np.exp(-((pos[:, 0] / (h.half_width * 0.9)) ** 4))
    out = np.zeros_like(pos)
    out[:, 1] = -0.014 * w
    out[:, 2] = -0.003 * w
    return out


def _eye(iris_material: int) -> list[_Part]:
    """An eyeball at the origin looking along +Z: sclera, iris, pupil."""
    unit, tris = _sphere(24, 32)
    pos = unit * EYE_R
    angle = np.degrees(np.arccos(np.clip(unit[:, 2], -1, 1)))
    centre_angle = angle[tris].mean(axis=1)
    parts = []
    for name, lo, hi, material in (
        ("sclera", 28.0, 181.0, 2),
        ("iris", 11.0, 28.0, iris_material),
        ("pupil", -1.0, 11.0, 4),
    ):
        chosen = tris[(centre_angle >= lo) & (centre_angle < hi)]
        used = np.unique(chosen)
        remap = np.full(len(pos), -1, dtype=np.int64)
        remap[used] = np.arange(len(used))
        parts.append(_Part(name, pos[used], remap[chosen], material))
    return parts


def _hair(spec: AvatarSpec, h: _Head, skull: F64, tris: I32) -> _Part | None:
    style = spec.hair.style
    if style == "bald":
        return None
    yn = skull[:, 1] / h.half_height
    front = skull[:, 2] > 0
    back_limit = {"short": -0.3, "medium": -0.45, "long": -0.75, "covered": 0.15}[style]
    eye_n = h.eye_y / h.half_height
    front_limit = eye_n + (0.4 if style != "covered" else 0.3)
    side = np.abs(skull[:, 0]) / h.half_width
    hairline = np.where(side > 0.82, 0.2 if style != "covered" else 0.5, front_limit)
    keep = np.where(front & (skull[:, 2] > h.depth * 0.35), yn > hairline, yn > back_limit)
    pos, hair_tris = _subset(skull, tris, keep)
    normals = _normals(skull, tris)[np.unique(tris[keep[tris].all(axis=1)])]
    pos = pos + normals * (0.006 if style != "covered" else 0.009)
    if style == "long":
        low = pos[:, 1] < -0.5 * h.half_height
        pos[low, 1] -= (-0.5 * h.half_height - pos[low, 1]) * 1.6
    return _Part("hair" if style != "covered" else "cap", pos, hair_tris, 5)


def _brows(spec: AvatarSpec, h: _Head, surface: Callable[[F64], F64]) -> tuple[F64, I32]:
    unit, tris = _sphere(8, 16)
    thick = min(0.2, max(0.05, spec.brows.thickness)) * IOD_M
    length = spec.eyes.size * IOD_M * 1.2
    parts, faces, offset = [], [], 0
    for side in (1, -1):
        centre_x = side * (h.eye_x + 0.002)
        y = h.eye_y + 0.021
        z = float(surface(np.array([[centre_x, y]]))[0])
        p = unit * np.array([length / 2, thick / 2, 0.003])
        arch = max(-0.05, min(0.3, spec.brows.arch)) * length
        p[:, 1] += arch * (1 - (p[:, 0] / (length / 2)) ** 2) * 0.5
        parts.append(p + np.array([centre_x, y, z - 0.001]))
        faces.append(tris + offset)
        offset += len(p)
    return np.concatenate(parts), np.concatenate(faces)


def _glasses(h: _Head, surface: Callable[[F64], F64]) -> list[_Part]:
    z = float(surface(np.array([[h.eye_x, h.eye_y]]))[0]) + 0.005
    parts = []
    for side in (1, -1):
        ring, tris = _torus(EYE_R * 1.55, 0.0016, 48, 8, sx=1.2, sy=0.85)
        parts.append(_Part("frame", ring + np.array([side * h.eye_x, h.eye_y, z]), tris, 6))
    bridge, tris = _torus(h.eye_x - EYE_R * 1.8, 0.0015, 24, 8, sx=1.0, sy=0.4)
    top = bridge[:, 1] > 0
    pos, bridge_tris = _subset(bridge, tris, top)
    parts.append(_Part("bridge", pos + np.array([0.0, h.eye_y + 0.001, z + 0.008]), bridge_tris, 6))
    return parts


def _materials(spec: AvatarSpec) -> list[dict[str, Any]]:
    def pbr(name: str, colour: str, rough: float = 0.7) -> dict[str, Any]:
        r, g, b = palette.linear(colour)
        return {
            "name": name,
            "pbrMetallicRoughness": {
                "baseColorFactor": [round(r, 6), round(g, 6), round(b, 6), 1.0],
                "metallicFactor": 0.0,
                "roughnessFactor": rough,
            },
        }

    return [
        pbr("skin", palette.skin(spec), 0.65),
        pbr("lips", palette.lips(spec), 0.5),
        pbr("sclera", "#f6f4ef", 0.3),
        pbr("iris", palette.iris(spec), 0.25),
        pbr("pupil", "#0d0b0e", 0.2),
        pbr(
            "hair" if spec.hair.style != "covered" else "cap",
            palette.hair(spec) if spec.hair.style != "covered" else "#5c7fa8",
            0.8,
        ),
        pbr("frame", "#232226", 0.4),
        pbr("brows", palette.brows(spec), 0.9),
        pbr("mouth", "#5a2026", 0.8),
    ]


class _Buffer:
    def __init__(self) -> None:
        self.data = bytearray()
        self.views: list[dict[str, Any]] = []
        self.accessors: list[dict[str, Any]] = []

    def add(self, array: NDArray[Any], kind: str, target: int, bounds: bool) -> int:
        while len(self.data) % 4:
            self.data.append(0)
        raw = array.tobytes()
        self.views.append(
            {"buffer": 0, "byteOffset": len(self.data), "byteLength": len(raw), "target": target}
        )
        self.data += raw
        accessor: dict[str, Any] = {
            "bufferView": len(self.views) - 1,
            "componentType": _UINT if array.dtype == np.uint32 else _FLOAT,
            "count": int(array.shape[0]),
            "type": kind,
        }
        if bounds:
            accessor["min"] = [float(v) for v in array.min(axis=0)]
            accessor["max"] = [float(v) for v in array.max(axis=0)]
        self.accessors.append(accessor)
        return len(self.accessors) - 1


def _primitive(buffer: _Buffer, part: _Part, targets: Sequence[str]) -> dict[str, Any]:
    pos = part.pos.astype(np.float32)
    normals = _normals(part.pos, part.tris).astype(np.float32)
    prim: dict[str, Any] = {
        "attributes": {
            "POSITION": buffer.add(pos, "VEC3", _ARRAY_BUFFER, True),
            "NORMAL": buffer.add(normals, "VEC3", _ARRAY_BUFFER, False),
        },
        "indices": buffer.add(
            part.tris.astype(np.uint32).reshape(-1), "SCALAR", _ELEMENT_ARRAY_BUFFER, False
        ),
        "material": part.material,
        "mode": 4,
    }
    if targets:
        prim["targets"] = [
            {
                "POSITION": buffer.add(
                    part.targets.get(name, np.zeros_like(part.pos)).astype(np.float32),
                    "VEC3",
                    _ARRAY_BUFFER,
                    True,
                )
            }
            for name in targets
        ]
    return prim


def build_parts(spec: AvatarSpec) -> dict[str, list[_Part]]:
    """The avatar's meshes by node name (``Head``, ``Eye``, ``Glasses``), primitives with their
    morph target displacements (``Head`` only)."""
    h = _head(spec)
    skull, skull_tris, surface = _skull(h)
    head: list[_Part] = []
    # eye sockets: push the skin behind the eyeballs
    for side in (1, -1):
        d = np.hypot(skull[:, 0] - side * h.eye_x, (skull[:, 1] - h.eye_y) * 1.3)
        skull[:, 2] -= np.where(skull[:, 2] > 0, 0.004 * np.exp(-((d / 0.016) ** 2)), 0.0)
    skin = _Part("skin", skull, skull_tris, 0)
    skin.targets = {
        "mouthSmileLeft": _smile(skull, h, 1) * 0.6,
        "mouthSmileRight": _smile(skull, h, -1) * 0.6,
        "jawOpen": _jaw(skull, h, True),
    }
    head.append(skin)
    lids, lid_tris, blinks = _eyelids(h)
    lids[:, 2] += eye_centres(spec)[0][2]
    head.append(_Part("eyelids", lids, lid_tris, 0, dict(blinks)))
    for name, pos, tris, material in _mouth(h, surface):
        part = _Part(name, pos, tris, 1 if material == "lips" else 8)
        part.targets = {
            "mouthSmileLeft": _smile(pos, h, 1),
            "mouthSmileRight": _smile(pos, h, -1),
            "jawOpen": _jaw(pos, h, False) * (1.4 if name == "mouth" else 1.0),
        }
        head.append(part)
    brows, brow_tris = _brows(spec, h, surface)
    head.append(_Part("brows", brows, brow_tris, 7))
    hair = _hair(spec, h, skull, skull_tris)
    if hair is not None:
        head.append(hair)
    meshes = {"Head": head, "Eye": _eye(3)}
    if spec.glasses.present:
        meshes["Glasses"] = _glasses(h, surface)
    return meshes


def eye_centres(spec: AvatarSpec) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Left (+X) and right eyeball centres (m)."""
    h = _head(spec)
    _skull_pos, _tris, surface = _skull(h)
    z = float(surface(np.array([[h.eye_x, h.eye_y]]))[0]) - EYE_R * 0.9
    return (h.eye_x, h.eye_y, z), (-h.eye_x, h.eye_y, z)


def render_glb(spec: AvatarSpec) -> bytes:
    """The avatar as a glTF 2.0 binary."""
    meshes = build_parts(spec)
    buffer = _Buffer()
    gltf_meshes: list[dict[str, Any]] = []
    for name, parts in meshes.items():
        targets = TARGETS if name == "Head" else ()
        mesh: dict[str, Any] = {
            "name": name,
            "primitives": [_primitive(buffer, part, targets) for part in parts],
        }
        if targets:
            mesh["weights"] = [0.0] * len(targets)
            mesh["extras"] = {"targetNames": list(targets)}
        gltf_meshes.append(mesh)
    mesh_index = {name: i for i, name in enumerate(meshes)}
    left, right = eye_centres(spec)
    nodes: list[dict[str, Any]] = [
        {"name": "Avatar", "children": [1, 2, 3] + ([4] if "Glasses" in meshes else [])},
        {"name": "Head", "mesh": mesh_index["Head"]},
        {"name": "EyeLeft", "mesh": mesh_index["Eye"], "translation": [float(v) for v in left]},
        {"name": "EyeRight", "mesh": mesh_index["Eye"], "translation": [float(v) for v in right]},
    ]
    if "Glasses" in meshes:
        nodes.append({"name": "Glasses", "mesh": mesh_index["Glasses"]})
    while len(buffer.data) % 4:
        buffer.data.append(0)
    doc = {
        "asset": {"version": "2.0", "generator": "facemedia pta"},
        "scene": 0,
        "scenes": [{"name": "avatar", "nodes": [0]}],
        "nodes": nodes,
        "meshes": gltf_meshes,
        "materials": _materials(spec),
        "buffers": [{"byteLength": len(buffer.data)}],
        "bufferViews": buffer.views,
        "accessors": buffer.accessors,
    }
    text = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    text += b" " * (-len(text) % 4)
    binary = bytes(buffer.data)
    total = 12 + 8 + len(text) + 8 + len(binary)
    return b"".join(
        (
            struct.pack("<4sII", b"glTF", 2, total),
            struct.pack("<I4s", len(text), b"JSON"),
            text,
            struct.pack("<I4s", len(binary), b"BIN\x00"),
            binary,
        )
    )


__all__ = ["EYE_R", "IOD_M", "TARGETS", "build_parts", "eye_centres", "render_glb"]
