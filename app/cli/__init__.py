"""The `genserve` command line (`genserve = "app.cli:main"`).

`server` holds the commands that run beside the database (serve, migrate); `remote` the ones
that are HTTP clients of a running server (models, train, jobs, datasets); `render` how both
print. Commands are registered here, in the order `--help` lists them.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from app.cli import remote, server

cli = typer.Typer(
    help="genserve: train and serve generative models over HTTP.", no_args_is_help=True
)

# Loggers that speak per request or per migration step: one line each would bury a table
# and break the `train --follow` bar (it polls twice a second), so only -v shows them.
CHATTY_LOGGERS = ("httpx", "httpcore", "alembic")


@cli.callback()
def options(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="Log each HTTP request and each database migration step"
        ),
    ] = False,
) -> None:
    """genserve: train and serve generative models over HTTP."""
    configure_logging(verbose)


def configure_logging(verbose: bool) -> None:
    """INFO logs for the server commands; the chatty libraries only with --verbose."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)


cli.command()(server.serve)
cli.command("migrate")(server.migrate_database)
cli.add_typer(remote.models_app, name="models")
cli.command()(remote.train)
cli.add_typer(remote.jobs_app, name="jobs")
cli.add_typer(remote.datasets_app, name="datasets")


def main() -> None:
    """The console script."""
    cli()


__all__ = ["cli", "main"]
