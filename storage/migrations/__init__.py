"""Alembic migrations, applied at start-up and by `parley migrate`."""

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

SCRIPT_LOCATION = Path(__file__).parent


def upgrade(engine: Engine) -> None:
    """Bring the database at `engine` up to the newest schema (blocking: run it in a thread)."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
