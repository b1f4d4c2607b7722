"""Models of schedules: a workflow run on a cron expression in a time zone, with a fixed input.

A schedule belongs to its workflow's owner. It fires at each time its cron expression names in its
IANA time zone (daylight-saving changes included), starting a run of the workflow's current version
with its `input`, exactly once per fire time however many nodes serve the hub.
"""

from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import Field

from .common import Cursor, Model, PageLimit
from .workflows import WorkflowId

ScheduleId = Annotated[str, Field(pattern=r"^sch_[0-9a-z]{26}$", description="A schedule's id (`sch_…`).")]
CronExpression = Annotated[str, Field(
    min_length=1, max_length=128,
    description="Five fields: minute, hour, day of month, month, day of week (`30 2 * * *`: 02:30 every day). "
                "Lists, ranges, steps, names (`MON`, `JAN`), `L` and `#` are understood.")]
TimeZone = Annotated[str, Field(min_length=1, max_length=64, description="An IANA time zone (`Europe/Berlin`).")]

NEXT_FIRE_TIMES: Final = 3
"""How many coming fire times a schedule shows."""


class CreateScheduleParams(Model):
    workflow_id: WorkflowId
    cron: CronExpression
    timezone: TimeZone = "UTC"
    enabled: bool = True
    input: Any = Field(default_factory=dict, description="Each run's input: it must satisfy the workflow's "
                                                         "input_schema now, and is checked again when it fires.")


class UpdateScheduleParams(Model):
    """What is given changes; what is left out stays."""

    schedule_id: ScheduleId
    cron: CronExpression | None = None
    timezone: TimeZone | None = None
    enabled: bool | None = None
    input: Any = Field(default=None, description="A new input (JSON `null` is an input like any other), checked "
                                                 "against the workflow's input_schema as on create.")


class ScheduleRef(Model):
    schedule_id: ScheduleId


class ListSchedulesParams(Model):
    workflow_id: WorkflowId | None = Field(default=None, description="Only this workflow's.")
    limit: PageLimit = 50
    cursor: Cursor | None = None


class LastFire(Model):
    """A schedule's latest fire: the run it started, or why it started none."""

    fire_time: datetime
    execution_id: str | None
    error: dict[str, Any] | None = None


class Schedule(Model):
    schedule_id: str
    workflow_id: str
    owner_id: str
    cron: str
    timezone: str
    enabled: bool
    input: Any
    next_fire_times: list[datetime] = Field(description=f"The next {NEXT_FIRE_TIMES} (UTC); empty while "
                                                        "disabled.")
    last_fire: LastFire | None
    created_at: datetime
    updated_at: datetime


class SchedulePage(Model):
    items: list[Schedule]
    next_cursor: str | None


class DeletedSchedule(Model):
    schedule_id: str
    deleted: Literal[True] = True
