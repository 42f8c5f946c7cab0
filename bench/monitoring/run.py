"""What monitoring costs the server: shipyard with monitoring off, on, and on with a prediction
record for every request, interleaved in one run.

    .venv/bin/python bench/monitoring/run.py [--rounds 5] [--duration 8] [--warmup 2]
        [--concurrency 1,64] [--max-batch 64] [--records-store database|parquet]

The model, the request (one row of 30 floats), the load generator (wrk -t1 -cN) and the
pinning (server on core 0; wrk and this script on core 1) are bench/serving's, imported from
there. Three configurations of the same deployment (`deploy --max-batch 64`: adaptive
batching, as bench/serving's `shipyard+batching` row), each in a shipyard home of its own:

- **off**: `shipyard serve --no-monitoring` (no metrics, sketches, drift, records, alerts);
- **monitoring**: metrics, sketches and drift on; `records: {sample: 0}`;
- **monitoring+records**: the same, with `records: {sample: 1.0}`: a prediction record for
  every request, in the registry's database (SQLite under the home) unless
  `--records-store parquet`.

Drift is evaluated every `--drift-slide-s` seconds (default 5, against the 300 s default
`slide_s`) so that every measured point pays for at least one drift evaluation.

The three servers start once and stay up. Each round measures concurrency 1 and 64 (the order
alternates) on the three back to back (the order rotates from round to round): --warmup s
discarded, then --duration s each. The table shows medians over the rounds; a target is
judged on the median of the rounds' own ratios (each configuration against off at the same
concurrency, seconds apart), which a drift in the host's speed over the run cannot tilt the
way it can tilt a ratio of medians (shown beside it). `--fresh` instead starts every
configuration afresh in every round and measures both concurrencies on it before the next
(its paired points are a minute apart: on a host whose speed swings by tens of percent from
minute to minute, as this VM's did on 2026-11-26, that spreads the paired ratios from 0.5 to
1.3):

- monitoring / off >= 0.95 at every concurrency (at most a 5% drop);
- monitoring+records / off >= 0.90 at every concurrency (at most a 10% drop).

After the servers stop (a graceful stop drains the record writer), the records in each store
are counted against the requests it answered, so that records dropped or never written
cannot pass as cheap ones.

Writes bench/monitoring/results.md and results.json; exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SERVING = HERE.parent / "serving"
sys.path.insert(0, str(SERVING))

from load import by_thread, core_busy_seconds, run_wrk, write_script  # noqa: E402
from model import MODEL_FILE, save  # noqa: E402
from servers import MAIN_VENV, PEERS, Context, Server, shipyard_body  # noqa: E402


def _load_serving_run() -> Any:
    # bench/serving/run.py by path: `import run` would find this file first.
    spec = importlib.util.spec_from_file_location("serving_run", SERVING / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


serving = _load_serving_run()
Running = serving.Running
SERVER_CORE, LOAD_CORE, NOISY_PCT = serving.SERVER_CORE, serving.LOAD_CORE, serving.NOISY_PCT

RESULTS_MD = HERE / "results.md"
DEPLOYMENT = "bench"
PATH = f"/v1/deployments/{DEPLOYMENT}/predict"
MONITORING_MIN = 0.95     # monitoring / off throughput
RECORDS_MIN = 0.90        # monitoring+records / off throughput
SHIPYARD = str(MAIN_VENV / "bin" / "shipyard")


# --- the three configurations ----------------------------------------------------------------

@dataclass
class Config:
    name: str
    monitoring: bool        # False: serve --no-monitoring
    sample: float           # records.sample in the deployment's monitoring config
    note: str


CONFIGS = [
    Config("off", False, 0.0, "`serve --no-monitoring`: no metrics, sketches, drift, records"),
    Config("monitoring", True, 0.0,
           "metrics, sketches and drift on; `records: {sample: 0}`"),
    Config("monitoring+records", True, 1.0,
           "metrics, sketches and drift on; `records: {sample: 1.0}` (every request)"),
]


def home_of(ctx: Context, config: Config) -> Path:
    return ctx.workdir / f"home-{config.name.replace('+', '-')}"


def prepare(ctx: Context, config: Config, args: argparse.Namespace) -> dict[str, Any]:
    """A fresh home: package, push and deploy (bench/serving's script), then a revision with
    this configuration's monitoring config. Returns the deployed spec."""
    home = home_of(ctx, config)
    done = subprocess.run([str(MAIN_VENV / "bin" / "python"), str(PEERS / "shipyard_prepare.py"),
                           str(home), str(args.max_batch)],
                          capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"shipyard_prepare.py failed: {done.stderr[-2000:]}")
    records: dict[str, Any] = {"sample": config.sample}
    if config.sample > 0:
        records["store"] = args.records_store
    monitoring = {"records": records, "drift": {"slide_s": args.drift_slide_s}}
    yaml_file = ctx.workdir / f"monitoring-{config.name.replace('+', '-')}.yaml"
    yaml_file.write_text(json.dumps(monitoring) + "\n")     # JSON is YAML
    done = subprocess.run([SHIPYARD, "--home", str(home), "deploy", DEPLOYMENT,
                           "--model", f"{DEPLOYMENT}:1", "--max-batch", str(args.max_batch),
                           "--monitoring", str(yaml_file), "--json"],
                          capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"shipyard deploy failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)["spec"]


def server_of(config: Config) -> Server:
    def command(ctx: Context, port: int) -> list[str]:
        return [SHIPYARD, "--home", str(home_of(ctx, config)), "serve", "--port", str(port),
                *([] if config.monitoring else ["--no-monitoring"]), DEPLOYMENT]

    return Server(config.name, "main", "shipyard", command, PATH, shipyard_body,
                  env={"SHIPYARD_MONITORING": "true" if config.monitoring else "false"},
                  note=config.note)


def records_stored(home: Path) -> int:
    """Prediction records of the deployment in the home's database plus its Parquet files."""
    count = 0
    db = home / "registry.db"
    if db.is_file():
        # No table: nothing written yet.
        with contextlib.closing(sqlite3.connect(db)) as conn, \
                contextlib.suppress(sqlite3.OperationalError):
            count += conn.execute("SELECT coalesce(sum(count), 0) FROM prediction_blocks "
                                  "WHERE deployment = ?", (DEPLOYMENT,)).fetchone()[0]
    files = sorted((home / "records").rglob("*.parquet")) if (home / "records").is_dir() else []
    if files:
        import pyarrow.parquet as pq
        count += sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    return count


# --- measuring -------------------------------------------------------------------------------

def measure_point(running: Any, script: Path, c: int, args: argparse.Namespace) -> dict[str, Any]:
    """bench/serving's point, plus what the server did in the --drain-s after the load (the
    record writer's tail) and every request answered (warm-up too), to check the records."""
    best: dict[str, Any] | None = None
    answered = 0
    for attempt in range(1 + args.retries):
        serving.wait_quiet(running.tree, args.quiet_wait)
        if args.warmup > 0:
            warm = run_wrk(running.port, script, c, args.warmup)
            answered += warm.ok_requests
        before, core_before = running.tree.cpu_seconds(), core_busy_seconds(SERVER_CORE)
        threads_before = running.tree.cpu_by_thread()
        result = run_wrk(running.port, script, c, args.duration)
        used = running.tree.cpu_seconds() - before
        others = core_busy_seconds(SERVER_CORE) - core_before - used
        answered += result.ok_requests
        time.sleep(args.drain_s)
        after = running.tree.cpu_seconds() - before - used
        p = serving.point(result, used)
        p["cpu_us_per_req_by_thread"] = {
            name: (seconds - threads_before.get(name, 0.0)) / result.ok_requests * 1e6
            for name, seconds in running.tree.cpu_by_thread().items()
        } if result.ok_requests else {}
        p["server_core_busy_pct"] = 100 * used / result.seconds
        p["server_core_others_pct"] = max(0.0, 100 * others / result.seconds)
        p["cpu_us_per_req_with_drain"] = ((used + after) / result.ok_requests * 1e6
                                          if result.ok_requests else None)
        if best is None or p["server_core_others_pct"] < best["server_core_others_pct"]:
            best = p
        if best["server_core_others_pct"] <= NOISY_PCT or attempt == args.retries:
            break
        print(f"    c={c}: other processes took {p['server_core_others_pct']:.0f}% of core "
              f"{SERVER_CORE}; measuring again", flush=True)
    assert best is not None
    best["attempts"] = attempt + 1
    best["answered_total"] = answered
    return best


@dataclass
class Up:
    """One configuration's server, started and answering, with its request and wrk script."""

    config: Config
    server: Server
    running: Any
    body: bytes
    script: Path
    cold_start_s: float
    stored_before: int
    answered: int = 1  # the probe that wait_ready counts as the first answer


def start(config: Config, ctx: Context, reference: dict[str, Any], log_name: str,
          args: argparse.Namespace) -> Up:
    server = server_of(config)
    body = server.body(ctx)
    script = write_script(ctx.workdir, config.name.replace("+", "_"), PATH, body)
    stored_before = records_stored(home_of(ctx, config))
    serving.wait_quiet(None, args.quiet_wait)
    running = Running(server, ctx, ctx.workdir / "logs" / f"{log_name}.log")
    try:
        cold = running.wait_ready(body, reference)
    except BaseException:
        running.stop()
        raise
    return Up(config, server, running, body, script, cold, stored_before)


def point(up: Up, c: int, reference: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """One measured point on a running server, its answer checked afterwards."""
    p = measure_point(up.running, up.script, c, args)
    serving.check_answer(up.server, serving.probe(up.running.port, up.server, up.body),
                         reference)
    up.answered += p.pop("answered_total") + 1
    _print_point(up.config, c, p, args)
    return p


def stop(up: Up, ctx: Context) -> dict[str, Any]:
    """Stop the server (a graceful stop drains the record writer) and count its records."""
    out: dict[str, Any] = {"cold_start_s": up.cold_start_s}
    with contextlib.suppress(Exception):  # a process that already exited has no memory
        out["rss_mib"], out["pss_mib"] = up.running.tree.memory_mib()
    up.running.stop()
    out["answered"] = up.answered
    out["records_written"] = records_stored(home_of(ctx, up.config)) - up.stored_before
    print(f"  {up.config.name}: {out['records_written']} records stored for {up.answered} "
          "requests answered", flush=True)
    return out


def run_server(config: Config, ctx: Context, reference: dict[str, Any], levels: list[int],
               round_no: int, args: argparse.Namespace) -> dict[str, Any]:
    up = start(config, ctx, reference, f"{config.name}-{round_no}", args)
    points: dict[str, Any] = {}
    try:
        for c in levels:
            points[str(c)] = point(up, c, reference, args)
    finally:
        out = stop(up, ctx)
    return {"points": points, **out}


def run_kept(ctx: Context, reference: dict[str, Any], levels: list[int],
             args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any], bool]:
    """Every configuration started once and kept up; in each round, each concurrency is
    measured on the three servers back to back (order rotating), so the three points of a
    paired ratio are seconds apart, whatever the host's speed does over minutes. Returns the
    rounds, per-server totals (cold start, memory, records against requests) and whether
    anything failed."""
    ups: dict[str, Up] = {}
    rounds: list[dict[str, Any]] = []
    failed = False
    try:
        for config in CONFIGS:
            ups[config.name] = start(config, ctx, reference, config.name, args)
        for i in range(args.rounds):
            shift = i % len(CONFIGS)
            order = CONFIGS[shift:] + CONFIGS[:shift]
            print(f"round {i + 1}/{args.rounds}: {', '.join(c.name for c in order)}",
                  flush=True)
            this: dict[str, Any] = {"_order": [c.name for c in order]}
            for c in (levels if i % 2 == 0 else levels[::-1]):
                for config in order:
                    result = this.setdefault(config.name, {"points": {}})
                    try:
                        result["points"][str(c)] = point(ups[config.name], c, reference, args)
                    except Exception as exc:
                        failed = True
                        result["error"] = str(exc).replace("\n", " ")[:1500]
                        print(f"  {config.name}: c={c}: FAILED: {exc}", flush=True)
            rounds.append(this)
    finally:
        totals = {name: stop(up, ctx) for name, up in ups.items()}
    return rounds, totals, failed


def _print_point(config: Config, c: int, p: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"  {config.name}: c={c}: {p['rps']:.0f} req/s, p50 {p['p50_ms']:.2f} ms, "
          f"p99 {p['p99_ms']:.2f} ms, cpu {p['cpu_us_per_req'] or 0:.0f} us/req "
          f"({p['cpu_us_per_req_with_drain'] or 0:.0f} with the {args.drain_s:g} s "
          f"after), non-2xx {p['non_2xx']}, errors {p['errors']}, core "
          f"{SERVER_CORE}: others {p['server_core_others_pct']:.0f}%", flush=True)


# --- summary and report ----------------------------------------------------------------------

def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarise(rounds: list[dict[str, dict[str, Any]]], levels: list[int]) -> dict[str, Any]:
    """Per configuration and concurrency: medians over the rounds whose point was quiet (all
    rounds when none was); marked noisy when fewer than three were quiet."""
    out: dict[str, Any] = {}
    for config in CONFIGS:
        out[config.name] = {}
        for c in levels:
            pts = [r[config.name]["points"][str(c)] for r in rounds
                   if str(c) in r.get(config.name, {}).get("points", {})]
            quiet = [p for p in pts if p["server_core_others_pct"] <= NOISY_PCT]
            used = quiet or pts
            out[config.name][str(c)] = {
                "rounds": len(pts), "quiet_rounds": len(quiet), "noisy": len(quiet) < 3,
                **{key: median([p[key] for p in used if p[key] is not None])
                   for key in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req",
                               "cpu_us_per_req_with_drain", "server_core_others_pct")},
                "rps_min": min((p["rps"] for p in used), default=None),
                "rps_max": max((p["rps"] for p in used), default=None),
                "non_2xx": sum(p["non_2xx"] for p in pts),
                "errors": sum(p["errors"] for p in pts),
            }
    return out


def paired(rounds: list[dict[str, dict[str, Any]]], name: str, c: int,
           cpu: bool = False) -> list[float]:
    """Per round where both points were quiet: this configuration's throughput over off's
    (`cpu`: off's CPU per request, with drain, over this one's)."""
    ratios = []
    for r in rounds:
        try:
            mine, off = r[name]["points"][str(c)], r["off"]["points"][str(c)]
            if max(mine["server_core_others_pct"], off["server_core_others_pct"]) <= NOISY_PCT:
                key = "cpu_us_per_req_with_drain"
                ratios.append(off[key] / mine[key] if cpu else mine["rps"] / off["rps"])
        except (KeyError, TypeError, ZeroDivisionError):
            continue
    return ratios


def targets(summary: dict[str, Any], rounds: list[dict[str, dict[str, Any]]],
            levels: list[int]) -> list[dict[str, Any]]:
    found = []
    for name, limit in (("monitoring", MONITORING_MIN), ("monitoring+records", RECORDS_MIN)):
        for c in levels:
            mine, off = summary[name][str(c)], summary["off"][str(c)]
            value = mine["rps"] / off["rps"] if mine["rps"] and off["rps"] else None
            per_round = paired(rounds, name, c)
            judged = median(per_round) if per_round else value
            cpu, cpu_off = mine["cpu_us_per_req_with_drain"], off["cpu_us_per_req_with_drain"]
            found.append({
                "target": f"{name} / off throughput, c={c}", "value": value, "limit": limit,
                # When the server saturates its core, throughput goes as 1 / CPU per request.
                "cpu_estimate": cpu_off / cpu if cpu and cpu_off else None,
                "cpu_paired_median": median(paired(rounds, name, c, cpu=True)),
                "met": None if judged is None else judged >= limit,
                "paired_median": median(per_round), "paired": per_round,
                "noisy": mine["noisy"] or off["noisy"],
            })
    return found


def fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def threads_table(rounds: list[dict[str, dict[str, Any]]], levels: list[int]) -> list[str]:
    """Server CPU per request by thread, the drain included (medians over the rounds): which
    thread pays for monitoring and records ('main' is the event loop; shipyard names the
    others: the model thread after its deployment and variant, then access-log,
    records-NAME, monitor)."""
    lines = ["", "Server CPU per request by thread, with the drain (us; median over the "
             "rounds):", "", "| configuration | c | by thread |", "|---|---:|---|"]
    for c in levels:
        for config in CONFIGS:
            seen: dict[str, list[float]] = {}
            for r in rounds:
                point_ = r.get(config.name, {}).get("points", {}).get(str(c), {})
                for thread, us in point_.get("cpu_us_per_req_by_thread", {}).items():
                    seen.setdefault(thread, []).append(us)
            medians = {thread: statistics.median(us) for thread, us in seen.items()}
            lines.append(f"| {config.name} | {c} | {by_thread(medians)} |")
    return lines


def report(summary: dict[str, Any], found: list[dict[str, Any]],
           rounds: list[dict[str, dict[str, Any]]], levels: list[int], info: dict[str, Any],
           specs: dict[str, Any], args: argparse.Namespace,
           totals: dict[str, Any] | None = None) -> str:
    fresh = getattr(args, "fresh", True)
    schedule = (
        "each round starts each configuration afresh (order rotating), then "
        f"{args.warmup:g} s warm-up and {args.duration:g} s measured per concurrency (order "
        "alternating)" if fresh else
        "each configuration is started once and kept up; each round measures every "
        "concurrency (order alternating) on the three servers back to back (order rotating), "
        f"{args.warmup:g} s warm-up and {args.duration:g} s measured each, so that the points "
        "of a paired ratio are seconds apart")
    lines = [
        "# Monitoring's cost on serving throughput", "",
        f"Run on {info['date']}: `{info['command']}`", "",
        f"Machine: {info['nproc']} cores ({info['cpu']}), Linux {info['kernel']}, Python "
        f"{info['python']}, {info['wrk']}. Load average (1 min) {info['loadavg_start']:.2f} at "
        f"the start, {info['loadavg_end']:.2f} at the end.", "",
        f"bench/serving's model, request (one row of 30 floats, JSON), wrk (`-t1 -cN`) and "
        f"pinning: the server on core {SERVER_CORE}, wrk and this harness on core {LOAD_CORE}. "
        f"One deployment, `deploy --max-batch {args.max_batch}` (adaptive batching, as "
        "bench/serving's `shipyard+batching` row), three configurations, each in a home of "
        f"its own; drift evaluated every {args.drift_slide_s:g} s. {args.rounds} rounds; "
        f"{schedule}. Figures are medians over the rounds whose point had the server core to "
        f"itself (other processes under {NOISY_PCT:g}% of it; all rounds when none had; "
        "marked noisy when fewer than three had). Server CPU: utime + stime of the server's "
        f"process tree per request; 'with drain' adds what it used in the {args.drain_s:g} s "
        "after the load (the record writer's tail).", "",
        "Configurations:", "",
        *[f"- **{c.name}**: {c.note}; monitoring config "
          f"`{json.dumps(specs.get(c.name, {}).get('monitoring', {}).get('records', {}))}` "
          "(records)" for c in CONFIGS], "",
        "| configuration | c | req/s (median) | vs off | req/s min - max | p50 ms | p99 ms | "
        "server CPU us/req | with drain | core 0 others % | quiet rounds | non-2xx / errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in levels:
        off = summary["off"][str(c)]["rps"]
        for config in CONFIGS:
            s = summary[config.name][str(c)]
            rel = f"{s['rps'] / off:.3f}x" if s["rps"] and off else "-"
            bad = s["non_2xx"] or s["errors"]
            lines.append(
                f"| {config.name} | {c} | {fmt(s['rps'])} | {rel} | {fmt(s['rps_min'])} - "
                f"{fmt(s['rps_max'])} | {fmt(s['p50_ms'], 2)} | {fmt(s['p99_ms'], 2)} | "
                f"{fmt(s['cpu_us_per_req'])} | {fmt(s['cpu_us_per_req_with_drain'])} | "
                f"{fmt(s['server_core_others_pct'])} | {s['quiet_rounds']} / {s['rounds']}"
                f"{' **noisy**' if s['noisy'] else ''} | "
                f"{'**FLAG** ' if bad else ''}{s['non_2xx']} / {s['errors']} |")
    lines += ["", "| target | ratio of medians | paired ratios, rounds quiet for both "
              "(median; all) | off CPU/req over this CPU/req, with drain (paired median; "
              "of medians) | limit | met |",
              "|---|---:|---|---:|---:|---|"]
    for t in found:
        met = {None: "not measured", True: "yes", False: "**NO**"}[t["met"]]
        if t["noisy"] and t["met"] is not None:
            met += " (noisy)"
        lines.append(f"| {t['target']} | {fmt(t['value'], 3)} | {fmt(t['paired_median'], 3)}; "
                     f"{', '.join(f'{v:.3f}' for v in t['paired'])} | "
                     f"{fmt(t.get('cpu_paired_median'), 3)}; {fmt(t['cpu_estimate'], 3)} | "
                     f">= {t['limit']} | {met} |")
    lines += ["", "'met' judges the median of the paired ratios (the ratio of medians when no "
              "round was quiet for both). The CPU column is a cross-check: at c=64 the server "
              "saturates its core, so its throughput goes as 1 / CPU per request; at c=1 it "
              "does not. Its paired median pairs each round's points as the throughput "
              "column does; its ratio of medians does not, so a host whose speed swings "
              "between rounds moves it more."]
    lines += threads_table(rounds, levels)
    lines += ["", "Records: stored per server against the requests it answered (warm-up, "
              "measured and probes; counted after a graceful stop, which drains the writer).",
              "", "| configuration | round | records stored | requests answered |",
              "|---|---:|---:|---:|"]
    for i, r in enumerate(rounds, 1):
        for config in CONFIGS:
            res = r.get(config.name)
            if res and "records_written" in res:
                lines.append(f"| {config.name} | {i} | {res['records_written']:,} | "
                             f"{res['answered']:,} |")
    for config in CONFIGS:
        res = (totals or {}).get(config.name)
        if res and "records_written" in res:
            lines.append(f"| {config.name} | all | {res['records_written']:,} | "
                         f"{res['answered']:,} |")
    lines += ["", "Every round (req/s; core 0 others %):", "",
              "| round | order | " + " | ".join(f"{c.name} c={lv}" for lv in levels
                                                 for c in CONFIGS) + " |",
              "|---:|---|" + "---:|" * (len(levels) * len(CONFIGS))]
    for i, r in enumerate(rounds, 1):
        cells = []
        for lv in levels:
            for config in CONFIGS:
                p = r.get(config.name, {}).get("points", {}).get(str(lv))
                cells.append(f"{p['rps']:.0f}; {p['server_core_others_pct']:.0f}%"
                             if p else "failed")
        lines.append(f"| {i} | {', '.join(r['_order'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def rewrite(source: Path, out: Path) -> int:
    data = json.loads(source.read_text())
    args = argparse.Namespace(**data["args"])
    levels = [int(c) for c in args.concurrency.split(",")]
    summary = summarise(data["rounds"], levels)
    found = targets(summary, data["rounds"], levels)
    text = report(summary, found, data["rounds"], levels, data["machine"], data["specs"], args,
                  data.get("totals"))
    print(text)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(
        {**data, "summary": summary, "targets": found}, indent=2) + "\n")
    return 1 if any(t["met"] is False for t in found) else 0


# --- main ------------------------------------------------------------------------------------

def portable(values: dict[str, Any]) -> dict[str, Any]:
    """Arguments as recorded in results: paths relative to the repository (no machine's
    folders in committed files)."""
    root = HERE.parent.parent
    found = {}
    for key, value in values.items():
        if isinstance(value, str) and value.startswith(str(root)):
            value = str(Path(value).relative_to(root))
        found[key] = value
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per point")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each point")
    parser.add_argument("--drain-s", type=float, default=2.0,
                        help="seconds after each point whose server CPU is reported too")
    parser.add_argument("--retries", type=int, default=1,
                        help=f"measure a point again when other processes took more than "
                             f"{NOISY_PCT:g}%% of the server core")
    parser.add_argument("--quiet-wait", type=float, default=10.0,
                        help="seconds to wait, at most, for the server core to be quiet")
    parser.add_argument("--concurrency", default="1,64")
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--drift-slide-s", type=float, default=5.0,
                        help="drift evaluated this often (the default deployment: 300 s)")
    parser.add_argument("--records-store", choices=("database", "parquet"), default="database")
    parser.add_argument("--fresh", action="store_true",
                        help="start every configuration afresh in every round (the default "
                             "starts each once and measures the three back to back)")
    parser.add_argument("--out", default=str(RESULTS_MD), help="results markdown file")
    parser.add_argument("--from-json", default=None,
                        help="measure nothing: write the report again from a results.json")
    args = parser.parse_args()
    if args.from_json:
        return rewrite(Path(args.from_json), Path(args.out))
    levels = [int(c) for c in args.concurrency.split(",")]
    # A stopped harness stops its server too (the `finally` around every server).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed. Try: apt-get install -y wrk")
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {LOAD_CORE})

    info = serving.machine()
    info["date"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    info["command"] = " ".join(["python bench/monitoring/run.py", *sys.argv[1:]])
    workdir = Path(tempfile.mkdtemp(prefix="shipyard-monitoring-bench-"))
    (workdir / "logs").mkdir()
    reference = save(workdir)
    ctx = Context(workdir=workdir, model=workdir / MODEL_FILE, row=reference["row"],
                  peers_dir=workdir)
    specs = {}
    for config in CONFIGS:
        specs[config.name] = prepare(ctx, config, args)
        print(f"prepared {config.name}: {json.dumps(specs[config.name]['monitoring'])}",
              flush=True)

    rounds: list[dict[str, dict[str, Any]]] = []
    totals: dict[str, Any] = {}
    failed = False
    if not args.fresh:
        rounds, totals, failed = run_kept(ctx, reference, levels, args)
    for i in range(args.rounds if args.fresh else 0):
        shift = i % len(CONFIGS)
        order = CONFIGS[shift:] + CONFIGS[:shift]
        round_levels = levels if i % 2 == 0 else levels[::-1]
        print(f"round {i + 1}/{args.rounds}: {', '.join(c.name for c in order)}", flush=True)
        this: dict[str, Any] = {"_order": [c.name for c in order]}
        for config in order:
            try:
                this[config.name] = run_server(config, ctx, reference, round_levels, i, args)
            except Exception as exc:
                failed = True
                this[config.name] = {"error": str(exc).replace("\n", " ")[:1500], "points": {}}
                print(f"  {config.name}: FAILED: {exc}", flush=True)
        rounds.append(this)

    info["loadavg_end"] = os.getloadavg()[0]
    summary = summarise(rounds, levels)
    found = targets(summary, rounds, levels)
    text = report(summary, found, rounds, levels, info, specs, args, totals)
    print("\n" + text)
    Path(args.out).write_text(text)
    json_path = Path(args.out).with_suffix(".json")
    json_path.write_text(json.dumps(
        {"machine": info, "args": portable(vars(args)), "specs": specs, "summary": summary,
         "targets": found, "rounds": rounds, "totals": totals}, indent=2) + "\n")
    if failed:
        print(f"wrote {args.out} and {json_path}; server logs kept in {workdir / 'logs'}")
    else:
        print(f"wrote {args.out} and {json_path}")
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed or any(t["met"] is False for t in found) else 0


if __name__ == "__main__":
    sys.exit(main())
