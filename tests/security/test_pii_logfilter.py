"""The logging filter: PII and secrets redacted in messages, args, extras and tracebacks;
newlines and control characters escaped so a caller's value cannot forge a log line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from shipyard.security.logfilter import RedactingFilter, escape, install
from shipyard.security.pii import SECRETS_ONLY

EMAIL = "ana.lima@example.com"
CARD = "4111 1111 1111 1111"


class JSONFormatter(logging.Formatter):
    """A structured formatter that writes `extra=` fields, as production setups do."""

    def format(self, record: logging.LogRecord) -> str:
        body = {"message": record.getMessage(), "user": getattr(record, "user", None)}
        return json.dumps(body)


@pytest.fixture
def logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A fresh logger tree `sytest` with one handler writing to a string."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    parent = logging.getLogger("sytest")
    parent.setLevel(logging.DEBUG)
    parent.propagate = False
    parent.addHandler(handler)
    try:
        yield parent, stream
    finally:
        parent.removeHandler(handler)
        parent.filters.clear()


def test_message_and_args_are_redacted(logger):
    log, stream = logger
    install(["sytest"])
    log.info("user %s paid with %s", EMAIL, CARD)
    out = stream.getvalue()
    assert EMAIL not in out and CARD not in out
    assert "user [EMAIL] paid with [CARD]" in out


def test_records_from_child_loggers_are_caught_by_the_handler_filter(logger):
    _log, stream = logger
    install(["sytest"])
    logging.getLogger("sytest.serving.deep").warning("key %s", "password=hunter2")
    assert "hunter2" not in stream.getvalue()


def test_a_newline_in_a_value_cannot_forge_a_line(logger):
    log, stream = logger
    install(["sytest"])
    forged = "ana\nERROR sytest admin granted\r\x1b[31mred\u2028next\u202egnp.exe"
    log.info("login by %s", forged)
    out = stream.getvalue()
    assert out.count("\n") == 1  # one record, one line
    assert "ana\\nERROR sytest admin granted\\r\\x1b[31mred\\u2028next\\u202egnp.exe" in out


def test_a_caller_backslash_cannot_pose_as_an_escape():
    assert escape("a\\nb") == "a\\\\nb"
    assert escape("a\nb") == "a\\nb"
    assert escape("tab\tkept") == "tab\tkept"
    assert escape("\x00\x7f\x85\u2029") == "\\x00\\x7f\\x85\\u2029"


def test_extra_fields_are_redacted_for_structured_formatters(logger):
    log, stream = logger
    for handler in log.handlers:
        handler.setFormatter(JSONFormatter())
    install(["sytest"])
    log.info("signup", extra={"user": {"email": EMAIL, "ip": "203.0.113.9", "age": 41}})
    body = json.loads(stream.getvalue())
    assert body["user"] == {"email": "[EMAIL]", "ip": "[IP]", "age": 41}


def test_exception_messages_in_tracebacks_are_redacted_and_escaped(logger):
    log, stream = logger
    install(["sytest"])
    try:
        try:
            raise KeyError(EMAIL)
        except KeyError as inner:
            raise ValueError(f"card {CARD}\nCRITICAL sytest forged") from inner
    except ValueError:
        log.exception("failed for %s", EMAIL)
    out = stream.getvalue()
    assert EMAIL not in out and CARD not in out
    assert "Traceback (most recent call last):" in out
    assert "The above exception was the direct cause" in out
    assert "ValueError: card [CARD]\\nCRITICAL sytest forged" in out
    assert not any(line.startswith("CRITICAL") for line in out.splitlines())


def test_an_exception_with_a_broken_str_is_still_logged(logger):
    log, stream = logger

    class Broken(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    install(["sytest"])
    try:
        raise Broken()
    except Broken:
        log.exception("boom")
    assert "<exception str() failed>" in stream.getvalue()


def test_a_bad_format_string_keeps_the_record(logger):
    log, stream = logger
    install(["sytest"])
    log.info("two %s %s", EMAIL)  # one arg short: logging would print a traceback instead
    out = stream.getvalue()
    assert "two" in out and EMAIL not in out


def test_install_is_idempotent_and_returns_the_filter_for_later_handlers(logger):
    log, _stream = logger
    first = install(["sytest"])
    install(["sytest"])
    assert sum(isinstance(f, RedactingFilter) for f in log.filters) == 1
    late = io.StringIO()
    handler = logging.StreamHandler(late)
    handler.addFilter(first)
    log.addHandler(handler)
    try:
        logging.getLogger("sytest.child").info("mail %s", EMAIL)
    finally:
        log.removeHandler(handler)
    assert EMAIL not in late.getvalue()


def test_a_policy_can_keep_personal_data_and_redact_only_secrets(logger):
    log, stream = logger
    install(["sytest"], policy=SECRETS_ONLY)
    log.info("%s uses password=hunter2", EMAIL)
    out = stream.getvalue()
    assert EMAIL in out and "hunter2" not in out


@pytest.mark.timeout(30)
def test_a_megabyte_message_is_filtered(logger):
    log, stream = logger
    install(["sytest"])
    log.info("%s", ("x\n" + EMAIL + " ") * 40_000)
    out = stream.getvalue()
    assert EMAIL not in out and out.count("\n") == 1
