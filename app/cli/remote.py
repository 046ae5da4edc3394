"""Commands that are HTTP clients of a running server (`genserve serve`), never of its
database: `models`, `train`, `jobs` and `datasets`, through `app.client.GenserveClient`.

So they work the same against a laptop or a remote deployment, and create nothing locally.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from app.cli import render
from app.cli.follow import FINAL_STATUSES, follow_job, wait_served
from app.cli.render import cell, console, number, percent, timestamp
from app.client import ClientError, GenserveClient
from app.settings import get_settings
from app.storage import archive_filename

T = TypeVar("T")


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
JsonOption = Annotated[
    bool,
    typer.Option(
        "--json", help="Print the records as a JSON array, as the API returns them (scripts)"
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
def connect(
    ctx: typer.Context,
    url: str | None,
    api_key: str | None,
    sent: dict[str, Any] | None = None,
) -> Iterator[GenserveClient]:
    """A client for the command; any `ClientError` prints its message in red, then a line
    per field it names (with the value from `sent`, the body the command sent), and exits 1.

    Options given to a subcommand win over those given to its group (`genserve jobs --url U`).
    """
    shared = ctx.obj if isinstance(ctx.obj, dict) else {}
    url = url or shared.get("url") or default_url()
    try:
        with GenserveClient(url, api_key or shared.get("api_key")) as client:
            yield client
    except ClientError as exc:
        render.print_error(exc.message)
        render.print_field_errors(exc.details, sent)
        raise typer.Exit(1) from None


def fetch(
    ctx: typer.Context,
    url: str | None,
    api_key: str | None,
    call: Callable[[GenserveClient], T],
) -> T:
    """One request: what most commands do before they print."""
    with connect(ctx, url, api_key) as client:
        return call(client)


def group_options(ctx: typer.Context, url: str | None, api_key: str | None) -> bool:
    """Keeps a group's --url/--api-key for its subcommand; True when none was given."""
    ctx.obj = {"url": url, "api_key": api_key}
    return ctx.invoked_subcommand is None


def parse_parent(text: str) -> dict[str, Any]:
    """NAME or NAME@VERSION, as the body's `from` takes it."""
    name, at, version = text.partition("@")
    if not name or (at and not version.isdigit()):
        raise typer.BadParameter(
            f"expected NAME or NAME@VERSION, got {text!r}", param_hint="--from"
        )
    return {"model": name, "version": int(version)} if at else {"model": name}


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


# models

models_app = typer.Typer()
ModelName = Annotated[str, typer.Argument(metavar="NAME", help="Model name")]


@models_app.callback(invoke_without_command=True)
@models_app.command("list")
def models_list(
    ctx: typer.Context,
    as_json: JsonOption = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """The server's models and versions; `models` and `models list` list them.

    A version's state: active (desired, served by the replica that answered),
    pending (desired, not served there yet) or served (still served there, no
    longer desired)."""
    if isinstance(ctx.command, typer.core.TyperGroup) and not group_options(ctx, url, api_key):
        return  # `models --url ... activate NAME V`: the options are kept for the subcommand
    page = fetch(ctx, url, api_key, GenserveClient.list_models)
    if as_json:
        render.print_json(page["data"])
        return
    render.print_table(
        "models",
        ("model", "v", "state", "kind", "metrics"),
        (
            (
                cell(model["name"]),
                cell(v["version"]),
                version_state(v, model.get("served_version")),
                cell(v.get("kind")),
                render.format_metrics(render.scalar_metrics(v.get("metrics")), sep=" "),
            )
            for model in page["data"]
            for v in sorted(model.get("versions") or [], key=lambda v: v["version"])
        ),
        right=("v",),
        clip=("metrics",),
    )


def version_state(version: dict[str, Any], served: int | None) -> str:
    """`active`, `pending` or `served` (see `models_list`), blank for the others."""
    if version.get("is_active"):
        return "active" if version["version"] == served else "pending"
    return "served" if version["version"] == served else ""


@models_app.command("show")
def models_show(
    ctx: typer.Context,
    name: ModelName,
    as_json: JsonOption = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """One model: its routing (active version, aliases, traffic split, versions loaded) and
    each version's lineage (parent, dataset, job), state and metrics."""
    model = fetch(ctx, url, api_key, lambda c: c.get_model(name))
    if as_json:
        render.print_json(model)
        return
    print_routing(model)
    served = model.get("served_version")
    for v in sorted(model.get("versions") or [], key=lambda v: v["version"]):
        parent = v.get("parent") or {}
        lineage = [
            f"parent {parent['model']} v{parent['version']}" if parent else "",
            f"dataset {v['dataset_name']}" if v.get("dataset_name") else "",
            f"job {v['job_id']}" if v.get("job_id") else "",
            f"alias {', '.join(v['aliases'])}" if v.get("aliases") else "",
        ]
        head = f"v{v['version']} {version_state(v, served) or 'inactive'} {v.get('source')}"
        console.print(
            render.safe(" · ".join([head, *(part for part in lineage if part)])),
            markup=False,
            highlight=False,
        )
        metrics = render.format_metrics(render.scalar_metrics(v.get("metrics")), sep=" ")
        if metrics:
            console.print("  " + render.safe(metrics), markup=False, highlight=False)


@models_app.command("activate")
def models_activate(
    ctx: typer.Context,
    name: ModelName,
    version: Annotated[int, typer.Argument(min=1, help="Version number (`genserve models`)")],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Serve VERSION of NAME; returns once the answering replica serves it (an admin key)."""
    with connect(ctx, url, api_key) as client:
        before = client.get_model(name).get("active_version")
        model = client.activate_version(name, version)
    print_switch(model, before)


@models_app.command("rollback")
def models_rollback(
    ctx: typer.Context, name: ModelName, url: UrlOption = None, api_key: ApiKeyOption = None
) -> None:
    """Serve the version below the active one: the highest-numbered older version.

    The server keeps no history of activations, so this is not "the version served before"
    when versions were activated out of order; `models activate` picks any version."""
    with connect(ctx, url, api_key) as client:
        model = client.get_model(name)
        target = rollback_target(model)
        if target is None:
            active = model.get("active_version")
            why = "no active version" if active is None else f"no version below v{active}"
            render.print_error(f"{name} has {why}: nothing to roll back to")
            raise typer.Exit(1)
        switched = client.activate_version(name, target)
    print_switch(switched, model.get("active_version"))


def rollback_target(model: dict[str, Any]) -> int | None:
    """The highest version below the active one; None with no active version or none older."""
    active = model.get("active_version")
    if active is None:
        return None
    older = [v["version"] for v in model.get("versions") or [] if v["version"] < active]
    return max(older, default=None)


def print_switch(model: dict[str, Any], before: int | None) -> None:
    """`NAME v1 -> v2, served by r1` after an activation."""
    name, active = model["name"], model.get("active_version")
    moved = f"v{before} -> v{active}" if before not in (None, active) else f"v{active}"
    line = f"{name} {moved}, served by {model.get('replica')}"
    if model.get("served_version") != active:  # the server answers once it is; but say so
        line = f"{name} {moved}, but {model.get('replica')} serves v{model.get('served_version')}"
    console.print(render.safe(line), markup=False, highlight=False)


YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")]


def confirm(question: str, yes: bool) -> None:
    """Asks before a delete unless --yes; no answer (not a terminal) or "n" aborts, exit 1."""
    if yes:
        return
    try:
        agreed = typer.confirm(render.safe(question), default=False)
    except typer.Abort:  # end of input, or Ctrl-C at the prompt
        agreed = False
    if not agreed:
        render.print_error("nothing deleted (pass --yes to skip this question)")
        raise typer.Exit(1)


def say(line: str) -> None:
    console.print(render.safe(line), markup=False, highlight=False)


@models_app.command("delete")
def models_delete(
    ctx: typer.Context,
    name: ModelName,
    version: Annotated[
        int | None,
        typer.Argument(min=1, help="Delete this version; without it, archive the model"),
    ] = None,
    yes: YesOption = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Delete VERSION of NAME and its artifact; without VERSION, archive NAME.

    An archived model is no longer listed or served; its versions stay. An active, aliased
    or in-traffic version is refused. Asks first unless --yes."""
    if version is None:
        confirm(f"archive model {name} (no longer listed or served)?", yes)
        fetch(ctx, url, api_key, lambda c: c.archive_model(name))
        say(f"archived {name}; a new version registered under this name brings it back")
        return
    confirm(f"delete {name} v{version} and its artifact?", yes)
    fetch(ctx, url, api_key, lambda c: c.delete_version(name, version))
    say(f"deleted {name} v{version}")


@models_app.command("alias")
def models_alias(
    ctx: typer.Context,
    name: ModelName,
    alias: Annotated[str, typer.Argument(help="Alias, e.g. staging (`model: NAME@ALIAS`)")],
    version: Annotated[int | None, typer.Argument(min=1, help="Version it points at")] = None,
    delete: Annotated[bool, typer.Option("--delete", help="Remove the alias")] = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Point ALIAS of NAME at VERSION, or remove it with --delete."""
    if (version is None) != delete:
        render.print_error("give VERSION, or --delete without one")
        raise typer.Exit(2)
    if delete:
        model = fetch(ctx, url, api_key, lambda c: c.delete_alias(name, alias))
    else:
        model = fetch(ctx, url, api_key, lambda c: c.set_alias(name, alias, version or 0))
    print_routing(model)


@models_app.command("traffic")
def models_traffic(
    ctx: typer.Context,
    name: ModelName,
    weights: Annotated[
        list[str] | None,
        typer.Argument(metavar="[VERSION=WEIGHT]...", help="e.g. 3=90 4=10", show_default=False),
    ] = None,
    clear: Annotated[
        bool, typer.Option("--clear", help="No split: the active version answers")
    ] = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Split NAME's requests that name no version by weight (a canary), or --clear it."""
    if bool(weights) == clear:
        render.print_error("give VERSION=WEIGHT pairs, or --clear without any")
        raise typer.Exit(2)
    split = parse_weights(weights or [])
    model = fetch(ctx, url, api_key, lambda c: c.set_traffic(name, split))
    print_routing(model)


def parse_weights(items: list[str]) -> dict[str, int]:
    """`3=90 4=10` as the API takes it, `{"3": 90, "4": 10}`."""
    split: dict[str, int] = {}
    for item in items:
        version, sep, weight = item.partition("=")
        if not (sep and version.strip().isdigit() and weight.strip().isdigit()):
            raise typer.BadParameter(f"expected VERSION=WEIGHT, got {item!r}", param_hint="weights")
        split[str(int(version))] = int(weight)
    return split


def print_routing(model: dict[str, Any]) -> None:
    """A model's active version, aliases and traffic split, after changing one of them."""
    aliases = model.get("aliases") or {}
    traffic = model.get("traffic") or {}
    active = model.get("active_version")
    render.print_details(
        {
            "model": model.get("name"),
            "active": f"v{active}" if active is not None else "none",
            "aliases": ", ".join(f"{a}=v{v}" for a, v in sorted(aliases.items())) or "none",
            "traffic": ", ".join(f"v{v} {w}%" for v, w in traffic.items()) or "active version",
            "loaded": ", ".join(f"v{v}" for v in model.get("loaded") or []) or "none",
        }
    )


@models_app.command("export")
def models_export(
    ctx: typer.Context,
    name: ModelName,
    version: Annotated[int, typer.Argument(min=1, help="Version number (`genserve models`)")],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", dir_okay=False, help="Where to write the tar; default: NAME-vV.tar"
        ),
    ] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Download VERSION of NAME as a tar (weights, config, card and a manifest of sha256s),
    streamed to a file; `models import` loads it into another server."""
    target = output or Path(archive_filename(name, version))
    try:
        size = fetch(ctx, url, api_key, lambda c: c.export_version(name, version, target))
    except OSError as exc:  # the output's folder is missing or not writable
        render.print_error(f"cannot write {target}: {exc.strerror or exc}")
        raise typer.Exit(1) from None
    line = f"exported {name} v{version} to {target} ({size} bytes)"
    console.print(render.safe(line), markup=False, highlight=False, soft_wrap=True)


@models_app.command("import")
def models_import(
    ctx: typer.Context,
    name: ModelName,
    file: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, readable=True, help="A tar from `models export`"
        ),
    ],
    activate: Annotated[bool, typer.Option("--activate", help="Serve it once imported")] = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Import an exported tar as the next version of NAME (created if new; an admin key).
    The server checks every file and loads the model before it registers it."""
    version = fetch(ctx, url, api_key, lambda c: c.import_version(name, file, activate))
    state = ", active" if version.get("is_active") else ""
    line = f"imported {file.name} as {name} v{version['version']} ({version.get('kind')}{state})"
    console.print(render.safe(line), markup=False, highlight=False, soft_wrap=True)


# training


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
    follow: Annotated[
        bool,
        typer.Option(help="Show progress until the job ends (with --activate: until served)"),
    ] = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    parent: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="NAME[@VERSION]",
            help="Fine-tune: start from this version's weights (default: its active one)",
        ),
    ] = None,
) -> None:
    """Start a training job on a running server.

    With --follow, exit 0 only if it succeeds (and, with --activate, only once the server
    answers with the new version)."""
    params = parse_params(param or [])
    start = None if parent is None else parse_parent(parent)
    sent = {"kind": kind, "dataset": dataset, "name": name, "params": params}
    with connect(ctx, url, api_key, sent) as client:
        job = client.train(kind, _dataset_ref(dataset), name, params, activate, start)
        console.print(render.job_line(job, f": {kind} -> {name}"))
        if not follow:
            console.print(f"follow it with `genserve jobs show {job['id']}`", markup=False)
            return
        code = follow_job(client, job)
        if code == 0 and activate:
            code = wait_served(client, job["id"])
    raise typer.Exit(code)


jobs_app = typer.Typer()

StatusFilter = Annotated[
    str | None, typer.Option(help="queued, running, succeeded, failed or cancelled")
]
KindFilter = Annotated[str | None, typer.Option(help="Model family, e.g. text-gpt")]
NameFilter = Annotated[str | None, typer.Option(help="Model name")]
Limit = Annotated[int, typer.Option(min=1, help="At most this many jobs")]
JobId = Annotated[str, typer.Argument(metavar="ID", help="Job id")]


@jobs_app.callback(invoke_without_command=True)
@jobs_app.command("list")
def jobs_list(
    ctx: typer.Context,
    status: StatusFilter = None,
    kind: KindFilter = None,
    name: NameFilter = None,
    limit: Limit = 20,
    as_json: JsonOption = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Training jobs on a running server: `jobs` and `jobs list` list them."""
    if isinstance(ctx.command, typer.core.TyperGroup) and not group_options(ctx, url, api_key):
        return  # `jobs --url ... cancel ID`: the options are kept for the subcommand
    page = fetch(
        ctx,
        url,
        api_key,
        lambda c: c.list_jobs(status=status, kind=kind, name=name, limit=limit),
    )
    if as_json:
        render.print_json(page["data"])
        return
    render.print_table(
        "training jobs",
        ("id", "kind", "name", "status", "loss", "created"),
        (
            (
                cell(job["id"]),
                cell(job["kind"]),
                cell(job["name"]),
                render.status_progress(job),
                number((job.get("metrics") or {}).get("loss")),
                render.short_time(job.get("created_at")),
            )
            for job in page["data"]
        ),
        right=("loss",),
    )
    if page.get("count", 0) > len(page["data"]):
        console.print(f"{len(page['data'])} of {page['count']} jobs (raise --limit for more)")


@jobs_app.command("show")
def jobs_show(
    ctx: typer.Context,
    job_id: JobId,
    history: Annotated[int, typer.Option(min=0, help="Latest history rows to show; 0: all")] = 20,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """One job in detail, with its metric history."""
    job = fetch(ctx, url, api_key, lambda c: c.get_job(job_id))
    cancel = " (cancel requested)" if job.get("cancel_requested") else ""
    render.print_details(
        {
            "id": job["id"],
            "kind": job["kind"],
            "name": job["name"],
            "dataset": job.get("dataset_id"),
            "status": job["status"] + cancel,
            "progress": percent(job.get("progress"), 1),
            "params": json.dumps(job.get("params") or {}),
            "activate": job.get("activate"),
            "attempts": job.get("attempts"),
            "metrics": render.format_metrics(job.get("metrics")),
            "model version": render.version_ref(job.get("model_version")),
            "created": timestamp(job.get("created_at")),
            "started": timestamp(job.get("started_at")),
            "finished": timestamp(job.get("finished_at")),
            "error": job.get("error"),
        }
    )
    rows = job.get("history") or []
    if history:
        rows = rows[-history:]
    if rows:
        keys = render.metric_keys({k for row in rows for k in row.get("values", {})} - {"step"})
        render.print_table(
            "metric history",
            ("step", *keys, "time"),
            (
                (
                    cell(row.get("step")),
                    *(number(row.get("values", {}).get(k)) for k in keys),
                    timestamp(row.get("created_at")),
                )
                for row in rows
            ),
        )


@jobs_app.command("cancel")
def jobs_cancel(
    ctx: typer.Context, job_id: JobId, url: UrlOption = None, api_key: ApiKeyOption = None
) -> None:
    """Stop a queued or running job; it ends `cancelled`."""
    job = fetch(ctx, url, api_key, lambda c: c.cancel_job(job_id))
    requested = "" if job["status"] in FINAL_STATUSES else " (cancel requested)"
    console.print(render.job_line(job, requested))


@jobs_app.command("delete")
def jobs_delete(
    ctx: typer.Context,
    job_id: JobId,
    yes: YesOption = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Delete a finished job and its metric history (its model version stays).

    Asks first unless --yes."""
    confirm(f"delete job {job_id} and its metric history?", yes)
    fetch(ctx, url, api_key, lambda c: c.delete_job(job_id))
    say(f"deleted job {job_id}")


@jobs_app.command("kinds")
def jobs_kinds(
    ctx: typer.Context,
    kind: Annotated[
        str | None, typer.Argument(metavar="[KIND]", help="Show this kind's parameters")
    ] = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """The model families a server trains; with KIND, its parameters, defaults and bounds."""
    kinds = fetch(ctx, url, api_key, GenserveClient.list_kinds)
    if kind is None:
        if as_json:
            render.print_json(kinds)
            return
        render.print_table(
            "trainable kinds",
            ("kind", "task", "datasets", "description"),
            (
                (
                    cell(k["kind"]),
                    cell(k.get("task")),
                    cell(", ".join(k.get("dataset_kinds") or [])),
                    cell(k.get("description")),
                )
                for k in kinds
            ),
            clip=("description",),
        )
        console.print("`genserve jobs kinds KIND` lists a kind's parameters", markup=False)
        return
    found = next((k for k in kinds if k["kind"] == kind), None)
    if found is None:
        known = ", ".join(k["kind"] for k in kinds)
        render.print_error(f"unknown kind {kind!r}; known: {known}")
        raise typer.Exit(1)
    if as_json:
        render.print_json(found)
        return
    render.print_details(
        {
            "kind": found["kind"],
            "task": found.get("task"),
            "datasets": ", ".join(found.get("dataset_kinds") or []),
            "description": found.get("description"),
        }
    )
    console.print("parameters (--param NAME=VALUE):", markup=False)
    render.print_params(found.get("params") or [])


datasets_app = typer.Typer()


@datasets_app.callback(invoke_without_command=True)
@datasets_app.command("list")
def datasets_list(
    ctx: typer.Context,
    as_json: JsonOption = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Uploaded and built-in datasets: `datasets` and `datasets list` list them."""
    if isinstance(ctx.command, typer.core.TyperGroup) and not group_options(ctx, url, api_key):
        return  # `datasets --url ... show ID`: the options are kept for the subcommand
    page = fetch(ctx, url, api_key, GenserveClient.list_datasets)
    if as_json:
        render.print_json(page["data"])
        return
    render.print_table(
        "datasets",
        ("id", "name", "kind", "format", "records", "builtin"),
        (
            (
                cell(ds["id"]),
                cell(ds["name"]),
                cell(ds.get("kind")),
                cell(ds.get("format")),
                cell(ds.get("num_records")),
                "yes" if ds.get("builtin") else "",
            )
            for ds in page["data"]
        ),
        right=("records",),
    )


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
    ds, created = fetch(ctx, url, api_key, lambda c: c.upload_dataset(file, name))
    what = "uploaded as" if created else "already stored as"
    unit = "characters" if ds.get("kind") == "text" else "examples"  # what num_records counts
    console.print(
        render.safe(
            f"{what} dataset {ds['id']} {ds['name']!r}: {ds.get('kind')}, {ds.get('format')}, "
            f"{ds.get('num_records')} {unit}, {ds.get('size_bytes')} bytes"
        ),
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
    ds = fetch(ctx, url, api_key, lambda c: c.get_dataset(dataset_id))
    keys = ("id", "name", "kind", "format", "num_records", "size_bytes", "sha256")
    render.print_details(
        {
            **{key.replace("_", " "): ds.get(key) for key in keys},
            "builtin": "yes" if ds.get("builtin") else "no",
            "created": timestamp(ds.get("created_at")),
            "meta": json.dumps(ds.get("meta") or {}),
        }
    )


@datasets_app.command("delete")
def datasets_delete(
    ctx: typer.Context,
    dataset_id: Annotated[str, typer.Argument(metavar="ID", help="Dataset id")],
    yes: YesOption = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Delete an uploaded dataset and its file.

    Versions trained on it keep its name and sha256. Refused while a queued or running job
    uses it. Asks first unless --yes."""
    confirm(f"delete dataset {dataset_id} and its file?", yes)
    fetch(ctx, url, api_key, lambda c: c.delete_dataset(dataset_id))
    say(f"deleted dataset {dataset_id}")
