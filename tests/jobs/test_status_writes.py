"""Nothing but worker/jobs/lifecycle.py changes a job's status.

The check reads every module under ``worker/`` (its syntax tree, not its text) and fails on:
``<x>.status = ...`` (also in a tuple, ``+=`` or ``setattr``) in a module that uses the ``Job``
model; ``Job(..., status=...)``; ``update(Job...)``/``insert(Job...)`` chains whose ``.values``
set ``status``; and SQL text that updates or inserts into ``jobs`` naming ``status``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
LIFECYCLE = ROOT / "worker" / "jobs" / "lifecycle.py"
_SQL = re.compile(r"\b(update\s+jobs\b.*\bset\b|insert\s+into\s+jobs\b).*\bstatus\b", re.I | re.S)


def _uses_job(tree: ast.AST) -> bool:
    return any(
        (isinstance(n, ast.Name) and n.id == "Job")
        or (isinstance(n, ast.Attribute) and n.attr == "Job")
        or (isinstance(n, ast.alias) and n.name == "Job")
        for n in ast.walk(tree)
    )


def _is_job(node: ast.AST) -> bool:
    """``Job``, ``models.Job`` or ``Job.__table__``."""
    if isinstance(node, ast.Attribute) and node.attr == "__table__":
        node = node.value
    return (isinstance(node, ast.Name) and node.id == "Job") or (
        isinstance(node, ast.Attribute) and node.attr == "Job"
    )


def _chain_root(node: ast.AST) -> ast.AST:
    """The first call of ``update(Job).where(...).values(...)``."""
    while True:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            node = node.func.value
        elif isinstance(node, ast.Attribute):
            node = node.value
        else:
            return node


def _sets_status(call: ast.Call) -> bool:
    if any(k.arg == "status" for k in call.keywords):
        return True
    return any(
        isinstance(a, ast.Dict)
        and any(isinstance(k, ast.Constant) and k.value == "status" for k in a.keys)
        for a in call.args
    )


def _targets(node: ast.AST) -> list[ast.AST]:
    if isinstance(node, ast.Assign):
        found: list[ast.AST] = []
        for t in node.targets:
            found += list(t.elts) if isinstance(t, ast.Tuple | ast.List) else [t]
        return found
    if isinstance(node, ast.AugAssign | ast.AnnAssign):
        return [node.target]
    return []


def status_writes(source: str, name: str = "<source>") -> list[str]:
    """Every place in ``source`` that writes a job's status (``name:line: what``)."""
    tree = ast.parse(source)
    uses_job = _uses_job(tree)
    found: list[str] = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if uses_job:
            for target in _targets(node):
                if isinstance(target, ast.Attribute) and target.attr == "status":
                    found.append(f"{name}:{line}: assigns .status")
        if isinstance(node, ast.Call):
            func = node.func
            if uses_job and (
                isinstance(func, ast.Name)
                and func.id == "setattr"
                and len(node.args) > 1
                and isinstance(node.args[1], ast.Constant)
                and node.args[1].value == "status"
            ):
                found.append(f"{name}:{line}: setattr status")
            if _is_job(func) and any(k.arg == "status" for k in node.keywords):
                found.append(f"{name}:{line}: Job(status=...)")
            if isinstance(func, ast.Attribute) and func.attr == "values" and _sets_status(node):
                root = _chain_root(func.value)
                if (
                    isinstance(root, ast.Call)
                    and isinstance(root.func, ast.Name)
                    and root.func.id in ("update", "insert")
                    and root.args
                    and _is_job(root.args[0])
                ):
                    found.append(f"{name}:{line}: {root.func.id}(Job).values(status=...)")
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and _SQL.search(node.value)
        ):
            found.append(f"{name}:{line}: SQL writes jobs.status")
    return found


def test_only_the_lifecycle_writes_a_job_status() -> None:
    found: list[str] = []
    for path in sorted((ROOT / "worker").rglob("*.py")):
        if path == LIFECYCLE:
            continue
        found += status_writes(path.read_text(), str(path.relative_to(ROOT)))
    assert found == [], "status changes belong in worker/jobs/lifecycle.py:\n" + "\n".join(found)


def test_the_check_sees_every_form() -> None:
    """The check itself: each way of writing a status is caught; reads and other tables are not."""
    bad = {
        "job.status = 'failed'": 1,
        "job.status, job.error_code = 'expired', 'expired'": 1,
        "setattr(job, 'status', 'failed')": 1,
        "s.add(Job(id=i, status='queued'))": 1,
        "s.execute(update(Job).where(Job.id == i).values(status='queued', x=1))": 1,
        "s.execute(update(models.Job).values({'status': 'queued'}))": 1,
        "s.execute(update(Job.__table__).where(a).values(status=b))": 1,
        "s.execute(text('UPDATE jobs SET lease_until = NULL, status = :s'))": 1,
    }
    for snippet, count in bad.items():
        assert len(status_writes(f"from m import Job\n{snippet}\n")) == count, snippet
    fine = [
        "if job.status == 'failed': pass",
        "x = job.status",
        "s.execute(update(Release).values(status='published'))",
        "log.info('done', status='ok')",
        "s.execute(update(Job).values(lease_until=None))",
        "s.execute(text('UPDATE jobs SET lease_until = NULL'))",
    ]
    for snippet in fine:
        assert status_writes(f"from m import Job\n{snippet}\n") == [], snippet
    # a module without the Job model may keep its own status (releases)
    assert status_writes("release.status = 'published'\n") == []
