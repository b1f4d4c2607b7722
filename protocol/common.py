"""Building blocks shared by every operation's models: the strict base, limits, pages."""

import json
from typing import Annotated, Any, Final, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

DEFAULT_PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 200
MAX_METADATA_BYTES: Final = 4096
MAX_METADATA_DEPTH: Final = 5


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

PageLimit = Annotated[int, Field(ge=1, le=MAX_PAGE_SIZE, description="Items per page (1-200).")]
Cursor = Annotated[str, Field(min_length=1, max_length=512, description="Opaque cursor from a previous page.")]

T = TypeVar("T")


class Page(Model, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(description="Pass as `cursor` to get the next page; null on the last page.")


class Empty(Model):
    """No parameters, or no result beyond success."""


