"""The operation table: every operation the hub offers, declared once.

A declaration is an async function `(services, caller, params) -> result` decorated with
`@operation(...)`. Its params and result models come from its annotations; its summary and
description from its docstring (first line, then the rest). Every transport - JSON-RPC over
WebSocket and HTTP, REST, MCP - is generated from this table and calls `Hub.dispatch`.
"""

import inspect
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pydantic import BaseModel

from protocol.identity import Scope

from ..ratelimit import RateClass

Handler = Callable[..., Awaitable[BaseModel]]
"""`(services, caller, params)`; an operation that takes uploads also gets `upload` (None without one)."""


@dataclass(frozen=True)
class Operation:
    name: str
    params: type[BaseModel]
    result: type[BaseModel]
    handler: Handler
    scope: Scope | None
    """The scope a credential needs; None for operations open to anonymous callers."""
    rate_class: RateClass
    http_method: str
    http_path: str
    http_status: int
    """The REST status of success: 201 for operations that create something, else 200."""
    summary: str
    description: str
    read_only: bool = False
    destructive: bool = False
    idempotent: bool = False
    idempotency_param: str | None = None
    """The param that makes a retry safe (REST fills it from the `Idempotency-Key` header)."""
    takes_upload: bool = False
    """Its handler also takes an `Upload` (REST `multipart/form-data`); JSON transports send bytes in params."""


OPERATIONS: dict[str, Operation] = {}


def operation(
    name: str,
    *,
    scope: Scope | None,
    rate: RateClass,
    route: tuple[str, str] | tuple[str, str, int],
    read_only: bool = False,
    destructive: bool = False,
    idempotent: bool = False,
    idempotency_param: str | None = None,
    takes_upload: bool = False,
) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        if name in OPERATIONS:
            raise RuntimeError(f"operation {name!r} is declared twice")
        hints = typing.get_type_hints(handler)
        doc = inspect.cleandoc(handler.__doc__ or "")
        summary, _, description = doc.partition("\n")
        OPERATIONS[name] = Operation(
            name=name,
            params=hints["params"],
            result=hints["return"],
            handler=handler,
            scope=scope,
            rate_class=rate,
            http_method=route[0],
            http_path=route[1],
            http_status=route[2] if len(route) == 3 else 200,
            summary=summary.strip(),
            description=description.strip() or summary.strip(),
            read_only=read_only,
            destructive=destructive,
            idempotent=idempotent or read_only,
            idempotency_param=idempotency_param,
            takes_upload=takes_upload,
        )
        return handler

    return register
