"""JWT bearer tokens: real keys, real signatures, a JWKS served over real HTTP on loopback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from shipyard.errors import ConfigError, UnauthorizedError, UnavailableError
from shipyard.security.jwt import JWTConfig, JWTVerifier, KeySet
from shipyard.security.principals import PrincipalKind, Role

ISSUER = "https://idp.example.test/"
AUDIENCE = "shipyard"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def public_jwk(private: Any, kid: str, **extra: Any) -> dict[str, Any]:
    public = private.public_key()
    if isinstance(private, rsa.RSAPrivateKey):
        jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(private, ec.EllipticCurvePrivateKey):
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
    return {**jwk, "kid": kid, **extra}


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice@example.test",
        "iat": now,
        "exp": now + 300,
        "shipyard_role": "deployer",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(private: Any, kid: str | None, alg: str = "RS256", **overrides: Any) -> str:
    headers = {"kid": kid} if kid is not None else {}
    return pyjwt.encode(claims(**overrides), private, algorithm=alg, headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], hmac_secret: bytes | None) -> str:
    """A token built by hand, as an attacker would: PyJWT refuses to make these."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    if hmac_secret is None:
        return signing_input + "."
    mac = hmac.new(hmac_secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


class JWKSServer:
    """A JWKS endpoint on 127.0.0.1 whose keys a test can change, counting its hits."""

    def __init__(self) -> None:
        self.document: Any = {"keys": []}
        self.hits = 0
        self.status = 200
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hits += 1
                if self.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", "/jwks.json")
                    self.end_headers()
                    return
                body = (
                    owner.document
                    if isinstance(owner.document, bytes)
                    else json.dumps(owner.document).encode()
                )
                self.send_response(owner.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def jwks_server(rsa_key, ec_key, ed_key) -> Iterator[JWKSServer]:
    server = JWKSServer()
    server.document = {
        "keys": [
            public_jwk(rsa_key, "rsa-1", use="sig", alg="RS256"),
            public_jwk(ec_key, "ec-1"),
            public_jwk(ed_key, "ed-1"),
        ]
    }
    yield server
    server.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_verifier(url: str, clock: Clock | None = None, **config: Any) -> JWTVerifier:
    settings = {"issuer": ISSUER, "audience": AUDIENCE, "jwks_url": url, **config}
    cfg = JWTConfig.build(**settings)
    keyset = KeySet.from_config(cfg)
    if clock is not None:
        keyset._clock = clock
    return JWTVerifier(cfg, keyset)


@pytest.fixture
def verifier(jwks_server) -> JWTVerifier:
    return make_verifier(jwks_server.url)


def refused(verifier: JWTVerifier, token: str) -> UnauthorizedError:
    with pytest.raises(UnauthorizedError) as caught:
        verifier.verify(token)
    assert caught.value.status == 401
    assert caught.value.message == "The bearer token is not valid."
    assert token not in str(caught.value) or len(token) < 8
    return caught.value


# --- tokens that pass ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key_name", "kid", "alg"),
    [
        ("rsa_key", "rsa-1", "RS256"),
        ("ec_key", "ec-1", "ES256"),
        ("ed_key", "ed-1", "EdDSA"),
    ],
)
def test_a_good_token_becomes_a_principal(request, verifier, key_name, kid, alg):
    token = sign(request.getfixturevalue(key_name), kid, alg, shipyard_deployments=["fraud"])
    principal = verifier.verify(token)
    assert principal.kind is PrincipalKind.JWT
    assert principal.name == "alice@example.test"
    assert principal.role is Role.DEPLOYER
    assert principal.deployments == frozenset({"fraud"})
    assert principal.key_id is None


def test_the_jwks_is_fetched_once_and_cached(verifier, jwks_server, rsa_key):
    for _ in range(5):
        verifier.verify(sign(rsa_key, "rsa-1"))
    assert jwks_server.hits == 1


def test_a_token_without_a_deployments_claim_covers_all(verifier, rsa_key):
    assert verifier.verify(sign(rsa_key, "rsa-1")).deployments is None


def test_a_single_deployment_string_is_a_scope_of_one(verifier, rsa_key):
    principal = verifier.verify(sign(rsa_key, "rsa-1", shipyard_deployments="fraud"))
    assert principal.deployments == frozenset({"fraud"})


def test_a_role_list_grants_its_highest_known_role(verifier, rsa_key):
    token = sign(rsa_key, "rsa-1", shipyard_role=["viewer", "sudo", "predictor"])
    assert verifier.verify(token).role is Role.PREDICTOR


def test_custom_claim_names_are_honoured(jwks_server, rsa_key):
    verifier = make_verifier(jwks_server.url, role_claim="roles", deployments_claim="dep")
    token = sign(rsa_key, "rsa-1", shipyard_role=None, roles="admin", dep=["a"])
    principal = verifier.verify(token)
    assert principal.role is Role.ADMIN and principal.deployments == frozenset({"a"})


def test_a_token_listing_several_audiences_including_ours_passes(verifier, rsa_key):
    assert verifier.verify(sign(rsa_key, "rsa-1", aud=["other", AUDIENCE])).role is Role.DEPLOYER


def test_leeway_forgives_small_clock_skew_only(jwks_server, rsa_key):
    token = sign(rsa_key, "rsa-1", exp=int(time.time()) - 10)
    assert make_verifier(jwks_server.url, leeway_s=30).verify(token)
    refused(make_verifier(jwks_server.url, leeway_s=0), token)


def test_a_jwks_key_without_alg_serves_the_allowed_rsa_variants(jwks_server, rsa_key):
    jwks_server.document = {"keys": [public_jwk(rsa_key, "bare")]}
    verifier = make_verifier(jwks_server.url, algorithms=["PS256", "RS256"])
    assert verifier.verify(sign(rsa_key, "bare", "PS256")).role is Role.DEPLOYER
    assert verifier.verify(sign(rsa_key, "bare", "RS256")).role is Role.DEPLOYER


def test_a_token_without_kid_uses_the_only_key(jwks_server, rsa_key):
    jwks_server.document = {"keys": [public_jwk(rsa_key, "only")]}
    assert make_verifier(jwks_server.url).verify(sign(rsa_key, None)).role is Role.DEPLOYER


def test_a_jwks_file_works_like_a_url(tmp_path: Path, rsa_key):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [public_jwk(rsa_key, "file-1")]}))
    cfg = JWTConfig.build(issuer=ISSUER, audience=AUDIENCE, jwks_file=path)
    assert JWTVerifier(cfg).verify(sign(rsa_key, "file-1")).name == "alice@example.test"


# --- tokens that fail ---------------------------------------------------------------------


def test_an_expired_token_is_refused(verifier, rsa_key):
    refused(verifier, sign(rsa_key, "rsa-1", exp=int(time.time()) - 3600))


def test_a_token_not_yet_valid_is_refused(verifier, rsa_key):
    refused(verifier, sign(rsa_key, "rsa-1", nbf=int(time.time()) + 3600))


def test_a_token_without_exp_is_refused(verifier, rsa_key):
    refused(verifier, sign(rsa_key, "rsa-1", exp=None))


@pytest.mark.parametrize("aud", ["other", "shipyard ", "Shipyard", "shipyard\x00", ["other"], None])
def test_a_wrong_or_missing_audience_is_refused(verifier, rsa_key, aud):
    refused(verifier, sign(rsa_key, "rsa-1", aud=aud))


@pytest.mark.parametrize(
    "iss", ["https://evil.example/", ISSUER.rstrip("/"), ISSUER.upper(), ISSUER + " ", None]
)
def test_a_wrong_or_missing_issuer_is_refused(verifier, rsa_key, iss):
    refused(verifier, sign(rsa_key, "rsa-1", iss=iss))


def test_an_unknown_kid_is_refused_after_one_refetch(verifier, jwks_server, rsa_key):
    verifier.verify(sign(rsa_key, "rsa-1"))
    refused(verifier, sign(rsa_key, "nope"))
    refused(verifier, sign(rsa_key, "nope-again"))
    # One load at first use; the unknown kid right after is inside the cooldown.
    assert jwks_server.hits == 1


def test_unknown_kids_refetch_at_most_once_per_cooldown(jwks_server, rsa_key):
    clock = Clock()
    verifier = make_verifier(jwks_server.url, clock=clock, refresh_cooldown_s=30)
    verifier.verify(sign(rsa_key, "rsa-1"))
    clock.now += 31
    for n in range(20):
        refused(verifier, sign(rsa_key, f"random-{n}"))
    assert jwks_server.hits == 2


def test_a_rotated_key_is_picked_up_on_its_unknown_kid(jwks_server, rsa_key, other_rsa_key):
    clock = Clock()
    verifier = make_verifier(jwks_server.url, clock=clock, refresh_cooldown_s=30)
    verifier.verify(sign(rsa_key, "rsa-1"))
    jwks_server.document = {"keys": [public_jwk(other_rsa_key, "rsa-2")]}
    clock.now += 31
    assert verifier.verify(sign(other_rsa_key, "rsa-2")).role is Role.DEPLOYER
    assert jwks_server.hits == 2
    refused(verifier, sign(rsa_key, "rsa-1"))  # the retired key no longer verifies


def test_the_cache_expires_after_its_ttl(jwks_server, rsa_key):
    clock = Clock()
    verifier = make_verifier(jwks_server.url, clock=clock, cache_ttl_s=60)
    verifier.verify(sign(rsa_key, "rsa-1"))
    clock.now += 59
    verifier.verify(sign(rsa_key, "rsa-1"))
    clock.now += 2
    verifier.verify(sign(rsa_key, "rsa-1"))
    assert jwks_server.hits == 2


def test_alg_none_is_refused(verifier):
    token = forge({"alg": "none", "typ": "JWT", "kid": "rsa-1"}, claims(), None)
    refused(verifier, token)
    refused(verifier, forge({"alg": "None", "kid": "rsa-1"}, claims(), None))


def test_a_tampered_payload_is_refused(verifier, rsa_key):
    header, _, signature = sign(rsa_key, "rsa-1", shipyard_role="viewer").split(".")
    payload = b64(json.dumps(claims(shipyard_role="admin")).encode())
    refused(verifier, f"{header}.{payload}.{signature}")


def test_a_tampered_signature_is_refused(verifier, rsa_key):
    token = sign(rsa_key, "rsa-1")
    head, body, signature = token.split(".")
    flipped = ("A" if signature[5] != "A" else "B").join([signature[:5], signature[6:]])
    refused(verifier, f"{head}.{body}.{flipped}")
    refused(verifier, f"{head}.{body}.")


def test_a_token_signed_by_a_stranger_under_a_known_kid_is_refused(verifier, other_rsa_key):
    refused(verifier, sign(other_rsa_key, "rsa-1"))


def test_hs256_signed_with_the_public_key_is_refused(verifier, rsa_key):
    """Algorithm confusion: an HMAC keyed with the (public) RSA key, under the RSA kid."""
    pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    jwk_json = json.dumps(public_jwk(rsa_key, "rsa-1")).encode()
    for secret in (pem, jwk_json):
        token = forge({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}, claims(), secret)
        refused(verifier, token)


def test_an_hmac_key_published_in_the_jwks_is_never_used(jwks_server):
    secret = b"k" * 32
    jwks_server.document = {"keys": [{"kty": "oct", "kid": "h", "k": b64(secret)}]}
    verifier = make_verifier(jwks_server.url)
    refused(verifier, forge({"alg": "HS256", "kid": "h"}, claims(), secret))
    refused(verifier, forge({"alg": "RS256", "kid": "h"}, claims(), secret))


def test_an_alg_that_disagrees_with_the_key_is_refused(jwks_server, ec_key, rsa_key):
    verifier = make_verifier(jwks_server.url, algorithms=["RS256", "ES256", "PS256"])
    # An RSA token pointed at the EC key's kid, and a PS256 token at a key pinned to RS256.
    refused(verifier, sign(rsa_key, "ec-1", "RS256"))
    refused(verifier, sign(rsa_key, "rsa-1", "PS256"))


def test_an_algorithm_off_the_allowlist_is_refused_before_any_fetch(jwks_server, ed_key):
    verifier = make_verifier(jwks_server.url, algorithms=["RS256"])
    refused(verifier, sign(ed_key, "ed-1", "EdDSA"))
    assert jwks_server.hits == 0


def test_a_short_rsa_key_is_refused(jwks_server):
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    jwks_server.document = {"keys": [public_jwk(weak, "weak")]}
    with pytest.warns(pyjwt.InsecureKeyLengthWarning):
        token = sign(weak, "weak")
    refused(make_verifier(jwks_server.url), token)


@pytest.mark.parametrize(
    "overrides",
    [
        {"shipyard_role": None},
        {"shipyard_role": "root"},
        {"shipyard_role": "ADMIN"},
        {"shipyard_role": ["sudo"]},
        {"shipyard_role": {"admin": True}},
        {"shipyard_role": 3},
        {"sub": None},
        {"sub": ""},
        {"sub": "alice\nINFO forged line"},
        {"sub": "alice\u202e"},
        {"sub": "x" * 1000},
        {"sub": 42},
        {"shipyard_deployments": [1, 2]},
        {"shipyard_deployments": {"fraud": True}},
    ],
)
def test_bad_identity_claims_are_refused(verifier, rsa_key, overrides):
    refused(verifier, sign(rsa_key, "rsa-1", **overrides))


@pytest.mark.parametrize(
    "token",
    [
        "",
        "a.b.c",
        "...",
        "eyJ.eyJ.sig",
        "not a token",
        "\x00\x01\x02",
        "ééé.ééé.ééé",
        "a" * 20_000,
        "eyJhbGciOiJSUzI1NiJ9." + "A" * 100_000 + ".sig",
    ],
)
def test_garbage_is_refused_without_a_fetch(verifier, jwks_server, token):
    refused(verifier, token)
    assert jwks_server.hits == 0


def test_a_kid_that_is_not_a_string_is_refused(verifier):
    refused(verifier, forge({"alg": "RS256", "kid": {"$ne": 1}}, claims(), None))


# --- the JWKS endpoint misbehaving --------------------------------------------------------


def test_an_unreachable_jwks_is_a_503_not_a_401(rsa_key):
    import socket

    with socket.socket() as probe:  # a port that nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    verifier = make_verifier(f"http://127.0.0.1:{port}/jwks.json", timeout_s=1)
    with pytest.raises(UnavailableError) as caught:
        verifier.verify(sign(rsa_key, "rsa-1"))
    assert caught.value.status == 503


def test_a_failed_first_load_is_not_retried_inside_the_cooldown(jwks_server, rsa_key):
    clock = Clock()
    jwks_server.status = 500
    verifier = make_verifier(jwks_server.url, clock=clock, refresh_cooldown_s=30)
    for _ in range(5):
        with pytest.raises(UnavailableError):
            verifier.verify(sign(rsa_key, "rsa-1"))
    assert jwks_server.hits == 1
    jwks_server.status = 200
    clock.now += 31
    assert verifier.verify(sign(rsa_key, "rsa-1")).role is Role.DEPLOYER


def test_the_last_good_keys_survive_an_outage(jwks_server, rsa_key):
    clock = Clock()
    verifier = make_verifier(jwks_server.url, clock=clock, cache_ttl_s=60)
    verifier.verify(sign(rsa_key, "rsa-1"))
    jwks_server.status = 503
    clock.now += 120
    assert verifier.verify(sign(rsa_key, "rsa-1")).role is Role.DEPLOYER
    assert jwks_server.hits == 2


@pytest.mark.parametrize(
    "document", [b"not json", b"[]", b'{"keys": 5}', b"{}", b"[" * 100_000, b" " * (2 << 20)]
)
def test_a_broken_jwks_document_is_a_503(jwks_server, rsa_key, document):
    jwks_server.document = document
    with pytest.raises(UnavailableError):
        make_verifier(jwks_server.url).verify(sign(rsa_key, "rsa-1"))


def test_redirects_are_not_followed(jwks_server, rsa_key):
    verifier = make_verifier(jwks_server.url.replace("/jwks.json", "/redirect"))
    with pytest.raises(UnavailableError):
        verifier.verify(sign(rsa_key, "rsa-1"))
    assert jwks_server.hits == 1  # the redirect itself, never its target


def test_refresh_loads_eagerly_and_reports_failure(jwks_server):
    verifier = make_verifier(jwks_server.url)
    verifier.keyset.refresh()
    assert jwks_server.hits == 1 and verifier.keyset.loads == 1
    jwks_server.status = 500
    with pytest.raises(UnavailableError):
        verifier.keyset.refresh()


def test_a_missing_jwks_file_is_a_503(tmp_path, rsa_key):
    cfg = JWTConfig.build(issuer=ISSUER, audience=AUDIENCE, jwks_file=tmp_path / "absent.json")
    with pytest.raises(UnavailableError):
        JWTVerifier(cfg).verify(sign(rsa_key, "rsa-1"))


# --- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"algorithms": ["HS256"]},
        {"algorithms": ["RS256", "HS512"]},
        {"algorithms": ["none"]},
        {"algorithms": []},
        {"jwks_url": "http://idp.example.test/jwks.json"},
        {"jwks_url": "http://10.0.0.1/jwks.json"},
        {"jwks_url": "http://169.254.169.254/latest"},
        {"jwks_url": "http://127.0.0.1.evil.test/jwks.json"},
        {"jwks_url": "file:///etc/passwd"},
        {"jwks_url": "ftp://127.0.0.1/jwks.json"},
        {"jwks_url": "https://user:pw@idp.example.test/jwks.json"},
        {"jwks_url": "https:///jwks.json"},
        {"jwks_url": "http://[::1"},
        {"jwks_url": None},
        {"jwks_file": "/tmp/jwks.json"},
        {"issuer": ""},
        {"leeway_s": -1},
        {"leeway_s": 3600},
        {"unknown": 1},
    ],
)
def test_unsafe_or_broken_config_is_a_config_error(overrides):
    settings = {"issuer": ISSUER, "audience": AUDIENCE, "jwks_url": "https://idp.test/jwks"}
    settings.update(overrides)
    with pytest.raises(ConfigError) as caught:
        JWTConfig.build(**settings)
    assert caught.value.hint
    assert "pw" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://idp.example.test/.well-known/jwks.json",
        "http://127.0.0.1:8080/jwks.json",
        "http://127.9.9.9/jwks.json",
        "http://localhost/jwks.json",
        "http://[::1]:9000/jwks.json",
    ],
)
def test_https_and_loopback_http_are_accepted(url):
    assert JWTConfig.build(issuer=ISSUER, audience=AUDIENCE, jwks_url=url).jwks_url == url


def test_the_jwks_url_is_hidden_from_repr():
    cfg = JWTConfig.build(issuer=ISSUER, audience=AUDIENCE, jwks_url="https://idp/j?token=s3cr3t")
    assert "s3cr3t" not in repr(cfg)
