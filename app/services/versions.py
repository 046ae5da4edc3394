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
from sqlalchemy.orm import Session, selectinload
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
    parent: dict[str, Any] | None = None,
    job_id: int | None = None,
    dataset_name: str | None = None,
    dataset_sha256: str | None = None,
) -> ModelVersion:
    """Registers a trained artifact as the next version of `name` (created if new), with its
    lineage: the version it was fine-tuned from, its job and its dataset by value.

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
        parent=parent,
        job_id=job_id,
        dataset_name=dataset_name,
        dataset_sha256=dataset_sha256,
    )


def register_imported(
    session: Session,
    *,
    name: str,
    task: str,
    kind: str,
    artifact_path: str,
    sha256: str,
    size: int,
    params: dict[str, Any],
    metrics: dict[str, Any],
    config: dict[str, Any],
    lineage: dict[str, Any],
) -> ModelVersion:
    """Registers an imported archive as the next version of `name` (created if new), inactive;
    its lineage (parent, dataset name and sha256) comes by value from the archive's manifest.

    Raises ValueError if `name` is a model of another task.
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
        metrics=metrics,
        config=config,
        source="imported",
        parent=lineage.get("parent"),
        dataset_name=lineage.get("dataset_name"),
        dataset_sha256=lineage.get("dataset_sha256"),
        activate=False,
    )


def link_builtin_datasets(session: Session, trained_on: dict[str, tuple[int, str, str]]) -> int:
    """Links committed default versions never linked to their dataset to the one their
    config.json names (training.dataset -> (id, name, sha256) in `trained_on`); how many."""
    linked = 0
    for version in session.scalars(
        select(ModelVersion).where(
            ModelVersion.source == "builtin", ModelVersion.dataset_name.is_(None)
        )
    ):
        found = trained_on.get((version.config.get("training") or {}).get("dataset", ""))
        if found is not None:
            version.dataset_id, version.dataset_name, version.dataset_sha256 = found
            linked += 1
    return linked


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


def locked_model(session: Session, name: str) -> Model | None:
    """The model row of `name` with its versions and aliases, locked until the caller commits:
    a delete or archive then serialises with activations and alias or traffic changes."""
    return _locked(session, Model.name == name)


def _locked(session: Session, where: Any) -> Model | None:
    """One model row locked FOR UPDATE, with its versions and aliases read afresh."""
    return session.scalar(
        select(Model)
        .where(where)
        .with_for_update()
        .options(selectinload(Model.versions), selectinload(Model.aliases))
        .execution_options(populate_existing=True)
    )


def in_use(model: Model, version: ModelVersion) -> str | None:
    """Why `version` must stay (active, aliased, in the traffic split); None if it may go."""
    aliases = sorted(a.alias for a in model.aliases if a.version == version.version)
    weight = int((model.traffic or {}).get(str(version.version), 0) or 0)
    if version.is_active:
        return "it is the active version: activate another one first"
    if aliases:
        return f"alias {', '.join(aliases)} points at it: move or delete the alias first"
    if weight > 0:
        return f"it has weight {weight} in the traffic split: change the split first"
    return None


def delete_version(session: Session, version: ModelVersion) -> str | None:
    """Deletes `version`'s row (the caller checked `in_use`); returns its artifact's key, or
    None when the artifact must stay (a built-in, or another version registers the same)."""
    key = version.artifact_path
    session.delete(version)
    session.flush()
    shared = session.scalar(
        select(func.count()).select_from(ModelVersion).where(ModelVersion.artifact_path == key)
    )
    return None if key.startswith(BUILTIN_PREFIX) or shared else key


def archive(session: Session, model: Model) -> None:
    """Marks `model` archived: no longer listed or served; rows and artifacts stay."""
    if model.archived_at is None:
        model.archived_at = utcnow()


def prunable(session: Session, model_id: int, keep: int) -> list[ModelVersion]:
    """The oldest versions of the model past `keep`, sparing active, aliased and in-traffic
    ones, built-ins (their files are the repository's) and the newest. Fewer than the excess
    when no more may go: a new version is never refused for it."""
    if keep <= 0:
        return []
    model = _locked(session, Model.id == model_id)
    if model is None or len(model.versions) <= keep:
        return []
    excess = len(model.versions) - keep
    newest = max(v.version for v in model.versions)
    spare = [
        v
        for v in model.versions  # oldest first
        if v.version != newest and v.source != "builtin" and in_use(model, v) is None
    ]
    return spare[:excess]


def forget_dataset(session: Session, dataset_id: int, name: str, sha256: str) -> None:
    """Versions trained on a dataset being deleted keep its name and sha256 by value."""
    session.execute(
        update(ModelVersion)
        .where(ModelVersion.dataset_id == dataset_id)
        .values(
            dataset_id=None,
            dataset_name=func.coalesce(ModelVersion.dataset_name, name),
            dataset_sha256=func.coalesce(ModelVersion.dataset_sha256, sha256),
        )
        .execution_options(synchronize_session=False)
    )


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
    model.archived_at = None  # a new version brings an archived model back
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
