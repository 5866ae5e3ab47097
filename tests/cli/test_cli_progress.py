"""Issue 18, "Long work shows progress": a video run inline on a terminal shows a progress bar of
the frames written (done / total, fps, time left); with --json, or off a terminal, nothing but
the result."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from tests.cli.conftest import Ran, on_a_terminal
from tests.pipelines.test_ar_video import face_clip


def _clip(tmp_path: Path) -> Path:
    path = tmp_path / "clip.mp4"
    path.write_bytes(face_clip(frames=48).data)
    return path


def test_on_a_terminal_a_video_run_shows_frames_fps_and_time_left(tmp_path: Path) -> None:
    clip = _clip(tmp_path)
    code, shown = on_a_terminal(tmp_path, ["run", str(clip), "--job", "deid"])
    assert code == 0, shown
    # rich redraws the bar in place; some redraw shows frames done of the probed total
    assert re.search(r"frames .*\b\d+/48\b.*\d+\.\d fps", shown), shown
    assert "succeeded" in shown


def test_with_json_or_off_a_terminal_no_bar(tmp_path: Path, fm: Callable[..., Ran]) -> None:
    clip = _clip(tmp_path)
    ran = fm("run", str(clip), "--job", "deid", "--json")
    assert ran.code == 0, ran.stderr
    assert json.loads(ran.stdout)["status"] == "succeeded"
    assert "fps" not in ran.stderr and "/48" not in ran.stderr
