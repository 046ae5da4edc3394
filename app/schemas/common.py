"""Field types and the request base class shared by the schemas."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, field_validator


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; they were written in UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


UTCDateTime = Annotated[datetime, AfterValidator(as_utc)]


class RequestBody(BaseModel):
    """A request body takes the JSON types it documents: `true` is not 1 and "5" is not 5
    (pydantic's lax mode coerces both); 3.0 is an integer, as JSON Schema says."""

    model_config = ConfigDict(strict=True)

    @field_validator("*", mode="before")
    @classmethod
    def _integral_floats(cls, value: Any) -> Any:
        return int(value) if isinstance(value, float) and value.is_integer() else value
