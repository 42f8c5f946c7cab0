"""Registry fixtures: one empty registry per test, on SQLite and on PostgreSQL.

PostgreSQL tests share one migrated schema per session and start from emptied tables
(TRUNCATE skips the audit log's row triggers and resets the sequences), which keeps the
suite fast; `fresh_backend_settings` gives a schema of the test's own where a test needs
one (racing migrations, dropping triggers).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from shipyard.registry import Registry
from shipyard.registry.tables import metadata
from shipyard.settings import Settings

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture
def postgres_empty_url(postgres_session_url: str) -> str:
    """The session schema, migrated, with every registry table emptied."""
    settings = Settings.load(overrides={"database_url": postgres_session_url}, environ={})
    Registry.open(settings).close()  # migrates on first use, a one-query no-op after
    tables = ", ".join(table.name for table in metadata.sorted_tables)
    engine = create_engine(postgres_session_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()
    return postgres_session_url


@pytest.fixture(params=BACKENDS)
def backend_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """Settings for an empty registry on each backend."""
    if request.param == "sqlite":
        return settings
    url = request.getfixturevalue("postgres_empty_url")
    return settings.model_copy(update={"database_url": url})


@pytest.fixture(params=BACKENDS)
def fresh_backend_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """Settings for a registry on a database nobody has touched yet (not even migrated)."""
    if request.param == "sqlite":
        return settings
    url = request.getfixturevalue("postgres_schema_url")
    return settings.model_copy(update={"database_url": url})


@pytest.fixture
def registry(backend_settings: Settings) -> Iterator[Registry]:
    with Registry.open(backend_settings) as opened:
        yield opened


@pytest.fixture
def fresh_registry(fresh_backend_settings: Settings) -> Iterator[Registry]:
    with Registry.open(fresh_backend_settings) as opened:
        yield opened


@pytest.fixture
def sqlite_registry(settings: Settings) -> Iterator[Registry]:
    """For behaviour that does not depend on the database backend."""
    with Registry.open(settings) as opened:
        yield opened
