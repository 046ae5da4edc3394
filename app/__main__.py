"""`python -m app` is the `genserve` command."""

from app.cli import main

main()
