"""Commands that run on the server machine and own its database: `serve` and `migrate`.

The database layer is imported inside each command, so the HTTP-client commands never load
SQLAlchemy or Alembic, and never log a migration.
"""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.render import console, err_console
from app.settings import get_settings


def serve(
    host: Annotated[str | None, typer.Option(help="Overrides GENSERVE_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="Overrides GENSERVE_PORT")] = None,
    access_log: Annotated[bool, typer.Option(help="Log every request")] = True,
) -> None:
    """Migrate the database, then serve the API with the default models."""
    import uvicorn

    from app.db import migrate

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


def migrate_database(
    revision: Annotated[str, typer.Argument()] = "head",
    back: Annotated[
        bool,
        typer.Option("--downgrade", help="Go back to REVISION, dropping what later ones added"),
    ] = False,
) -> None:
    """Bring the database schema to REVISION (default: the newest); back up before --downgrade."""
    from app.db import current_revision, downgrade, head_revision, migrate

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
