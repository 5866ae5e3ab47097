"""The image, the compose file and the deploy/ artefacts, checked statically (no Docker engine
runs here): they cannot drift from the settings model or the metrics the code exports."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from tests.workers import ROOT
from worker.metrics import metric_names
from worker.settings import Settings, load_settings

COMPILERS = ("gcc", "g++", "clang", "build-essential", "make", "cc ", "python3-dev", "libc6-dev")
OUR_IMAGE = "facemedia:latest"
REQUIRED = {
    "broker_url",
    "database_url",
    "store_url",
    "s3_endpoint_url",
    "s3_region",
    "allowed_regions",
    "keyring",
}


# ----- Dockerfile --------------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """Instructions (keyword, arguments) per stage, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    stages: list[list[tuple[str, str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, args.strip()))
    return stages


def test_dockerfile_is_multi_stage_and_the_final_stage_is_hardened() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    final = stages[-1]
    kinds = [k for k, _ in final]
    assert any(k == "COPY" and a.startswith("--from=build") for k, a in final)
    # non-root
    users = [a for k, a in final if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    # no compilers installed in the final stage
    for k, a in final:
        if k == "RUN":
            assert not any(c in a for c in COMPILERS), a
    # health asked of the worker itself, with a timeout; a stop signal; the worker command
    health = [a for k, a in final if k == "HEALTHCHECK"]
    assert len(health) == 1 and "inspect ping" in health[0] and "--timeout" in health[0]
    assert ("STOPSIGNAL", "SIGTERM") in final
    cmd = json.loads(next(a for k, a in final if k == "CMD"))
    assert cmd[:4] == ["celery", "-A", "worker.celery_app", "worker"] and "-Q" in cmd
    env = " ".join(a for k, a in final if k == "ENV")
    for needed in ("REMAP_SIGTERM=SIGQUIT", "HOME=", "TMPDIR=", "PYTHONDONTWRITEBYTECODE=1"):
        assert needed in env, needed
    assert kinds.index("USER") > max(i for i, k in enumerate(kinds) if k == "RUN")


def test_dockerignore_keeps_local_state_and_secrets_out() -> None:
    lines = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "var", ".env", "tests"} <= lines


def test_metrics_dir_is_created_on_a_fresh_tmpfs(tmp_path: Path) -> None:
    """The image sets PROMETHEUS_MULTIPROC_DIR on a tmpfs that starts empty."""
    import subprocess
    import sys

    target = tmp_path / "fresh" / "metrics"
    code = "import worker.metrics as m; m.JOBS.labels('detect', 'succeeded').inc()"
    env = {"PROMETHEUS_MULTIPROC_DIR": str(target), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=60)
    assert list(target.glob("counter_*.db"))


# ----- docker-compose.yml ------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def facemedia_services() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose()["services"].items() if s.get("image") == OUR_IMAGE}


def setting_of(name: str) -> tuple[str, str | None]:
    """FACEMEDIA_RETENTION__OUTPUTS → ("retention", "outputs"); unknown names fail."""
    assert name.startswith("FACEMEDIA_")
    parts = name.removeprefix("FACEMEDIA_").lower().split("__")
    assert len(parts) in (1, 2), name
    field = Settings.model_fields.get(parts[0])
    assert field is not None, f"{name}: no setting {parts[0]!r}"
    if len(parts) == 1:
        return parts[0], None
    model = field.annotation
    assert isinstance(model, type) and issubclass(model, BaseModel), f"{name}: not nested"
    assert parts[1] in model.model_fields, f"{name}: no setting {parts[0]}.{parts[1]}"
    return parts[0], parts[1]


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default} / ${VAR:?error} with placeholder values."""
    value = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)
    return re.sub(r"\$\{[A-Z_]+:\?[^}]*\}", "placeholder", value)


def test_compose_has_the_whole_deployment() -> None:
    services = compose()["services"]
    assert {"redis", "postgres", "seaweedfs", "store-init", "beat", "flower"} <= set(services)
    ours = facemedia_services()
    queues = {}
    for name, svc in ours.items():
        cmd = svc["command"]
        if isinstance(cmd, list) and cmd[:4] == ["celery", "-A", "worker.celery_app", "worker"]:
            queues[name] = cmd[cmd.index("-Q") + 1]
    assert sorted(queues.values()) == ["media", "privacy", "research", "webhooks"]
    beats = [n for n, s in ours.items() if "beat" in s["command"]]
    assert beats == ["beat"] and ours["beat"].get("deploy", {}).get("replicas") == 1
    init = " ".join(services["store-init"]["command"])
    assert "create-bucket" in init and "Status=Enabled" in init
    assert services["seaweedfs"]["healthcheck"]["test"]
    for name, svc in ours.items():
        assert svc["read_only"] is True, name
        assert any(t.startswith("/tmp:") for t in svc["tmpfs"]), name
    soft = float(ours["media-worker"]["environment"]["FACEMEDIA_SOFT_SHUTDOWN_SECONDS"])
    for name in queues:
        grace = int(str(ours[name]["stop_grace_period"]).rstrip("s"))
        assert grace > soft, f"{name}: SIGKILL would cut the soft-shutdown window short"


def test_compose_settings_are_real_complete_and_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    example = tomllib.loads((ROOT / "config" / "production.example.toml").read_text())
    for name, svc in facemedia_services().items():
        env = {k: interpolate(str(v)) for k, v in svc["environment"].items()}
        ours = {k: v for k, v in env.items() if k.startswith("FACEMEDIA_")}
        found = {setting_of(k) for k in ours}
        missing = REQUIRED - {top for top, _ in found}
        assert not missing, f"{name} lacks {sorted(missing)}"
        for top, sub in found:  # the production example names every setting compose sets
            assert top in example and (sub is None or sub in example[top]), (name, top, sub)
        # the values parse: the settings model accepts this environment as a worker would
        for key in [k for k in __import__("os").environ if k.startswith("FACEMEDIA_")]:
            monkeypatch.delenv(key)
        for key, value in ours.items():
            monkeypatch.setenv(key, value)
        settings = load_settings()  # config/default.toml under this environment
        assert settings.broker_url.startswith("redis://redis:")
        host = settings.database_url.split("@", 1)[1].split(":", 1)[0]
        assert host in compose()["services"], host
        assert settings.s3_region in settings.allowed_regions


# ----- deploy/ -----------------------------------------------------------------------------------


METRIC = re.compile(r"\b(facemedia_[a-z_]+)\b")


def _known(name: str) -> bool:
    return name in metric_names()


def test_alert_rules_parse_and_use_only_exported_metrics() -> None:
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    assert {"FacemediaSweepLag", "FacemediaJobFailureRate", "FacemediaStuckJobs"} <= set(alerts)
    used = set()
    for rule in alerts.values():
        assert rule["annotations"]["runbook"].startswith("docs/OPERATIONS.md#")
        used |= set(METRIC.findall(rule["expr"]))
    unknown = sorted(n for n in used if not _known(n))
    assert not unknown, unknown
    anchors = _doc_anchors()
    for rule in alerts.values():
        assert rule["annotations"]["runbook"].split("#")[1] in anchors, rule["alert"]


def test_dashboard_parses_and_uses_only_exported_metrics() -> None:
    dash = json.loads((ROOT / "deploy" / "grafana" / "facemedia.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = {n for e in exprs for n in METRIC.findall(e)}
    unknown = sorted(n for n in used if not _known(n))
    assert not unknown, unknown
    for needed in ("facemedia_stage_duration_seconds_bucket", "facemedia_queue_depth"):
        assert needed in used
    prom = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert prom["rule_files"] == ["alerts.yml"]


def _doc_anchors() -> set[str]:
    """GitHub-style anchors of the headings of docs/OPERATIONS.md."""
    anchors = set()
    for line in (ROOT / "docs" / "OPERATIONS.md").read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^a-z0-9 -]", "", title).replace(" ", "-"))
    return anchors


def test_the_healthcheck_command_names_the_worker_node() -> None:
    final = dockerfile_stages()[-1]
    health = next(a for k, a in final if k == "HEALTHCHECK")
    cmd = shlex.split(health.split("CMD", 1)[1])
    assert cmd[:5] == ["celery", "-A", "worker.celery_app", "inspect", "ping"]
    # the node names the image's worker (-n media@%h) and every compose worker (-n QUEUE@%h)
    # take, and celery's default: the ping reaches whichever this container runs
    destinations = cmd[cmd.index("-d") + 1].split(",")
    assert "celery@${HOSTNAME}" in destinations
    image_cmd = json.loads(next(a for k, a in final if k == "CMD"))
    names = [image_cmd[image_cmd.index("-n") + 1]]
    for svc in facemedia_services().values():
        if "-n" in svc["command"]:
            names.append(svc["command"][svc["command"].index("-n") + 1])
    for name in names:
        assert name.replace("%h", "${HOSTNAME}") in destinations, name
