from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from app.schemas.common import UTCDateTime


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
    created_at: UTCDateTime


class DatasetsPublic(BaseModel):
    data: list[DatasetPublic]
    count: int
