"""Alembic migrations, applied at start-up and by `parley migrate`."""

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, func, select

SCRIPT_LOCATION = Path(__file__).parent
MIGRATION_LOCK = 0x70617232  # "par2": nodes starting together migrate one after another


def upgrade(engine: Engine) -> None:
    """Bring the database at `engine` up to the newest schema (blocking: run it in a thread)."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
