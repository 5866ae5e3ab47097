"""The ``pta`` and ``ar`` job types end to end on the embedded default (SQLite, LocalStore,
eager Celery): submit, process, outputs decrypted, original deleted."""

from __future__ import annotations

import io
import json
from typing import Any

import av
import jsonschema
import numpy as np
import pytest

from pipelines.errors import BadParams
from pipelines.media import decode_image, encode_image
from pipelines.media.video import probe_video
from pipelines.pta import AVATAR_SCHEMA
from tests.pipelines.test_ar_video import face_clip
from worker.jobs.errors import SubmitRefused
from worker.jobs.registry import handler

pytestmark = pytest.mark.timeout(120)


def finished(container: Any, job_id: str) -> dict[str, Any]:
    status: dict[str, Any] = container.service.status(job_id)
    assert status["original_deleted"] is True
    assert list(container.store.keys("originals/")) == []
    return status


def test_pta_job(embedded: Any, astronaut_jpeg: bytes) -> None:
    job_id = embedded.client.submit(astronaut_jpeg, "pta", subject_id="subject-pta")
    status = finished(embedded, job_id)
    assert status["status"] == "succeeded" and status["faces"] == 1
    assert sorted(status["outputs"]) == ["avatar.glb", "avatar.json", "avatar.png", "avatar.svg"]
    outputs = embedded.client.outputs(job_id)
    spec = json.loads(outputs["avatar.json"])
    jsonschema.Draft202012Validator(AVATAR_SCHEMA).validate(spec)
    assert spec["source"]["chosen_by"] == "largest" and spec["render"]["size"] == 512
    assert decode_image(outputs["avatar.png"]).shape == (512, 512, 3)
    assert outputs["avatar.svg"].startswith(b"<svg")
    assert outputs["avatar.glb"][:4] == b"glTF"


def test_pta_params(embedded: Any, astronaut_jpeg: bytes) -> None:
    job_id = embedded.client.submit(
        astronaut_jpeg, "pta", {"size": 256, "style": "toon", "face": 0}, subject_id="subject-pta"
    )
    outputs = embedded.client.outputs(job_id)
    assert decode_image(outputs["avatar.png"]).shape == (256, 256, 3)
    spec = json.loads(outputs["avatar.json"])
    assert spec["render"] == {"style": "toon", "size": 256}
    assert (spec["source"]["face"], spec["source"]["chosen_by"]) == (0, "index")


def test_pta_without_a_face_fails_no_face(embedded: Any) -> None:
    blank = encode_image(np.full((240, 320, 3), 170, np.uint8), "jpeg")
    job_id = embedded.client.submit(blank, "pta", subject_id="subject-pta")
    status = finished(embedded, job_id)
    assert (status["status"], status["error_code"]) == ("failed", "no_face")
    assert status["outputs"] == [] and list(embedded.store.keys()) == []


@pytest.mark.parametrize(
    "params",
    [{"size": 10}, {"colors": 6}, {"face": -1}, {"face": "all"}, {"style": "anime"}],
)
def test_pta_bad_params_refused_at_submit(
    embedded: Any, astronaut_jpeg: bytes, params: dict[str, Any]
) -> None:
    with pytest.raises(SubmitRefused) as refused:
        embedded.client.submit(astronaut_jpeg, "pta", params, subject_id="s")
    assert refused.value.code == "bad_params"
    assert list(embedded.store.keys()) == []


def test_ar_image_job(embedded: Any, astronaut_jpeg: bytes) -> None:
    chain = [{"effect": "beautify", "smooth": 0.7}, {"effect": "sticker", "name": "glasses"}]
    job_id = embedded.client.submit(astronaut_jpeg, "ar", {"effects": chain}, subject_id="s-ar")
    status = finished(embedded, job_id)
    assert status["status"] == "succeeded" and status["outputs"] == ["result.jpg"]
    assert status["faces"] == 1
    result = decode_image(embedded.client.outputs(job_id)["result.jpg"])
    original = decode_image(astronaut_jpeg)
    assert result.shape == original.shape
    assert np.abs(result.astype(int) - original).max() > 50  # the glasses are there


def test_ar_png_in_png_out(embedded: Any, astronaut_jpeg: bytes) -> None:
    png = encode_image(decode_image(astronaut_jpeg), "png")
    params = {"effects": [{"effect": "lut", "look": "vintage"}]}
    job_id = embedded.client.submit(png, "ar", params, subject_id="s-ar")
    assert finished(embedded, job_id)["outputs"] == ["result.png"]
    assert embedded.client.outputs(job_id)["result.png"].startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"effects": [{"effect": "sparkle"}]}, "unknown effect"),
        ({"effects": [{"effect": "beautify", "smooth": 3}]}, "beautify: smooth"),
        ({"effects": [{"effect": "lut", "cube": "LUT_3D_SIZE 2\n0 0 0\n"}]}, "lut: cube"),
        ({"effects": None}, "effects must be a list"),
        ({"effects": [{"effect": "lut", "look": "warm"}], "quality": 0}, "quality"),
        ({"effects": [{"effect": "lut", "look": "warm"}], "speed": 2}, "unknown parameter"),
    ],
)
def test_ar_bad_params_refused_at_submit(
    embedded: Any, astronaut_jpeg: bytes, params: dict[str, Any], needle: str
) -> None:
    with pytest.raises(SubmitRefused) as refused:
        embedded.client.submit(astronaut_jpeg, "ar", params, subject_id="s")
    assert refused.value.code == "bad_params"
    assert needle in str(refused.value)
    assert list(embedded.store.keys()) == []


def test_ar_video_job(embedded: Any) -> None:
    clip = face_clip(frames=16, width=320, height=240)
    params = {"effects": [{"effect": "sticker", "name": "hat"}]}
    job_id = embedded.client.submit(clip.data, "ar", params, subject_id="s-video")
    status = finished(embedded, job_id)
    assert status["status"] == "succeeded", status
    assert status["outputs"] == ["result.mp4"] and status["faces"] == 1
    out = embedded.client.outputs(job_id)["result.mp4"]
    before, after = probe_video(clip.data), probe_video(out)
    assert (after.frames, after.width, after.height) == (before.frames, 320, 240)
    assert after.duration_s == pytest.approx(before.duration_s, abs=1e-3)
    assert after.has_audio
    with av.open(io.BytesIO(out)) as ic:
        assert ic.streams.video[0].codec_context.name == "h264"


def test_ar_normalised_params() -> None:
    clean = handler("ar").validate({"effects": [{"effect": "reshape"}]})
    assert clean == {
        "effects": [{"effect": "reshape", "slim": 0.3, "eyes": 0.3, "nose": 0.0, "chin": 0.0}],
        "quality": 90,
    }
    assert handler("ar").validate(clean) == clean
    assert handler("pta").validate({}) == {"face": "largest", "size": 512, "style": "flat"}
    default = handler("ar").validate({})["effects"]
    assert [e["effect"] for e in default] == ["beautify", "sticker"]
    with pytest.raises(BadParams):
        handler("ar").validate({"effects": "beautify"})
