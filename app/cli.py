"""The `genserve` command line: serve, migrate, and inspect the model registry."""

from __future__ import annotations

import logging

import typer
from rich.console import Console
from rich.table import Table

from app.db import Database, migrate
from app.settings import get_settings

cli = typer.Typer(
    help="genserve: train and serve generative models over HTTP.", no_args_is_help=True
)
console = Console()


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
def migrate_command(revision: str = typer.Argument("head")) -> None:
    """Bring the database schema to REVISION (default: the newest)."""
    settings = get_settings()
    migrate(settings.db_url, revision)
    console.print(f"[green]database at {revision}[/green]")


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


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cli()
