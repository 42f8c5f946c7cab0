"""Redaction of prediction inputs before they are stored: keep, hash, mask or drop per field.

The policy comes from `RecordsConfig.redact` (field -> policy) and `default_policy`:

- ``keep``: the value as served.
- ``hash``: ``"h:"`` + 32 hex digits of a keyed BLAKE2b over the value's canonical JSON.
  Equal values hash equal (so a hashed field still slices and joins), and without the key
  nobody can confirm a guess such as an e-mail address. `1` and `"1"` hash differently.
- ``mask``: ``"***"`` plus a hint of the type: strings of 8 characters or more keep their last
  2 characters (``"***om"``), shorter strings become ``"***"``; numbers ``"***int"`` or
  ``"***float"``, booleans ``"***bool"``, lists ``"***list"``, objects ``"***object"``.
  A null stays null: there is nothing to hide and "missing" is worth seeing.
- ``drop``: the field is removed from the stored row.

The key is 32 random bytes kept in `<home>/records/redact.key` (created 0600 on first use,
atomically) and never stored beside the records in the database: rotate it by deleting the
file, which makes old and new hashes of the same value differ from then on.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from shipyard.errors import ConfigError
from shipyard.routing import RecordsConfig, RedactPolicy

HASH_PREFIX = "h:"
MASK = "***"
KEY_BYTES = 32
KEY_FILE = "redact.key"
SHOWN_TAIL = 2
MIN_SHOWN_LENGTH = 8  # below this, two characters would reveal too much of the value


def load_key(folder: Path) -> bytes:
    """The redaction key in `folder/redact.key`, created (0600, atomically) when missing."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / KEY_FILE
    if not path.exists():
        temporary = folder / f".{KEY_FILE}.{secrets.token_hex(6)}.tmp"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(descriptor, secrets.token_bytes(KEY_BYTES))
        finally:
            os.close(descriptor)
        try:
            # link, not rename: when two processes race, the first key wins for both.
            os.link(temporary, path)
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise ConfigError(
            f"Got a redaction key of {len(key)} bytes in {path}. Expected {KEY_BYTES} bytes.",
            hint="Delete the file to create a new key (hashes made before will not match).",
        )
    return key


def plain(value: Any) -> Any:
    """A JSON-able copy: NumPy scalars and arrays as Python values, NaN and infinity as null
    (and pandas' missing values, <NA> and NaT, too).

    Strict JSON has no NaN; PostgreSQL and most readers refuse it, so non-finite floats are
    stored as null (the schema check has already refused infinity for inputs anyway).
    """
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    tolist = getattr(value, "tolist", None)
    if tolist is not None:  # NumPy scalars and arrays, pandas objects
        return plain(tolist())
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, bytes):
        return value.hex()
    if type(value).__name__ in _MISSING:  # pandas' <NA> and NaT: missing, as NaN is
        return None
    return str(value)  # datetimes, decimals, anything else: readable, never a crash


_MISSING = frozenset({"NAType", "NaTType"})


class Redactor:
    """Applies one deployment's redaction policy to rows of plain (JSON-able) values."""

    def __init__(self, config: RecordsConfig, key: bytes) -> None:
        if len(key) < 16:
            raise ConfigError(
                f"Got a redaction key of {len(key)} bytes. Expected at least 16.",
                hint="Use shipyard.monitoring.redact.load_key(home / 'records').",
            )
        self.policies: dict[str, RedactPolicy] = dict(config.redact)
        self.default: RedactPolicy = config.default_policy
        self._key = key
        # Nothing to do when every field is kept: the common case costs no per-value work.
        self.identity = self.default == "keep" and all(
            policy == "keep" for policy in self.policies.values()
        )

    def __repr__(self) -> str:  # the key never appears in a repr, a log or a traceback
        return f"Redactor(policies={self.policies!r}, default={self.default!r})"

    def policy(self, field: str) -> RedactPolicy:
        return self.policies.get(field, self.default)

    def row(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """One row with every field's policy applied; dropped fields are absent."""
        if self.identity:
            return dict(row)
        redacted: dict[str, Any] = {}
        for field, value in row.items():
            policy = self.policies.get(field, self.default)
            if policy == "keep":
                redacted[field] = value
            elif policy == "hash":
                redacted[field] = self.hash(value)
            elif policy == "mask":
                redacted[field] = mask(value)
            # "drop": nothing
        return redacted

    def rows(self, rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        return [self.row(row) for row in rows]

    def hash(self, value: Any) -> str | None:
        if value is None:
            return None
        canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        digest = hashlib.blake2b(canonical.encode(), key=self._key, digest_size=16).hexdigest()
        return HASH_PREFIX + digest


def mask(value: Any) -> str | None:
    """`***` with a hint of the type (see the module docstring); null stays null."""
    if value is None:
        return None
    if isinstance(value, str):
        return MASK + value[-SHOWN_TAIL:] if len(value) >= MIN_SHOWN_LENGTH else MASK
    if isinstance(value, bool):
        return MASK + "bool"
    if isinstance(value, int):
        return MASK + "int"
    if isinstance(value, float):
        return MASK + "float"
    if isinstance(value, list | tuple):
        return MASK + "list"
    if isinstance(value, Mapping):
        return MASK + "object"
    return MASK
