"""Marked PII sent through every route, then every log line and every database row searched:
none of it may appear (emails, phone numbers, Luhn-valid cards, IBANs, IP addresses)."""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path

import httpx
from serving_harness import Models, cli, start_server

EMAIL = "jane.marker@example.com"
PHONE = "415-555-0132"
CARD = "4111 1111 1111 1111"
IBAN = "DE89370400440532013000"
IP = "203.0.113.77"
MARKED = (EMAIL, PHONE, CARD, CARD.replace(" ", ""), IBAN, IP)


def test_pii_reaches_no_log_and_no_row(models: Models, tmp_path: Path):
    home = tmp_path / "home"
    shutil.copytree(models.home, home, ignore=shutil.ignore_patterns("server-*.log"))
    cli(home, "deploy", "texts", "--model", "texts:1")
    server = start_server(home, "texts", "tumours")
    text = f"write to {EMAIL} or call {PHONE}; card {CARD}; iban {IBAN}; from {IP}"
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            answer = client.post("/v1/deployments/texts/predict",
                                 json={"inputs": [{"text": text}]},
                                 headers={"x-request-id": PHONE.replace("-", "")})
            assert answer.status_code == 200, answer.text
            request_id = answer.headers["x-request-id"]
            client.post("/v1/deployments/texts/predict", json={"inputs": {"text": [text]}},
                        headers={"x-shipyard-key": EMAIL})
            client.post("/v2/models/texts/infer", json={"inputs": [
                {"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}]})
            feedback = client.post("/v1/deployments/texts/feedback",
                                   json={"request_id": request_id, "comment": text})
            assert feedback.status_code == 201, feedback.text
            # Errors: a bad category, an unknown deployment and route named with PII.
            bad = client.post("/v1/deployments/tumours/predict",
                              json={"inputs": [{"size": EMAIL}]})
            assert bad.status_code in (400, 422)
            for path in (f"/v1/deployments/{EMAIL}/predict", f"/{CARD.replace(' ', '')}",
                         f"/v1/deployments/texts/drift?window={PHONE}"):
                response = client.get(path) if "drift" in path else client.post(path, json={})
                assert response.status_code in (400, 404, 405)
                for value in MARKED:
                    assert value not in response.text, (path, value)
            client.post("/v1/deployments/texts/feedback",
                        json={"request_id": EMAIL, "label": 1})
        time.sleep(2.0)  # the monitor's flush and the records writer
    finally:
        server.stop()
    logs = "".join(p.read_text(errors="replace") for p in home.glob("server-*.log"))
    assert logs, "the server wrote no log"
    database = home / "registry.db"
    with sqlite3.connect(database) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master "
                                             "WHERE type='table'")]
        rows = "\n".join(str(row) for table in tables
                         for row in conn.execute(f'SELECT * FROM "{table}"'))
    assert "prediction_blocks" in tables and rows
    for value in MARKED:
        assert value not in logs, f"{value!r} is in the server log"
        assert value not in rows, f"{value!r} is in a database row"
