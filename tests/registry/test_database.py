"""The database layer: dialect settings, migrations, and a locked or unreachable database."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, func, inspect, select, text

from shipyard.errors import ConfigError, RegistryUnavailableError
from shipyard.registry import Registry
from shipyard.registry.database import MIGRATIONS, PG_LOCK, SCHEMA_HEAD, Database, redact
from shipyard.registry.tables import VERSION_TABLE, audit_log, metadata, versions
from shipyard.settings import Settings

SECRET = "hunter2-secret"

MakeBundle = Callable[..., Path]


def test_redact_hides_the_password() -> None:
    shown = redact(f"postgresql+psycopg://ana:{SECRET}@db.example.com:5432/reg")
    assert SECRET not in shown
    assert shown == "postgresql+psycopg://ana:***@db.example.com:5432/reg"


def test_an_unparseable_url_is_a_config_error_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as caught:
        Database(f"not a url {SECRET}", timeout_s=1)
    assert SECRET not in str(caught.value) and caught.value.__cause__ is None


def test_an_unsupported_database_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"nosuchdb://ana:\*\*\*@host/db") as caught:
        Database(f"nosuchdb://ana:{SECRET}@host/db", timeout_s=1)
    assert SECRET not in str(caught.value)


def test_sqlite_runs_in_wal_mode_with_foreign_keys_and_the_busy_timeout(
    settings: Settings,
) -> None:
    database = Database(settings.resolved_database_url, timeout_s=2.5)
    try:
        with database.read() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 2500
    finally:
        database.close()


def test_the_migrations_create_exactly_the_tables_the_code_describes(
    fresh_backend_settings: Settings,
) -> None:
    with Registry.open(fresh_backend_settings) as registry, registry.database.read() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        assert compare_metadata(context, metadata) == []
        assert context.get_current_revision() == SCHEMA_HEAD


def test_the_migrations_downgrade_to_nothing_and_back(settings: Settings) -> None:
    with Registry.open(settings) as registry:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with registry.database.write() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "base")
        with registry.database.read() as conn:
            assert [t for t in inspect(conn).get_table_names() if t != VERSION_TABLE] == []
        registry.database.migrate()
        assert registry.models() == [] and registry.verify_audit().ok


def test_opening_twice_migrates_once(fresh_backend_settings: Settings) -> None:
    Registry.open(fresh_backend_settings).close()
    with Registry.open(fresh_backend_settings) as registry:
        assert registry.models() == []


def test_schema_head_names_the_newest_migration() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == SCHEMA_HEAD


def test_schema_revisions_tell_a_fresh_database_from_a_migrated_one(
    fresh_backend_settings: Settings,
) -> None:
    url = fresh_backend_settings.resolved_database_url
    database = Database(url, timeout_s=fresh_backend_settings.db_timeout_s)
    try:
        assert database.schema_revisions() is None
        database.migrate()
        assert database.schema_revisions() == [SCHEMA_HEAD]
    finally:
        database.close()


def test_opening_an_up_to_date_registry_never_imports_alembic(settings: Settings) -> None:
    Registry.open(settings).close()  # migrates: the subprocess below finds it up to date
    code = (
        "import sys; from shipyard.registry import Registry; "
        "from shipyard.settings import Settings; "
        f"Registry.open(Settings.load(overrides={{'home': {str(settings.home)!r}}}, environ={{}}))"
        ".close(); sys.exit(1 if 'alembic' in sys.modules else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_push_blocked_by_a_held_sqlite_lock_fails_cleanly(
    settings: Settings, make_bundle: MakeBundle, tmp_path: Path
) -> None:
    quick = settings.model_copy(update={"db_timeout_s": 0.3})
    Registry.open(quick).close()
    blocker = sqlite3.connect(quick.home / "registry.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with Registry.open(quick) as registry:
            started = time.monotonic()
            with pytest.raises(RegistryUnavailableError) as caught:
                registry.push(make_bundle())
            assert time.monotonic() - started < 5
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    error = caught.value
    assert "locked" in error.message and str(quick.home / "registry.db") in error.message
    assert "db_timeout_s" in error.hint and error.status == 503
    with Registry.open(quick) as registry, registry.database.read() as conn:
        assert conn.execute(select(func.count()).select_from(versions)).scalar() == 0
        assert conn.execute(select(func.count()).select_from(audit_log)).scalar() == 0


def test_opening_a_sqlite_registry_held_exclusively_fails_cleanly(settings: Settings) -> None:
    quick = settings.model_copy(update={"db_timeout_s": 0.3})
    Registry.open(quick).close()
    blocker = sqlite3.connect(quick.home / "registry.db", isolation_level=None)
    blocker.execute("PRAGMA locking_mode = EXCLUSIVE")
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(RegistryUnavailableError, match="locked"):
            Registry.open(quick)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


def test_an_unreachable_postgres_fails_fast_and_never_shows_the_password(
    settings: Settings,
) -> None:
    url = f"postgresql+psycopg://ana:{SECRET}@127.0.0.1:1/registry"
    quick = settings.model_copy(update={"database_url": url, "db_timeout_s": 1.0})
    with pytest.raises(RegistryUnavailableError) as caught:
        Registry.open(quick)
    error = caught.value
    rendered = f"{error} {error.to_dict()} {error!r}"
    assert SECRET not in rendered
    assert "postgresql+psycopg://ana:***@127.0.0.1:1/registry" in error.message
    assert "could not be reached" in error.message
    assert "SHIPYARD_DATABASE_URL" in error.hint
    assert error.__cause__ is None and error.__suppress_context__


@pytest.mark.postgres
def test_a_push_blocked_by_a_held_postgres_lock_fails_cleanly(
    settings: Settings, postgres_schema_url: str, make_bundle: MakeBundle
) -> None:
    quick = settings.model_copy(update={"database_url": postgres_schema_url, "db_timeout_s": 0.3})
    Registry.open(quick).close()
    engine = create_engine(postgres_schema_url)
    try:
        with engine.connect() as blocker, blocker.begin():
            blocker.execute(text(PG_LOCK))
            with (
                Registry.open(quick) as registry,
                pytest.raises(RegistryUnavailableError, match="locked") as caught,
            ):
                registry.push(make_bundle())
        assert "db_timeout_s" in caught.value.hint
        with Registry.open(quick) as registry:
            assert registry.models() == []
            assert registry.audit() == []
    finally:
        engine.dispose()
