"""Two processes writing at once corrupt nothing and lose nothing, on SQLite and PostgreSQL.

Workers are started with the spawn method (no inherited connections or locks) and wait on a
barrier so their writes really overlap, starting with the schema migration of a fresh
registry.
"""

from __future__ import annotations

import multiprocessing
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shipyard.bundle.files import verify
from shipyard.bundle.manifest import Manifest
from shipyard.errors import ConflictError
from shipyard.registry import Registry
from shipyard.settings import Settings

MakeBundle = Callable[..., Path]
Op = tuple[str, str]

pytestmark = pytest.mark.slow


def _worker(settings: Settings, ops: list[Op], barrier: Any, results: Any, who: str) -> None:
    """Run `ops` against a registry of its own; report ("push"|"conflict"|..., detail) tuples."""
    done: list[tuple[str, str, bool]] = []
    try:
        barrier.wait(timeout=60)
        with Registry.open(settings) as registry:
            for kind, arg in ops:
                if kind == "push":
                    try:
                        result = registry.push(Path(arg), actor=who)
                        done.append(("push", result.ref, result.created))
                    except ConflictError:
                        done.append(("conflict", arg, False))
                elif kind == "alias":
                    registry.set_alias("iris", "production", arg, actor=who)
                    done.append(("alias", arg, True))
                else:
                    spec = {"variants": [{"name": "champion", "model": f"iris:{arg}"}]}
                    revision = registry.deploy("web", spec, actor=who, reason=arg)
                    done.append(("deploy", str(revision.number), True))
        results.put((who, done, None))
    except BaseException:
        results.put((who, done, traceback.format_exc()))


def _run(settings: Settings, plans: dict[str, list[Op]]) -> dict[str, list[tuple[str, str, bool]]]:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(plans))
    results = context.Queue()
    processes = [
        context.Process(target=_worker, args=(settings, ops, barrier, results, who))
        for who, ops in plans.items()
    ]
    for process in processes:
        process.start()
    outcome: dict[str, list[tuple[str, str, bool]]] = {}
    for _ in processes:
        who, done, failure = results.get(timeout=120)
        assert failure is None, f"worker {who} failed:\n{failure}"
        outcome[who] = done
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    return outcome


def _assert_intact(registry: Registry, tmp_path: Path) -> None:
    """Audit chain verifies and every version pulls back complete and verified."""
    check = registry.verify_audit()
    assert check.ok, check.problem
    for record in registry.versions("iris"):
        pulled = registry.pull(record.ref, tmp_path / "pulled" / record.version)
        verify(pulled, Manifest.read(pulled))
        assert Manifest.read(pulled).digest() == record.digest


def test_two_processes_pushing_aliasing_and_deploying_lose_nothing(
    fresh_backend_settings: Settings, make_bundle: MakeBundle, tmp_path: Path
) -> None:
    plans: dict[str, list[Op]] = {}
    for who, versions in (("ana", range(1, 7)), ("bo", range(7, 13))):
        ops: list[Op] = []
        for n in versions:
            bundle = make_bundle(version=f"{n}.0", content=f"weights {n}".encode() * 1000)
            ops += [("push", str(bundle)), ("alias", f"{n}.0"), ("deploy", f"{n}.0")]
        plans[who] = ops
    outcome = _run(fresh_backend_settings, plans)

    with Registry.open(fresh_backend_settings) as registry:
        assert sorted(v.version for v in registry.versions("iris")) == sorted(
            f"{n}.0" for n in range(1, 13)
        )
        revisions = registry.revisions("web")
        assert [r.number for r in revisions] == list(range(1, 13))
        assert sorted(r.reason for r in revisions) == sorted(f"{n}.0" for n in range(1, 13))
        assert len(registry.alias_history("iris", "production")) == 12
        entries = registry.audit(limit=1000)
        assert len(entries) == 36
        assert sorted(e.seq for e in entries) == list(range(1, 37))
        assert registry.change_token() == max(r.id for r in revisions)
        _assert_intact(registry, tmp_path)
    assert all(created for done in outcome.values() for kind, _, created in done if kind == "push")


def test_two_processes_pushing_the_same_versions_agree_on_one_winner(
    fresh_backend_settings: Settings, make_bundle: MakeBundle, tmp_path: Path
) -> None:
    plans: dict[str, list[Op]] = {"ana": [], "bo": []}
    for n in range(1, 5):  # identical content from both: one creates, one is a no-op
        for who in plans:
            plans[who].append(("push", str(make_bundle(version=f"same{n}", content=b"s" * n))))
    for n in range(1, 5):  # different content: one creates, one is refused
        for who in plans:
            bundle = make_bundle(version=f"race{n}", content=f"{who} {n}".encode())
            plans[who].append(("push", str(bundle)))
    outcome = _run(fresh_backend_settings, plans)

    pushes = [entry for done in outcome.values() for entry in done]
    for n in range(1, 5):
        same = [created for kind, ref, created in pushes if ref == f"iris:same{n}"]
        assert sorted(same) == [False, True]
    created_races = [ref for kind, ref, created in pushes if kind == "push" and "race" in ref]
    conflicts = [arg for kind, arg, _ in pushes if kind == "conflict"]
    assert sorted(created_races) == [f"iris:race{n}" for n in range(1, 5)]
    assert len(conflicts) == 4

    with Registry.open(fresh_backend_settings) as registry:
        assert len(registry.versions("iris")) == 8
        assert [e.action for e in registry.audit(limit=100)] == ["push"] * 8
        for n in range(1, 5):
            winner = registry.resolve(f"iris:race{n}")
            loser = next(a for a in conflicts if f"race{n}-" in Path(a).name)
            assert Manifest.read(Path(loser)).digest() != winner.digest
        _assert_intact(registry, tmp_path)
