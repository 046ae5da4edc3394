"""The `genserve` command line (`genserve = "app.cli:main"`).

`server` holds the commands that run beside the database (serve, migrate); `remote` the ones
that are HTTP clients of a running server (models, train, jobs, datasets); `render` how both
print. Commands are registered here, in the order `--help` lists them.
"""

from __future__ import annotations

import logging

import typer

from app.cli import remote, server

cli = typer.Typer(
    help="genserve: train and serve generative models over HTTP.", no_args_is_help=True
)
cli.command()(server.serve)
cli.command("migrate")(server.migrate_database)
cli.command()(remote.models)
cli.command()(remote.train)
cli.add_typer(remote.jobs_app, name="jobs")
cli.add_typer(remote.datasets_app, name="datasets")


def main() -> None:
    """The console script: INFO logs for the server commands, none per HTTP request."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    cli()


__all__ = ["cli", "main"]
