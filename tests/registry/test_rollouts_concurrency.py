"""Rollouts under concurrency and across migrations, on SQLite and the real PostgreSQL.

Racing threads each open a registry of their own (their own engine and connections, as
separate controllers would) and wait on a barrier so their writes really overlap.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import IntegrityError as DatabaseIntegrityError

from shipyard.errors import ConflictError
from shipyard.registry import Registry, rollouts
from shipyard.registry.database import MIGRATIONS, SCHEMA_HEAD
from shipyard.registry.tables import VERSION_TABLE, metadata
from shipyard.settings import Settings

MakeBundle = Callable[..., Path]
THREADS = 8
T0 = datetime(2030, 1, 1, tzinfo=UTC)


def _prepare(registry: Registry, make_bundle: MakeBundle) -> None:
    registry.push(make_bundle(version="1.0", content=b"1"))
    registry.push(make_bundle(version="2.0", content=b"2"))
    spec = {"variants": [{"name": "champion", "model": "iris:1.0", "weight": 100}]}
    registry.deploy("web", spec, actor="ana")


def _start(registry: Registry, who: str = "ana") -> rollouts.RolloutRecord:
    return registry.start_rollout(
        "web", strategy="canary", plan={"steps": [5, 100]}, candidate="iris:2.0", actor=who
    )


def _race(settings: Settings, act: Callable[[Registry, int], Any]) -> list[Any]:
    """Run `act(registry, i)` in THREADS threads at once; each result or raised error."""
    barrier = threading.Barrier(THREADS)
    results: list[Any] = [None] * THREADS

    def run(index: int) -> None:
        with Registry.open(settings) as registry:
            barrier.wait(timeout=30)
            try:
                results[index] = act(registry, index)
            except Exception as exc:  # the caller counts winners and losers
                results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive()
    return results


@pytest.fixture
def web(registry: Registry, make_bundle: MakeBundle) -> Registry:
    _prepare(registry, make_bundle)
    return registry


def _settings(registry: Registry) -> Settings:
    return registry.settings


def test_concurrent_starts_have_exactly_one_winner(web: Registry) -> None:
    results = _race(_settings(web), lambda registry, i: _start(registry, f"ctl-{i}"))
    winners = [r for r in results if isinstance(r, rollouts.RolloutRecord)]
    losers = [r for r in results if isinstance(r, ConflictError)]
    assert len(winners) == 1 and len(losers) == THREADS - 1, results
    assert web.rollouts("web") == winners
    starts = [e for e in web.audit(limit=100) if e.action == "rollout.start"]
    assert len(starts) == 1 and starts[0].actor == winners[0].created_by
    assert web.verify_audit().ok


def test_concurrent_updates_of_one_generation_have_exactly_one_winner(web: Registry) -> None:
    started = _start(web)
    results = _race(
        _settings(web),
        lambda registry, i: registry.update_rollout(
            started.id, generation=1, state={"writer": i}, actor=f"ctl-{i}"
        ),
    )
    winners = [r for r in results if isinstance(r, rollouts.RolloutRecord)]
    assert len(winners) == 1, results
    assert all(isinstance(r, ConflictError) for r in results if r not in winners)
    final = web.rollout(started.id)
    assert final.generation == 2 and final.state == winners[0].state
    assert web.verify_audit().ok


def test_concurrent_lease_requests_have_exactly_one_owner(web: Registry) -> None:
    started = _start(web)
    results = _race(
        _settings(web), lambda registry, i: registry.acquire_lease(started.id, f"c{i}", 60, T0)
    )
    assert results.count(True) == 1 and results.count(False) == THREADS - 1, results
    owner = web.rollout(started.id).lease_owner
    assert owner == f"c{results.index(True)}"
    # Expired: the whole crowd tries again, and again exactly one takes it over.
    later = T0 + timedelta(seconds=61)
    results = _race(
        _settings(web),
        lambda registry, i: registry.acquire_lease(started.id, f"d{i}", 60, later),
    )
    assert results.count(True) == 1, results
    assert web.rollout(started.id).lease_owner == f"d{results.index(True)}"


def _raw_rollout(status: str, deployment_id: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "deployment_id": deployment_id,
        "status": status,
        "strategy": "canary",
        "plan": "{}",
        "step": 0,
        "step_started_at": now,
        "baseline_revision": 1,
        "revision": 1,
        "candidate": "iris:2.0",
        "candidate_digest": "0" * 64,
        "state": "{}",
        "reason": "",
        "created_at": now,
        "created_by": "outsider",
        "updated_at": now,
        "updated_by": "outsider",
        "generation": 1,
    }


def test_the_database_itself_allows_one_active_rollout_per_deployment(web: Registry) -> None:
    started = _start(web)
    table = rollouts.rollouts_table
    with web.database.read() as conn:
        deployment_id = conn.execute(select(table.c.deployment_id)).scalar_one()
    for status in ("running", "paused"):
        with pytest.raises(DatabaseIntegrityError), web.database.write() as conn:
            conn.execute(table.insert().values(**_raw_rollout(status, deployment_id)))
    with web.database.write() as conn:  # finished rollouts are history: any number of them
        for status in ("promoted", "rolled_back", "aborted", "failed", "promoted"):
            conn.execute(table.insert().values(**_raw_rollout(status, deployment_id)))
    # The status check is the database's too: no status outside the six.
    with pytest.raises(DatabaseIntegrityError), web.database.write() as conn:
        conn.execute(table.insert().values(**_raw_rollout("done", deployment_id)))
    assert [r.id for r in web.rollouts("web") if r.active] == [started.id]


def test_a_start_that_skipped_the_check_still_loses_with_a_conflict(
    web: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _start(web)
    before = web.verify_audit().entries
    # A writer that skipped the check (one outside shipyard, or a bug): the index decides.
    monkeypatch.setattr(rollouts, "check_none_active", lambda *_: None)
    with pytest.raises(ConflictError, match=f"rollout {first.id} is still running"):
        _start(web)
    assert web.rollouts("web") == [first] and web.verify_audit().entries == before


# Migration 0002 -------------------------------------------------------------------------------


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def test_0002_follows_0001() -> None:
    script = ScriptDirectory.from_config(_config())
    assert script.get_current_head() == SCHEMA_HEAD
    revision = script.get_revision("0002")
    assert revision is not None and revision.down_revision == "0001"


def test_the_migrated_schema_matches_the_tables_the_code_describes(
    fresh_registry: Registry,
) -> None:
    with fresh_registry.database.read() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        assert compare_metadata(context, metadata) == []
        assert context.get_current_revision() == SCHEMA_HEAD
        names = set(inspect(conn).get_table_names())
    assert {"rollouts", "rollout_decisions"} <= names


def test_0002_downgrades_keeping_earlier_data_and_upgrades_again(
    fresh_registry: Registry, make_bundle: MakeBundle
) -> None:
    registry = fresh_registry  # its own schema: this test drops and recreates tables
    _prepare(registry, make_bundle)
    started = _start(registry)
    registry.record_decision(started.id, rule="error_rate", outcome="pass")
    config = _config()
    with registry.database.write() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0001")
    assert registry.database.schema_revisions() == ["0001"]
    with registry.database.read() as conn:
        names = set(inspect(conn).get_table_names())
    assert not {"rollouts", "rollout_decisions"} & names
    assert [d.name for d in registry.deployments()] == ["web"]  # 0001's data is untouched
    assert registry.verify_audit().ok
    registry.database.migrate()
    assert registry.database.schema_revisions() == [SCHEMA_HEAD]
    assert registry.rollouts("web") == []
    again = _start(registry)
    registry.record_decision(again.id, rule="error_rate", outcome="fail")
    with pytest.raises(DBAPIError, match="append-only"), registry.database.write() as conn:
        conn.execute(text("DELETE FROM rollout_decisions"))
    with pytest.raises(ConflictError):
        _start(registry)
