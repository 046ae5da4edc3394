"""The one writer of the `models`, `model_versions` and `model_placements` tables.

Versions come from three places (the committed defaults at startup, a finished training job,
an activation request); routing them all through here keeps version numbering and the
one-active-version rule in one spot. Every function works inside the caller's session, so
a job's completion registers its version in the same transaction that marks it succeeded.
Imports stay light (no pool, no web): job runner processes use this module too.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from app.tables import Model, ModelAlias, ModelPlacement, ModelVersion, utcnow

log = logging.getLogger("genserve.registry")
BUILTIN_PREFIX = "builtin:"


def register_builtin(
    session: Session, dirname: str, config: dict[str, Any], sha256: str, size: int
) -> bool:
    """Registers a committed default artifact; False if these bytes are registered already.

    A retrained default replaces the old default as the active version, never a version a
    user activated.
    """
    name = config.get("name", dirname)
    model = _model(
        session, name, config.get("task", "classification"), config.get("description", "")
    )
    known = session.scalar(
        select(ModelVersion.id).where(
            ModelVersion.model_id == model.id,
            ModelVersion.sha256 == sha256,
            ModelVersion.source == "builtin",
        )
    )
    if known is not None:
        return False
    active_source = session.scalar(
        select(ModelVersion.source).where(ModelVersion.model_id == model.id, ModelVersion.is_active)
    )
    version = _add_version(
        session,
        model,
        kind=config["kind"],
        artifact_path=BUILTIN_PREFIX + dirname,
        sha256=sha256,
        size_bytes=size,
        params=config.get("training", {}).get("params", {}),
        metrics=config.get("metrics", {}),
        config=config,
        source="builtin",
        activate=active_source in (None, "builtin"),
    )
    log.info("registered builtin %s v%d (%s)", name, version.version, sha256[:12])
    return True


def register_trained(
    session: Session,
    *,
    name: str,
    task: str,
    kind: str,
    artifact_path: str,
    sha256: str,
    size: int,
    params: dict[str, Any],
    config: dict[str, Any],
    dataset_id: int | None,
    activate: bool,
) -> ModelVersion:
    """Registers a trained artifact as the next version of `name` (created if new).

    Raises ValueError if `name` is a model of another task. Two callers racing for the same
    version number make one of them hit the unique constraint (IntegrityError) at flush.
    """
    model = _model(session, name, task, config.get("description", ""))
    if model.task != task:
        raise ValueError(f"model {name!r} is a {model.task} model, not {task}")
    return _add_version(
        session,
        model,
        kind=kind,
        artifact_path=artifact_path,
        sha256=sha256,
        size_bytes=size,
        params=params,
        metrics=config.get("metrics", {}),
        config=config,
        dataset_id=dataset_id,
        source="trained",
        activate=activate,
    )


def set_active(session: Session, name: str, version: int) -> bool:
    """Makes `version` of `name` the one to serve; False if there is no model `name`.

    The model row stays locked until the caller commits, so switches of one model serialise.
    """
    model = session.scalar(select(Model).where(Model.name == name).with_for_update())
    if model is None:
        return False
    _activate(session, model.id, version)
    return True


def set_alias(session: Session, model: Model, alias: str, version: int) -> None:
    """Points `alias` of `model` at `version` (created, or moved from another version)."""
    row = session.scalar(
        select(ModelAlias).where(ModelAlias.model_id == model.id, ModelAlias.alias == alias)
    )
    if row is None:
        session.add(ModelAlias(model_id=model.id, alias=alias, version=version))
    else:
        row.version, row.updated_at = version, utcnow()


def delete_alias(session: Session, model: Model, alias: str) -> bool:
    """Removes `alias` of `model`; False if it had none of that name."""
    result = session.execute(
        delete(ModelAlias).where(ModelAlias.model_id == model.id, ModelAlias.alias == alias)
    )
    return bool(result.rowcount)


def set_traffic(session: Session, model: Model, split: dict[int, int]) -> None:
    """Replaces `model`'s traffic split ({version: weight}); an empty one removes it."""
    model.traffic = {str(v): w for v, w in sorted(split.items()) if w} or None


def record_placement(
    session: Session,
    replica_id: str,
    name: str,
    *,
    desired: int | None,
    served: int | None,
    workers: dict[str, int | None],
    state: str,
    error: str | None,
) -> None:
    """Upserts what `replica_id` serves of `name`. Only that replica writes its rows, so a
    read-then-write is enough; the desired version (`is_active`) is never touched here."""
    model_id = session.scalar(select(Model.id).where(Model.name == name))
    if model_id is None:
        return
    row = session.scalar(
        select(ModelPlacement).where(
            ModelPlacement.replica_id == replica_id, ModelPlacement.model_id == model_id
        )
    )
    if row is None:
        row = ModelPlacement(replica_id=replica_id, model_id=model_id)
        session.add(row)
    row.desired_version, row.served_version, row.workers = desired, served, workers
    row.state, row.error, row.updated_at = state, error, utcnow()


def forget_replica(session: Session, replica_id: str) -> None:
    """Drops a replica's placements when it stops, so it no longer counts as serving."""
    session.execute(delete(ModelPlacement).where(ModelPlacement.replica_id == replica_id))


def _model(session: Session, name: str, task: str, description: str) -> Model:
    """The model row of `name`, created with `task` and `description` if it is new."""
    model = session.scalar(select(Model).where(Model.name == name))
    if model is None:
        model = Model(name=name, task=task, description=description)
        session.add(model)
        session.flush()
    return model


def _add_version(session: Session, model: Model, activate: bool, **values: Any) -> ModelVersion:
    """Inserts the next version number of `model`, active if asked."""
    latest = session.scalar(
        select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model.id)
    )
    version = ModelVersion(model_id=model.id, version=(latest or 0) + 1, is_active=False, **values)
    session.add(version)
    session.flush()
    if activate:
        _activate(session, model.id, version.version)
        set_committed_value(version, "is_active", True)  # the row's value, not a change
    return version


def _activate(session: Session, model_id: int, version: int) -> None:
    """Deactivates the current version first: the database allows one active per model.

    Bulk UPDATEs leave loaded ModelVersion objects as they were; callers refresh any they use.
    """
    for where, active in (
        (ModelVersion.is_active, False),
        (ModelVersion.version == version, True),
    ):
        session.execute(
            update(ModelVersion)
            .where(ModelVersion.model_id == model_id, where)
            .values(is_active=active)
            .execution_options(synchronize_session=False)
        )
