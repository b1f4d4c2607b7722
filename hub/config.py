"""The hub's settings: typed, with defaults, read from `PARLEY_*` environment variables."""

import os
from collections.abc import Mapping
from enum import StrEnum
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from protocol.messages import DEFAULT_MAX_MESSAGE_BYTES, MAX_BODY_CHARS


class RegistrationPolicy(StrEnum):
    OPEN = "open"
    INVITE = "invite"
    CLOSED = "closed"


class RateLimit(BaseModel):
    """A token bucket: `burst` requests at once, refilled at `per_second`."""

    model_config = ConfigDict(frozen=True)

    burst: Annotated[float, Field(gt=0)]
    per_second: Annotated[float, Field(gt=0)]

    @classmethod
    def parse(cls, text: str) -> "RateLimit":
        """`"burst:per_second"`, as in `PARLEY_RATE_WRITE=60:20`."""
        burst, per_second = text.split(":")
        return cls(burst=float(burst), per_second=float(per_second))


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    database_url: str = Field("", description="SQLAlchemy URL; empty means SQLite in `data_dir`.")
    data_dir: Path = Path("parley-data")
    keys_file: Path | None = Field(None, description="Server secrets (pepper, signing keys); default in data_dir.")
    registration: RegistrationPolicy = RegistrationPolicy.OPEN

    access_token_ttl: Annotated[int, Field(ge=30, le=86400)] = 15 * 60
    refresh_token_ttl: Annotated[int, Field(ge=60)] = 30 * 24 * 3600
    argon2_memory_kib: Annotated[int, Field(ge=8 * 1024)] = 64 * 1024
    argon2_time_cost: Annotated[int, Field(ge=1)] = 3
    max_api_keys: Annotated[int, Field(ge=1)] = 50

    max_body_bytes: Annotated[int, Field(ge=1024)] = 1024 * 1024
    max_frame_bytes: Annotated[int, Field(ge=1024)] = 1024 * 1024
    max_json_depth: Annotated[int, Field(ge=4)] = 32
    max_batch: Annotated[int, Field(ge=1)] = 100
    ws_outbound_queue: Annotated[int, Field(ge=1)] = 256
    ws_max_in_flight: Annotated[int, Field(ge=1)] = 64
    ws_heartbeat_seconds: Annotated[float, Field(gt=0)] = 30.0
    ws_auth_timeout_seconds: Annotated[float, Field(gt=0)] = 10.0
    sse_heartbeat_seconds: Annotated[float, Field(gt=0)] = 15.0

    public_url: str = Field("", description="The hub's external base URL (e.g. https://parley.example.com); "
                            "/mcp accepts that host besides loopback ones, and names it in its auth metadata.")
    mcp_tools: Literal["messaging", "memory", "rag", "workflows", "all"] = "all"
    mcp_session_idle_seconds: Annotated[float, Field(gt=0)] = 30 * 60

    max_message_bytes: Annotated[int, Field(ge=1, le=MAX_BODY_CHARS)] = DEFAULT_MAX_MESSAGE_BYTES
    max_group_members: Annotated[int, Field(ge=2)] = 1000
    event_buffer: Annotated[int, Field(ge=1, description="Live events a subscriber may fall behind by.")] = 1024

    redis_url: str = Field("", description="Redis for several nodes on one PostgreSQL database (e.g. "
                           "redis://127.0.0.1:6379/0); empty: one node, events stay in the process.")
    redis_channel: str = Field("parley", min_length=1, description="The pub/sub channel the nodes of one "
                               "deployment share; give each deployment on a Redis its own.")
    catch_up_seconds: Annotated[float, Field(gt=0, description="How often a node of several reads the store "
                                              "for events that Redis did not bring it.")] = 0.5

    rate_auth: RateLimit = RateLimit(burst=20, per_second=0.5)
    rate_recovery: RateLimit = RateLimit(burst=5, per_second=1 / 60)
    rate_read: RateLimit = RateLimit(burst=200, per_second=100)
    rate_write: RateLimit = RateLimit(burst=100, per_second=50)
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = Field(
        (), description="Load balancers whose X-Forwarded-For names the client (IP addresses or CIDR networks, "
        "comma-separated); empty: trust nobody.")

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_networks(cls, value: Any) -> Any:
        """`"10.0.0.0/8,192.0.2.7"`: a bare address is a network of one; a network with host bits set
        (`10.0.0.1/8`) is refused rather than widened."""
        if not isinstance(value, str):
            return value
        networks = []
        for entry in filter(None, (part.strip() for part in value.split(","))):
            try:
                networks.append(ip_network(entry))
            except ValueError as exc:
                raise ValueError(f"{exc}; expected IP addresses or CIDR networks, comma-separated") from None
        return tuple(networks)

    def store_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'parley.db').resolve()}"

    def secrets_path(self) -> Path:
        return self.keys_file or self.data_dir / "server-keys.json"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, **overrides: Any) -> "Settings":
        """Settings from `PARLEY_<FIELD>` variables, then `overrides` (command-line flags) on top."""
        values: dict[str, Any] = {}
        for name, field in cls.model_fields.items():
            raw = environ.get(f"PARLEY_{name.upper()}")
            if raw is None:
                continue
            values[name] = RateLimit.parse(raw) if field.annotation is RateLimit else raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
