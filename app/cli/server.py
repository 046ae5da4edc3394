"""Commands that run on the server machine and own its database: `serve` and `migrate`.

The database layer is imported inside each command, so the HTTP-client commands never load
SQLAlchemy or Alembic, and never log a migration. Alembic's own log (a line per plugin and
step) shows only with `genserve -v`; without it a migration is one line saying what changed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import FrameType
from typing import Annotated, Any

import typer

from app.cli.render import console, err_console
from app.settings import get_settings

log = logging.getLogger("genserve.migrate")


def serve(
    host: Annotated[str | None, typer.Option(help="Overrides GENSERVE_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="Overrides GENSERVE_PORT")] = None,
    access_log: Annotated[bool, typer.Option(help="Log every request")] = True,
) -> None:
    """Migrate the database, then serve the API with the default models."""
    import uvicorn

    from app.connections import connection_limit, guarded_protocol
    from app.db import migrate
    from app.main import create_app

    settings = get_settings()
    migrate_logged(settings.db_url, migrate)
    app = create_app(settings)
    limit = connection_limit(settings)
    config = uvicorn.Config(
        app,
        host=host or settings.host,
        port=port or settings.port,
        access_log=access_log,
        log_config=_log_config(),
        log_level="info",
        http=guarded_protocol(settings),
        limit_concurrency=limit + 1,  # requests beyond the connection bound: 503
        timeout_keep_alive=settings.keep_alive_s,
        # A backstop after the drain, which ends every request itself (app/drain.py).
        timeout_graceful_shutdown=settings.drain_timeout_s + AFTER_DRAIN_S,
    )
    server = _draining_server()(config, app.state.drain, app.state)
    server.run()
    if not server.started:
        raise typer.Exit(3)


AFTER_DRAIN_S = 10.0


def _log_config() -> dict[str, Any]:
    """uvicorn's logging, with each access line ending in its request's X-Request-ID."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"request_id": {"()": "app.middleware.RequestIdFilter"}}
    config["formatters"]["access"]["fmt"] += " request_id=%(request_id)s"
    config["handlers"]["access"]["filters"] = ["request_id"]
    return config


def _draining_server() -> type:
    """uvicorn's Server, draining on the first SIGTERM or SIGINT (app/drain.py) and exiting
    once that is done; a second signal exits at once."""
    import asyncio

    import uvicorn

    from app.drain import Drain

    class DrainingServer(uvicorn.Server):
        def __init__(self, config: uvicorn.Config, drain: Drain, state: Any) -> None:
            super().__init__(config)
            self.drain, self.state = drain, state
            self.drain_task: asyncio.Task[None] | None = None
            self.signalled = False

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if self.signalled:
                super().handle_exit(sig, frame)
                return
            self.signalled = True  # the drain starts on the next tick, within 0.1 s
            self._captured_signals.append(sig)  # re-raised at exit, so the status tells why

        async def on_tick(self, counter: int) -> bool:
            if self.signalled and self.drain_task is None:
                self.drain_task = asyncio.create_task(self.drain.run(self.state))
            if self.drain_task is not None and self.drain_task.done():
                self.should_exit = True
            return await super().on_tick(counter)

    return DrainingServer


def migrate_database(
    revision: Annotated[str, typer.Argument()] = "head",
    back: Annotated[
        bool,
        typer.Option("--downgrade", help="Go back to REVISION, dropping what later ones added"),
    ] = False,
) -> None:
    """Bring the database schema to REVISION (default: the newest); back up before --downgrade."""
    from app.db import downgrade, head_revision, migrate

    settings = get_settings()
    current = migrate_logged(settings.db_url, downgrade if back else migrate, revision)
    wanted = head_revision() if revision == "head" else revision
    if current != wanted and revision != "base":
        err_console.print(
            f"[red]database at {current}, not {revision}[/red]"
            + ("" if back else f": to go back, `genserve migrate {revision} --downgrade`")
        )
        raise typer.Exit(1)
    console.print(f"[green]database at {current or 'base (empty)'}[/green]")


def migrate_logged(
    url: str, step: Callable[[str, str], None], revision: str = "head"
) -> str | None:
    """Runs `step` (migrate or downgrade) to `revision`; logs one line if the schema moved,
    so a quiet start still says that it changed the database. Returns the new revision."""
    from app.db import current_revision

    before = current_revision(url)
    step(url, revision)
    after = current_revision(url)
    if after != before:
        log.info("database migrated from %s to %s", before or "empty", after or "empty")
    return after
