"""Every route against every principal, on one real server with authentication on (issue 6).

The expected answers are a table written by hand from the issue's rules, not computed from
`door.action_of` or `authz.PERMISSIONS`: a route that changes its permission, or a door that
lets the wrong caller through, shows up as a cell that differs. The rules the table encodes:

- health probes (/livez, /readyz, /v2/health/*) answer 200 to anyone, whatever they send;
- no credential, or one that is garbage, forged, expired, revoked or signed by an unknown
  key: 401 everywhere else;
- a role below the route's: 403 (viewer reads status, metrics and the dashboard; predictor
  predicts and sends feedback; deployer drives rollouts; admin rolls back);
- a credential scoped to `texts` (an admin key) on any other deployment, or on a route that
  names no deployment (listing, metrics, dashboard, documents): 403;
- otherwise the route's own answer. Writes are sent with bodies that fail *after* the door
  (rollback to revision 9999, a nonsense rollout plan, feedback without a request id, a
  rollout action where no rollout runs), so walking the matrix changes nothing; one real
  rollback at the end checks that a privileged action is audited as the key that did it.

Management verbs are walked with other methods too (PUT, DELETE, GET on write routes): the
method never lowers the permission a path needs (MLflow CVE-2024-4263).

The principals: API keys made with `shipyard keys create` (one per role, an admin key scoped to
`texts`, an expired and a revoked admin key), a JWT from the configured issuer (deployer) and
one signed by a stranger, a forged key, garbage, and nothing. After the matrix: two credential
headers, a repeated one, the audited rollback, and a per-key rate limit (429, Retry-After).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from jwt.algorithms import OKPAlgorithm
from serving_harness import Models, Server, cli, start_server
from sklearn.datasets import load_breast_cancer

import shipyard
from shipyard.registry.registry import Registry

ROLLED = "authz-roll"  # deployed twice by this module, for the one real (audited) rollback
ISSUER, AUDIENCE = "https://idp.authz.test", "shipyard-authz"
RATE, BURST = 2, 150  # per API key: requests per second, bucket size


@dataclass
class Setup:
    server: Server
    headers: dict[str, dict[str, str]]  # principal -> request headers
    secrets: list[str]  # every credential sent, to prove none is echoed back
    admin_name: str
    admin_id: str
    trusted: ed25519.Ed25519PrivateKey  # the issuer's signing key, for more tokens


# --- the routes --------------------------------------------------------------------------------

CANCER_ROW = load_breast_cancer().data[0].tolist()  # a real row: records stay plausible
CANCER_INFER = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 30],
                            "data": CANCER_ROW}]}
TEXTS_INFER = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1],
                           "data": ["hello"]}]}
NO_REVISION = {"to": 9999, "reason": "authz matrix: must not exist"}  # 404 after the door
# The JSON body of each route that takes one, by route id (the others send none).
BODIES: dict[str, Any] = {
    "predict": {"inputs": [CANCER_ROW]},
    "infer": CANCER_INFER,
    "feedback": {},  # no request_id: 400 after the door
    "rollout-start": {"plan": {"strategy": "no-such-strategy"}},  # 400 after the door
    "rollback": NO_REVISION,
    "t-predict": {"inputs": [{"text": "hello"}]},
    "t-infer": TEXTS_INFER,
    "t-feedback": {},
    "t-rollback": NO_REVISION,
}

# The principals. anon sends nothing; bad a string that is no credential; forged a
# well-formed key nobody created; expired and revoked were admin keys; jwtbad a JWT claiming
# admin, signed by a key the server does not trust. The table gives these six one column,
# `unauth`, and each of them is sent. scoped is an admin key limited to `texts`; jwt a valid
# token from the configured issuer with the role deployer.
UNAUTHENTICATED = ("anon", "bad", "forged", "expired", "revoked", "jwtbad")
COLUMNS = ("unauth", "viewer", "predictor", "deployer", "admin", "scoped", "jwt")
PRINCIPALS = (*UNAUTHENTICATED, *COLUMNS[1:])

TABLE = """
# route        method path                                   unauth view pred depl admin scoped jwt
livez          GET    /livez                                    200  200  200  200   200    200 200
readyz         GET    /readyz                                   200  200  200  200   200    200 200
v2-live        GET    /v2/health/live                           200  200  200  200   200    200 200
v2-ready       GET    /v2/health/ready                          200  200  200  200   200    200 200
v2-server      GET    /v2                                       401  200  200  200   200    403 200
list           GET    /v1/deployments                           401  200  200  200   200    403 200
metrics        GET    /metrics                                  401  200  200  200   200    403 200
ui             GET    /ui                                       401  200  200  200   200    403 200
openapi        GET    /openapi.json                             401  200  200  200   200    403 200
docs           GET    /docs                                     401  200  200  200   200    403 200
unknown        GET    /no-such-route                            401  404  404  404   404    403 404
v2-model       GET    /v2/models/cancer                         401  200  200  200   200    403 200
v2-model-ready GET    /v2/models/cancer/ready                   401  200  200  200   200    403 200
describe       GET    /v1/deployments/cancer                    401  200  200  200   200    403 200
describe-nope  GET    /v1/deployments/nope                      401  404  404  404   404    403 404
monitor        GET    /v1/deployments/cancer/monitor            401  200  200  200   200    403 200
drift          GET    /v1/deployments/cancer/drift              401  200  200  200   200    403 200
alerts         GET    /v1/deployments/cancer/alerts             401  200  200  200   200    403 200
history        GET    /v1/deployments/cancer/history            401  200  200  200   200    403 200
history-post   POST   /v1/deployments/cancer/history            401  405  405  405   405    403 405
rollout-get    GET    /v1/deployments/cancer/rollout            401  404  404  404   404    403 404
explain        GET    /v1/deployments/cancer/rollout/explain    401  404  404  404   404    403 404
rollout-put    PUT    /v1/deployments/cancer/rollout            401  405  405  405   405    403 405
predict        POST   /v1/deployments/cancer/predict            401  403  200  200   200    403 200
infer          POST   /v2/models/cancer/infer                   401  403  200  200   200    403 200
feedback       POST   /v1/deployments/cancer/feedback           401  403  400  400   400    403 400
rollout-start  POST   /v1/deployments/cancer/rollout            401  403  403  400   400    403 400
pause          POST   /v1/deployments/cancer/rollout/pause      401  403  403  404   404    403 404
resume         POST   /v1/deployments/cancer/rollout/resume     401  403  403  404   404    403 404
approve        POST   /v1/deployments/cancer/rollout/approve    401  403  403  404   404    403 404
promote        POST   /v1/deployments/cancer/rollout/promote    401  403  403  404   404    403 404
abort          POST   /v1/deployments/cancer/rollout/abort      401  403  403  404   404    403 404
rollout-other  POST   /v1/deployments/cancer/rollout/other      401  403  403  404   404    403 404
rollback       POST   /v1/deployments/cancer/rollback           401  403  403  403   404    403 403
rollback-get   GET    /v1/deployments/cancer/rollback           401  403  403  403   405    403 403
rollback-del   DELETE /v1/deployments/cancer/rollback           401  403  403  403   405    403 403
t-describe     GET    /v1/deployments/texts                     401  200  200  200   200    200 200
t-history      GET    /v1/deployments/texts/history             401  200  200  200   200    200 200
t-predict      POST   /v1/deployments/texts/predict             401  403  200  200   200    200 200
t-infer        POST   /v2/models/texts/infer                    401  403  200  200   200    200 200
t-feedback     POST   /v1/deployments/texts/feedback            401  403  400  400   400    400 400
t-pause        POST   /v1/deployments/texts/rollout/pause       401  403  403  404   404    404 404
t-rollback     POST   /v1/deployments/texts/rollback            401  403  403  403   404    404 403
"""


@dataclass(frozen=True)
class Route:
    id: str
    method: str
    path: str
    expected: dict[str, int]  # principal -> status


def parse_table() -> list[Route]:
    routes = []
    for line in TABLE.strip().splitlines()[1:]:
        route_id, method, path, *codes = line.split()
        by_column = dict(zip(COLUMNS, map(int, codes), strict=True))
        expected = {p: by_column["unauth" if p in UNAUTHENTICATED else p] for p in PRINCIPALS}
        routes.append(Route(route_id, method, path, expected))
    return routes


ROUTES = parse_table()


def test_the_table_covers_every_route_the_server_has():
    """Every route family of online.py (`_route`, `_v2`, `_monitoring`, `_manage`) is a row."""
    paths = {r.path for r in ROUTES}
    for needed in ("/livez", "/readyz", "/v2/health/live", "/v2/health/ready", "/v2",
                   "/v1/deployments", "/metrics", "/ui", "/openapi.json", "/docs"):
        assert needed in paths
    tails = {r.path.removeprefix("/v1/deployments/cancer") for r in ROUTES}
    for tail in ("", "/predict", "/feedback", "/monitor", "/drift", "/alerts", "/history",
                 "/rollout", "/rollout/explain", "/rollback",
                 *(f"/rollout/{act}" for act in ("pause", "resume", "approve", "promote",
                                                 "abort"))):
        assert tail in tails, tail
    for tail in ("", "/ready", "/infer"):
        assert f"/v2/models/cancer{tail}" in paths


# --- the server and its principals ----------------------------------------------------------


def create_key(home: Path, *args: str) -> dict[str, Any]:
    return json.loads(cli(home, "keys", "create", *args, "--json"))


def ed25519_jwks(path: Path) -> ed25519.Ed25519PrivateKey:
    key = ed25519.Ed25519PrivateKey.generate()
    jwk = {**json.loads(OKPAlgorithm.to_jwk(key.public_key())), "kid": "authz-1"}
    path.write_text(json.dumps({"keys": [jwk]}))
    return key


def token(key: ed25519.Ed25519PrivateKey, role: str, subject: str) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": subject, "iat": now, "exp": now + 3600,
              "shipyard_role": role}
    return pyjwt.encode(claims, key, algorithm="EdDSA", headers={"kid": "authz-1"})


def wait_ready(server: Server, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited: {server.log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{server.url}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"server never became ready: {server.log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def setup(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    home = models.home
    # Created first: it expires one second later, long before the server answers.
    expired = create_key(home, "--role", "admin", "--expires", "1s", "--name", "authz-expired")
    cli(home, "deploy", ROLLED, "--model", "cancer:1", "--reason", "authz matrix")
    cli(home, "deploy", ROLLED, "--model", "cancer:2", "--reason", "authz matrix")
    folder = tmp_path_factory.mktemp("authz-jwks")
    trusted = ed25519_jwks(folder / "jwks.json")
    untrusted = ed25519.Ed25519PrivateKey.generate()
    env = {"SHIPYARD_AUTH": "on", "SHIPYARD_JWT_ISSUER": ISSUER,
           "SHIPYARD_JWT_AUDIENCE": AUDIENCE, "SHIPYARD_JWT_JWKS_FILE": str(folder / "jwks.json"),
           # A bucket per key, roomy enough for the matrix (about 40 requests per key).
           "SHIPYARD_RATE_LIMIT_RPS": str(RATE), "SHIPYARD_RATE_LIMIT_BURST": str(BURST)}
    # The server boots while the keys are made: keys are read per request, not at start.
    server = start_server(home, "cancer", "texts", ROLLED, env=env, wait_ready=False)
    try:
        keys = {role: create_key(home, "--role", role, "--name", f"authz-{role}")
                for role in ("viewer", "predictor", "deployer", "admin")}
        keys["scoped"] = create_key(home, "--role", "admin", "--deployment", "texts",
                                    "--name", "authz-scoped")
        keys["revoked"] = create_key(home, "--role", "admin", "--name", "authz-revoked")
        cli(home, "keys", "revoke", keys["revoked"]["id"])
        keys["expired"] = expired
        forged = "sy_" + "A" * 12 + "_" + "B" * 43
        credentials = {
            **{name: record["key"] for name, record in keys.items()},
            "bad": "not-a-credential",
            "forged": forged,
            "jwt": token(trusted, "deployer", "authz-jwt-user"),
            "jwtbad": token(untrusted, "admin", "authz-intruder"),
        }
        headers = {name: {"Authorization": f"Bearer {value}"}
                   for name, value in credentials.items()}
        headers["anon"] = {}
        wait_ready(server)
        # The server takes seconds to start; this only guards a very fast machine.
        left = datetime.fromisoformat(expired["expires_at"]) - datetime.now(UTC)
        time.sleep(max(0.0, left.total_seconds()) + 0.1)
        yield Setup(server, headers, list(credentials.values()), keys["admin"]["name"],
                    keys["admin"]["id"], trusted)
    finally:
        server.stop()


def audit(home: Path) -> list[dict[str, Any]]:
    """`shipyard audit --json`: newest first."""
    entries: list[dict[str, Any]] = json.loads(cli(home, "audit", "--json", "--limit", "1000"))
    return entries


def state(home: Path) -> tuple[dict[str, int], int]:
    """Revisions per deployment and the last audit sequence number, read in process."""
    with Registry.open(shipyard.Settings.load({"home": home}, environ={})) as registry:
        counts = {name: len(registry.revisions(name)) for name in ("cancer", "texts", ROLLED)}
        last = max((entry.seq for entry in registry.audit(limit=1)), default=0)
    return counts, last


# --- the matrix ----------------------------------------------------------------------------------


def test_every_route_answers_every_principal_as_the_table_says(setup: Setup, models: Models):
    before = state(models.home)
    wrong: list[str] = []
    with setup.server.client() as client:
        for route in ROUTES:
            for principal, wanted in route.expected.items():
                body = BODIES.get(route.id)
                answer = client.request(route.method, route.path, json=body,
                                        headers=setup.headers[principal])
                if answer.status_code != wanted:
                    wrong.append(f"{route.id:14} {principal:9} got {answer.status_code}, "
                                 f"expected {wanted}: {answer.text[:120]}")
                    continue
                if wanted == 401:
                    assert answer.headers["www-authenticate"].startswith("Bearer")
                if wanted in (401, 403):
                    error = answer.json()
                    # V2 routes keep the protocol's string `error` and put the code beside it.
                    code = error["code"] if route.path.startswith("/v2") else \
                        error["error"]["code"]
                    assert code == ("unauthorized" if wanted == 401 else "forbidden")
                # No answer, allowed or refused, carries a credential back.
                assert not any(secret in answer.text for secret in setup.secrets)
    assert not wrong, "\n" + "\n".join(wrong)
    # Nothing the matrix sent changed a deployment or wrote to the audit log.
    assert state(models.home) == before


def test_a_credential_in_both_headers_is_refused(setup: Setup):
    """X-API-Key works alone; two credentials in one request are ambiguous and refused,
    whichever of them would have passed."""
    admin = setup.headers["admin"]["Authorization"].removeprefix("Bearer ")
    url = f"{setup.server.url}/v1/deployments"
    assert httpx.get(url, headers={"X-API-Key": admin}).status_code == 200
    both = {"X-API-Key": "sy_" + "A" * 12 + "_" + "B" * 43, "Authorization": f"Bearer {admin}"}
    assert httpx.get(url, headers=both).status_code == 401
    swapped = {"X-API-Key": admin, "Authorization": "Bearer not-a-credential"}
    assert httpx.get(url, headers=swapped).status_code == 401


def test_a_repeated_credential_header_is_refused(setup: Setup):
    """A proxy that checks the first Authorization header must not disagree with us: a
    garbage first header cannot hide a good second one (nor the other way round)."""
    admin = setup.headers["admin"]["Authorization"]
    url = f"{setup.server.url}/v1/deployments"
    for headers in ([("authorization", "Bearer not-a-credential"), ("authorization", admin)],
                    [("authorization", admin), ("authorization", "Bearer not-a-credential")],
                    [("authorization", admin), ("authorization", admin)],
                    [("x-api-key", "sy_" + "A" * 12 + "_" + "B" * 43),
                     ("x-api-key", admin.removeprefix("Bearer "))]):
        assert httpx.get(url, headers=headers).status_code == 401, headers[0]


def test_a_privileged_action_lands_in_the_audit_log_as_its_principal(setup: Setup,
                                                                     models: Models):
    """An admin key rolls back a deployment deployed twice; the audit log names the key."""
    url = f"{setup.server.url}/v1/deployments/{ROLLED}/rollback"
    body = {"to": 1, "reason": "authz matrix: audited rollback"}
    refused = httpx.post(url, json=body, headers=setup.headers["deployer"])
    assert refused.status_code == 403
    answer = httpx.post(url, json=body, headers=setup.headers["admin"], timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["number"] == 3
    entries = [e for e in audit(models.home) if e["target"] == ROLLED]
    newest = entries[0]
    assert newest["actor"].startswith(f"{setup.admin_name} (key:{setup.admin_id})")
    assert newest["action"] == "deploy"
    assert "audited rollback" in json.dumps(newest["details"])
    # The refused deployer left no trace as an actor, and the chain still verifies.
    assert all(e["actor"] != "authz-deployer" for e in entries)
    verified = json.loads(cli(models.home, "audit", "verify", "--json"))
    assert verified["ok"] is True


def test_the_audit_entry_says_which_credential_acted(setup: Setup, models: Models):
    """A JWT whose subject is an admin key's name rolls back: its entry must differ from the
    key's, and a key's entry must name the key's id."""
    impostor = token(setup.trusted, "admin", setup.admin_name)
    url = f"{setup.server.url}/v1/deployments/{ROLLED}/rollback"
    for headers in (setup.headers["admin"], {"Authorization": f"Bearer {impostor}"}):
        answer = httpx.post(url, json={"reason": "authz matrix: who?"}, headers=headers)
        assert answer.status_code == 200, answer.text
    by_key, by_jwt = reversed([e for e in audit(models.home) if e["target"] == ROLLED][:2])
    assert setup.admin_id in json.dumps(by_key)
    assert by_key["actor"] != by_jwt["actor"]


def test_each_key_has_its_own_token_bucket(setup: Setup):
    """Run last: one key drains its bucket and gets 429 with Retry-After; another key and the
    health probes are not slowed by it."""
    url = "/v1/deployments/texts"
    with setup.server.client() as client:
        for _ in range(BURST + 50):
            answer = client.get(url, headers=setup.headers["viewer"])
            if answer.status_code != 200:
                break
        assert answer.status_code == 429, answer.text
        assert answer.json()["error"]["code"] == "overloaded"
        assert int(answer.headers["retry-after"]) >= 1
        assert client.get(url, headers=setup.headers["predictor"]).status_code == 200
        assert client.get("/livez").status_code == 200
