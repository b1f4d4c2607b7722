"""Schedules: a workflow run at each time a cron expression names in a time zone.

A schedule is its workflow owner's alone (anyone else gets `not_found`), and goes with its workflow
when that is deleted. Its next fire time is kept on its row (`next_fire_at`, UTC). Each node runs a
scheduler (`run`, owned by the hub's task group) that sleeps until the earliest next fire time (at
most `job_poll_seconds`, so it sees schedules made on other nodes) and fires what is due.

The due schedules are fired in one transaction (on PostgreSQL, claimed with SKIP LOCKED: nodes
firing at once take different ones). A fire moves the schedule's `next_fire_at` on (only if it
still holds the time being fired), inserts the fire record (schedule, fire time), whose key is
unique, and starts the run as `workflows.run` does (`WorkflowService.starter`). A node that lost a
race finds `next_fire_at` moved, or the record there, and starts nothing: each fire time runs once
across all nodes. A fire the workflow refuses (its input no longer matches, too many runs
unfinished) is still a fire: its error is kept as the schedule's `last_fire`, and the schedule goes
on. A suspended owner's schedules wait; reinstated, their missed times are caught up as below.

After downtime (a fire time more than `MISFIRE_GRACE` in the past), the missed times make one run
(`schedule_catch_up` "once", fired as the first of them) or none ("skip"); either way the schedule
then goes on from its first time after now.
"""

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Final

import anyio
from anyio.abc import TaskStatus
from sqlalchemy import Connection, RowMapping

from protocol import ids
from protocol.errors import HubError, InvalidRequest, NotFound, QuotaExceeded
from protocol.schedules import (
    NEXT_FIRE_TIMES,
    CreateScheduleParams,
    DeletedSchedule,
    LastFire,
    ListSchedulesParams,
    Schedule,
    SchedulePage,
    UpdateScheduleParams,
)
from protocol.workflows import RunWorkflowParams, StartedExecution, Trigger
from storage.queries import schedules as schedule_queries
from storage.queries import workflows as workflow_queries
from storage.store import Store, StoreClosed

from ..clock import Clock
from ..config import Settings
from ..jobs import JobRunner
from ..usage import Reservation
from ..workflows import ADVANCE_JOB
from ..workflows.cron import CronError, Recurrence, recurrence
from . import cursors
from .workflows import WorkflowService, check_input, check_input_size

log = logging.getLogger(__name__)

MISFIRE_GRACE: Final = timedelta(seconds=60)
"""How late a fire may be and still count as on time (not missed during downtime)."""
FIRE_BATCH: Final = 100
"""Due schedules fired in one transaction."""
FIRES_KEPT: Final = timedelta(days=7)
"""Fire records older than this are pruned when their schedule fires again."""


def _not_found(schedule_id: str) -> NotFound:
    return NotFound(f"no schedule {schedule_id!r}", {"schedule_id": schedule_id})


def _checked(cron: str, timezone: str) -> Recurrence:
    try:
        return recurrence(cron, timezone)
    except CronError as error:
        raise InvalidRequest(f"invalid params: {error}", {"errors": [
            {"field": error.field, "message": str(error), "type": "value_error"}]}) from None


def schedule_of(row: RowMapping | dict[str, Any]) -> Schedule:
    next_fire_times: list[datetime] = []
    if row["enabled"] and row["next_fire_at"] is not None:
        following = recurrence(row["cron"], row["timezone"]).after(row["next_fire_at"])
        next_fire_times = [row["next_fire_at"], *(fire for _, fire in zip(range(NEXT_FIRE_TIMES - 1), following))]
    last_fire = None
    if row["last_fire_time"] is not None:
        last_fire = LastFire(fire_time=row["last_fire_time"], execution_id=row["last_execution_id"],
                             error=row["last_error"])
    return Schedule(schedule_id=row["id"], workflow_id=row["workflow_id"], owner_id=row["owner_id"],
                    cron=row["cron"], timezone=row["timezone"], enabled=row["enabled"], input=row["input"],
                    next_fire_times=next_fire_times, last_fire=last_fire, created_at=row["created_at"],
                    updated_at=row["updated_at"])


class ScheduleService:
    def __init__(self, store: Store, clock: Clock, settings: Settings, jobs: JobRunner,
                 workflows: WorkflowService) -> None:
        self._store = store
        self._clock = clock
        self._settings = settings
        self._jobs = jobs
        self._workflows = workflows
        self._wakeup = anyio.Event()

    # -- managing --------------------------------------------------------------------------------------------

    @staticmethod
    def _owned(conn: Connection, caller_id: str, schedule_id: str) -> RowMapping:
        row = schedule_queries.get_schedule(conn, schedule_id)
        if row is None or row["owner_id"] != caller_id:
            raise _not_found(schedule_id)
        return row

    async def create(self, caller_id: str, params: CreateScheduleParams) -> Schedule:
        recurring = _checked(params.cron, params.timezone)
        check_input_size(params.input)
        now = self._clock.now()
        row = {"id": ids.new_id(ids.SCHEDULE), "workflow_id": params.workflow_id, "owner_id": caller_id,
               "cron": params.cron, "timezone": params.timezone, "enabled": params.enabled, "input": params.input,
               "next_fire_at": recurring.next(now) if params.enabled else None, "last_fire_time": None,
               "last_execution_id": None, "last_error": None, "created_at": now, "updated_at": now}

        def write(conn: Connection) -> None:
            workflow = workflow_queries.get_workflow(conn, params.workflow_id)
            if workflow is None or workflow["owner_id"] != caller_id:
                raise NotFound(f"no workflow {params.workflow_id!r}", {"workflow_id": params.workflow_id})
            check_input(conn, workflow, params.input)  # refused now, not at every fire
            limit = self._settings.max_schedules
            if (used := schedule_queries.count_of(conn, caller_id)) >= limit:
                raise QuotaExceeded(f"at most {limit} schedules per agent; delete one first", quota="schedules",
                                    limit=limit, used=used)
            schedule_queries.insert_schedule(conn, row)

        await self._store.write(write)
        self._wakeup.set()
        return schedule_of(row)

    async def get(self, caller_id: str, schedule_id: str) -> Schedule:
        row = await self._store.read(lambda conn: self._owned(conn, caller_id, schedule_id))
        return schedule_of(row)

    async def list_schedules(self, caller_id: str, params: ListSchedulesParams) -> SchedulePage:
        position = cursors.decode(params.cursor, str)
        rows = await self._store.read(lambda conn: schedule_queries.schedules_of(
            conn, caller_id, workflow_id=params.workflow_id, before_id=position[0] if position else None,
            limit=params.limit + 1))
        more, rows = len(rows) > params.limit, rows[: params.limit]
        return SchedulePage(items=[schedule_of(row) for row in rows],
                            next_cursor=cursors.encode(rows[-1]["id"]) if more else None)

    async def update(self, caller_id: str, params: UpdateScheduleParams) -> Schedule:
        given = params.model_fields_set - {"schedule_id"}
        for field in given & {"cron", "timezone", "enabled"}:
            if getattr(params, field) is None:
                raise InvalidRequest(f"invalid params: {field} cannot be null; leave it out to keep it", {"errors": [
                    {"field": field, "message": "cannot be null", "type": "value_error"}]})
        if "input" in given:
            check_input_size(params.input)
        now = self._clock.now()

        def write(conn: Connection) -> dict[str, Any]:
            row = self._owned(conn, caller_id, params.schedule_id)
            if "input" in given:
                workflow = workflow_queries.get_workflow(conn, row["workflow_id"])
                assert workflow is not None  # a workflow's schedules go with it
                check_input(conn, workflow, params.input)
            values: dict[str, Any] = {field: getattr(params, field) for field in given}
            changed = {**row, **values}
            recurring = _checked(changed["cron"], changed["timezone"])
            if given & {"cron", "timezone", "enabled"}:
                # From now on: a time already fired or passed is not fired (again) by an edit.
                values["next_fire_at"] = recurring.next(now) if changed["enabled"] else None
            values["updated_at"] = now
            schedule_queries.update_schedule(conn, params.schedule_id, values)
            return {**row, **values}

        updated = await self._store.write(write)
        self._wakeup.set()
        return schedule_of(updated)

    async def delete(self, caller_id: str, schedule_id: str) -> DeletedSchedule:
        def write(conn: Connection) -> None:
            self._owned(conn, caller_id, schedule_id)
            schedule_queries.delete_schedule(conn, schedule_id)

        await self._store.write(write)
        return DeletedSchedule(schedule_id=schedule_id)

    async def run_now(self, caller_id: str, schedule_id: str) -> StartedExecution:
        """A run with the schedule's input now, besides its fire times (which stay as they were)."""
        row = await self._store.read(lambda conn: self._owned(conn, caller_id, schedule_id))
        return await self._workflows.run(caller_id, RunWorkflowParams(workflow_id=row["workflow_id"],
                                                                      input=row["input"]), Trigger.SCHEDULE)

    # -- firing ----------------------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Fire schedules as they come due, until cancelled."""
        task_status.started()
        while True:
            self._wakeup = anyio.Event()
            try:
                while await self.fire_due() == FIRE_BATCH:
                    pass
            except StoreClosed:
                return
            except Exception:  # a database hiccup: log it and look again at the next poll, not at once
                log.exception("firing schedules failed")
                idle = self._settings.job_poll_seconds
            else:
                idle = await self._idle_seconds()
            with anyio.move_on_after(idle):
                await self._wakeup.wait()

    async def _idle_seconds(self) -> float:
        """Until the earliest next fire time, at most a poll interval (other nodes make schedules too)."""
        poll = self._settings.job_poll_seconds
        try:
            due = await self._store.read(schedule_queries.next_due)
        except Exception:  # noqa: BLE001 - a failed look just means "look again at the next poll"
            return poll
        if due is None:
            return poll
        return min(poll, max(0.0, (due - self._clock.now()).total_seconds()))

    async def fire_due(self) -> int:
        """Fire the schedules due now, up to `FIRE_BATCH`, in one transaction; how many were due.

        Each fire's run is counted against its owner's daily limit of runs first (released if no run starts).
        """
        now = self._clock.now()
        due = await self._store.read(lambda conn: schedule_queries.due(conn, now, FIRE_BATCH))
        reservations = {row["id"]: await self._workflows.reserve_run(row["owner_id"]) for row in due}
        started: set[str] = set()
        try:
            await self._store.write(lambda conn: self._fire_due(conn, now, reservations, started))
        finally:
            for schedule_id, reservation in reservations.items():
                if schedule_id not in started:
                    reservation.release()
        if started:
            self._jobs.notify(ADVANCE_JOB)
        return len(due)

    def _fire_due(self, conn: Connection, now: datetime, reservations: dict[str, Reservation],
                  started: set[str]) -> None:
        started.clear()  # a write may run twice
        for row in schedule_queries.claim_due(conn, now, FIRE_BATCH):
            # One that came due since the look has no reservation yet: it is fired on the next round.
            if (reservation := reservations.get(row["id"])) is not None and self.fire(conn, row, now, reservation):
                started.add(row["id"])

    def fire(self, conn: Connection, row: Mapping[str, Any], now: datetime, reservation: Reservation) -> bool:
        """Fire `row` (a schedule as read, perhaps a while ago) at its `next_fire_at`, its run counted by
        `reservation`; whether a run started (not if another node fired that time first)."""
        fire_time: datetime = row["next_fire_at"]
        try:
            following = recurrence(row["cron"], row["timezone"]).next(max(now, fire_time))
        except CronError as error:  # a time zone gone from the system's database since it was saved
            log.warning("schedule %s cannot be computed (%s); it is disabled", row["id"], error)
            following, skip = None, True
        else:
            skip = now - fire_time > MISFIRE_GRACE and self._settings.schedule_catch_up == "skip"
        moved: dict[str, Any] = {"next_fire_at": following}
        if following is None:
            moved["enabled"] = False
        if not schedule_queries.advance(conn, row["id"], fire_time, moved):
            return False  # fired by another node, or changed meanwhile
        if skip or not schedule_queries.record_fire(conn, row["id"], fire_time, now):
            return False  # skipped, or this time was fired already
        execution_id, error = None, None
        try:
            reservation.check()
            execution_id = self._workflows.starter(row["owner_id"], RunWorkflowParams(
                workflow_id=row["workflow_id"], input=row["input"]), Trigger.SCHEDULE, now)(conn).execution_id
            schedule_queries.set_fire_execution(conn, row["id"], fire_time, execution_id)
        except HubError as failure:  # it wrote nothing: the fire is kept with why it started no run
            error = failure.to_dict()
        schedule_queries.update_schedule(conn, row["id"], {
            "last_fire_time": fire_time, "last_execution_id": execution_id, "last_error": error})
        schedule_queries.prune_fires(conn, row["id"], fire_time - FIRES_KEPT)
        return execution_id is not None
