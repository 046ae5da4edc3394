#!/bin/sh
# Container entry point: check the state dir, wait for PostgreSQL when the database is one,
# then exec the command (default `genserve serve`, which migrates and serves), so that it is
# PID 1 and receives SIGTERM itself for a graceful shutdown.
#
#   GENSERVE_DB_WAIT_S  seconds to wait for PostgreSQL (default 60; 0: do not wait)
set -eu

if [ "$#" -eq 0 ]; then
    set -- genserve serve
fi

state_dir="${GENSERVE_STATE_DIR:-./var}"
if ! mkdir -p "$state_dir" 2>/dev/null || [ ! -w "$state_dir" ]; then
    echo "genserve: GENSERVE_STATE_DIR=$state_dir is not writable by uid $(id -u);" \
        "mount a volume there that this user owns" >&2
    exit 1
fi

case "${GENSERVE_DATABASE_URL:-}" in
postgres*)
    python - <<'PY'
import os
import sys
import time

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool


def fail(message: str, code: int) -> None:
    print(f"genserve: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def first_line(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    return lines[0] if lines else type(cause).__name__


raw_wait = os.environ.get("GENSERVE_DB_WAIT_S", "60")
try:
    wait_s = float(raw_wait)
except ValueError:
    fail(f"GENSERVE_DB_WAIT_S must be a number of seconds, got {raw_wait!r}", 2)
if wait_s <= 0:
    sys.exit(0)

try:
    url = make_url(os.environ["GENSERVE_DATABASE_URL"])
    shown = url.render_as_string(hide_password=True)
    timeout = int(min(10, max(2, wait_s)))  # per attempt; libpq's minimum is 2 s
    engine = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": timeout})
except Exception as exc:  # a malformed URL or a missing driver: waiting will not help
    fail(f"GENSERVE_DATABASE_URL is not usable ({first_line(exc)}); "
         "expected postgresql+psycopg://user:password@host:5432/database", 2)

deadline = time.monotonic() + wait_s
attempts = 0
while True:
    attempts += 1
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        break
    except Exception as exc:  # refused, DNS not yet resolvable, starting up, bad password
        error = first_line(exc)
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        fail(f"PostgreSQL at {shown} is not reachable after {wait_s:g} s and {attempts} "
             f"attempts (GENSERVE_DB_WAIT_S): {error}", 1)
    if attempts == 1:
        print(f"genserve: waiting up to {wait_s:g} s for PostgreSQL at {shown}: {error}",
              file=sys.stderr, flush=True)
    time.sleep(min(1.0, remaining))
engine.dispose()
print(f"genserve: PostgreSQL at {shown} is up", file=sys.stderr, flush=True)
PY
    ;;
esac

exec "$@"
