"""What a shadow costs the callers of its champion: latency with and without one, same run.

    .venv/bin/python bench/rollouts/shadow_latency.py [--requests 2000] [--rounds 3]

One server serves two deployments of bench/serving's model: `plain` (the champion alone) and
`shadowed` (the same champion plus a shadow of a second version, which answers every request
after the caller's response is sent). One caller (concurrency 1, keep-alive) sends blocks of
requests to each in turn; the table gives each deployment's median p50 and p99 over rounds,
and their ratio. The shadow never reaches the caller; its work shares the server's CPU.

Writes bench/rollouts/shadow_latency.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE.parent / "serving"))

from model import request_row, train  # noqa: E402

import shipyard  # noqa: E402
from shipyard.registry.registry import Registry  # noqa: E402


def setup(home: Path) -> None:
    settings = shipyard.Settings.load({"home": home}, environ={})
    model, X, _ = train()
    for version in ("1", "2"):
        folder = home.parent / f"bundle-{version}"
        shipyard.package(model, folder, name="cancer", version=version, owner="B <b@x.io>",
                         sample=X[:20], description="shadow latency bench")
        shipyard.push(folder, settings=settings, allow_fragile=True)
    with Registry.open(settings) as registry:
        registry.deploy("plain", {"variants": [{"name": "champion", "model": "cancer:1"}]})
        registry.deploy("shadowed", {"variants": [
            {"name": "champion", "model": "cancer:1"},
            {"name": "shadow", "model": "cancer:2", "role": "shadow", "weight": 0},
        ]})


def block(client: httpx.Client, name: str, body: dict[str, object], n: int) -> list[float]:
    latencies = []
    for _ in range(n):
        started = time.perf_counter()
        response = client.post(f"/v1/deployments/{name}/predict", json=body)
        latencies.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200 and response.headers["x-variant"] == "champion"
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="shipyard-shadow-bench-"))
    home = work / "home"
    setup(home)
    port = 18765
    env = {**os.environ, "SHIPYARD_ACCESS_LOG": "false"}
    server = subprocess.Popen([sys.executable, "-m", "shipyard.cli", "--home", str(home),
                               "serve", "--port", str(port), "plain", "shadowed"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        _, X, _ = train()
        body = {"inputs": [request_row(X)]}
        results: dict[str, list[tuple[float, float]]] = {"plain": [], "shadowed": []}
        with httpx.Client(base_url=url, timeout=30) as client:
            block(client, "plain", body, 200)  # warm both
            block(client, "shadowed", body, 200)
            for round_ in range(args.rounds):
                order = ("plain", "shadowed") if round_ % 2 == 0 else ("shadowed", "plain")
                for name in order:
                    times = np.asarray(block(client, name, body, args.requests))
                    results[name].append((float(np.percentile(times, 50)),
                                          float(np.percentile(times, 99))))
                    time.sleep(1.0)
        agreement = httpx.get(f"{url}/v1/deployments/shadowed/monitor").json()["paired"]
    finally:
        server.terminate()
        server.wait(30)
    rows = {name: (statistics.median(p for p, _ in found), statistics.median(q for _, q in found))
            for name, found in results.items()}
    ratio50 = rows["shadowed"][0] / rows["plain"][0]
    ratio99 = rows["shadowed"][1] / rows["plain"][1]
    shadow = agreement.get("shadow", {})
    lines = [
        "# The champion's latency with and without a shadow",
        "",
        f"One caller, keep-alive, {args.requests} requests per block, {args.rounds} rounds "
        "(medians). Command: `.venv/bin/python bench/rollouts/shadow_latency.py`.",
        "",
        "| deployment | p50 ms | p99 ms |",
        "|---|---:|---:|",
        *(f"| {name} | {p50:.3f} | {p99:.3f} |" for name, (p50, p99) in rows.items()),
        "",
        f"shadowed / plain: p50 {ratio50:.2f}x, p99 {ratio99:.2f}x. The shadow answered "
        f"{shadow.get('n', 0)} requests and agreed with the champion on "
        f"{shadow.get('agree', 0)}.",
        "",
    ]
    (HERE / "shadow_latency.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
