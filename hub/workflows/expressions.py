"""The template and expression language of workflow steps: Jinja2's expressions, sandboxed.

A template is text with `{{ expression }}` parts (`"Hello {{ input.name }}"`); a template that is one
`{{ … }}` and nothing else keeps its value's type (a number, a list), so `transform` can build JSON.
An expression (a condition's `if`, a map's `items`) is one Jinja2 expression. Both read the run's
data: `input`, `steps.<node id>` (each finished node's output), `execution`, and in a map's sub-graph
`item` and `index`.

Why Jinja2, and why this much of it: it is a kept library whose sandbox was built for templates
written by people the host does not trust (no attribute starting with `_`, no unsafe methods, no
Python `eval`). Statements (`{% for %}`, `{% set %}`, macros) are refused, so a template is an
expression, not a program; `*` and `**` are checked before they build a huge value, and a result is
limited in size. Names that do not exist are errors (not silently empty): `| default(…)` says what
to use instead.
"""

import json
import math
import re
from functools import lru_cache
from typing import Any, Final

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, UndefinedError, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_RESULT_CHARS: Final = 64 * 1024
MAX_SEQUENCE: Final = 10_000
_WHOLE_EXPRESSION: Final = re.compile(r"^\s*\{\{(.*)\}\}\s*$", re.DOTALL)


class ExpressionError(Exception):
    """A template or expression that does not parse, or fails on the run's data; the message says why."""


class _Environment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and isinstance(left, int | float) and left not in (
                0, 1, -1) and abs(right) * math.log2(max(abs(left), 2)) > 256:
            raise SecurityError("the power is too large")
        if operator == "*" and (_sized(left) or _sized(right)):
            count = right if _sized(left) else left
            size = len(left if _sized(left) else right)
            if isinstance(count, int) and count * size > MAX_RESULT_CHARS:
                raise SecurityError(f"the result would be longer than {MAX_RESULT_CHARS} items")
        result = super().call_binop(context, operator, left, right)
        if operator == "+" and _sized(result) and len(result) > MAX_RESULT_CHARS:
            raise SecurityError(f"the result is longer than {MAX_RESULT_CHARS} items")
        return result


def _sized(value: Any) -> bool:
    return isinstance(value, str | list | tuple)


def _fromjson(text: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError) as error:
        raise ExpressionError(f"fromjson: not JSON ({error})") from None


_env = _Environment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_env.filters["fromjson"] = _fromjson
for _name in ("lipsum", "cycler", "joiner", "namespace"):  # text generators and mutable helpers: not data
    del _env.globals[_name]
_env.policies["json.dumps_kwargs"] = {"sort_keys": False, "ensure_ascii": False}


@lru_cache(maxsize=2048)
def _template(source: str) -> Any:
    try:
        parsed = _env.parse(source)
    except TemplateSyntaxError as error:
        raise ExpressionError(f"does not parse: {error.message} (line {error.lineno})") from None
    if any(not isinstance(node, nodes.Output) for node in parsed.body):
        raise ExpressionError("only {{ … }} parts are allowed (no {% … %} statements)")
    return _env.from_string(source)


@lru_cache(maxsize=2048)
def _expression(source: str) -> Any:
    try:
        return _env.compile_expression(source, undefined_to_none=False)
    except TemplateSyntaxError as error:
        raise ExpressionError(f"does not parse: {error.message}") from None


def check_template(source: str) -> None:
    """Raise `ExpressionError` if `source` is not a valid template (at save time)."""
    whole = _WHOLE_EXPRESSION.match(source)
    if whole and "{{" not in whole.group(1):
        _expression(whole.group(1))
    else:
        _template(source)


def check_expression(source: str) -> None:
    _expression(source)


def render(source: str, data: dict[str, Any]) -> Any:
    """The value of a template over `data`: a string, or (for a lone `{{ … }}`) the expression's value."""
    whole = _WHOLE_EXPRESSION.match(source)
    if whole and "{{" not in whole.group(1):
        return evaluate(whole.group(1), data)
    if "{{" not in source:
        return source
    try:
        text = _template(source).render(data)
    except ExpressionError:
        raise
    except (UndefinedError, SecurityError, TypeError, ValueError, ArithmeticError, LookupError) as error:
        raise ExpressionError(f"{source!r}: {error}") from None
    if len(text) > MAX_RESULT_CHARS:
        raise ExpressionError(f"{source!r}: the text is longer than {MAX_RESULT_CHARS} characters")
    return text


def evaluate(source: str, data: dict[str, Any]) -> Any:
    """The JSON value of an expression over `data`."""
    try:
        value = _expression(source)(**data)
    except ExpressionError:
        raise
    except (UndefinedError, SecurityError, TypeError, ValueError, ArithmeticError, LookupError) as error:
        raise ExpressionError(f"{source!r}: {error}") from None
    return _plain(value, source)


def render_value(value: Any, data: dict[str, Any]) -> Any:
    """`value` (decoded JSON) with every string in it rendered as a template."""
    if isinstance(value, str):
        return render(value, data)
    if isinstance(value, list):
        return [render_value(item, data) for item in value]
    if isinstance(value, dict):
        return {key: render_value(item, data) for key, item in value.items()}
    return value


def templates_in(value: Any) -> list[str]:
    """Every string in a decoded JSON value (what `render_value` would render)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [text for item in value for text in templates_in(item)]
    if isinstance(value, dict):
        return [text for item in value.values() for text in templates_in(item)]
    return []


def _plain(value: Any, source: str) -> Any:
    """The value as JSON data (tuples become lists; what JSON cannot hold is an error)."""
    if isinstance(value, Undefined):
        try:
            str(value)  # a strict undefined raises, saying what is missing
        except (UndefinedError, SecurityError) as error:
            raise ExpressionError(f"{source!r}: {error}") from None
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return str(value)  # not Markup (what `tojson` gives)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ExpressionError(f"{source!r}: {value} is not a JSON number")
        return value
    if isinstance(value, list | tuple | range):
        if len(value) > MAX_SEQUENCE:
            raise ExpressionError(f"{source!r}: more than {MAX_SEQUENCE} items")
        return [_plain(item, source) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item, source) for key, item in value.items()}
    if hasattr(value, "__iter__") and not hasattr(value, "keys"):  # a generator from a filter (map, select)
        return _plain(list(value), source)
    raise ExpressionError(f"{source!r}: a {type(value).__name__} is not JSON data")
