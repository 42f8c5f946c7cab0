"""The registry database: one engine, read and write transactions, migrations, error mapping.

SQLite (the default) runs in WAL mode so readers never block the writer, with foreign keys
on and a busy timeout from `settings.db_timeout_s`. PostgreSQL gets the same timeout as its
`connect_timeout` and `lock_timeout`.

Writes are serialized: every write transaction takes one registry-wide lock before its first
statement (`BEGIN IMMEDIATE` on SQLite, `pg_advisory_xact_lock` on PostgreSQL). That is what
keeps the audit chain linear and revision numbers gap-free under concurrent writers; writes
are few and short, so one lock costs nothing that matters.

A locked or unreachable database becomes `RegistryUnavailableError` naming the URL with its
password hidden. The password never reaches an error or a log line.

Opening an up-to-date registry costs one query (the version table against `SCHEMA_HEAD`);
Alembic, slow to import, is loaded only when the schema actually needs migrating.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    String,
    column,
    create_engine,
    event,
    inspect,
    select,
    table,
    text,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from shipyard.errors import ConfigError, RegistryUnavailableError
from shipyard.registry.tables import VERSION_TABLE

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest revision in migrations/versions. Bump it with every new migration: a test checks
# it against Alembic's own view of the scripts, so the two cannot drift apart unnoticed.
SCHEMA_HEAD = "0003"
# Two int4 keys: a constant for "shipyard registry writes" and the schema, so registries in
# different schemas of one PostgreSQL database do not wait on each other.
PG_LOCK = "SELECT pg_advisory_xact_lock(1936287346, hashtext(current_schema()))"
BEGIN_MODE = "shipyard_sqlite_begin"


def redact(url: str | URL) -> str:
    """The URL as text with any password replaced by `***`."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


class Database:
    """An engine plus the house rules for transactions on it."""

    def __init__(self, url: str, *, timeout_s: float) -> None:
        try:
            self.url = make_url(url)
        except ArgumentError:
            raise ConfigError(
                "Got an unparseable value for database_url. Expected an SQLAlchemy URL such "
                "as sqlite:///path/registry.db or postgresql+psycopg://user@host/db.",
                hint="Fix SHIPYARD_DATABASE_URL or database_url in config.yaml.",
            ) from None  # the parser's message quotes the URL, password included
        self.shown_url = redact(self.url)
        self.timeout_s = timeout_s
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self.engine = self._create_engine()

    def _create_engine(self) -> Engine:
        if self.is_sqlite:
            database = self.url.database
            if database and database != ":memory:" and not database.startswith("file:"):
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(self.url, connect_args={"timeout": self.timeout_s})
            event.listen(engine, "connect", self._sqlite_connect)
            event.listen(engine, "begin", _sqlite_begin)
            return engine
        connect_args: dict[str, Any] = {}
        if self.url.get_backend_name() == "postgresql":
            # libpq's connect_timeout is whole seconds, at least 2.
            connect_args["connect_timeout"] = max(2, math.ceil(self.timeout_s))
            lock = f"-c lock_timeout={int(self.timeout_s * 1000)}"
            existing = self.url.query.get("options")
            existing_text = existing if isinstance(existing, str) else " ".join(existing or ())
            connect_args["options"] = f"{existing_text} {lock}".strip()
        try:
            return create_engine(self.url, connect_args=connect_args, pool_pre_ping=True)
        except (ImportError, ArgumentError):
            raise ConfigError(
                f"Got {self.shown_url} for database_url, but its database or driver is not "
                "available. Expected sqlite:///PATH or postgresql+psycopg://USER@HOST/DB.",
                hint="For PostgreSQL: pip install 'shipyard[postgres]' and use a "
                "postgresql+psycopg:// URL.",
            ) from None

    def _sqlite_connect(self, dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module: it would otherwise open
        # deferred transactions on its own, and we need BEGIN IMMEDIATE for writes.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(self.timeout_s * 1000)}")
            cursor.execute("PRAGMA foreign_keys = ON")
            self._enter_wal(cursor)
        finally:
            cursor.close()

    def _enter_wal(self, cursor: Any) -> None:
        """Switch to WAL, retrying while another connection holds the file.

        The switch needs the file to itself, and SQLite reports "database is locked" for it
        at once, without waiting out busy_timeout; two processes opening a brand-new registry
        together hit exactly that. Once the file is in WAL mode this is a single read.
        """
        deadline = time.monotonic() + self.timeout_s
        pause = 0.005
        while True:
            try:
                # Answers the mode now in force: "memory" for an in-memory database is fine.
                cursor.execute("PRAGMA journal_mode = WAL").fetchone()
                return
            except sqlite3.OperationalError as exc:
                busy = "locked" in str(exc) or "busy" in str(exc)
                if not busy or time.monotonic() > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.1)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction: one consistent snapshot, never blocks the writer."""
        with self.unavailable_as_error(), self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction holding the registry-wide write lock; commits on success."""
        with self.unavailable_as_error(), self.engine.connect() as conn:
            if self.is_sqlite:
                conn = conn.execution_options(**{BEGIN_MODE: "IMMEDIATE"})
            with conn.begin():
                if self.url.get_backend_name() == "postgresql":
                    conn.execute(text(PG_LOCK))
                yield conn

    @contextmanager
    def unavailable_as_error(self) -> Iterator[None]:
        """Turn a locked or unreachable database into `RegistryUnavailableError`."""
        try:
            yield
        except (OperationalError, InterfaceError, PoolTimeoutError) as exc:
            raise self._unavailable(exc) from None

    def _unavailable(self, exc: Exception) -> RegistryUnavailableError:
        orig = getattr(exc, "orig", None) or exc
        reason = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
        if self.url.password:
            reason = reason.replace(str(self.url.password), "***")
        locked = any(word in reason.lower() for word in ("locked", "lock timeout", "busy"))
        if locked:
            hint = (
                "Another process holds the registry's write lock. Retry in a moment, or raise "
                "db_timeout_s (SHIPYARD_DB_TIMEOUT_S) if writes are legitimately slow."
            )
            what = f"was locked for more than {self.timeout_s:g} s"
        else:
            hint = (
                "Check that the database server is running and reachable, and that "
                "SHIPYARD_DATABASE_URL (database_url) is right."
            )
            what = "could not be reached"
        return RegistryUnavailableError(
            f"Registry database {self.shown_url} {what} ({reason}).",
            hint=hint,
            url=self.shown_url,
        )

    def migrate(self) -> None:
        """Bring the schema to the newest migration; one query, no Alembic, when it is there."""
        if self.schema_revisions() == [SCHEMA_HEAD]:
            return
        # Imported here: Alembic costs about half a second, and only a new or older database
        # needs it. The upgrade runs under the write lock and reads the version table again
        # inside that transaction, so two processes migrating a fresh registry at once
        # apply each migration exactly once.
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.write() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    def schema_revisions(self) -> list[str] | None:
        """The revisions in the version table, or None when there is no version table yet."""
        query = select(column("version_num", String)).select_from(table(VERSION_TABLE))
        with self.unavailable_as_error(), self.engine.connect() as conn:
            try:
                with conn.begin():
                    return sorted(conn.execute(query).scalars())
            except DBAPIError as exc:
                failure = exc
            # Only a fresh database lacks the table. Anything else (locked, unreachable,
            # no permission) is reported as it is, never papered over by a migration.
            with conn.begin():
                exists = inspect(conn).has_table(VERSION_TABLE)
            if exists:
                raise failure
            return None

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_begin(conn: Connection) -> None:
    # Only our own constants ever reach this string: "IMMEDIATE" for writes, "" for reads.
    mode = conn.get_execution_options().get(BEGIN_MODE, "")
    conn.exec_driver_sql(f"BEGIN {mode}".strip())
