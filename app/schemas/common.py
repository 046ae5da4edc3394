"""Field types and the request base class shared by the schemas."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, field_validator, model_validator

# NUL (PostgreSQL stores no NUL in text or JSON) and lone surrogates (not encodable as UTF-8,
# so neither storable nor printable in an error message): refused in every text field.
BAD_TEXT = re.compile("[\x00\ud800-\udfff]")

# What a terminal acts on instead of showing: C0 controls (ESC, BEL, CR, TAB...), DEL, C1
# controls (CSI, OSC), the bidirectional overrides and isolates that reorder what is shown
# ("Trojan Source"), and the line and paragraph separators. Refused in names a user gives
# (datasets, labels; model names are already ASCII), escaped by the CLI in stored text.
CONTROL_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def escape_controls(text: str, keep: str = "") -> str:
    """`text` with each control character written as a Python escape (`\\x1b`, `\\u202e`),
    except those in `keep`: safe to print on a terminal, and still readable."""

    def escaped(match: re.Match[str]) -> str:
        char = match.group(0)
        if char in keep:
            return char
        code = ord(char)
        return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"

    return CONTROL_CHARS.sub(escaped, text)


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; they were written in UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


UTCDateTime = Annotated[datetime, AfterValidator(as_utc)]


class RequestBody(BaseModel):
    """A request body takes the JSON types it documents: `true` is not 1 and "5" is not 5
    (pydantic's lax mode coerces both); 3.0 is an integer, as JSON Schema says."""

    model_config = ConfigDict(strict=True)

    @model_validator(mode="before")
    @classmethod
    def _no_bad_text(cls, data: Any) -> Any:
        where = bad_text_at(data)
        if where is not None:
            raise ValueError(f"{where or 'body'} holds a NUL or a lone surrogate character")
        return data

    @field_validator("*", mode="before")
    @classmethod
    def _integral_floats(cls, value: Any) -> Any:
        return int(value) if isinstance(value, float) and value.is_integer() else value


def bad_text_at(value: Any, path: str = "") -> str | None:
    """Where in a JSON value (keys included) a NUL or lone surrogate is, or None."""
    if isinstance(value, str):
        return path if BAD_TEXT.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and BAD_TEXT.search(key):
                return path or "a key"
            found = bad_text_at(item, where)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = bad_text_at(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None
