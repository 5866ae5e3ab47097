"""Fixtures shared by the research tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest


@pytest.fixture
def containers(make_settings: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """Build embedded containers from settings overrides; each becomes the process's container
    (so tasks and the CLI use it) and all are closed at the end."""
    from worker.bootstrap import Container, set_container

    built: list[Any] = []

    def build(**overrides: Any) -> Any:
        container = Container(make_settings(**overrides))
        set_container(container)
        built.append(container)
        return container

    try:
        yield build
    finally:
        for container in built:
            container.close()
        set_container(None)


@pytest.fixture(autouse=True)
def researcher_config(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """Each test's researcher has a config directory of their own (pinned signers, newest
    revocation list seen): ``$XDG_CONFIG_HOME`` points into the test's temporary directory."""
    from pathlib import Path

    base: Path = tmp_path_factory.mktemp("xdg")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(base))
    return base / "facemedia"
