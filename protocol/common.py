"""Building blocks shared by every operation's models: the strict base, limits, pages."""

import json
import re
from datetime import date, datetime
from typing import Annotated, Any, Final, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError

DEFAULT_PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 200
MAX_METADATA_BYTES: Final = 4096
MAX_METADATA_DEPTH: Final = 5


class FieldError(ValueError):
    """A rule about one field, broken where pydantic cannot tell which field (in a model validator):
    the error's details name `field` all the same."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class Model(BaseModel):
    """Strict wire model: unknown fields are an error, never silently dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def json_depth(value: Any) -> int:
    """Nesting depth of a decoded JSON value (a scalar is depth 0)."""
    if isinstance(value, dict):
        return 1 + max((json_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((json_depth(v) for v in value), default=0)
    return 0


def _bounded_metadata(value: dict[str, Any]) -> dict[str, Any]:
    if json_depth(value) > MAX_METADATA_DEPTH:
        raise ValueError(f"metadata nests deeper than {MAX_METADATA_DEPTH} levels")
    if len(json.dumps(value, separators=(",", ":")).encode()) > MAX_METADATA_BYTES:
        raise ValueError(f"metadata is larger than {MAX_METADATA_BYTES} bytes as JSON")
    return value


Metadata = Annotated[dict[str, Any], AfterValidator(_bounded_metadata)]
"""Free-form JSON object owned by the client, bounded in size and depth."""

_NUMBER: Final = re.compile(r"[+-]?[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?")


def _written_out(kind: type[date], wanted: str) -> BeforeValidator:
    """A day or a moment as ISO 8601 text (or already one): pydantic alone reads `0` or `"0.5"` as
    seconds since 1970. Parsed here, so strict validation downstream sees the date it wants."""
    adapter = TypeAdapter(kind)

    def parse(value: Any) -> Any:
        if isinstance(value, kind):
            return value
        if not isinstance(value, str) or _NUMBER.fullmatch(value.strip()):
            raise ValueError(f"must be {wanted}")
        try:
            return adapter.validate_strings(value)
        except ValidationError:
            raise ValueError(f"must be {wanted}") from None

    return BeforeValidator(parse)


IsoDay = Annotated[date, _written_out(date, "a date (YYYY-MM-DD)")]
IsoMoment = Annotated[datetime, _written_out(datetime, "a date and time in ISO 8601, like 2026-12-04T10:00:00Z")]

# Versions are 32-bit columns: a larger number is refused here, not by the database.
Version = Annotated[int, Field(ge=1, le=2**31 - 1, description="A version number, from 1.")]
PageLimit = Annotated[int, Field(ge=1, le=MAX_PAGE_SIZE, description="Items per page (1-200).")]
Cursor = Annotated[str, Field(min_length=1, max_length=512, description="Opaque cursor from a previous page.")]

T = TypeVar("T")


class Page(Model, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(description="Pass as `cursor` to get the next page; null on the last page.")


class Empty(Model):
    """No parameters, or no result beyond success."""


