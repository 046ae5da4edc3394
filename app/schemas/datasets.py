from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator


class DatasetPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    kind: str  # text, labelled-text, images
    format: str  # txt, csv, tsv, jsonl, npz, idx, zip, builtin
    sha256: str
    size_bytes: int
    num_records: int | None  # characters for a text corpus, examples otherwise
    meta: dict[str, Any]  # labels and their counts, image size, vocabulary size, ...
    builtin: bool
    created_at: datetime

    @field_validator("created_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        """SQLite hands back naive datetimes; they were written in UTC."""
        return value if value.tzinfo else value.replace(tzinfo=UTC)


class DatasetsPublic(BaseModel):
    data: list[DatasetPublic]
    count: int
