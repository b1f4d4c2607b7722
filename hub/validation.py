"""Params as the API sees them: validation failures told in the API's words, and text no store keeps.

pydantic's messages speak of pydantic ("Input should be less than or equal to 150", "Extra inputs
are not permitted", "Value error, …"). A client reads `invalid_request` details instead: each names
its `field` (dotted, list items by index) and says what the field must be, in the words the
documentation uses ("must be at most 150", "unknown field"). pydantic's `type` is kept as a stable
machine-readable kind.
"""

import re
from collections.abc import Mapping
from typing import Any, Final

from pydantic import ValidationError

from protocol.common import FieldError
from protocol.errors import InvalidRequest

_WORDING: Final[dict[str, str]] = {
    "missing": "is required",
    "extra_forbidden": "unknown field",
    "string_type": "must be a string",
    "string_too_short": "must be at least {min_length} characters long",
    "string_too_long": "must be at most {max_length} characters long",
    "string_pattern_mismatch": "must match the pattern {pattern}",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "int_parsing_size": "is too large a number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be greater than {gt}",
    "multiple_of": "must be a multiple of {multiple_of}",
    "too_short": "must hold at least {min_length} items",
    "too_long": "must hold at most {max_length} items",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "set_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "enum": "must be {expected}",
    "literal_error": "must be {expected}",
    "none_required": "must be null",
    "datetime_type": "must be an RFC 3339 date-time",
    "datetime_parsing": "must be an RFC 3339 date-time",
    "datetime_from_date_parsing": "must be an RFC 3339 date-time",
    "timezone_aware": "must be an RFC 3339 date-time with a time zone",
    "date_type": "must be a date (YYYY-MM-DD)",
    "date_parsing": "must be a date (YYYY-MM-DD)",
    "date_from_datetime_parsing": "must be a date (YYYY-MM-DD)",
    "json_invalid": "is not valid JSON",
    "url_type": "must be a URL",
    "url_parsing": "must be a URL",
    "url_scheme": "must be a URL with scheme {expected_schemes}",
    "uuid_type": "must be a UUID",
    "uuid_parsing": "must be a UUID",
}
"""pydantic's error types, told as what the field must be. `{name}` is taken from the error's context."""

_EMPTY: Final = {"string_too_short", "too_short"}
"""Length errors that, at a minimum of 1, mean "empty"."""


def _field(item: Mapping[str, Any]) -> str | None:
    """The field at fault, dotted; a model rule about one field names it (`FieldError`)."""
    if not item["loc"] and isinstance(error := (item.get("ctx") or {}).get("error"), FieldError):
        return error.field
    return ".".join(str(part) for part in item["loc"]) or None


def _wording(item: Mapping[str, Any]) -> str:
    kind = item["type"]
    context = item.get("ctx") or {}
    if kind in ("value_error", "assertion_error") and "error" in context:
        return str(context["error"])  # the model's own rule, already in the API's words
    if kind in _EMPTY and context.get("min_length") == 1:
        return "must not be empty"
    template = _WORDING.get(kind)
    if template is not None:
        try:
            return template.format(**context)
        except (KeyError, IndexError):
            pass
    message = str(item["msg"])
    for theirs, ours in (("Value error, ", ""), ("Assertion failed, ", ""), ("Input should be ", "must be "),
                         ("Input should ", "must "), ("String should ", "must "), ("List should ", "must "),
                         ("Value should ", "must ")):
        if message.startswith(theirs):
            return ours + message[len(theirs):]
    return message


def validation_details(error: ValidationError) -> dict[str, Any]:
    """Field-level details of a validation failure in the API's words, without echoing the input back."""
    return {
        "errors": [
            {"field": _field(item), "message": _wording(item), "type": item["type"]}
            for item in error.errors(include_url=False, include_input=False)
        ]
    }


def invalid_params(error: ValidationError, what: str) -> InvalidRequest:
    """The `invalid_request` for `what` (e.g. "params for messages.send") that failed validation: the
    message names the first field at fault and what it must be; `details.errors` lists every one."""
    details = validation_details(error)
    errors = details["errors"]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return InvalidRequest(f"invalid {what}: {_problem(errors[0])}{more}", details)


def _problem(item: Mapping[str, Any]) -> str:
    """One field's error as a phrase that names the field: "limit must be at most 200"."""
    field, message = item["field"], item["message"]
    if field is None:
        return str(message)
    if message == "unknown field":
        return f"unknown field {field!r}"
    if re.search(rf"\b{re.escape(field.rsplit('.', 1)[-1])}\b", message):
        return str(message)  # the model's own rule, which names the field already
    return f"{field}: {message}" if item["type"] in ("value_error", "assertion_error") else f"{field} {message}"


def check_text(value: Any) -> None:
    """Refuse strings no store keeps and no response can carry, anywhere in `value` (keys too).

    Iterative, so a deeply nested value cannot exhaust the stack.

    Raises:
        InvalidRequest: a string holds U+0000 (PostgreSQL cannot store it) or a lone UTF-16 surrogate
            (not Unicode text: it cannot be encoded as UTF-8, stored, or sent back).
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _check_string(item)
        elif isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


_BAD_TEXT_ESCAPE: Final = re.compile(r"\\u(?:0000|d[89a-f])")
"""How `json.dumps` (ASCII output) writes a NUL or a surrogate: without one, no string holds either."""


def check_dumped_text(value: Any, dumped: str) -> None:
    """`check_text(value)`, where `dumped` is `json.dumps(value)`: walked only when the text shows an escape
    that may be a NUL or a lone surrogate (an emoji's pair matches too), so most params are not walked."""
    if _BAD_TEXT_ESCAPE.search(dumped):
        check_text(value)


def _check_string(text: str) -> None:
    if "\x00" in text:
        raise InvalidRequest("strings must not contain the NUL character (U+0000)")
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        bad = text[error.start]
        raise InvalidRequest(f"strings must be Unicode text: U+{ord(bad):04X} is a lone surrogate") from None
