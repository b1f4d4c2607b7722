"""Reading request JSON: only I-JSON (RFC 7493) gets in.

Python's parser takes more than JSON: `NaN` and `Infinity`, numbers too large for a float (read as
infinities), and strings with lone UTF-16 surrogates (`"\\ud800"`), which are not Unicode text and
cannot be encoded into a response, stored, or echoed back. Every edge reads request bodies and
frames through `loads`, so such input is refused as bad JSON (HTTP 400, JSON-RPC -32700) where it
arrives, instead of failing later as a 500. Nesting is bounded too, without recursion.
"""

import json
import math
import re
from typing import Any, Final

_SURROGATE: Final = re.compile("\\\\u[dD][89a-fA-F]|[\ud800-\udfff]")
"""Where a surrogate can come from: a `\\uD800`–`\\uDFFF` escape, or the character itself (in a str
payload, or decoded with `surrogatepass`). Only then are the strings checked one by one."""


class NotJson(ValueError):
    """The payload is not JSON this hub reads; the message says why, in the client's terms."""


class TooDeep(NotJson):
    """The payload nests past what the parser handles: deeper than any limit the hub allows."""


def _no_constant(name: str) -> Any:
    raise NotJson(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise NotJson(f"the number {text[:20]}{'…' if len(text) > 20 else ''} is too large")
    return value


_DECODER: Final = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)
"""Built once: `json.loads` with hooks builds a decoder and its scanner on every call."""


def loads(payload: str | bytes, name: str = "the payload", *, max_depth: int) -> Any:
    """The JSON document in `payload` (called `name` in error messages).

    Raises:
        TooDeep: nesting deeper than `max_depth` levels (or than the parser handles).
        NotJson: not JSON, not UTF-8, `NaN`/`Infinity`, a number out of a float's range or with more
            than 4300 digits, or a lone surrogate in a string.
    """
    try:
        text = payload if isinstance(payload, str) else payload.decode(json.detect_encoding(payload), "surrogatepass")
        document = _DECODER.decode(text)
    except NotJson:
        raise
    except RecursionError:
        raise TooDeep(f"{name} nests too deeply") from None
    except ValueError:  # a syntax error, bad UTF-8, or an integer over Python's digit limit
        raise NotJson(f"{name} is not valid JSON") from None
    # A payload with no more brackets than the limit cannot nest past it: most skip the walk.
    if text.count("{") + text.count("[") > max_depth and _deeper_than(document, max_depth):
        raise TooDeep(f"{name} nests deeper than {max_depth} levels")
    if _SURROGATE.search(text):  # escaped pairs (an emoji) match too; only a lone one is refused
        _check_strings(document)
    return document


def _check_strings(document: Any) -> None:
    stack = [document]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as error:
                raise NotJson(f"a string holds the lone surrogate U+{ord(value[error.start]):04X}: "
                              "strings must be Unicode text") from None
        elif isinstance(value, dict):
            stack.extend(value)
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


def _deeper_than(document: Any, limit: int) -> bool:
    """Whether `document` nests deeper than `limit` levels (iterative: a deep payload cannot exhaust the stack)."""
    stack: list[tuple[Any, int]] = [(document, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            depth += 1
            if depth > limit:
                return True
            stack.extend((child, depth) for child in (value.values() if isinstance(value, dict) else value))
    return False
