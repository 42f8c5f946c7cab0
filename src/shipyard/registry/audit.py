"""The audit log: an append-only hash chain of every write to the registry.

Each entry records who, when (UTC), what (action, target, details) and from where, and
stores `hash = sha256(prev_hash + canonical JSON of the entry)`, where the first entry's
`prev_hash` is 64 zeros. Changing, removing or reordering any entry breaks every later link,
and `verify` walks the chain to find the first broken one.

`append` must run inside `Database.write()`: that transaction holds the registry-wide write
lock, so two writers can never read the same tail and fork the chain (the unique constraint
on `prev_hash` would refuse it anyway).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, select

from shipyard.registry.records import AuditCheck, AuditEntry
from shipyard.registry.tables import audit_log, utcnow

GENESIS = "0" * 64
PAGE = 1000


def canonical_json(value: Any) -> str:
    """One text for one value: sorted keys, no spaces, UTF-8 kept as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(
    prev_hash: str,
    *,
    seq: int,
    at: datetime,
    actor: str,
    origin: str,
    action: str,
    target: str,
    details: dict[str, Any],
) -> str:
    """sha256 of `prev_hash` followed by the canonical JSON of the entry's fields."""
    body = canonical_json(
        {
            "seq": seq,
            "at": at.isoformat(timespec="microseconds"),
            "actor": actor,
            "origin": origin,
            "action": action,
            "target": target,
            "details": details,
        }
    )
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


def append(
    conn: Connection,
    *,
    actor: str,
    origin: str,
    action: str,
    target: str,
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    """Add one entry at the tail of the chain. Call inside `Database.write()` only."""
    details = json.loads(canonical_json(details or {}))  # JSON types only, as stored
    tail = conn.execute(
        select(audit_log.c.seq, audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)
    ).first()
    seq, prev_hash = (tail.seq + 1, tail.hash) if tail else (1, GENESIS)
    # Microseconds are what both SQLite and PostgreSQL store, so the hashed time round-trips.
    at = utcnow()
    fields: dict[str, Any] = {
        "seq": seq,
        "at": at,
        "actor": actor[:200],
        "origin": origin[:300],
        "action": action,
        "target": target[:300],
    }
    digest = entry_hash(prev_hash, details=details, **fields)
    conn.execute(
        audit_log.insert().values(
            details=canonical_json(details), prev_hash=prev_hash, hash=digest, **fields
        )
    )
    return AuditEntry(details=details, prev_hash=prev_hash, hash=digest, **fields)


def entries(conn: Connection, *, limit: int = 100, target: str | None = None) -> list[AuditEntry]:
    """The newest `limit` entries, newest first, optionally for one target only."""
    query = select(audit_log).order_by(audit_log.c.seq.desc()).limit(max(0, limit))
    if target is not None:
        query = query.where(audit_log.c.target == target)
    return [_entry(row) for row in conn.execute(query)]


def verify(conn: Connection) -> AuditCheck:
    """Walk the whole chain in pages and report the first entry whose link does not hold."""
    prev_hash, expected_seq, count = GENESIS, 1, 0
    while True:
        page = conn.execute(
            select(audit_log)
            .where(audit_log.c.seq >= expected_seq)
            .order_by(audit_log.c.seq)
            .limit(PAGE)
        ).all()
        for row in page:
            problem = _check(row, prev_hash, expected_seq)
            if problem:
                return AuditCheck(ok=False, entries=count, first_bad=row.seq, problem=problem)
            prev_hash, expected_seq, count = row.hash, expected_seq + 1, count + 1
        if len(page) < PAGE:
            return AuditCheck(ok=True, entries=count)


def _check(row: Row[Any], prev_hash: str, expected_seq: int) -> str:
    if row.seq != expected_seq:
        return f"entry {expected_seq} is missing (next entry is {row.seq})"
    if row.prev_hash != prev_hash:
        return f"entry {row.seq} does not link to entry {row.seq - 1}"
    try:
        details = json.loads(row.details)
    except ValueError:
        return f"entry {row.seq} has details that are not JSON"
    recomputed = entry_hash(
        prev_hash,
        seq=row.seq,
        at=row.at,
        actor=row.actor,
        origin=row.origin,
        action=row.action,
        target=row.target,
        details=details,
    )
    if recomputed != row.hash:
        return f"entry {row.seq} was changed after it was written (hash mismatch)"
    return ""


def _entry(row: Row[Any]) -> AuditEntry:
    return AuditEntry(
        seq=row.seq,
        at=row.at,
        actor=row.actor,
        origin=row.origin,
        action=row.action,
        target=row.target,
        details=json.loads(row.details),
        prev_hash=row.prev_hash,
        hash=row.hash,
    )
