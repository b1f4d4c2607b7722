"""Schedule operations: a workflow run on a cron expression in a time zone; made, read, changed, deleted,
run at once."""

from protocol.identity import Scope
from protocol.schedules import (
    CreateScheduleParams,
    DeletedSchedule,
    ListSchedulesParams,
    Schedule,
    SchedulePage,
    ScheduleRef,
    UpdateScheduleParams,
)
from protocol.workflows import StartedExecution

from ..principal import Principal
from ..ratelimit import RateClass
from ..services import Services
from .table import operation


@operation("schedules.create", scope=Scope.WORKFLOWS_WRITE, rate=RateClass.WRITE,
           route=("POST", "/api/schedules", 201))
async def create(services: Services, caller: Principal, params: CreateScheduleParams) -> Schedule:
    """Run one of your workflows on a schedule: at each time `cron` names in `timezone` (an IANA zone),
    with `input`. The answer shows its next fire times.

    Daylight-saving changes are kept: a time skipped when clocks go forward fires once, at the jump; a time
    that happens twice when they go back fires once. Each fire time starts one run (trigger `schedule`),
    however many nodes serve the hub. A bad `cron` or `timezone` is `invalid_request` naming the field.
    """
    assert caller.agent_id is not None
    return await services.schedules.create(caller.agent_id, params)


@operation("schedules.get", scope=Scope.WORKFLOWS_READ, rate=RateClass.READ,
           route=("GET", "/api/schedules/{schedule_id}"), read_only=True)
async def get(services: Services, caller: Principal, params: ScheduleRef) -> Schedule:
    """One of your schedules: its next fire times, and its last fire (the run it started, or why none)."""
    assert caller.agent_id is not None
    return await services.schedules.get(caller.agent_id, params.schedule_id)


@operation("schedules.list", scope=Scope.WORKFLOWS_READ, rate=RateClass.READ, route=("GET", "/api/schedules"),
           read_only=True)
async def list_schedules(services: Services, caller: Principal, params: ListSchedulesParams) -> SchedulePage:
    """Your schedules (or one workflow's), newest first, a page at a time."""
    assert caller.agent_id is not None
    return await services.schedules.list_schedules(caller.agent_id, params)


@operation("schedules.update", scope=Scope.WORKFLOWS_WRITE, rate=RateClass.WRITE,
           route=("PATCH", "/api/schedules/{schedule_id}"), idempotent=True)
async def update(services: Services, caller: Principal, params: UpdateScheduleParams) -> Schedule:
    """Change a schedule's `cron`, `timezone`, `enabled` or `input` (what is left out stays). A new cron, zone
    or enabling counts from now: times already past are not fired."""
    assert caller.agent_id is not None
    return await services.schedules.update(caller.agent_id, params)


@operation("schedules.delete", scope=Scope.WORKFLOWS_WRITE, rate=RateClass.WRITE,
           route=("DELETE", "/api/schedules/{schedule_id}"), destructive=True, idempotent=True)
async def delete(services: Services, caller: Principal, params: ScheduleRef) -> DeletedSchedule:
    """Delete a schedule: it fires no more; the runs it started stay."""
    assert caller.agent_id is not None
    return await services.schedules.delete(caller.agent_id, params.schedule_id)


@operation("schedules.run_now", scope=Scope.WORKFLOWS_RUN, rate=RateClass.WRITE,
           route=("POST", "/api/schedules/{schedule_id}/run", 202))
async def run_now(services: Services, caller: Principal, params: ScheduleRef) -> StartedExecution:
    """Start a run of the schedule's workflow with its input now (trigger `schedule`); its fire times stay as
    they were."""
    assert caller.agent_id is not None
    return await services.schedules.run_now(caller.agent_id, params.schedule_id)
