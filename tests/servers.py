"""Real hub processes for the tests: `parley serve` on a free loopback port, on SQLite or PostgreSQL.

A server is a subprocess started exactly as an operator would start it. Stopping it sends SIGTERM
and checks that it exits cleanly within a bound, so every test run also checks graceful shutdown.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

import httpx

START_TIMEOUT: Final = 30.0
STOP_TIMEOUT: Final = 15.0

# Fast argon2 and generous rate limits: the tests register many agents from one address. Tests of
# the limits themselves start servers with their own settings.
TEST_ENV: Final = {
    "PARLEY_ARGON2_MEMORY_KIB": "8192",
    "PARLEY_ARGON2_TIME_COST": "1",
    "PARLEY_RATE_AUTH": "100000:100000",
    "PARLEY_RATE_RECOVERY": "100000:100000",
    "PARLEY_RATE_READ": "100000:100000",
    "PARLEY_RATE_WRITE": "100000:100000",
    "PARLEY_RATE_UPLOAD": "100000:100000",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def parley_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "bridges.cli", *args]


@dataclass
class HubServer:
    backend: str
    store: str
    data_dir: Path
    database_url: str
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    serve_args: tuple[str, ...] = ()
    """More options of `parley serve` (e.g. `--workers 2`)."""
    process: subprocess.Popen[bytes] | None = None
    _admin: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def sqlite_path(self) -> Path | None:
        return self.data_dir / "parley.db" if self.store == "sqlite" else None

    def run_cli(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(parley_command(*args), env=self.env, input=input, capture_output=True, text=True,
                              timeout=60)

    @property
    def admin(self) -> dict[str, str]:
        """The hub's admin (`parley admin bootstrap`, run the first time a test asks: most never do)."""
        if not self._admin:
            bootstrap = self.run_cli("admin", "bootstrap")
            assert bootstrap.returncode == 0, bootstrap.stderr
            self._admin = json.loads(bootstrap.stdout)
        return self._admin

    def launch(self, command: Sequence[str] | None = None) -> None:
        """Start the hub process on this server's port and data (again, after `stop`): `parley serve`, or
        `command`, which must serve the hub on `port`."""
        if command is None:
            command = parley_command("serve", "--backend", self.backend, "--port", str(self.port), *self.serve_args)
        with open(self.data_dir / "server.log", "ab") as log:
            self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the hub exited at start-up:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError(f"the hub did not answer within {START_TIMEOUT}s:\n{self.log()}")

    def stop(self) -> int:
        """SIGTERM, then the exit code; a hub that does not exit in time is killed and fails the test."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"the hub did not exit within {STOP_TIMEOUT}s of SIGTERM:\n{self.log()}") from None

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to finish anything (`launch` starts it again)."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def log(self) -> str:
        return (self.data_dir / "server.log").read_text(errors="replace")


def postgres_admin_url() -> str | None:
    return os.environ.get("PARLEY_TEST_POSTGRES_URL") or None


def postgres_available() -> str | None:
    """Why PostgreSQL tests cannot run here, or None when they can."""
    url = postgres_admin_url()
    if url is None:
        return "PARLEY_TEST_POSTGRES_URL is not set"
    import psycopg

    try:
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), connect_timeout=3):
            return None
    except psycopg.OperationalError as exc:
        return f"PostgreSQL at PARLEY_TEST_POSTGRES_URL does not answer: {exc}".splitlines()[0]


def redis_unavailable() -> str | None:
    """Why the several-node tests cannot run here (they need Redis and PostgreSQL), or None."""
    url = os.environ.get("PARLEY_TEST_REDIS_URL")
    if not url:
        return "PARLEY_TEST_REDIS_URL is not set"
    host, port = redis_address(url)
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        return f"Redis at PARLEY_TEST_REDIS_URL does not answer: {exc}"
    return postgres_available()


def redis_address(url: str) -> tuple[str, int]:
    """Host and port of a `redis://host:port/db` URL."""
    netloc = url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    host, _, port = netloc.partition(":")
    return host, int(port or 6379)


def create_postgres_database() -> str:
    """A fresh, empty database on the test server; returns its SQLAlchemy URL."""
    import psycopg

    url = postgres_admin_url()
    assert url is not None
    name = f"parley_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.rsplit("/", 1)[0] + "/" + name


def drop_postgres_database(database_url: str) -> None:
    import psycopg

    url = postgres_admin_url()
    assert url is not None
    name = database_url.rsplit("/", 1)[1]
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_server(backend: str, store: str, data_dir: Path, **settings: str) -> HubServer:
    """A configured, not yet started hub; `settings` are PARLEY_* variables (without the prefix)."""
    database_url = create_postgres_database() if store == "postgres" else ""
    env = {**os.environ, **TEST_ENV, "PARLEY_DATA_DIR": str(data_dir), "PARLEY_DATABASE_URL": database_url}
    env.update({f"PARLEY_{name.upper()}": value for name, value in settings.items()})
    return HubServer(backend=backend, store=store, data_dir=data_dir, database_url=database_url, env=env)


def start_nodes(backend: str, base_dir: Path, count: int, **settings: str) -> list[HubServer]:
    """`count` started hubs on one fresh PostgreSQL database, sharing their server keys (`settings`
    should name a Redis); the first is bootstrapped with an admin. Stop each, then drop the database."""
    (base_dir / "node-0").mkdir(parents=True)
    settings = {"keys_file": str(base_dir / "server-keys.json"), **settings}
    first = make_server(backend, "postgres", base_dir / "node-0", **settings)
    first.launch()
    nodes = [first]
    for number in range(1, count):
        data_dir = base_dir / f"node-{number}"
        data_dir.mkdir()
        node = replace(first, port=free_port(), data_dir=data_dir, process=None,
                       env={**first.env, "PARLEY_DATA_DIR": str(data_dir)})
        node.launch()
        nodes.append(node)
    return nodes
