"""A logging filter that keeps personal data, secrets and forged lines out of the logs.

`RedactingFilter` rewrites each record before any handler formats it:

- the message is formatted with its args once, redacted (`pii.redact_text`) and stored back
  as `record.msg` with `record.args = None`, so a handler cannot format the raw args again;
- every newline, carriage return, other control character (C0, DEL, C1), Unicode line or
  paragraph separator and bidi override in the message is escaped (``\\n``, ``\\x1b``,
  ``\\u2028``): whatever a caller sends, one record stays one line and cannot forge another
  (log injection). A caller's literal backslash is doubled, so ``\\n`` typed by a caller
  cannot pass for an escaped newline either;
- `extra=` fields are redacted as JSON-like values (for structured formatters);
- an exception's traceback is rendered now: the file and code lines as Python prints them,
  each exception's message redacted and escaped, so an exception raised with a caller's value
  in its message cannot leak it or forge lines.

`install(["shipyard", "uvicorn.access"])` attaches one filter to those loggers and to their
handlers. A filter on a logger sees only records logged *to that logger*, not those that
propagate from its children; a filter on a handler sees everything the handler writes. A
handler added later needs `handler.addFilter(...)` with the filter `install` returns.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Iterable
from typing import Any

from shipyard.security.pii import DEFAULT_POLICY, RedactionPolicy, redact_text, redact_value

_MARK = "_shipyard_redacted"  # set on a record once done, so two filters do the work once
# C0 except tab, DEL and C1, Unicode line/paragraph separators, bidi embeddings and isolates.
_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\\]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\\": "\\\\"}
# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = set(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {
    "message",
    "asctime",
    "taskName",
    _MARK,
}


def escape(text: str) -> str:
    """`text` on one line: control, separator and bidi characters written as escapes."""
    return _UNSAFE.sub(_escape_one, text)


def _escape_one(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class RedactingFilter(logging.Filter):
    """Redacts and escapes every record it sees; never drops one."""

    def __init__(self, policy: RedactionPolicy = DEFAULT_POLICY) -> None:
        super().__init__()
        self.policy = policy

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _MARK, False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not lose the record
            message = f"{record.msg!s} {record.args!r}"
        record.msg = escape(redact_text(message, self.policy))
        record.args = None
        for name, value in list(vars(record).items()):
            if name not in _STANDARD:
                setattr(record, name, redact_value(value, self.policy))
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self.render_exception(record.exc_info[1])
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text, self.policy)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info, self.policy)
        setattr(record, _MARK, True)
        return True

    def render_exception(self, exc: BaseException) -> str:
        """The traceback as Python prints it, each exception's message redacted and escaped."""
        chain: list[tuple[BaseException, str]] = []
        seen: set[int] = set()
        current: BaseException | None = exc
        link = ""
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            chain.append((current, link))
            if current.__cause__ is not None:
                current, link = current.__cause__, _CAUSE
            elif current.__context__ is not None and not current.__suppress_context__:
                current, link = current.__context__, _CONTEXT
            else:
                current = None
        parts: list[str] = []
        for item, item_link in reversed(chain):
            if item.__traceback__ is not None:
                parts.append("Traceback (most recent call last):\n")
                frames = traceback.format_tb(item.__traceback__)
                parts += [redact_text(line, self.policy) for line in frames]
            module = type(item).__module__
            prefix = "" if module in ("builtins", "__main__") else f"{module}."
            parts.append(f"{prefix}{type(item).__qualname__}: ")
            parts.append(escape(redact_text(_message(item), self.policy)) + "\n")
            if item_link:
                parts.append(item_link)
        return "".join(parts).rstrip("\n")


_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not break logging
        return "<exception str() failed>"


def install(
    logger_names: Iterable[str] = ("shipyard",),
    *,
    policy: RedactionPolicy = DEFAULT_POLICY,
    handlers: bool = True,
) -> RedactingFilter:
    """Attach one `RedactingFilter` to each named logger ("" is the root) and, with
    `handlers`, to each of their current handlers. Installing twice adds nothing twice."""
    chosen = RedactingFilter(policy)
    for name in logger_names:
        logger = logging.getLogger(name) if name else logging.getLogger()
        targets: list[Any] = [logger, *(logger.handlers if handlers else [])]
        for target in targets:
            existing = [f for f in target.filters if isinstance(f, RedactingFilter)]
            if not existing:
                target.addFilter(chosen)
    return chosen
