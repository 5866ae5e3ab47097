"""What an operator starts, checked statically (no Docker engine runs here): every queue the
code uses has a documented worker (a Make target, a compose service, docs/OPERATIONS.md), the
compose workers send task events under unique node names, the image's FACEMEDIA_CONFIG names a
file the image contains, and the repository's comments and docs cite files that exist."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import yaml

from tests.workers import ROOT
from worker.dispatch import names


def _compose_workers() -> dict[str, list[str]]:
    """Compose service → its ``celery ... worker`` command line."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    out = {}
    for name, svc in services.items():
        cmd = svc.get("command")
        if isinstance(cmd, list) and cmd[:4] == ["celery", "-A", "worker.celery_app", "worker"]:
            out[name] = [str(c) for c in cmd]
    return out


def _make_workers() -> dict[str, list[str]]:
    """Make target → its ``celery ... worker`` command line."""
    out: dict[str, list[str]] = {}
    target = ""
    for line in (ROOT / "Makefile").read_text().splitlines():
        match = re.match(r"^([a-z][a-z0-9-]*):", line)
        if match:
            target = match.group(1)
        elif line.startswith("\t") and " worker " in line and "celery" in line:
            out[target] = shlex.split(line.strip())
    return out


def _queue(cmd: list[str]) -> str:
    return cmd[cmd.index("-Q") + 1]


def test_every_queue_the_code_uses_has_a_documented_worker() -> None:
    queues = set(names.QUEUES)
    # every task name routes to one of them
    tasks = [
        v
        for k, v in vars(names).items()
        if k.isupper() and isinstance(v, str) and v.count(".") >= 2 and v.startswith("facemedia.")
    ]
    assert {names.queue_of(t) for t in tasks} == queues
    compose = {_queue(c) for c in _compose_workers().values()}
    make = {_queue(c) for c in _make_workers().values()}
    assert compose == queues, compose
    assert make == queues, make
    ops = (ROOT / "docs" / "OPERATIONS.md").read_text()
    for queue in queues:
        assert re.search(rf"celery -A worker\.celery_app worker -Q {queue}\b", ops), queue
    readme = (ROOT / "README.md").read_text()
    for target in _make_workers():
        assert f"make {target}" in readme, target


def test_compose_workers_send_events_under_unique_node_names() -> None:
    workers = _compose_workers()
    assert len(workers) >= 3
    nodes = []
    for name, cmd in workers.items():
        assert "-E" in cmd or "--task-events" in cmd, name
        node = cmd[cmd.index("-n") + 1]
        # %h: the container's hostname, so replicas of one service differ too
        assert node.endswith("@%h"), (name, node)
        nodes.append(node)
    assert len(set(nodes)) == len(nodes), nodes
    for cmd in _make_workers().values():
        assert "-E" in cmd and cmd[cmd.index("-n") + 1].endswith("@%h"), cmd


def _dockerfile_final_stage() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stage: list[tuple[str, str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        if keyword.upper() == "FROM":
            stage = []
        stage.append((keyword.upper(), args.strip()))
    return stage


def test_the_image_config_file_is_in_the_image() -> None:
    final = _dockerfile_final_stage()
    env = " ".join(a for k, a in final if k == "ENV")
    match = re.search(r"FACEMEDIA_CONFIG=(\S+)", env)
    if match is None:
        return  # not set: the defaults and FACEMEDIA_* variables (nothing to ship)
    target = Path(match.group(1))
    copies = [a.split() for k, a in final if k == "COPY" and not a.startswith("--from")]
    shipped = None
    for *sources, dest in copies:
        for src in sources:
            if target.is_relative_to(dest):
                shipped = ROOT / src / target.relative_to(dest)
    assert shipped is not None, f"no COPY puts anything at {target}"
    assert shipped.is_file(), f"{target} would come from {shipped}, which does not exist"


# ----- citations --------------------------------------------------------------------------------

_CITED = re.compile(
    r"(?<![\w/.-])((?:worker|pipelines|tests|docs|deploy|config|bench|\.ci)/[A-Za-z0-9_./-]*"
    r"[A-Za-z0-9_])"
)
# written by a run, never committed: figures a benchmark appends to
_OUTPUTS = frozenset({"bench/reliability-figures.jsonl"})


def _tracked() -> list[str]:
    def git(*args: str) -> list[str]:
        run = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True)
        return run.stdout.split()

    return git("ls-files") + git("ls-files", "--others", "--exclude-standard")


def test_comments_and_docs_cite_files_that_exist() -> None:
    missing: dict[str, set[str]] = {}
    for name in _tracked():
        path = ROOT / name
        if (
            not path.is_file()
            or name == ".dockerignore"  # patterns of what to leave out, not citations
            or path.suffix in (".png", ".jpg", ".json", ".jsonl", ".parquet", ".glb")
            or "/fixtures/" in name
        ):
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for match in _CITED.finditer(text):
            ref = match.group(1).rstrip(".")
            if ref in _OUTPUTS or (ROOT / ref).exists() or (ROOT / f"{ref}.py").exists():
                continue
            if "*" in text[match.end() : match.end() + 2] and list(ROOT.glob(f"{ref}*")):
                continue  # a pattern (docs/img/avatar-*) that matches files
            missing.setdefault(ref, set()).add(name)
    assert not missing, {k: sorted(v) for k, v in missing.items()}


def test_beat_schedule_files_are_ignored() -> None:
    """`celery beat` run from the repository (`make beat`) leaves its schedule files there."""
    names = ["celerybeat-schedule", "celerybeat-schedule.db", "celerybeat-schedule.dat"]
    names += ["celerybeat-schedule.dir", "celerybeat.pid"]
    run = subprocess.run(
        ["git", "check-ignore", "--no-index", *names], cwd=ROOT, capture_output=True, text=True
    )
    assert sorted(run.stdout.split()) == sorted(names), run.stdout
