from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.common import UTCDateTime


class DatasetPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    kind: str  # text, labelled-text, images
    format: str  # txt, csv, tsv, jsonl, npz, idx, zip, builtin
    sha256: str
    size_bytes: int
    num_records: int | None = Field(
        description="records in all splits: a text corpus's characters, a labelled set's "
        "texts, an image set's images (meta.record names which)"
    )
    meta: dict[str, Any]  # labels and their counts, image size, vocabulary size, ...
    builtin: bool
    created_at: UTCDateTime


class DatasetsPublic(BaseModel):
    data: list[DatasetPublic]
    count: int
