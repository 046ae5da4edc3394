"""A training job with GENSERVE_ARTIFACT_URL on S3 (moto's server): its artifact is published
to the bucket and registered by its key; a job reclaimed after it published registers that
artifact without training again; a cancelled job leaves nothing in the bucket."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fsspec
import pytest
from sqlalchemy import select

import models.artifacts
from app.db import Database
from app.jobs.runner import JobInterrupted
from app.jobs.store import JobStore
from app.settings import Settings
from app.tables import ModelVersion
from tests.jobs.harness import (
    assert_no_work_lost,
    job_row,
    queue_job,
    run_one,
    settings_for,
    version_count,
)
from tests.storage.conftest import S3Server


def s3_settings(tmp_path: Path, db: Database, s3: S3Server) -> tuple[Settings, str, Any]:
    bucket = s3.bucket()
    settings = settings_for(
        tmp_path,
        db.url,
        artifact_url=f"s3://{bucket}/jobs",
        artifact_storage_options=json.dumps(s3.options()),
    )
    return settings, bucket, fsspec.filesystem("s3", skip_instance_cache=True, **s3.options())


def registered(db: Database, job_id: int) -> ModelVersion:
    with db.session() as session:
        version_id = job_row(db, job_id).model_version_id
        return session.scalars(select(ModelVersion).where(ModelVersion.id == version_id)).one()


def test_a_job_publishes_its_artifact_and_registers_its_key(
    db: Database, s3: S3Server, tmp_path: Path
) -> None:
    settings, bucket, fs = s3_settings(tmp_path, db, s3)
    job_id = queue_job(db)
    run = run_one(JobStore(db, settings))
    assert_no_work_lost(run)
    assert job_row(db, job_id).status == "succeeded"
    version = registered(db, job_id)
    assert version.artifact_path == f"artifacts/faulty-gpt/job-{job_id}"  # the key, relative
    manifest = json.loads(fs.cat_file(f"{bucket}/jobs/{version.artifact_path}/manifest.json"))
    assert (manifest["sha256"], manifest["size"]) == (version.sha256, version.size_bytes)
    assert not (tmp_path / "state" / "artifacts").exists()  # nothing kept on this machine
    assert not (tmp_path / "state" / "jobs" / str(job_id)).exists()


def test_a_job_reclaimed_after_publishing_registers_without_training_again(
    db: Database, s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, bucket, fs = s3_settings(tmp_path, db, s3)
    store = JobStore(db, settings)
    job_id = queue_job(db)
    complete = store.complete

    def runner_stopped(*args: Any) -> Any:  # the runner is told to stop before it registers
        raise JobInterrupted

    monkeypatch.setattr(store, "complete", runner_stopped)
    first = run_one(store)
    assert_no_work_lost(first)
    assert job_row(db, job_id).status == "queued" and version_count(db, "faulty-gpt") == 0
    assert fs.exists(f"{bucket}/jobs/artifacts/faulty-gpt/job-{job_id}/manifest.json")

    monkeypatch.setattr(store, "complete", complete)
    again = run_one(store)
    assert again.steps == []  # registered what the first attempt published
    assert job_row(db, job_id).status == "succeeded"
    manifest = json.loads(
        fs.cat_file(f"{bucket}/jobs/artifacts/faulty-gpt/job-{job_id}/manifest.json")
    )
    assert registered(db, job_id).sha256 == manifest["sha256"]


def test_a_cancelled_job_leaves_nothing_in_the_bucket(
    db: Database, s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cancel lands while the artifact is saved: it is published, then the job ends
    cancelled, and what it published is deleted."""
    settings, bucket, fs = s3_settings(tmp_path, db, s3)
    store = JobStore(db, settings)
    job_id = queue_job(db)
    save = models.artifacts.save_artifact

    def save_then_cancel(*args: Any, **kwargs: Any) -> tuple[str, int]:
        digest = save(*args, **kwargs)
        assert store.cancel(job_id) == "running"
        return digest

    monkeypatch.setattr(models.artifacts, "save_artifact", save_then_cancel)
    run_one(store)
    assert job_row(db, job_id).status == "cancelled"
    assert version_count(db, "faulty-gpt") == 0
    assert not fs.exists(f"{bucket}/jobs/artifacts/faulty-gpt/job-{job_id}/manifest.json")
    assert fs.find(f"{bucket}/jobs") == []
