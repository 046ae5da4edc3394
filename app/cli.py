"""The `genserve` command line: serve, migrate, inspect the registry, and (as an HTTP client of
a running server) train models, follow jobs and upload datasets."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from app.client import ClientError, GenserveClient
from app.db import Database, current_revision, downgrade, head_revision, migrate
from app.settings import get_settings

cli = typer.Typer(
    help="genserve: train and serve generative models over HTTP.", no_args_is_help=True
)
console = Console()
err_console = Console(stderr=True)


@cli.command()
def serve(
    host: str = typer.Option(None, help="Overrides GENSERVE_HOST"),
    port: int = typer.Option(None, help="Overrides GENSERVE_PORT"),
    access_log: bool = typer.Option(True, help="Log every request"),
) -> None:
    """Migrate the database, then serve the API with the default models."""
    import uvicorn

    settings = get_settings()
    migrate(settings.db_url)
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        access_log=access_log,
        log_level="info",
        timeout_graceful_shutdown=10,
    )


@cli.command("migrate")
def migrate_command(
    revision: str = typer.Argument("head"),
    back: bool = typer.Option(
        False, "--downgrade", help="Go back to REVISION, dropping what later ones added"
    ),
) -> None:
    """Bring the database schema to REVISION (default: the newest); back up before --downgrade."""
    settings = get_settings()
    (downgrade if back else migrate)(settings.db_url, revision)
    current = current_revision(settings.db_url)
    wanted = head_revision() if revision == "head" else revision
    if current != wanted and revision != "base":
        err_console.print(
            f"[red]database at {current}, not {revision}[/red]"
            + ("" if back else f": to go back, `genserve migrate {revision} --downgrade`")
        )
        raise typer.Exit(1)
    console.print(f"[green]database at {current or 'base (empty)'}[/green]")


@cli.command()
def models() -> None:
    """List registered models, their versions and which one is active."""
    from app.services.registry import ModelRegistry

    settings = get_settings()
    migrate(settings.db_url)
    registry = ModelRegistry(Database.from_settings(settings), settings)
    registry.sync_builtin()
    table = Table("model", "task", "version", "kind", "active", "metrics", "sha256")
    for model in registry.list_models():
        for v in model.versions:
            metrics = ", ".join(
                f"{k}={val:.4g}" if isinstance(val, float) else f"{k}={val}"
                for k, val in v.metrics.items()
            )
            table.add_row(
                model.name,
                model.task,
                str(v.version),
                v.kind,
                "*" if v.is_active else "",
                metrics,
                v.sha256[:12],
            )
    console.print(table)


# Commands below are HTTP clients of a running server (`genserve serve`), never of its database.

POLL_INTERVAL_S = 0.5  # how often `train --follow` asks for the job
POLL_RETRIES = 20  # consecutive transient failures a follower waits out (about 10 s)
FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
STATUS_STYLES = {
    "queued": "yellow",
    "running": "cyan",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
}
METRIC_ORDER = ("loss", "val_loss", "val_accuracy", "step", "samples_per_s")

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="GENSERVE_URL",
        help="Server URL; default: http://$GENSERVE_HOST:$GENSERVE_PORT",
        show_default=False,
    ),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="GENSERVE_API_KEY",
        help="Sent as `Authorization: Bearer <key>`",
        show_default=False,
    ),
]


def default_url() -> str:
    """Where `genserve serve` listens with the same settings; a wildcard host means loopback."""
    settings = get_settings()
    host = settings.host
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


@contextmanager
def _connect(ctx: typer.Context, url: str | None, api_key: str | None) -> Iterator[GenserveClient]:
    """A client for the command; any `ClientError` prints its message in red and exits 1.

    Options given to a subcommand win over those given to its group (`genserve jobs --url U`).
    """
    shared = ctx.obj if isinstance(ctx.obj, dict) else {}
    url = url or shared.get("url") or default_url()
    try:
        with GenserveClient(url, api_key or shared.get("api_key")) as client:
            yield client
    except ClientError as exc:
        _print_error(exc.message)
        raise typer.Exit(1) from None


def _print_error(message: str) -> None:
    err_console.print(
        f"error: {message}", style="red", markup=False, highlight=False, soft_wrap=True
    )


def parse_params(items: list[str]) -> dict[str, Any]:
    """`key=value` pairs; values are JSON when they parse (200, 1e-3, true, [1, 2]), else text."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise typer.BadParameter(f"expected key=value, got {item!r}", param_hint="--param")
        try:
            # NaN and Infinity are not JSON a server accepts: keep them as text.
            params[key] = json.loads(raw, parse_constant=_refuse_constant)
        except ValueError:
            params[key] = raw
    return params


def _refuse_constant(name: str) -> Any:
    raise ValueError(name)


def _dataset_ref(value: str) -> int | str:
    """The API takes a dataset id or its name; digits mean an id."""
    return int(value) if value.isdigit() else value


def format_metrics(metrics: dict[str, Any] | None) -> str:
    """Latest metrics, the ones people watch first, floats to 4 significant digits."""
    if not metrics:
        return ""
    rank = {key: i for i, key in enumerate(METRIC_ORDER)}
    keys = sorted(metrics, key=lambda k: (rank.get(k, len(rank)), k))
    return " ".join(f"{k}={_number(metrics[k])}" for k in keys)


def _number(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _status(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))


def _cell(value: Any) -> Text:
    """Plain text cells: names and messages from the server are never read as rich markup."""
    return Text("" if value is None else str(value))


def _time(value: str | None) -> str:
    return (value or "")[:19].replace("T", " ")


def _duration(job: dict[str, Any]) -> str:
    try:
        started = datetime.fromisoformat(job["started_at"])
        finished = datetime.fromisoformat(job["finished_at"])
    except (KeyError, TypeError, ValueError):
        return ""
    return f" in {(finished - started).total_seconds():.1f} s"


@cli.command()
def train(
    ctx: typer.Context,
    kind: Annotated[
        str, typer.Argument(help="Model family, e.g. text-gpt (`genserve jobs kinds`)")
    ],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset id or name")],
    name: Annotated[str, typer.Option("--name", "-n", help="Model the new version belongs to")],
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param", "-p", help="key=value, repeatable; values are JSON when they parse"
        ),
    ] = None,
    activate: Annotated[bool, typer.Option(help="Serve the new version once trained")] = False,
    follow: Annotated[bool, typer.Option(help="Show progress until the job ends")] = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Start a training job on a running server; with --follow, exit 0 only if it succeeds."""
    params = parse_params(param or [])
    with _connect(ctx, url, api_key) as client:
        job = client.train(kind, _dataset_ref(dataset), name, params, activate)
        console.print(
            Text.assemble(f"job {job['id']} ", _status(job["status"]), f": {kind} -> {name}")
        )
        if not follow:
            console.print(f"follow it with `genserve jobs show {job['id']}`", markup=False)
            return
        code = _follow(client, job)
    raise typer.Exit(code)


def _follow(client: GenserveClient, job: dict[str, Any]) -> int:
    """Polls the job into a progress bar; Ctrl-C stops following, never the job."""
    job_id = job["id"]
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[metrics]}", markup=False),
    )
    try:
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("", total=1.0, metrics="")
            while True:
                status = job["status"]
                progress.update(
                    task,
                    completed=float(job.get("progress") or 0.0),
                    description=f"job {job_id} [{STATUS_STYLES.get(status, 'default')}]{status}[/]",
                    metrics=format_metrics(job.get("metrics")),
                )
                if status in FINAL_STATUSES:
                    break
                time.sleep(POLL_INTERVAL_S)
                job = _poll(client, job_id)
    except KeyboardInterrupt:
        console.print(
            f"stopped following job {job_id}; it keeps running on the server. "
            f"Cancel it with `genserve jobs cancel {job_id}`",
            markup=False,
        )
        return 130
    _print_outcome(job)
    return 0 if job["status"] == "succeeded" else 1


def _poll(client: GenserveClient, job_id: int | str) -> dict[str, Any]:
    """Waits out a restarting or busy server for a while rather than abandon a long job."""
    failures = 0
    while True:
        try:
            return client.get_job(job_id)
        except ClientError as exc:
            failures += 1
            if not exc.transient or failures >= POLL_RETRIES:
                raise
            time.sleep(POLL_INTERVAL_S)


def _print_outcome(job: dict[str, Any]) -> None:
    line = Text.assemble(f"job {job['id']} ", _status(job["status"]), _duration(job))
    metrics = format_metrics(job.get("metrics"))
    if metrics:
        line.append(f": {metrics}")
    version = job.get("model_version")
    if version:
        line.append(f" -> model {version['name']} v{version['version']}")
        if job.get("activate") and job["status"] == "succeeded":
            line.append(" (activated)")
    console.print(line)
    if job.get("error"):
        _print_error(job["error"])


jobs_app = typer.Typer()
cli.add_typer(jobs_app, name="jobs")

StatusFilter = Annotated[
    str | None, typer.Option(help="queued, running, succeeded, failed or cancelled")
]
KindFilter = Annotated[str | None, typer.Option(help="Model family, e.g. text-gpt")]
NameFilter = Annotated[str | None, typer.Option(help="Model name")]
Limit = Annotated[int, typer.Option(min=1, help="At most this many jobs")]


@jobs_app.callback(invoke_without_command=True)
def jobs_main(
    ctx: typer.Context,
    status: StatusFilter = None,
    kind: KindFilter = None,
    name: NameFilter = None,
    limit: Limit = 20,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Training jobs on a running server; without a subcommand, list them."""
    ctx.obj = {"url": url, "api_key": api_key}
    if ctx.invoked_subcommand is None:
        _list_jobs(ctx, status, kind, name, limit, url, api_key)


@jobs_app.command("list")
def jobs_list(
    ctx: typer.Context,
    status: StatusFilter = None,
    kind: KindFilter = None,
    name: NameFilter = None,
    limit: Limit = 20,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """List training jobs."""
    _list_jobs(ctx, status, kind, name, limit, url, api_key)


def _list_jobs(
    ctx: typer.Context,
    status: str | None,
    kind: str | None,
    name: str | None,
    limit: int,
    url: str | None,
    api_key: str | None,
) -> None:
    with _connect(ctx, url, api_key) as client:
        page = client.list_jobs(status=status, kind=kind, name=name, limit=limit)
    table = Table(title="training jobs")
    for column in ("id", "kind", "name", "status", "progress", "loss", "created"):
        table.add_column(column, justify="right" if column in ("progress", "loss") else "left")
    for job in page["data"]:
        table.add_row(
            _cell(job["id"]),
            _cell(job["kind"]),
            _cell(job["name"]),
            _status(job["status"]),
            f"{100 * float(job.get('progress') or 0.0):.0f}%",
            _number((job.get("metrics") or {}).get("loss")),
            _time(job.get("created_at")),
        )
    console.print(table)
    if page.get("count", 0) > len(page["data"]):
        console.print(f"{len(page['data'])} of {page['count']} jobs (raise --limit for more)")


@jobs_app.command("show")
def jobs_show(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="ID", help="Job id")],
    history: Annotated[int, typer.Option(min=0, help="Latest history rows to show; 0: all")] = 20,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """One job in detail, with its metric history."""
    with _connect(ctx, url, api_key) as client:
        job = client.get_job(job_id)
    version = job.get("model_version")
    details = {
        "id": job["id"],
        "kind": job["kind"],
        "name": job["name"],
        "dataset": job.get("dataset_id"),
        "status": job["status"] + (" (cancel requested)" if job.get("cancel_requested") else ""),
        "progress": f"{100 * float(job.get('progress') or 0.0):.1f}%",
        "params": json.dumps(job.get("params") or {}),
        "activate": job.get("activate"),
        "attempts": job.get("attempts"),
        "metrics": format_metrics(job.get("metrics")),
        "model version": f"{version['name']} v{version['version']}" if version else "",
        "created": _time(job.get("created_at")),
        "started": _time(job.get("started_at")),
        "finished": _time(job.get("finished_at")),
        "error": job.get("error"),
    }
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for key, value in details.items():
        grid.add_row(key, _cell(value))
    console.print(grid)
    rows = job.get("history") or []
    if history:
        rows = rows[-history:]
    if rows:
        keys = {k for row in rows for k in row.get("values", {}) if k != "step"}
        rank = {key: i for i, key in enumerate(METRIC_ORDER)}
        ordered = sorted(keys, key=lambda k: (rank.get(k, len(rank)), k))
        table = Table("step", *ordered, "time", title="metric history")
        for row in rows:
            values = row.get("values", {})
            table.add_row(
                _cell(row.get("step")),
                *(_number(values.get(k)) for k in ordered),
                _time(row.get("created_at")),
            )
        console.print(table)


@jobs_app.command("cancel")
def jobs_cancel(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="ID", help="Job id")],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Stop a queued or running job; it ends `cancelled`."""
    with _connect(ctx, url, api_key) as client:
        job = client.cancel_job(job_id)
    line = Text.assemble(f"job {job['id']} ", _status(job["status"]))
    if job["status"] not in FINAL_STATUSES:
        line.append(" (cancel requested)")
    console.print(line)


@jobs_app.command("kinds")
def jobs_kinds(ctx: typer.Context, url: UrlOption = None, api_key: ApiKeyOption = None) -> None:
    """The model families a server trains, with their parameters and defaults."""
    with _connect(ctx, url, api_key) as client:
        kinds = client.list_kinds()
    table = Table("kind", "task", "datasets", "parameters", "description", title="trainable kinds")
    for kind in kinds:
        params = "\n".join(_describe_param(p) for p in kind.get("params") or [])
        table.add_row(
            _cell(kind["kind"]),
            _cell(kind.get("task")),
            _cell(", ".join(kind.get("dataset_kinds") or [])),
            _cell(params),
            _cell(kind.get("description")),
        )
    console.print(table)


def _describe_param(param: dict[str, Any]) -> str:
    """`name: type = default [min..max] {a|b}`, skipping what a parameter does not have."""
    text = f"{param['name']}: {param.get('type', '')} = {json.dumps(param.get('default'))}"
    low, high = param.get("minimum"), param.get("maximum")
    if low is not None or high is not None:
        text += f" [{_number(low)}..{_number(high)}]"
    if param.get("enum"):
        text += " {" + "|".join(str(v) for v in param["enum"]) + "}"
    return text


datasets_app = typer.Typer()
cli.add_typer(datasets_app, name="datasets")


@datasets_app.callback(invoke_without_command=True)
def datasets_main(ctx: typer.Context, url: UrlOption = None, api_key: ApiKeyOption = None) -> None:
    """Datasets on a running server; without a subcommand, list them."""
    ctx.obj = {"url": url, "api_key": api_key}
    if ctx.invoked_subcommand is None:
        _list_datasets(ctx, url, api_key)


@datasets_app.command("list")
def datasets_list(ctx: typer.Context, url: UrlOption = None, api_key: ApiKeyOption = None) -> None:
    """List uploaded and built-in datasets."""
    _list_datasets(ctx, url, api_key)


def _list_datasets(ctx: typer.Context, url: str | None, api_key: str | None) -> None:
    with _connect(ctx, url, api_key) as client:
        page = client.list_datasets()
    table = Table(title="datasets")
    for column in ("id", "name", "kind", "format", "records", "builtin"):
        table.add_column(column, justify="right" if column == "records" else "left")
    for ds in page["data"]:
        table.add_row(
            _cell(ds["id"]),
            _cell(ds["name"]),
            _cell(ds.get("kind")),
            _cell(ds.get("format")),
            _cell(ds.get("num_records")),
            "yes" if ds.get("builtin") else "",
        )
    console.print(table)


@datasets_app.command("upload")
def datasets_upload(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            readable=True,
            help=".txt, .csv, .tsv, .jsonl, .npz, IDX or a .zip of PNGs in label folders",
        ),
    ],
    name: Annotated[
        str | None, typer.Option(help="Dataset name; default: from the file name")
    ] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Upload a dataset file; uploading the same bytes again returns the stored one."""
    with _connect(ctx, url, api_key) as client:
        ds, created = client.upload_dataset(file, name)
    what = "uploaded as" if created else "already stored as"
    unit = "characters" if ds.get("kind") == "text" else "examples"  # what num_records counts
    console.print(
        f"{what} dataset {ds['id']} {ds['name']!r}: {ds.get('kind')}, {ds.get('format')}, "
        f"{ds.get('num_records')} {unit}, {ds.get('size_bytes')} bytes",
        markup=False,
        highlight=False,
    )


@datasets_app.command("show")
def datasets_show(
    ctx: typer.Context,
    dataset_id: Annotated[str, typer.Argument(metavar="ID", help="Dataset id")],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """One dataset in detail."""
    with _connect(ctx, url, api_key) as client:
        ds = client.get_dataset(dataset_id)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for key in ("id", "name", "kind", "format", "num_records", "size_bytes", "sha256"):
        grid.add_row(key.replace("_", " "), _cell(ds.get(key)))
    grid.add_row("builtin", "yes" if ds.get("builtin") else "no")
    grid.add_row("created", _time(ds.get("created_at")))
    grid.add_row("meta", _cell(json.dumps(ds.get("meta") or {})))
    console.print(grid)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cli()
