"""The `shipyard` command line: parse, call the library, print.

Every listing takes `--json`. Exit codes: 0 success, 1 a check found the bundle fragile or an
unexpected failure, 2 bad input (including an unreachable registry), 3 not found,
4 conflict, 5 fragile bundle refused, 6 a framework is not installed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from shipyard.cpu import POLICIES
from shipyard.errors import ShipyardError
from shipyard.settings import Settings


class LazyConsole:
    """rich's Console, made on first use: importing rich costs 50 ms or more, which `serve`
    (its cold start), --json output and every command that prints nothing need not pay."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Any = None

    @property
    def target(self) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


def Table(*columns: Any, **options: Any) -> Any:  # rich's class, imported when first used
    from rich.table import Table as RichTable

    return RichTable(*columns, **options)


console = LazyConsole()
err_console = LazyConsole(stderr=True)


class Context:
    def __init__(self, overrides: dict[str, Any]) -> None:
        self.overrides = overrides
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from shipyard.security.secrets import plain_settings

            self._settings = Settings.load(self.overrides, secrets=plain_settings)
        return self._settings

    @contextmanager
    def registry(self) -> Iterator[Any]:
        from shipyard.registry.registry import Registry

        registry = Registry.open(self.settings)
        try:
            yield registry
        finally:
            registry.close()


pass_context = click.make_pass_decorator(Context)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """A YAML file that must hold a mapping (a config section), with errors that say where."""
    import yaml

    from shipyard.errors import ConfigError

    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Could not parse {path}: {exc}", hint="Fix the YAML syntax.") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"Got {type(loaded).__name__} in {path}. Expected a mapping.",
            hint="Write the section as `key: value` lines (see docs/monitoring.md).",
        )
    return loaded


@contextmanager
def progress_bar(label: str, enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A transfer progress bar on stderr, or None when output is for scripts."""
    if not enabled or not err_console.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err_console.target,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="shipyard")
@click.option(
    "--home",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder for the default registry and store [env SHIPYARD_HOME].",
)
@click.option(
    "--database-url", default=None, help="Registry database URL [env SHIPYARD_DATABASE_URL]."
)
@click.option("--store-url", default=None, help="Artifact store URL [env SHIPYARD_STORE_URL].")
@click.option("--actor", default=None, help="Who the audit log records [env SHIPYARD_ACTOR].")
@click.pass_context
def cli(
    ctx: click.Context,
    home: Path | None,
    database_url: str | None,
    store_url: str | None,
    actor: str | None,
) -> None:
    """shipyard: package, register, serve, roll out and roll back models."""
    ctx.obj = Context(
        {"home": home, "database_url": database_url, "store_url": store_url, "actor": actor}
    )


# -- bundles -----------------------------------------------------------------------------------


@cli.command()
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="Model name (lowercase, digits, . _ -).")
@click.option("--owner", required=True, help="'Name <contact>' of who answers for the model.")
def init(dest: Path, name: str, owner: str) -> None:
    """Scaffold a bundle folder with custom loading, pre- and postprocessing code."""
    from shipyard import api

    api.init(dest, name=name, owner=owner)
    console.print(
        f"Created {dest}. Edit code/ and shipyard.yaml, then run `shipyard package {dest}`."
    )


@cli.command("package")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=None,
    help="CSV or Parquet evaluation data (profile and metrics).",
)
@click.option("--target", default=None, help="Label column in --data.")
@click.option(
    "--threshold",
    "thresholds",
    multiple=True,
    metavar="METRIC=VALUE",
    help="A threshold the metric must meet, e.g. accuracy=0.9 (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def package_cmd(
    folder: Path, data: Path | None, target: str | None, thresholds: tuple[str, ...], as_json: bool
) -> None:
    """Finish a bundle folder: hashes, pinned dependencies, schema, profile, metrics."""
    from shipyard import api

    parsed = {}
    for item in thresholds:
        metric, sep, value = item.partition("=")
        try:
            parsed[metric.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise click.BadParameter(
                f"Got {item!r}. Expected METRIC=NUMBER.", param_hint="--threshold"
            )
    manifest = api.finish(folder, data=data, target=target, thresholds=parsed)
    if as_json:
        emit_json(manifest.model_dump(mode="json", by_alias=True, exclude_none=True))
    else:
        console.print(
            f"Packaged {manifest.name}:{manifest.version} in {folder} "
            f"({len(manifest.artifacts)} artifact files)."
        )


@cli.command("check")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print findings as JSON.")
@pass_context
def check_cmd(ctx: Context, bundle: Path, as_json: bool) -> None:
    """List every missing or inconsistent item; exit 1 when the bundle is fragile."""
    from shipyard import api
    from shipyard.bundle.check import is_fragile

    findings = api.check(bundle, trusted_keys=ctx.settings.trusted_keys,
                         audit_database=ctx.settings.audit_database)
    fragile = is_fragile(findings)
    if as_json:
        emit_json(
            {"bundle": str(bundle), "fragile": fragile, "findings": [f.to_dict() for f in findings]}
        )
    else:
        print_findings(findings)
        console.print(
            "[red]fragile[/red]: fix the errors above before deploying."
            if fragile
            else "[green]ready[/green]: no errors."
        )
    sys.exit(1 if fragile else 0)


def print_findings(findings: list[Any]) -> None:
    if not findings:
        return
    table = Table("severity", "code", "message", "where")
    colours = {"error": "red", "warning": "yellow", "info": "cyan"}
    for f in findings:
        table.add_row(
            f"[{colours[f.severity]}]{f.severity}[/]",
            f.code,
            f.message + (f"\n[dim]{f.hint}[/dim]" if f.hint else ""),
            f.where,
        )
    console.print(table)


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--key",
    "key_path",
    required=True,
    type=click.Path(path_type=Path),
    help="ed25519 private key (PEM) from `shipyard keygen`.",
)
def sign(bundle: Path, key_path: Path) -> None:
    """Sign a bundle's manifest with an ed25519 key."""
    from shipyard.bundle import signing

    fingerprint = signing.sign(bundle, key_path)
    console.print(f"Signed {bundle} with key {fingerprint}.")


@cli.command()
@click.argument("prefix", type=click.Path(path_type=Path))
def keygen(prefix: Path) -> None:
    """Write an ed25519 key pair PREFIX.pem (private) and PREFIX.pub.pem (public)."""
    from shipyard.bundle import signing

    fingerprint = signing.generate_keypair(
        prefix.with_suffix(".pem"), prefix.with_suffix(".pub.pem")
    )
    console.print(
        f"Wrote {prefix}.pem and {prefix}.pub.pem (key {fingerprint}). Keep the "
        "private key secret; list the public one in trusted_keys."
    )


# -- registry ----------------------------------------------------------------------------------


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--allow-fragile",
    is_flag=True,
    help="Register a bundle with error findings (recorded in the audit log).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_context
def push(ctx: Context, bundle: Path, allow_fragile: bool, as_json: bool) -> None:
    """Check and register a bundle as an immutable version."""
    from shipyard import api

    with progress_bar("pushing", not as_json) as update:
        result = api.push(
            bundle, settings=ctx.settings, allow_fragile=allow_fragile, progress=update
        )
    if as_json:
        emit_json(result.to_dict())
    elif result.created:
        console.print(f"Registered {result.name}:{result.version} ({result.digest[:12]}).")
    else:
        console.print(
            f"{result.name}:{result.version} is already registered with identical "
            "content; nothing to do."
        )


@cli.command("list")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_context
def list_cmd(ctx: Context, name: str | None, as_json: bool) -> None:
    """List models, or the versions of one model."""
    with ctx.registry() as registry:
        rows = [r.to_dict() for r in (registry.versions(name) if name else registry.models())]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        console.print("No models registered yet. Register one with `shipyard push BUNDLE`.")
        return
    table = Table(*rows[0].keys())
    for row in rows:
        table.add_row(*(_cell(v) for v in row.values()))
    console.print(table)


def _cell(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return "" if value is None else str(value)


@cli.command()
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_context
def show(ctx: Context, ref: str, as_json: bool) -> None:
    """Show a version: manifest, evaluation report, owner and checks."""
    from shipyard.bundle.check import check_manifest
    from shipyard.bundle.manifest import Manifest

    with ctx.registry() as registry:
        record = registry.resolve(ref)
        aliases = registry.aliases(record.name)
    manifest = Manifest.from_text(record.manifest_yaml)
    findings = check_manifest(manifest)
    data = {
        **record.to_dict(),
        "aliases": [a for a, v in aliases.items() if v == record.version],
        "manifest": manifest.model_dump(mode="json", by_alias=True, exclude_none=True),
        "findings": [f.to_dict() for f in findings],
    }
    if as_json:
        emit_json(data)
        return
    console.print(f"[bold]{manifest.name}:{manifest.version}[/bold]  {manifest.description}")
    console.print(
        f"owner: {manifest.owner}   runtime: {manifest.runtime.kind}   "
        f"digest: {record.digest[:12]}   aliases: {', '.join(data['aliases']) or '-'}"
    )
    if manifest.evaluation:
        table = Table(
            "metric",
            "value",
            "threshold",
            title=f"evaluation: {manifest.evaluation.data} ({manifest.evaluation.rows} rows)",
        )
        for m in manifest.evaluation.metrics:
            table.add_row(
                m.name,
                f"{m.value:.4f}",
                ""
                if m.threshold is None
                else f"{'>=' if m.higher_is_better else '<='} {m.threshold:g}",
            )
        console.print(table)
    print_findings(findings)


@cli.command()
@click.argument("name")
@click.argument("alias", required=False)
@click.argument("version", required=False)
@click.option("--history", is_flag=True, help="Show how the aliases moved.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_context
def alias(
    ctx: Context, name: str, alias: str | None, version: str | None, history: bool, as_json: bool
) -> None:
    """Point ALIAS of model NAME at VERSION, or list the aliases of NAME."""
    with ctx.registry() as registry:
        if alias and version:
            registry.set_alias(name, alias, version)
            if not as_json:
                console.print(f"{name}@{alias} -> {version}")
        if history:
            rows = [e.to_dict() for e in registry.alias_history(name, alias)]
        else:
            rows = [{"alias": a, "version": v} for a, v in registry.aliases(name).items()]
    if as_json:
        emit_json(rows)
    elif not (alias and version) or history:
        table = Table(*(rows[0].keys() if rows else ["alias", "version"]))
        for row in rows:
            table.add_row(*(_cell(v) for v in row.values()))
        console.print(table)


@cli.command()
@click.argument("ref")
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_context
def pull(ctx: Context, ref: str, dest: Path, as_json: bool) -> None:
    """Write the bundle of REF (NAME:VERSION or NAME@ALIAS) to DEST."""
    from shipyard import api

    with progress_bar("pulling", not as_json) as update:
        path = api.pull(ref, dest, settings=ctx.settings, progress=update)
    if as_json:
        emit_json({"ref": ref, "path": str(path)})
    else:
        console.print(f"Pulled {ref} into {path}.")


class AuditGroup(click.Group):
    """`shipyard audit` lists the log, `audit verify` checks it, `audit BUNDLE` (any other
    first argument) audits a bundle's dependencies: the same as `audit bundle BUNDLE`."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["bundle", *args]
        return super().resolve_command(ctx, args)


@cli.group(cls=AuditGroup, invoke_without_command=True)
@click.option("--limit", default=50, show_default=True, help="Most recent entries to show.")
@click.option("--target", default=None, help="Only entries about this target.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def audit(click_ctx: click.Context, limit: int, target: str | None, as_json: bool) -> None:
    """Read the audit log: who did what, when, from where."""
    if click_ctx.invoked_subcommand is not None:
        return
    ctx: Context = click_ctx.obj
    with ctx.registry() as registry:
        rows = [e.to_dict() for e in registry.audit(limit=limit, target=target)]
    if as_json:
        emit_json(rows)
        return
    table = Table("when", "actor", "action", "target", "origin", "details")
    for row in rows:
        table.add_row(
            str(row["at"])[:19],
            row["actor"],
            row["action"],
            row["target"],
            row["origin"],
            _cell(row.get("details")),
        )
    console.print(table)


@audit.command("bundle")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--database", type=click.Path(exists=False, path_type=Path), default=None,
              help="OSV database: PyPI.zip or a folder of OSV JSON [env SHIPYARD_AUDIT_DATABASE].")
@click.option("--online", is_flag=True, help="Ask the OSV API instead of a local database.")
@click.option("--sbom", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a CycloneDX 1.5 SBOM of the bundle here.")
@click.option("--fail-on", type=click.Choice(["critical", "high", "medium", "low"]),
              default="low", show_default=True, help="Lowest severity that fails the audit.")
@click.option("--max-age", type=click.FloatRange(min=0), default=None,
              help="Refuse a database older than this many days.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_context
def audit_bundle_cmd(ctx: Context, path: Path, database: Path | None, online: bool,
                     sbom: Path | None, fail_on: str, max_age: float | None,
                     as_json: bool) -> None:
    """Check a bundle's pinned dependencies against a vulnerability database (offline works).

    Exit 0: no known vulnerability; 1: vulnerable; 2: unknown (the database could not be
    read or reached, or pins are not exact) - never "clean" when nothing was looked up.
    A bundle folder named like a subcommand (verify, bundle) needs a ./ prefix."""
    from datetime import timedelta

    from shipyard.depaudit import audit_bundle

    report = audit_bundle(
        path, database=None if online else (database or ctx.settings.audit_database),
        online=online, sbom=sbom,
        max_age=timedelta(days=max_age) if max_age is not None else None,
    )
    if as_json:
        emit_json(report.to_dict())
    else:
        console.print(f"{path}: {report.status} ({report.source})")
        for vuln in report.vulnerabilities:
            fixed = f", fixed in {', '.join(vuln.fixed)}" if vuln.fixed else ""
            console.print(f"  {vuln.severity.upper():9} {vuln.package}=={vuln.version} "
                          f"{vuln.id}{fixed}: {vuln.summary[:100]}")
        for problem in report.problems:
            err_console.print(f"  [yellow]could not check[/yellow]: {problem}")
        if sbom:
            console.print(f"SBOM written to {sbom}")
    raise SystemExit(report.exit_code(fail_on))  # type: ignore[arg-type]  # click.Choice


@audit.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_context
def audit_verify(ctx: Context, as_json: bool) -> None:
    """Check the audit log's hash chain; exit 1 if an entry was altered or removed."""
    with ctx.registry() as registry:
        result = registry.verify_audit()
    data = result.to_dict()
    if as_json:
        emit_json(data)
    else:
        console.print("audit chain intact" if data["ok"] else f"audit chain BROKEN: {data}")
    sys.exit(0 if data["ok"] else 1)


# -- deployments and serving --------------------------------------------------------------


@cli.command()
@click.argument("name")
@click.option("--model", "model_ref", required=True, help="MODEL:VERSION or MODEL@ALIAS.")
@click.option("--owner", default=None, help="'Name <contact>' answerable for the deployment.")
@click.option("--max-batch", type=int, default=None, help="Most rows per model call (1: off).")
@click.option("--max-wait-ms", type=float, default=None, help="Wait for a fuller batch (ms).")
@click.option("--timeout-ms", type=float, default=None, help="Prediction timeout (ms).")
@click.option("--max-rows", type=int, default=None, help="Most rows per request.")
@click.option("--max-inflight", type=int, default=None, help="Requests in flight before 429.")
@click.option(
    "--fallback",
    default=None,
    metavar="error|static:JSON|model:REF",
    help="On timeout or model error: an error, a fixed answer, or another version.",
)
@click.option(
    "--monitoring",
    "monitoring_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="YAML file with the monitoring config: records, slices, cost, drift, alerts "
    "(docs/monitoring.md). Kept from the previous revision when not given.",
)
@click.option("--reason", default="", help="Why, for the audit log.")
@click.option("--json", "as_json", is_flag=True, help="Print the revision as JSON.")
@pass_context
def deploy(
    ctx: Context,
    name: str,
    model_ref: str,
    owner: str | None,
    max_batch: int | None,
    max_wait_ms: float | None,
    timeout_ms: float | None,
    max_rows: int | None,
    max_inflight: int | None,
    fallback: str | None,
    monitoring_file: Path | None,
    reason: str,
    as_json: bool,
) -> None:
    """Create or update deployment NAME to serve a model version (a new revision)."""
    from shipyard.deploying import deploy_model

    flags = {
        "max_batch": max_batch,
        "max_wait_ms": max_wait_ms,
        "timeout_ms": timeout_ms,
        "max_rows": max_rows,
        "max_inflight": max_inflight,
    }
    with ctx.registry() as registry:
        revision = deploy_model(
            registry,
            name,
            model_ref,
            owner=owner,
            reason=reason,
            serving={k: v for k, v in flags.items() if v is not None},
            fallback=fallback,
            monitoring=read_yaml_mapping(monitoring_file) if monitoring_file else None,
        )
    if as_json:
        emit_json(revision.to_dict())
    else:
        models = ", ".join(v["model"] for v in revision.spec["variants"])
        console.print(f"{name} revision {revision.number}: {models}")


@cli.command()
@click.argument("name")
@click.option(
    "--to",
    "to_revision",
    type=int,
    default=None,
    help="Revision number to restore (default: the one before the current).",
)
@click.option("--reason", default="", help="Why, for the audit log.")
@click.option("--force", is_flag=True,
              help="Go ahead despite a breaking schema difference (needs --reason).")
@click.option("--json", "as_json", is_flag=True, help="Print the new revision as JSON.")
@pass_context
def rollback(ctx: Context, name: str, to_revision: int | None, reason: str, force: bool,
             as_json: bool) -> None:
    """Re-apply an earlier revision of deployment NAME in one step (artifact, config and
    routing), ending an active rollout. No rebuild, no download."""
    from shipyard.rollout import manage

    with ctx.registry() as registry:
        revision = manage.rollback(registry, name, to=to_revision, reason=reason, force=force)
    if as_json:
        emit_json(revision.to_dict())
    else:
        models = ", ".join(v["model"] for v in revision.spec["variants"])
        console.print(
            f"{name} rolled back: revision {revision.number} serves {models} ({revision.reason})."
        )


@cli.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_context
def history(ctx: Context, name: str, as_json: bool) -> None:
    """Revisions of deployment NAME: who, when, why, and what each served."""
    with ctx.registry() as registry:
        rows = [r.to_dict() for r in registry.revisions(name)]
    if as_json:
        emit_json(rows)
        return
    table = Table("revision", "when", "who", "models", "why")
    for row in rows:
        models = ", ".join(f"{v['model']} ({v.get('role', 'champion')} {v.get('weight', 100):g}%)"
                           for v in row["spec"]["variants"])
        table.add_row(str(row["number"]), str(row["created_at"])[:19], row["actor"], models,
                      row["reason"])
    console.print(table)


@cli.group()
def rollout() -> None:
    """Shadow, canary, A/B and champion/challenger rollouts decided by analysis rules."""


@rollout.command("start")
@click.argument("name")
@click.option("--plan", "plan_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="A YAML rollout plan (docs/rollouts.md); flags are ignored.")
@click.option("--strategy", type=click.Choice(["direct", "shadow", "canary", "ab",
                                               "champion_challenger"]), default=None)
@click.option("--model", "model_ref", default=None,
              help="Candidate NAME:VERSION (comma-separated challengers).")
@click.option("--steps", default=None, help="Candidate traffic per step, e.g. 5,25,50,100.")
@click.option("--interval", default=None, help="Evaluation cadence, e.g. 30s, 10m.")
@click.option("--rules", "rules_file", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), default=None, help="YAML file of analysis rules.")
@click.option("--ab-key", default=None, help="A/B sticky key: header:NAME or field:NAME.")
@click.option("--ab-split", default=None, help="A/B arms, e.g. control=50,treatment=50.")
@click.option("--step-duration", default=None, help="Shortest time per step, e.g. 10m.")
@click.option("--deadline", default=None, help="Longest time per step, e.g. 24h.")
@click.option("--on-deadline", type=click.Choice(["promote", "rollback", "abort"]),
              default=None, help="What happens when a step runs out of time.")
@click.option("--min-samples", type=int, default=None, help="Requests per step before judging.")
@click.option("--wait-for-labels", type=int, default=None,
              help="Labelled predictions per arm before judging.")
@click.option("--approval", is_flag=True, help="Each step waits for the owner's approval.")
@click.option("--allow-breaking", is_flag=True,
              help="Go ahead despite a breaking schema change (needs --reason).")
@click.option("--reason", default="", help="Why, for the audit log.")
@click.option("--json", "as_json", is_flag=True, help="Print the rollout as JSON.")
@pass_context
def rollout_start(ctx: Context, name: str, plan_file: Path | None, strategy: str | None,
                  model_ref: str | None, steps: str | None, interval: str | None,
                  rules_file: Path | None, ab_key: str | None, ab_split: str | None,
                  step_duration: str | None, deadline: str | None, on_deadline: str | None,
                  min_samples: int | None, wait_for_labels: int | None, approval: bool,
                  allow_breaking: bool, reason: str, as_json: bool) -> None:
    """Start a rollout on deployment NAME; the serving controller takes it from there."""
    from shipyard.errors import ConfigError
    from shipyard.rollout import manage
    from shipyard.rollout.plan import RolloutPlan

    if plan_file is not None:
        plan = RolloutPlan.from_yaml(plan_file.read_text(encoding="utf-8"))
    else:
        if not strategy or not model_ref:
            raise ConfigError("A rollout needs --strategy and --model (or --plan FILE).",
                              hint="e.g. --strategy canary --model iris:2 --steps 5,25,100")
        plan = RolloutPlan.from_flags(
            strategy=strategy, model=model_ref, steps=steps, interval=interval,
            rules=rules_file.read_text(encoding="utf-8") if rules_file else None,
            ab_key=ab_key, ab_split=ab_split, step_duration=step_duration, deadline=deadline,
            on_deadline=on_deadline, min_samples=min_samples, wait_for_labels=wait_for_labels,
            approval=approval, allow_breaking=allow_breaking, reason=reason,
        )
    with ctx.registry() as registry:
        record = manage.start(registry, name, plan, reason=reason)
    if as_json:
        emit_json(record.to_dict())
    else:
        console.print(f"rollout {record.id} of {record.candidate} on {name} started "
                      f"({record.strategy}, step 1 of {max(1, len(plan.steps))}).")


def _rollout_act(action: str, doc: str) -> None:
    @rollout.command(action, help=doc)
    @click.argument("name")
    @click.option("--reason", default="", help="Why, for the audit log.")
    @click.option("--json", "as_json", is_flag=True, help="Print the rollout as JSON.")
    @pass_context
    def command(ctx: Context, name: str, reason: str, as_json: bool) -> None:
        from shipyard.rollout import manage

        with ctx.registry() as registry:
            record = getattr(manage, action)(registry, name, reason=reason)
        if as_json:
            emit_json(record.to_dict())
        else:
            console.print(f"rollout {record.id} on {name}: {record.status}.")


for _action, _doc in (
    ("pause", "Stop evaluating and moving traffic; the current split stays."),
    ("resume", "Evaluate and move traffic again."),
    ("approve", "Approve the current step (steps with approval wait for the owner)."),
    ("promote", "Finish now: the candidate takes all traffic as the champion."),
    ("abort", "Stop and put the revision from before the rollout back."),
):
    _rollout_act(_action, _doc)


@rollout.command("status")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_context
def rollout_status(ctx: Context, name: str, as_json: bool) -> None:
    """The plan, the current step, configured and observed split, and each rule's latest
    evaluation."""
    from shipyard.rollout import manage

    with ctx.registry() as registry:
        found = manage.status(registry, name)
    if as_json:
        emit_json(found)
        return
    record = found["rollout"]
    console.print(f"rollout {record['id']} of {record['candidate']} on {name}: "
                  f"{record['status']}, {record['strategy']}, step {record['step'] + 1} of "
                  f"{max(1, len(record['plan'].get('steps') or []))}")
    console.print(f"  configured split: {found['configured_split']}")
    console.print(f"  observed split:   {found['observed_split']}")
    table = Table("rule", "outcome", "at", "why")
    for row in found["latest"]:
        table.add_row(row["rule"], row["outcome"], str(row["at"])[:19], row["reason"][:160])
    console.print(table)


@rollout.command("explain")
@click.argument("name")
@pass_context
def rollout_explain(ctx: Context, name: str) -> None:
    """Why the latest rollout of NAME is where it is (e.g. why it was rolled back)."""
    from shipyard.rollout import manage

    with ctx.registry() as registry:
        console.print(manage.why(registry, name), markup=False, highlight=False)


@rollout.command("report")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_context
def rollout_report(ctx: Context, name: str, as_json: bool) -> None:
    """Compare A/B arms on the product metrics that arrived as feedback: a peeking-safe
    test, confidence intervals and a sample-ratio-mismatch check."""
    from shipyard.rollout.report import ab_report

    with ctx.registry() as registry:
        found = ab_report(registry, name)
    if as_json:
        emit_json(found)
        return
    console.print(f"{name}: {found['summary']}")
    table = Table("metric", "arm", "n", "mean", "difference", "interval", "p (always valid)",
                  "verdict")
    for row in found["comparisons"]:
        table.add_row(row["metric"], row["arm"], _cell(row["n"]), _cell(row["mean"]),
                      _cell(row["difference"]), row["interval"], _cell(row["p_value"]),
                      row["verdict"])
    console.print(table)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_context
def deployments(ctx: Context, as_json: bool) -> None:
    """List deployments with their current revision and models."""
    with ctx.registry() as registry:
        rows = []
        for deployment in registry.deployments():
            revision = registry.current_revision(deployment.name)
            rows.append(
                {
                    **deployment.to_dict(),
                    "models": [f"{v['name']}={v['model']}" for v in revision.spec["variants"]],
                }
            )
    if as_json:
        emit_json(rows)
        return
    table = Table("name", "revision", "models", "owner", "created_at")
    for row in rows:
        table.add_row(
            row["name"],
            str(row["revision"]),
            ", ".join(row["models"]),
            row["owner"],
            str(row["created_at"])[:19],
        )
    console.print(table)


@cli.command()
@click.argument("names", nargs=-1)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Interface to listen on (loopback unless you say otherwise).",
)
@click.option("--port", default=8000, show_default=True, type=int, help="TCP port.")
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Processes that share nothing but the registry.",
)
@click.option(
    "--no-monitoring",
    is_flag=True,
    help="Turn off metrics, sketches, drift, records and alerts (to measure their cost).",
)
@click.option(
    "--insecure-no-auth",
    is_flag=True,
    help="Serve without authentication even beyond loopback (prints a warning). Management "
    "routes still need a credential.",
)
@click.option(
    "--scheduling",
    type=click.Choice(POLICIES),
    default=None,
    help="Linux scheduling policy of the server's threads (default: the `scheduling` "
    "setting, batch). normal suits a core shared with other busy processes.",
)
@pass_context
def serve(
    ctx: Context,
    names: tuple[str, ...],
    host: str,
    port: int,
    workers: int,
    no_monitoring: bool,
    insecure_no_auth: bool,
    scheduling: str | None,
) -> None:
    """Serve deployments over HTTP (all of them when no NAME is given).

    Beyond loopback, callers must authenticate (shipyard keys create) unless
    --insecure-no-auth is given."""
    import gc

    # Paused while the server's libraries and models load; the server resumes it once ready.
    gc.disable()
    from shipyard.serving.door import loopback
    from shipyard.serving.server import serve as run_server

    if no_monitoring:
        ctx.overrides["monitoring"] = False
    if scheduling is not None:
        ctx.overrides["scheduling"] = scheduling
    if insecure_no_auth:
        ctx.overrides["auth"] = "off"
        if not loopback(host):
            err_console.print(
                f"[bold red]WARNING[/bold red]: serving on {host} without authentication: "
                "anyone who reaches this port can call the models."
            )
    ctx._settings = None

    run_server(
        ctx.settings,
        names,
        host=host,
        port=port,
        workers=workers,
        overrides={k: v for k, v in ctx.overrides.items() if v is not None},
        resume_gc=True,
    )


def fetch_json(url: str, timeout_s: float = 10.0) -> Any:
    """GET a JSON document from a shipyard server; an unreachable server is a clear error."""
    import urllib.error
    import urllib.request

    from shipyard.errors import NotFoundError, UnavailableError

    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - http(s) only
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read())["error"]
            message = detail["message"] if isinstance(detail, dict) else str(detail)
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {exc.code}"
        error = NotFoundError if exc.code == 404 else UnavailableError
        raise error(f"{url}: {message}", hint="Check the deployment name and --url.") from None
    except (urllib.error.URLError, OSError) as exc:
        raise UnavailableError(
            f"No shipyard server answers at {url} ({exc}).",
            hint="Start one with `shipyard serve`, or pass its address with --url.",
        ) from None


def _server_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        from shipyard.errors import ConfigError

        raise ConfigError(f"Got --url {url!r}. Expected http://HOST:PORT.", hint="e.g. "
                          "--url http://127.0.0.1:8000")
    return url.rstrip("/")


def monitor_tables(snap: dict[str, Any]) -> Any:
    """The terminal view of one deployment's monitor snapshot."""
    from rich.console import Group

    head = Table(
        "variant", "version", "role", "weight %", "observed %", "req/s", "errors", "timeouts",
        "p50 ms", "p99 ms", "drifted fields", title=(
            f"{snap['deployment']}: revision {snap['rollout']['revision']}"
        ),
    )
    weights = {v["name"]: v for v in snap["rollout"]["variants"]}
    for variant in snap["variants"]:
        figures = variant["figures"]
        drift = variant.get("drift") or {}
        drifted = [k for k, f in (drift.get("fields") or {}).items() if f.get("drifted")]
        routed = weights.get(variant["variant"], {})
        head.add_row(
            variant["variant"], variant["version"], variant["role"],
            _cell(routed.get("weight")), _cell(routed.get("observed_share")),
            _cell(figures.get("request_rate")), _cell(figures.get("error_rate")),
            _cell(figures.get("timeout_rate")), _cell(figures.get("latency_p50_ms")),
            _cell(figures.get("latency_p99_ms")),
            ", ".join(drifted[:6]) or (drift.get("status") or "-"),
        )
    alerts = Table("rule", "variant", "state", "value", title="alerts")
    for alert in snap["alerts"]:
        alerts.add_row(alert.get("name", ""), alert.get("variant", ""), alert.get("state", ""),
                       _cell(alert.get("value")))
    return Group(head, alerts)


@cli.command("monitor")
@click.argument("name")
@click.option("--url", default="http://127.0.0.1:8000", show_default=True,
              help="The shipyard server to watch.")
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(0.2, 3600),
              help="Seconds between refreshes.")
@click.option("--once", is_flag=True, help="Print one view and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print one snapshot as JSON and exit.")
def monitor_cmd(name: str, url: str, interval: float, once: bool, as_json: bool) -> None:
    """Watch deployment NAME live: traffic, errors, latency, drift and alerts per variant."""
    import time as clock
    import urllib.parse

    from rich.live import Live

    endpoint = f"{_server_url(url)}/v1/deployments/{urllib.parse.quote(name, safe='')}/monitor"
    snap = fetch_json(endpoint)
    if as_json:
        emit_json(snap)
        return
    if once or not console.is_terminal:
        console.print(monitor_tables(snap))
        return
    with Live(monitor_tables(snap), console=console.target, auto_refresh=False) as live:
        try:
            while True:
                clock.sleep(interval)
                live.update(monitor_tables(fetch_json(endpoint)), refresh=True)
        except KeyboardInterrupt:
            pass


def parse_duration(text: str) -> float:
    """'90s', '30m', '1h', '2d' or plain seconds -> seconds."""
    from shipyard.errors import ConfigError

    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    raw = text.strip().lower()
    try:
        value = float(raw[:-1]) * units[raw[-1]] if raw and raw[-1] in units else float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 366 * 86400:  # NaN fails too
        raise ConfigError(f"Got window {text[:20]!r}. Expected a duration such as 90s, 30m, "
                          "1h or 2d.", hint="e.g. --window 1h")
    return value


@cli.command("drift")
@click.argument("name")
@click.option("--window", default="1h", show_default=True,
              help="How far back: 90s, 30m, 1h, 2d.")
@click.option("--url", default=None,
              help="Ask a running server (its own sketches) instead of reading the records.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_context
def drift_cmd(ctx: Context, name: str, window: str, url: str | None, as_json: bool) -> None:
    """Drift of deployment NAME's inputs and predictions against the reference profile.

    Without --url it reads the prediction records (every worker's traffic); exit code 1 when
    a field drifted, 0 otherwise, so scripts can act on it.
    """
    import urllib.parse

    seconds = parse_duration(window)
    report: dict[str, Any]
    if url:
        quoted = urllib.parse.quote(name, safe="")
        served = fetch_json(f"{_server_url(url)}/v1/deployments/{quoted}/drift?window={seconds}")
        report = {
            "deployment": name,
            "window_s": seconds,
            "variants": [
                {"variant": v["variant"], "model_version": v["model_version"],
                 **_server_report(v["report"])}
                for v in served["variants"]
            ],
        }
    else:
        from shipyard.monitoring.offline import drift_from_records

        with ctx.registry() as registry:
            report = drift_from_records(registry, name, window_s=seconds)
    if as_json:
        emit_json(report)
    else:
        print_drift(report)
    if any(v.get("drifted") for v in report["variants"]):
        raise SystemExit(1)


def _server_report(report: dict[str, Any] | None) -> dict[str, Any]:
    if report is None:
        return {"status": "no_reference", "drifted": [], "fields": {}}
    fields = {
        key: {"role": f["role"], "rows": f["rows"], "drifted": f["drifted"],
              "reason": f["reason"],
              **{s: (f["statistics"].get(s) or {}).get("value")
                 for s in ("psi", "js", "ks", "cramers_v")}}
        for key, f in report["fields"].items()
    }
    return {"status": report["status"], "rows": report["rows"],
            "drifted": report["drifted"], "fields": fields}


def print_drift(report: dict[str, Any]) -> None:
    if not report["variants"]:
        console.print(f"{report['deployment']}: no predictions in the last "
                      f"{report['window_s']:g}s.")
        return
    for variant in report["variants"]:
        table = Table("field", "role", "rows", "PSI", "JS", "KS", "Cramer's V", "drift", "why",
                      title=f"{report['deployment']} {variant['variant']} "
                            f"({variant['model_version']}): {variant['status']}")
        rows = sorted(variant["fields"].items(), key=lambda kv: (not kv[1]["drifted"], kv[0]))
        for key, field in rows:
            table.add_row(key, field["role"], _cell(field["rows"]), _cell(field["psi"]),
                          _cell(field["js"]), _cell(field["ks"]), _cell(field["cramers_v"]),
                          "[red]yes[/red]" if field["drifted"] else "no", field["reason"])
        console.print(table)


@cli.group()
def keys() -> None:
    """API keys for the HTTP server: stored hashed, shown once, revocable."""


@keys.command("create")
@click.option("--role", required=True, type=click.Choice(["viewer", "predictor", "deployer",
                                                          "admin"]), help="What it may do.")
@click.option("--deployment", "deployments", multiple=True,
              help="Only these deployments (repeatable; default all).")
@click.option("--expires", default=None, help="Lifetime, e.g. 30d or 12h (default: never).")
@click.option("--name", default=None, help="Who or what uses it (for the audit log).")
@click.option("--json", "as_json", is_flag=True, help="Print the key and its record as JSON.")
@pass_context
def keys_create(ctx: Context, role: str, deployments: tuple[str, ...], expires: str | None,
                name: str | None, as_json: bool) -> None:
    """Create a key. The key itself is printed once, here, and never stored."""
    from datetime import timedelta

    from shipyard.security.keys import create_key

    lifetime = timedelta(seconds=parse_duration(expires)) if expires else None
    with ctx.registry() as registry:
        plaintext, record = create_key(registry.keys(), role, list(deployments) or None,
                                       lifetime, ctx.settings.resolved_actor, name=name)
    if as_json:
        emit_json({"key": plaintext, **_key_row(record)})
        return
    console.print(f"key {record.id} ({record.role}) created. Store it now; it is not shown "
                  f"again:\n{plaintext}")


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_context
def keys_list(ctx: Context, as_json: bool) -> None:
    """Every key with its role, scope, expiry and revocation (never the key itself)."""
    with ctx.registry() as registry:
        rows = [_key_row(r) for r in registry.keys().list()]
    if as_json:
        emit_json(rows)
        return
    table = Table("id", "name", "role", "deployments", "created", "expires", "revoked")
    for row in rows:
        table.add_row(row["id"], row["name"], row["role"], ", ".join(row["deployments"] or
                      ["all"]), str(row["created_at"])[:19], str(row["expires_at"] or "-")[:19],
                      str(row["revoked_at"] or "-")[:19])
    console.print(table)


@keys.command("revoke")
@click.argument("key_id")
@click.option("--json", "as_json", is_flag=True, help="Print the revoked key's record.")
@pass_context
def keys_revoke(ctx: Context, key_id: str, as_json: bool) -> None:
    """Revoke a key by its id; servers refuse it within seconds."""
    with ctx.registry() as registry:
        record = registry.keys().revoke(key_id, ctx.settings.resolved_actor)
    if as_json:
        emit_json(_key_row(record))
    else:
        console.print(f"key {record.id} revoked.")


def _key_row(record: Any) -> dict[str, Any]:
    row = record.to_row()
    row.pop("hash", None)
    if isinstance(row.get("deployments"), str):
        row["deployments"] = json.loads(row["deployments"])
    return row


@cli.group()
def feedback() -> None:
    """Labels and human feedback for served predictions."""


@feedback.command("import")
@click.argument("name")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the import report as JSON.")
@pass_context
def feedback_import(ctx: Context, name: str, path: Path, as_json: bool) -> None:
    """Import labels or feedback for deployment NAME from a CSV, JSON-lines or Parquet file.

    Columns: request_id and any of label, thumbs, score, comment. Good rows are stored, bad
    ones reported; the exit code is 1 when any row failed.
    """
    from shipyard.bundle.manifest import Manifest, Schema
    from shipyard.monitoring.feedback import import_feedback
    from shipyard.monitoring.recordstore import RecordStore
    from shipyard.routing import DeploymentSpec

    with ctx.registry() as registry:
        config = DeploymentSpec.parse(registry.current_revision(name).spec).monitoring

        def schema_of(model: str, version: str) -> Schema | None:
            record = registry.resolve(f"{model}:{version}")
            return Manifest.from_text(record.manifest_yaml).schema_

        store = RecordStore.for_config(registry.database, config.records, ctx.settings.home)
        report = import_feedback(store, name, path, retention_days=config.records.retention_days,
                                 schema_of=schema_of)
    if as_json:
        emit_json(report.to_dict())
    else:
        console.print(f"{report.written} of {report.rows} rows stored, {report.failed} failed.")
        for error in report.errors[:10]:
            console.print(f"  row {error.get('row')}: {error.get('message')}")
    if report.failed:
        raise SystemExit(1)


@cli.command()
@click.option(
    "--home",
    "demo_home",
    type=click.Path(path_type=Path),
    default=None,
    help="Where the demo keeps its registry (default: a fresh temporary folder).",
)
def demo(demo_home: Path | None) -> None:
    """Train, package, check and register a real model end to end."""
    from shipyard.demo import run

    run(demo_home, console.target)


def main() -> None:
    """Entry point: map shipyard errors to their exit codes and one-line messages."""
    try:
        cli.main(standalone_mode=False)
    except ShipyardError as exc:
        err_console.print(f"[red]error[/red]: {exc.message}", highlight=False)
        if exc.hint:
            err_console.print(f"[dim]hint: {exc.hint}[/dim]", highlight=False)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if isinstance(exc, click.UsageError) else exc.exit_code)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
