"""The import rules of docs/ARCHITECTURE.md ("Layers"), checked on the source.

Every module under ``worker/`` and ``pipelines/`` is parsed with :mod:`ast` (nothing is
imported) and every import statement becomes an arrow from that module to the module it names:
``import a.b``, ``from a import b`` (to ``a.b`` when that is a module, else ``a``), relative
imports resolved, imports inside functions included. Imports under ``if TYPE_CHECKING:`` are
arrows too (a type is a dependency), but never run, so they do not make cycles.

- A forbidden arrow fails :func:`test_no_forbidden_arrow`, unless it is one of the named
  :data:`EXCEPTIONS` (each says which change removes it).
- A cycle among module-level imports fails :func:`test_no_import_cycle_at_module_level`
  (imports inside functions, run after every module has loaded, may point back).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("worker", "pipelines")

# The command line: the ``worker.cli`` package and its former sibling module.
CLI = ("worker.cli", "worker.cli_research")
API = ("worker.api",)  # the HTTP entrypoint
SERVICES = ("worker.ledger", "worker.jobs", "worker.research", "worker.retention")


@dataclass(frozen=True)
class Rule:
    """Modules under any of ``sources`` must not import modules under any of ``targets``
    (a module is under ``p`` when it is ``p`` or inside package ``p``); ``unless``: sources
    exempt from the rule; ``allowed``: targets exempt from it (value types, said why)."""

    name: str
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    unless: tuple[str, ...] = ()
    allowed: tuple[str, ...] = ()


# The services that must reach crypto, storage and the deleter through the objects layer.
OBJECT_USERS = ("worker.jobs", "worker.research")
# What they may still import of crypto: value types and the KEK port, no cipher or key store.
# ``SecretKey`` (a key in memory that never shows in a repr: release keys, pseudonym keys) and
# ``Keyring``/``KekRef``/``WrappedKey`` (release keys and the signing key are wrapped by the KEK
# like subject keys; the wrapped bytes and their KEK version are ledger columns).
CRYPTO_VALUE_TYPES = ("worker.crypto.secret", "worker.crypto.keyring")


RULES = (
    Rule("pipelines are pure: they import nothing of worker", ("pipelines",), ("worker",)),
    Rule(
        "crypto knows nothing of storage or the ledger",
        ("worker.crypto",),
        ("worker.storage", "worker.ledger"),
    ),
    Rule(
        "storage only ever sees ciphertext: no crypto, no ledger",
        ("worker.storage",),
        ("worker.crypto", "worker.ledger"),
    ),
    Rule(
        "the ledger is below the objects layer",
        ("worker.ledger",),
        ("worker.objects",),
    ),
    Rule(
        "jobs and research seal and open objects through the objects layer, not crypto",
        OBJECT_USERS,
        ("worker.crypto",),
        allowed=CRYPTO_VALUE_TYPES,
    ),
    Rule(
        "jobs and research store objects through the objects layer, not the store",
        OBJECT_USERS,
        ("worker.storage",),
        # the researcher's side: ``research pull`` reads a store it was given, with no ledger,
        # vault or subject key (release files are sealed under the release key it holds)
        unless=("worker.research.release.pull",),
    ),
    Rule(
        "jobs and research delete through the objects layer's deleter, not retention",
        OBJECT_USERS,
        ("worker.retention",),
    ),
    Rule(
        "services never import an entrypoint (tasks, the Celery app, the CLI, the HTTP API)",
        SERVICES,
        ("worker.tasks", "worker.celery_app", *CLI, *API),
    ),
    Rule(
        "the composition root never imports the tasks, the Celery app or the HTTP API",
        ("worker.bootstrap",),
        ("worker.tasks", "worker.celery_app", *API),
    ),
    Rule(
        "the dispatch port never imports its Celery side or the CLI",
        ("worker.dispatch",),
        ("worker.tasks", "worker.celery_app", *CLI),
    ),
    Rule(
        "only the Celery worker loads the tasks",
        ("worker", "pipelines"),
        ("worker.tasks",),
        unless=("worker.tasks",),
    ),
    Rule(
        "only the tasks import the Celery app",
        ("worker", "pipelines"),
        ("worker.celery_app",),
        unless=("worker.tasks", "worker.celery_app"),
    ),
)

# Existing arrows that break a rule, each until the named change removes it.
EXCEPTIONS: frozenset[tuple[str, str]] = frozenset(
    {
        # The purge of revoked samples takes the named ledger lock of worker/retention/locks.py
        # (a lock row with an expiry, not a retention rule); moving it to worker/ledger/ removes
        # this arrow.
        ("worker.research.release.revocations", "worker.retention.locks"),
    }
)


def under(module: str, prefix: str) -> bool:
    """True when ``module`` is ``prefix`` or inside package ``prefix``."""
    return module == prefix or module.startswith(prefix + ".")


@dataclass(frozen=True)
class Arrow:
    """``source`` imports ``target``; ``top``: at module level (runs on import);
    ``typing``: under ``if TYPE_CHECKING:`` (never runs)."""

    source: str
    target: str
    line: int
    top: bool
    typing: bool


@cache
def modules() -> dict[str, Path]:
    """Every module of the checked packages, by dotted name."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def arrows(module: str, source: str, known: Mapping[str, Path]) -> Iterator[Arrow]:
    """The arrows from ``module`` (whose text is ``source``) to modules in ``known``."""
    is_package = known[module].name == "__init__.py" if module in known else False
    package = module.split(".") if is_package else module.split(".")[:-1]

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    def walk(node: ast.AST, top: bool, typing: bool) -> Iterator[Arrow]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                yield from walk(child, False, typing)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    yield from walk_one(stmt, top, True)
                for stmt in child.orelse:
                    yield from walk_one(stmt, top, typing)
            else:
                yield from walk_one(child, top, typing)

    def walk_one(node: ast.AST, top: bool, typing: bool) -> Iterator[Arrow]:
        names: Iterable[str]
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                origin = ".".join([*base, *([node.module] if node.module else [])])
            else:
                origin = node.module or ""
            names = [f"{origin}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from walk(node, False, typing)
            return
        else:
            yield from walk(node, top, typing)
            return
        for name in names:
            target = resolve(name)
            if target is not None and target != module:
                yield Arrow(module, target, getattr(node, "lineno", 0), top, typing)

    yield from walk(ast.parse(source), True, False)


@cache
def graph() -> tuple[Arrow, ...]:
    """Every arrow of the checked packages."""
    known = modules()
    return tuple(a for m, p in known.items() for a in arrows(m, p.read_text(), known))


def violations(found: Iterable[Arrow], exceptions: frozenset[tuple[str, str]]) -> list[str]:
    """One line per arrow that breaks a rule and is not a named exception."""
    bad = []
    for arrow in found:
        if (arrow.source, arrow.target) in exceptions:
            continue
        for rule in RULES:
            if (
                any(under(arrow.source, s) for s in rule.sources)
                and not any(under(arrow.source, u) for u in rule.unless)
                and any(under(arrow.target, t) for t in rule.targets)
                and not any(under(arrow.target, a) for a in rule.allowed)
            ):
                bad.append(f"{arrow.source}:{arrow.line} → {arrow.target} ({rule.name})")
    return bad


def cycles(found: Iterable[Arrow]) -> list[list[str]]:
    """Strongly connected groups of two or more modules among module-level imports that run."""
    edges: dict[str, set[str]] = {}
    for arrow in found:
        if arrow.top and not arrow.typing:
            edges.setdefault(arrow.source, set()).add(arrow.target)
            edges.setdefault(arrow.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return groups


# ----- the tree ---------------------------------------------------------------------------------


def test_the_graph_sees_every_kind_of_import() -> None:
    found = {(a.source, a.target, a.top, a.typing) for a in graph()}
    # module level, inside a function, under TYPE_CHECKING, ``from package import module``
    assert ("worker.tasks.media", "worker.celery_app", True, False) in found
    assert ("worker.celery_app", "worker.bootstrap", False, False) in found
    assert ("worker.dispatch.inline", "worker.bootstrap", True, True) in found
    assert ("worker.tasks.media", "worker.dispatch.handlers", True, False) in found


def test_no_forbidden_arrow() -> None:
    bad = violations(graph(), EXCEPTIONS)
    assert not bad, "forbidden imports (docs/ARCHITECTURE.md, Layers):\n" + "\n".join(bad)


def test_every_exception_is_still_needed() -> None:
    present = {(a.source, a.target) for a in graph()}
    assert not EXCEPTIONS - present, "remove these exceptions: the arrows are gone"


def test_no_import_cycle_at_module_level() -> None:
    found = cycles(graph())
    assert not found, "module-level import cycles:\n" + "\n".join(" ↔ ".join(c) for c in found)


# ----- the checker itself -----------------------------------------------------------------------


def _fake(sources: Mapping[str, str]) -> list[Arrow]:
    known = {**modules(), **{m: ROOT / (m.replace(".", "/") + ".py") for m in sources}}
    return [a for m, text in sources.items() for a in arrows(m, text, known)]


@pytest.mark.parametrize(
    ("module", "text"),
    [
        ("pipelines.fake", "def f():\n    from worker.settings import load_settings\n"),
        ("worker.crypto.fake", "from worker.storage.base import ObjectStore\n"),
        ("worker.storage.fake", "from ..ledger import models\n"),
        ("worker.storage.fake", "from worker.crypto import Envelope\n"),
        ("worker.ledger.fake", "from worker.objects.layout import checkpoint_key\n"),
        ("worker.jobs.fake", "from worker.crypto import KeyShreddedError\n"),
        ("worker.jobs.fake", "from worker.storage.errors import ObjectMissing\n"),
        ("worker.research.fake", "from worker.crypto.envelope import Envelope\n"),
        ("worker.research.fake", "def f():\n    from worker.storage.base import ObjectStore\n"),
        ("worker.research.ksame.fake", "from worker.retention.deleter import Deleter\n"),
        ("worker.jobs.fake", "from worker.retention.sweep import utcnow\n"),
        ("worker.jobs.fake", "import worker.tasks.media\n"),
        ("worker.retention.fake", "from worker.cli import app\n"),
        ("worker.bootstrap", "def f():\n    from worker.tasks.media import process\n"),
        ("worker.dispatch.fake", "from worker.celery_app import app\n"),
        (
            "worker.research.fake",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from worker import cli\n",
        ),
    ],
)
def test_a_forbidden_arrow_fails(module: str, text: str) -> None:
    assert violations(_fake({module: text}), EXCEPTIONS)


@pytest.mark.parametrize(
    ("module", "text"),
    [
        ("worker.research.fake", "from worker.crypto.secret import SecretKey\n"),
        ("worker.jobs.fake", "from worker.objects.vault import Vault\n"),
        ("worker.research.release.pull", "from worker.storage.base import ObjectStore\n"),
        ("worker.objects.fake", "from worker.crypto import Envelope\n"),
    ],
)
def test_an_allowed_arrow_passes(module: str, text: str) -> None:
    assert not violations(_fake({module: text}), EXCEPTIONS)


def test_a_module_level_cycle_fails_but_a_late_import_does_not() -> None:
    late = {
        "worker.fake_a": "import worker.fake_b\n",
        "worker.fake_b": "def f():\n    import worker.fake_a\n",
    }
    assert cycles(_fake(late)) == []
    typed = {**late, "worker.fake_b": "if TYPE_CHECKING:\n    import worker.fake_a\n"}
    assert cycles(_fake(typed)) == []
    eager = {**late, "worker.fake_b": "from worker import fake_a\n"}
    assert cycles(_fake(eager)) == [["worker.fake_a", "worker.fake_b"]]
