"""Deleting versions, archiving models, and reclaiming the storage of deleted rows.

Every delete is two steps in one order: the rows go in a transaction, and only once it has
committed are their files removed (artifacts, here or in object storage; dataset files; job
work dirs). A crash in between leaves files that no row references, never a row without its
files; `sweep`, run at every start, removes those. It removes only what no row references
and, for artifacts and dataset files, only what is older than GENSERVE_SWEEP_GRACE_S, since
another replica may be writing a file whose row has not committed yet. Committed default
artifacts (`builtin:` versions, read from the repository's pretrained dir) are never touched.

The rows themselves are written by their one writer (app/services/versions.py,
app/services/datasets.py, app/jobs/store.py); this module decides what may go.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from app.db import Database
from app.errors import AppError, NotFound
from app.jobs.store import PARENT_PARAM, TERMINAL, forget_version
from app.services import versions
from app.settings import Settings
from app.storage import open_store, remove_artifacts
from app.tables import Dataset, ModelVersion, TrainingJob

log = logging.getLogger("genserve.retention")
ARTIFACTS = "artifacts"  # keys `artifacts/<model>/<leaf>`, as app.storage.job_artifact_key
JOB_LEAF = re.compile(r"^job-(\d+)$")  # a training job's artifact, written before its row


class InUse(AppError):
    """A version, dataset or job that something still needs; the message says what."""

    status, code = 409, "in_use"


class Retention:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    def delete_version(self, name: str, number: int) -> None:
        """Deletes one version and then its artifact; 409 while it is active, aliased, in
        the traffic split, or a committed default (re-registered at every start)."""
        with self.db.session() as session:
            model = versions.locked_model(session, name)
            if model is None:
                raise NotFound(f"unknown model {name!r}")
            version = next((v for v in model.versions if v.version == number), None)
            if version is None:
                raise NotFound(f"model {name!r} has no version {number}")
            why = versions.in_use(model, version)
            if why is None and version.source == "builtin":
                why = "it is a built-in default, registered again at every start"
            if why is None and (jobs := _fine_tuning(session, name, number)):
                why = f"job {', '.join(map(str, jobs))} fine-tunes it: let it finish or cancel it"
            if why is not None:
                raise InUse(
                    f"cannot delete {name} v{number}: {why}",
                    code="version_in_use",
                    details={"model": name, "version": number},
                )
            forget_version(session, version.id)
            key = versions.delete_version(session, version)
        remove_artifacts(self.settings, [key] if key else [])
        log.info("deleted %s v%d", name, number)

    def archive_model(self, name: str) -> None:
        """Archives a model: no longer listed or served; its rows and artifacts stay, and a
        version registered under its name later brings it back. 409 for a model that is a
        server default (requests naming no model would fail)."""
        if name in self.settings.all_default_models():
            raise InUse(
                f"{name!r} is this server's default model for its task: set another default "
                "(GENSERVE_DEFAULT_*) before archiving it",
                code="default_model",
            )
        with self.db.session() as session:
            model = versions.locked_model(session, name)
            if model is None:
                raise NotFound(f"unknown model {name!r}")
            versions.archive(session, model)
        log.info("archived model %s", name)

    # ---- the start-up sweep ----------------------------------------------------------------

    def sweep(self) -> list[str]:
        """Removes artifacts, dataset files and job work dirs that no row references (left by a
        crash between a delete's commit and its file removal); returns what it removed."""
        with self.db.session() as session:
            artifacts = set(session.scalars(select(ModelVersion.artifact_path)))
            datasets = set(session.scalars(select(Dataset.path)))
            jobs = {i: s for i, s in session.execute(select(TrainingJob.id, TrainingJob.status))}
        removed = self._sweep_artifacts(artifacts, jobs)
        removed += self._sweep_datasets(datasets)
        removed += self._sweep_job_dirs(jobs)
        if removed:
            log.warning("removed %d file(s) no row references: %s", len(removed), removed)
        return removed

    def _old(self, modified: float | None) -> bool:
        """Past the grace period; unknown stamps count as young (kept)."""
        return modified is not None and modified < time.time() - self.settings.sweep_grace_s

    def _sweep_artifacts(self, referenced: set[str], jobs: dict[int, str]) -> list[str]:
        store = open_store(self.settings)
        pretrained = self.settings.pretrained_dir.resolve()
        removed = []
        for model in store.children(ARTIFACTS):
            for leaf in store.children(f"{ARTIFACTS}/{model}"):
                key = f"{ARTIFACTS}/{model}/{leaf}"
                if key in referenced:
                    continue
                job = JOB_LEAF.match(leaf)
                if job is not None and jobs.get(int(job[1]), "gone") not in (*TERMINAL, "gone"):
                    continue  # a job still running writes it before registering it
                if not store.remote and _inside(self.settings.state_dir / key, pretrained):
                    continue
                if not self._old(store.modified(key)):
                    continue
                store.delete(key)
                removed.append(key)
        return removed

    def _sweep_datasets(self, referenced: set[str]) -> list[str]:
        root = self.settings.state_dir / "datasets"
        removed = []
        for path in sorted(root.iterdir()) if root.is_dir() else []:
            key = f"datasets/{path.name}"
            if not path.is_file() or key in referenced or not self._old(path.stat().st_mtime):
                continue
            path.unlink(missing_ok=True)
            removed.append(key)
        return removed

    def _sweep_job_dirs(self, jobs: dict[int, str]) -> list[str]:
        """Work dirs (checkpoints, result.json) of deleted or finished jobs."""
        root = self.settings.state_dir / "jobs"
        removed = []
        for path in sorted(root.iterdir()) if root.is_dir() else []:
            if not path.name.isdecimal() or jobs.get(int(path.name), "gone") not in (
                *TERMINAL,
                "gone",
            ):
                continue
            remove_job_dir(self.settings, int(path.name))
            removed.append(f"jobs/{path.name}")
        return removed


def _fine_tuning(session: Any, name: str, version: int) -> list[int]:
    """Queued or running jobs that start from `version` of `name`."""
    unfinished = session.execute(
        select(TrainingJob.id, TrainingJob.params).where(TrainingJob.status.not_in(TERMINAL))
    )
    return [
        job_id
        for job_id, params in unfinished
        if (params or {}).get(PARENT_PARAM) == {"model": name, "version": version}
    ]


def remove_job_dir(settings: Settings, job_id: int) -> None:
    """A job's work dir (checkpoints, result.json), once its row is finished or gone."""
    shutil.rmtree(settings.state_dir / "jobs" / str(job_id), ignore_errors=True)


def remove_dataset_file(settings: Settings, path: str) -> None:
    """A deleted dataset's stored file (`datasets/<sha256>.<format>`); built-ins have none."""
    if path.startswith("builtin:"):
        return
    try:
        (settings.state_dir / path).unlink(missing_ok=True)
    except OSError:
        log.warning("could not delete %s; the next start sweeps it", path, exc_info=True)


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root)
