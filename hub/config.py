"""The hub's settings: typed, with defaults, read from `PARLEY_*` environment variables."""

import os
import re
from collections.abc import Mapping
from enum import StrEnum
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from protocol.files import DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_INLINE_FILE_BYTES, MAX_ATTACHMENTS
from protocol.memories import DEFAULT_MAX_MEMORY_BYTES, MAX_MEMORY_CHARS
from protocol.messages import DEFAULT_MAX_MESSAGE_BYTES, MAX_BODY_CHARS

_HOST_NAME = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?")


class RegistrationPolicy(StrEnum):
    OPEN = "open"
    INVITE = "invite"
    CLOSED = "closed"


class ConfigError(ValueError):
    """A setting the hub cannot use; the message names its `PARLEY_*` variable."""


class RateLimit(BaseModel):
    """A token bucket: `burst` requests at once, refilled at `per_second`. From a setting, written
    `"burst:per_second"`, as in `PARLEY_RATE_WRITE=60:20`."""

    model_config = ConfigDict(frozen=True)

    burst: Annotated[float, Field(gt=0)]
    per_second: Annotated[float, Field(gt=0)]

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        burst, colon, per_second = value.partition(":")
        if not colon:
            raise ValueError(f"expected burst:per_second (like 100:50), not {value!r}")
        return {"burst": burst, "per_second": per_second}


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    database_url: str = Field("", description="SQLAlchemy URL; empty means SQLite in `data_dir`.")
    data_dir: Path = Path("parley-data")
    keys_file: Path | None = Field(None, description="Server secrets (pepper, signing keys); default in data_dir.")
    registration: RegistrationPolicy = RegistrationPolicy.OPEN

    access_token_ttl: Annotated[int, Field(ge=2, le=86400, description="Seconds; below a minute only for tests "
                                           "of expiry.")] = 15 * 60
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
    ws_ping_seconds: Annotated[float, Field(gt=0, description="How often the server pings each WebSocket "
                                            "peer (uvicorn's default).")] = 20.0
    ws_ping_timeout_seconds: Annotated[float, Field(gt=0, description="How long a peer has to answer a ping "
                                                    "before its connection is dropped.")] = 20.0
    sse_heartbeat_seconds: Annotated[float, Field(gt=0)] = 15.0

    public_url: str = Field("", description="The hub's external base URL (e.g. https://parley.example.com); "
                            "/mcp accepts that host besides loopback ones, and names it in its auth metadata.")
    mcp_tools: Literal["messaging", "memory", "rag", "workflows", "all"] = "all"
    mcp_session_idle_seconds: Annotated[float, Field(gt=0)] = 30 * 60

    max_message_bytes: Annotated[int, Field(ge=1, le=MAX_BODY_CHARS)] = DEFAULT_MAX_MESSAGE_BYTES
    max_group_members: Annotated[int, Field(ge=2)] = 1000
    event_buffer: Annotated[int, Field(ge=1, description="Live events a subscriber may fall behind by.")] = 1024

    max_memory_bytes: Annotated[int, Field(ge=1, le=MAX_MEMORY_CHARS)] = DEFAULT_MAX_MEMORY_BYTES
    memory_quota_bytes: Annotated[int, Field(ge=0, description="Content bytes of the memories an agent writes, "
                                             "in every scope.")] = 64 * 1024 * 1024
    embeddings: Literal["auto", "on", "off"] = Field(
        "auto", description="Search by meaning with the local embedding model: auto (when the embeddings extra "
        "is installed), on (refuse to start without it), off.")
    embedding_threads: Annotated[int, Field(ge=1, le=64)] = 1
    embedding_niceness: Annotated[int, Field(ge=0, le=19, description="How much lower (Linux niceness) the "
                                             "background embedding runs than requests; 0: the same.")] = 10
    term_cache_bytes: Annotated[int, Field(ge=0, description="Memory for cached terms (lexical search), all "
                                           "collections.")] = 256 * 1024 * 1024
    message_cache_bytes: Annotated[int, Field(ge=0, description="Memory for the views of messages read, kept to "
                                              "serve the pages that show them again.")] = 32 * 1024 * 1024
    vector_cache_bytes: Annotated[int, Field(ge=0, description="Memory for cached vectors, all collections.")] = \
        512 * 1024 * 1024
    job_poll_seconds: Annotated[float, Field(gt=0, description="How often a node looks for background jobs "
                                             "that others queued or that came due.")] = 1.0

    max_file_bytes: Annotated[int, Field(ge=1)] = DEFAULT_MAX_FILE_BYTES
    max_inline_file_bytes: Annotated[int, Field(ge=1, le=768 * 1024, description="A file sent base64 inside a "
                                                "JSON request (it must fit the 1 MiB body).")] = \
        DEFAULT_MAX_INLINE_FILE_BYTES
    max_attachments: Annotated[int, Field(ge=0, le=100)] = MAX_ATTACHMENTS
    storage_quota_bytes: Annotated[int, Field(ge=0, description="Bytes an agent's files and documents hold in "
                                              "all.")] = 1024 * 1024 * 1024
    ingest_concurrency: Annotated[int, Field(ge=1, le=16, description="Batches of documents (up to 8 each) ingested "
                                                                     "at once per node.")] = 4
    workflow_concurrency: Annotated[int, Field(ge=1, le=256, description="Workflow runs advanced at once per "
                                                                          "node.")] = 16
    max_active_executions: Annotated[int, Field(ge=1, description="Unfinished workflow runs an agent may "
                                                                   "have at once.")] = 1000
    workflow_lease_seconds: Annotated[float, Field(ge=1, le=3600, description="How long a node holds a run it "
                                                   "advances (renewed while it works): after a node dies, its "
                                                   "runs wait this long for another.")] = 60.0
    messages_per_day: Annotated[int, Field(ge=0, description="Messages an agent may send per UTC day; 0: no "
                                           "limit. The operator may set another per agent.")] = 0
    executions_per_day: Annotated[int, Field(ge=0, description="Workflow runs an agent may start per UTC day; 0: "
                                             "no limit.")] = 0
    usage_flush_seconds: Annotated[float, Field(gt=0, le=3600, description="How often a node adds the usage it "
                                                "counted to the store (and at most how old the totals its daily "
                                                "limits see from other nodes are).")] = 10.0
    max_schedules: Annotated[int, Field(ge=0, description="Schedules an agent may have, over all its "
                                                          "workflows.")] = 100
    schedule_catch_up: Literal["once", "skip"] = Field(
        "once", description="Fire times missed while no node ran (downtime): once (one run, for all of them) or "
        "skip (none; the schedule goes on from the next).")

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
    rate_upload: RateLimit = RateLimit(burst=20, per_second=0.5)
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = Field(
        (), description="Load balancers whose X-Forwarded-For names the client (IP addresses or CIDR networks, "
        "comma-separated); empty: trust nobody.")
    outbound_allow: tuple[IPv4Network | IPv6Network | str, ...] = Field(
        (), description="What outbound requests (webhooks, http steps) may reach although it is not public: IP "
        "addresses, CIDR networks or exact host names, comma-separated; empty: public addresses only.")
    outbound_timeout_seconds: Annotated[float, Field(gt=0, description="One outbound request, redirects "
                                                     "included.")] = 10.0
    outbound_max_response_bytes: Annotated[int, Field(ge=1)] = 1024 * 1024
    webhook_retry_seconds: Annotated[float, Field(gt=0, description="The first retry of a failed webhook "
                                                  "delivery; each later one waits twice as long (at most 6 hours)."
                                                  )] = 30.0
    webhook_retry_window_seconds: Annotated[float, Field(gt=0, description="How long a webhook delivery is "
                                                         "retried; an endpoint failing for that long is disabled."
                                                         )] = 3 * 24 * 3600
    webhook_concurrency: Annotated[int, Field(ge=1, le=256, description="Webhook deliveries sent at once per "
                                                                         "node.")] = 32

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

    @field_validator("outbound_allow", mode="before")
    @classmethod
    def _parse_allow(cls, value: Any) -> Any:
        """`"10.0.0.0/8,192.0.2.7,hooks.internal"`: networks as in `trusted_proxies`, names kept lower-cased."""
        if not isinstance(value, str):
            return value
        entries: list[IPv4Network | IPv6Network | str] = []
        for entry in filter(None, (part.strip() for part in value.split(","))):
            try:
                entries.append(ip_network(entry))
            except ValueError as exc:
                if not _HOST_NAME.fullmatch(entry) or entry.replace(".", "").isdigit():
                    raise ValueError(f"{exc}; expected IP addresses, CIDR networks or host names, "
                                     "comma-separated") from None
                entries.append(entry.lower().rstrip("."))
        return tuple(entries)

    def store_url(self) -> str:
        return self.database_url or f"sqlite:///{self.sqlite_path()}"

    def sqlite_path(self) -> Path:
        """The embedded store's file, used when no database URL is set."""
        return (self.data_dir / "parley.db").resolve()

    def secrets_path(self) -> Path:
        return self.keys_file or self.data_dir / "server-keys.json"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, **overrides: Any) -> "Settings":
        """Settings from `PARLEY_<FIELD>` variables, then `overrides` (command-line flags) on top."""
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            raw = environ.get(f"PARLEY_{name.upper()}")
            if raw is not None:
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except ValidationError as error:
            first = error.errors(include_url=False, include_input=False)[0]
            field = str(first["loc"][0]) if first["loc"] else "settings"
            message = str(first["msg"]).removeprefix("Value error, ")
            raise ConfigError(f"PARLEY_{field.upper()}: {message}") from None
