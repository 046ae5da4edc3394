"""What each replica serves of each model, and why not the desired version when it does not.

The desired version lives in `model_versions.is_active`; this replica reports beside it, in
`model_placements`, so GET /models/{name} can say which replicas acknowledged an activation
and which are degraded, without any replica ever rewriting the desired state.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from app import metrics
from app.db import Database
from app.schemas.common import as_utc
from app.services import versions
from app.settings import Settings
from app.tables import Model, ModelPlacement

log = logging.getLogger("genserve.registry")
HEARTBEAT_S = 30.0  # an unchanged placement is rewritten this often, so it stays fresh
RETRY_MAX_S = 30.0  # the longest wait between two tries of a version that will not load


def replica_id(settings: Settings) -> str:
    """GENSERVE_REPLICA_ID, else hostname:pid (unique per process on one host)."""
    return settings.replica_id or f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Degraded:
    """A desired version this replica could not load yet, and when it tries again."""

    version: int
    sha256: str
    error: str
    served: int | None
    attempts: int = 0
    since: datetime = field(default_factory=lambda: datetime.now(UTC))
    next_try: float = 0.0

    def is_for(self, version: int, sha256: str) -> bool:
        """Whether this entry is about these bytes (a newer desired version starts afresh)."""
        return (self.version, self.sha256) == (version, sha256)

    def failed(self, error: str, base_s: float) -> None:
        """Doubles the wait after each failure, up to RETRY_MAX_S."""
        self.attempts += 1
        self.error = error
        self.next_try = time.monotonic() + min(base_s * 2 ** (self.attempts - 1), RETRY_MAX_S)

    def public(self) -> dict[str, Any]:
        return {
            "desired_version": self.version,
            "served_version": self.served,
            "error": self.error,
            "attempts": self.attempts,
            "since": self.since.isoformat(),
            "retry_in_s": round(max(0.0, self.next_try - time.monotonic()), 3),
        }


class Placements:
    """This replica's rows in `model_placements`, written when they change (or every
    HEARTBEAT_S), and everyone's rows read back for the model views."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.replica = replica_id(settings)
        self.stale_after_s = max(3 * HEARTBEAT_S, 10 * settings.registry_poll_s)
        self._written: dict[str, tuple[tuple[Any, ...], float]] = {}

    def report(
        self,
        name: str,
        desired: int | None,
        served: int | None,
        workers: dict[str, int | None],
        error: str | None,
    ) -> None:
        """Records what this replica serves of `name`; the metric follows at once."""
        state = "serving" if desired == served else "degraded" if error else "loading"
        metrics.MODEL_DEGRADED.labels(name).set(state == "degraded")
        if served is not None:
            metrics.MODEL_SERVED_VERSION.labels(name).set(served)
        row = (desired, served, tuple(sorted(workers.items())), state, error)
        last = self._written.get(name)
        if last is not None and last[0] == row and time.monotonic() - last[1] < HEARTBEAT_S:
            return
        with self.db.session() as session:
            versions.record_placement(
                session,
                self.replica,
                name,
                desired=desired,
                served=served,
                workers=workers,
                state=state,
                error=error,
            )
        self._written[name] = (row, time.monotonic())

    def forget(self) -> None:
        """Removes this replica's rows (on shutdown); a failure only leaves them to go stale."""
        try:
            with self.db.session() as session:
                versions.forget_replica(session, self.replica)
        except Exception:
            log.warning("could not remove the placements of %s", self.replica, exc_info=True)

    def by_model(self, name: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """Every replica's placements (of `name` only, if given), by model, freshest first;
        stale ones are flagged."""
        cutoff = datetime.now(UTC) - timedelta(seconds=self.stale_after_s)
        query = (
            select(Model.name, ModelPlacement)
            .join(Model, Model.id == ModelPlacement.model_id)
            .order_by(ModelPlacement.updated_at.desc())
        )
        if name is not None:
            query = query.where(Model.name == name)
        out: dict[str, list[dict[str, Any]]] = {}
        with self.db.session() as session:
            for model, row in session.execute(query).all():
                out.setdefault(model, []).append(
                    {
                        "replica": row.replica_id,
                        "desired_version": row.desired_version,
                        "served_version": row.served_version,
                        "state": row.state,
                        "error": row.error,
                        "workers": row.workers,
                        "updated_at": row.updated_at,
                        "stale": as_utc(row.updated_at) < cutoff,
                    }
                )
        return out
