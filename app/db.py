"""The one engine and session factory; SQLite gets WAL and foreign keys on every connection.

Also the database's clock (`db_now`: the one clock every replica and runner shares), what
counts as a database outage (`is_transient`: the API answers 503 with Retry-After, the job
runner retries), and the lock that lets replicas migrate at the same time.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Engine, Float, create_engine, event, literal, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from app.settings import Settings

# pg_advisory_lock key of `migrate`: any constant that no other code uses ("genserve").
MIGRATE_LOCK_KEY = 0x67656E7365727665


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # a database that went away must fail a request in seconds, not hang it
        connect_args = {"connect_timeout": 5} if parsed.get_backend_name() == "postgresql" else {}
        return create_engine(
            url, pool_pre_ping=True, pool_timeout=10, connect_args=connect_args, future=True
        )
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine


class db_now(FunctionElement[datetime]):  # lower case: reads as SQL, like func.now
    """The database's clock, `offset_s` seconds from now, as a UTC timestamp.

    Machines' clocks drift apart; the database's is the one they all see, so every stamp that
    another process compares (heartbeats, staleness, job start and end) is taken from it.
    PostgreSQL: CURRENT_TIMESTAMP (timestamptz). SQLite: the text SQLAlchemy itself writes
    for DateTime ('YYYY-MM-DD HH:MM:SS.ffffff', UTC), at millisecond precision, so stored
    stamps compare as strings and read back as datetimes.
    """

    type = DateTime(timezone=True)
    inherit_cache = True

    def __init__(self, offset_s: float = 0.0) -> None:
        super().__init__(literal(float(offset_s), Float()))


@compiles(db_now)
def _db_now(element: db_now, compiler: SQLCompiler, **kw: Any) -> str:
    offset = compiler.process(next(iter(element.clauses)), **kw)
    return f"(CURRENT_TIMESTAMP + {offset} * INTERVAL '1 second')"


@compiles(db_now, "sqlite")
def _db_now_sqlite(element: db_now, compiler: SQLCompiler, **kw: Any) -> str:
    offset = compiler.process(next(iter(element.clauses)), **kw)
    return f"strftime('%Y-%m-%d %H:%M:%f000', 'now', printf('%.6f seconds', {offset}))"


class Database:
    """Owns the engine; `session()` is a unit of work that commits or rolls back."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        return cls(settings.db_url)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    def ping(self) -> None:
        """One round trip; raises what the database raises (readiness reports it)."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


def is_transient(exc: BaseException) -> bool:
    """A database error that waiting can cure: the server is down, restarting, unreachable,
    out of connections, or (SQLite) locked. Constraint violations and bugs are not."""
    if isinstance(exc, sa_exc.DBAPIError):
        return exc.connection_invalidated or isinstance(
            exc, sa_exc.OperationalError | sa_exc.InterfaceError
        )
    return isinstance(exc, sa_exc.DisconnectionError | sa_exc.TimeoutError)


def migrate(url: str, revision: str = "head") -> None:
    """Brings the schema to `revision`; Alembic is the only thing that changes tables.

    Holds a lock while it does, so replicas starting together on an empty database take
    turns: the first migrates, the others find the schema at `revision` and do nothing.
    """
    from alembic import command

    with migrate_lock(url):
        command.upgrade(alembic_config(url), revision)


@contextmanager
def migrate_lock(url: str) -> Iterator[None]:
    """PostgreSQL: a session advisory lock (released if this process dies). SQLite: an
    exclusive flock on a file beside the database, which is how SQLite itself locks (a
    SQLite database is only ever shared through one host's filesystem)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            yield
            return
        lock_path = Path(f"{parsed.database}.migrate-lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield  # closing the file releases the lock
        return
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATE_LOCK_KEY})
                conn.commit()
            try:
                yield
            finally:
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATE_LOCK_KEY})
                    conn.commit()
    finally:
        engine.dispose()


def downgrade(url: str, revision: str = "base") -> None:
    from alembic import command

    with migrate_lock(url):
        command.downgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    """The revision the database is at; None before the first migration."""
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def alembic_config(url: str):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    from app.settings import REPO_ROOT

    config = Config()
    config.set_main_option("script_location", str(REPO_ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    return config
