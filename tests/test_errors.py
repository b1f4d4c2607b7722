"""The error table is part of the wire contract: each code keeps its HTTP status and JSON-RPC code,
and the README's table says exactly what the hub does."""

import re
from pathlib import Path

from protocol.errors import HubError

WIRE = {
    "invalid_request": (400, -32602),
    "unauthorized": (401, -32001),
    "forbidden": (403, -32003),
    "not_found": (404, -32004),
    "method_not_found": (404, -32601),
    "method_not_allowed": (405, None),
    "conflict": (409, -32009),
    "blocked": (403, -32010),
    "payload_too_large": (413, -32013),
    "unsupported_media_type": (415, -32015),
    "rate_limited": (429, -32029),
    "quota_exceeded": (403, -32030),
    "internal": (500, -32603),
}
"""code -> (HTTP status, JSON-RPC code); None where the error never travels over JSON-RPC."""
REST_ONLY = {"method_not_allowed"}


def test_every_error_keeps_its_http_status_and_jsonrpc_code() -> None:
    table = {cls.code.value: (cls.http_status, None if cls.code.value in REST_ONLY else cls.jsonrpc_code)
             for cls in HubError.__subclasses__()}
    assert table == WIRE


def test_the_readme_error_table_is_the_hubs(repo_root: Path) -> None:
    readme = (repo_root / "README.md").read_text()
    section = readme.split("## Errors", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \| (\d{3}) \|", section, re.MULTILINE)
    documented = {}
    for code, jsonrpc, http in rows:
        number = re.match(r"\s*(-\d+)", jsonrpc)
        documented[code] = (int(http), int(number.group(1)) if number else None)
    assert documented == WIRE
