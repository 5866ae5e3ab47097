"""``avatar.glb`` against the Khronos glTF validator (npm ``gltf-validator`` under Node.js,
installed by the test into a cache directory when missing), its structure, and the
``facemedia avatar render`` command (files byte-identical to the job's)."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from pipelines.pta.examples import base, with_changes
from pipelines.pta.gltf import TARGETS, build_parts, render_glb
from pipelines.pta.palette import IRIS
from pipelines.pta.render import render_png, render_svg
from pipelines.pta.spec import AvatarSpec, Colour
from worker.cli.avatar import avatar_app

cli = typer.Typer()
cli.add_typer(avatar_app, name="avatar")

pytestmark = pytest.mark.timeout(300)

#: Where the tests keep what they fetch from package registries (here: npm's gltf-validator).
CACHE = (
    Path(os.environ.get("FACEMEDIA_TEST_CACHE", Path.home() / ".cache" / "facemedia-test")) / "npm"
)
_SCRIPT = """
const fs = require('fs');
const validator = require(process.argv[2]);
validator.validateBytes(new Uint8Array(fs.readFileSync(process.argv[3])), {maxIssues: 500})
  .then(r => console.log(JSON.stringify(r.issues)))
  .catch(e => { console.error(String(e)); process.exit(2); });
"""


def spec(**changes: Any) -> AvatarSpec:
    """An avatar spec from parameters alone (no photo): blue eyes, Monk 6, then ``changes``."""
    blue = Colour("#4a6f9c", (45.0, -2.0, -25.0), "blue")
    avatar = with_changes(base(), eyes={"iris": blue}, skin={"monk": 6, "monk_hex": "#a07e56"})
    return with_changes(avatar, **changes)


def glb_json(glb: bytes) -> dict[str, Any]:
    magic, version, total = struct.unpack_from("<4sII", glb)
    assert (magic, version, total) == (b"glTF", 2, len(glb))
    length, kind = struct.unpack_from("<I4s", glb, 12)
    assert kind == b"JSON"
    doc: dict[str, Any] = json.loads(glb[20 : 20 + length])
    return doc


@pytest.fixture(scope="module")
def validator() -> Path:
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js is needed to run the Khronos glTF validator")
    module = CACHE / "node_modules" / "gltf-validator"
    if not module.is_dir():
        npm = shutil.which("npm")
        assert npm is not None, "npm is needed to install gltf-validator"
        subprocess.run(
            [npm, "install", "--prefix", str(CACHE), "--no-audit", "--no-fund", "gltf-validator"],
            check=True,
            capture_output=True,
            timeout=240,
        )
    return module


def validate(validator: Path, glb: bytes, tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "avatar.glb"
    path.write_bytes(glb)
    script = tmp_path / "validate.js"
    script.write_text(_SCRIPT)
    run = subprocess.run(
        ["node", str(script), str(validator), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    issues: dict[str, Any] = json.loads(run.stdout)
    assert issues["numErrors"] == 0, issues["messages"]
    messages: list[dict[str, Any]] = issues["messages"]
    return messages


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"hair": {"style": "long"}, "glasses": {"present": True, "score": 0.9}},
        {"hair": {"style": "bald"}},
        {"hair": {"style": "covered"}},
    ],
)
def test_glb_passes_the_khronos_validator(
    validator: Path, tmp_path: Path, changes: dict[str, Any]
) -> None:
    glb = render_glb(spec(**changes))
    messages = validate(validator, glb, tmp_path)
    assert all(m["severity"] >= 1 for m in messages)  # no errors (severity 0)


def test_glb_structure() -> None:
    avatar = spec(glasses={"present": True, "score": 0.9})
    glb = render_glb(avatar)
    assert glb == render_glb(avatar)  # deterministic
    doc = glb_json(glb)
    names = [n["name"] for n in doc["nodes"]]
    assert names == ["Avatar", "Head", "EyeLeft", "EyeRight", "Glasses"]
    head = doc["meshes"][doc["nodes"][1]["mesh"]]
    assert head["extras"]["targetNames"] == list(TARGETS) == [
        "eyeBlinkLeft", "eyeBlinkRight", "mouthSmileLeft", "mouthSmileRight", "jawOpen",
    ]  # fmt: skip
    assert all(len(p["targets"]) == 5 for p in head["primitives"])
    left = doc["nodes"][2]["translation"]
    assert left[0] > 0 and doc["nodes"][3]["translation"][0] == -left[0]  # avatar's left: +X
    materials = {m["name"]: m for m in doc["materials"]}
    assert {"skin", "sclera", "iris", "pupil", "hair", "lips"} <= set(materials)
    assert not any("images" in doc or "textures" in doc for _ in [0])  # no photo texture
    iris = materials["iris"]["pbrMetallicRoughness"]["baseColorFactor"]
    assert iris[2] > iris[0]  # the measured blue, not a brown
    assert IRIS["blue"] != IRIS["brown"]


def test_morph_targets_move_the_right_parts() -> None:
    parts = {p.name: p for p in build_parts(spec())["Head"]}
    lids = parts["eyelids"]
    left, right = lids.targets["eyeBlinkLeft"], lids.targets["eyeBlinkRight"]
    moved_left = np.linalg.norm(left, axis=1) > 1e-6
    assert moved_left.any() and np.all(lids.pos[moved_left, 0] > 0)  # the avatar's left lid
    assert np.all(lids.pos[np.linalg.norm(right, axis=1) > 1e-6, 0] < 0)
    lips = parts["lips"]
    smile = lips.targets["mouthSmileLeft"]
    assert (
        smile[lips.pos[:, 0] > 0, 1].max() > 0.003
        and np.abs(smile[lips.pos[:, 0] < 0]).max() < 1e-9
    )
    jaw = parts["skin"].targets["jawOpen"]
    below = parts["skin"].pos[:, 1] < parts["lips"].pos[:, 1].min() - 0.01
    assert (
        jaw[below, 1].min() < -0.01
        and np.abs(jaw[~below & (parts["skin"].pos[:, 1] > 0)]).max() == 0
    )


def test_cli_render_is_byte_identical(tmp_path: Path) -> None:
    avatar = spec()
    source = tmp_path / "avatar.json"
    source.write_text(json.dumps(avatar.to_json()))
    runner = CliRunner()
    first = runner.invoke(
        cli, ["avatar", "render", str(source), "--out", str(tmp_path / "a"), "--json"]
    )
    assert first.exit_code == 0, first.output
    second = runner.invoke(
        cli, ["avatar", "render", str(source), "--out", str(tmp_path / "b"), "--style", "toon"]
    )
    assert second.exit_code == 0, second.output
    a, b = tmp_path / "a", tmp_path / "b"
    assert (a / "avatar.svg").read_bytes() == render_svg(avatar)
    assert (a / "avatar.png").read_bytes() == render_png(avatar)
    assert (a / "avatar.glb").read_bytes() == render_glb(avatar)
    assert (b / "avatar.png").read_bytes() == render_png(avatar, "toon")
    assert (a / "avatar.png").stat().st_mode & 0o777 == 0o600
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**avatar.to_json(), "version": 1}))
    refused = runner.invoke(cli, ["avatar", "render", str(bad), "--out", str(tmp_path / "c")])
    assert refused.exit_code == 2 and "bad_params" in refused.output
    assert not (tmp_path / "c").exists()


def test_redrawing_loads_no_opencv() -> None:
    code = (
        "import sys\n"
        "from pipelines.pta.examples import base\n"
        "from pipelines.pta.gltf import render_glb\n"
        "from pipelines.pta.render import render_png, render_svg\n"
        "from pipelines.pta.spec import AvatarSpec\n"
        "import worker.cli.avatar\n"
        "spec = AvatarSpec.from_json(base().to_json())\n"
        "render_png(spec); render_svg(spec); render_glb(spec)\n"
        "print(sorted(m for m in ('cv2', 'scipy', 'av', 'celery', 'boto3') if m in sys.modules))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert run.stdout.strip() == "[]"


def test_committed_avatars_are_current() -> None:
    """docs/img's avatars are what ``python -m pipelines.pta.examples docs/img`` draws now (the
    SVGs compared: text, independent of the PNG encoder's build)."""
    from pipelines.pta.examples import examples
    from pipelines.pta.spec import STYLES

    root = Path(__file__).resolve().parents[2] / "docs" / "img"
    for name, avatar in examples().items():
        for style in STYLES:
            path = root / f"avatar-{name}-{style}.svg"
            assert path.read_bytes() == render_svg(avatar, style, 256), path.name
            assert (root / f"avatar-{name}-{style}.png").is_file()
