"""Schedules: made, read, changed and deleted by their workflow's owner only; checked (cron, time zone,
limits); run at once; and fired by the hub's scheduler on the hub's clock, which these tests move
(a hub in the test process, `ManualClock`): once per fire time over daylight-saving changes, once
after downtime (or not at all), and once across two nodes on one PostgreSQL database."""

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import pytest

from bridges.app import running_hub
from hub.config import Settings
from hub.core import Hub
from hub.workflows.cron import recurrence
from protocol.errors import HubError
from storage.queries import schedules as schedule_queries

from .client import Agent, HubClient
from .conftest import postgres_only
from .inprocess import FAST_TEST_SETTINGS, LocalAgent, LocalHub, ManualClock, local_hub
from .messaging import WAIT, raises_code
from .servers import create_postgres_database, drop_postgres_database

pytestmark = pytest.mark.anyio

TRANSFORM = {"name": "echo", "nodes": [{"id": "a", "type": "transform", "value": "{{ input }}"}]}
POLL = 0.05
"""The scheduler's longest sleep in the in-process hubs: a moved clock is noticed at once."""


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def times(schedule: dict[str, Any]) -> list[datetime]:
    return [at(text) for text in schedule["next_fire_times"]]


# -- the pure computation -----------------------------------------------------------------------------------


def fires(cron: str, zone: str, since: str, until: str) -> list[datetime]:
    found = []
    for fire in recurrence(cron, zone).after(at(since)):
        if fire > at(until):
            return found
        found.append(fire)
    return found


@pytest.mark.parametrize(("zone", "cron", "day_start", "expected"), [
    # Clocks go forward 02:00 -> 03:00: 02:30 does not exist, and fires once, at the jump (03:00 local).
    ("Europe/Berlin", "30 2 * * *", "2027-03-28T00:00Z", "2027-03-28T01:00Z"),
    ("America/New_York", "30 2 * * *", "2027-03-14T05:00Z", "2027-03-14T07:00Z"),
    # Clocks go back (Berlin 03:00 -> 02:00, New York 02:00 -> 01:00): the time happens twice, and fires once,
    # at the first.
    ("Europe/Berlin", "30 2 * * *", "2027-10-31T00:00Z", "2027-10-31T00:30Z"),
    ("America/New_York", "30 1 * * *", "2027-11-07T04:00Z", "2027-11-07T05:30Z"),
])
def test_a_daily_schedule_fires_once_on_a_transition_day(zone: str, cron: str, day_start: str,
                                                         expected: str) -> None:
    day_end = (at(day_start) + timedelta(days=1)).isoformat()
    assert fires(cron, zone, day_start, day_end) == [at(expected)]
    # Asked from inside the repeated hour (after the first occurrence), the next is the next day's.
    assert recurrence(cron, zone).next(at(expected) + timedelta(minutes=45)) > at(expected) + timedelta(hours=23)


@pytest.mark.parametrize(("zone", "day", "hours"), [
    ("Europe/Berlin", "2027-03-28", 23), ("Europe/Berlin", "2027-10-31", 25),
    ("America/New_York", "2027-03-14", 23), ("America/New_York", "2027-11-07", 25),
])
def test_an_hourly_schedule_fires_every_hour_of_a_transition_day(zone: str, day: str, hours: int) -> None:
    midnight = datetime.fromisoformat(day).replace(tzinfo=ZoneInfo(zone))
    following = (datetime.fromisoformat(day) + timedelta(days=1)).replace(tzinfo=ZoneInfo(zone))
    since, until = (midnight - timedelta(seconds=1)).isoformat(), (following - timedelta(seconds=1)).isoformat()
    assert len(fires("0 * * * *", zone, since, until)) == hours


# -- managing, over a real hub -------------------------------------------------------------------------------


async def workflow(hub: HubClient, agent: Agent, **definition: Any) -> str:
    saved = await hub.call("workflows.create", {**TRANSFORM, **definition}, token=agent.access_token)
    return str(saved["workflow_id"])


async def test_a_schedule_is_made_read_changed_and_deleted_with_its_next_fire_times(hub: HubClient,
                                                                                     alice: Agent) -> None:
    workflow_id = await workflow(hub, alice)
    created = await hub.call("schedules.create", {"workflow_id": workflow_id, "cron": "30 2 * * *",
                                                  "timezone": "Europe/Berlin", "input": {"n": 1}},
                             token=alice.access_token)
    assert (created["enabled"], created["input"], created["owner_id"], created["last_fire"]) == \
        (True, {"n": 1}, alice.agent_id, None)
    upcoming = times(created)
    berlin = recurrence("30 2 * * *", "Europe/Berlin").zone
    assert len(upcoming) == 3 and upcoming == sorted(upcoming) and upcoming[0] > datetime.now(UTC)
    assert all((fire.astimezone(berlin).hour, fire.astimezone(berlin).minute) in ((2, 30), (3, 0))
               for fire in upcoming)
    assert upcoming[2] - upcoming[0] <= timedelta(days=2, hours=1)
    schedule_id = created["schedule_id"]
    assert await hub.call("schedules.get", {"schedule_id": schedule_id}, token=alice.access_token) == created

    other = await workflow(hub, alice, name="other")
    await hub.call("schedules.create", {"workflow_id": other, "cron": "0 * * * *"}, token=alice.access_token)
    listed = await hub.call("schedules.list", {}, token=alice.access_token)
    assert len(listed["items"]) == 2 and listed["items"][1] == created  # newest first
    only = await hub.call("schedules.list", {"workflow_id": workflow_id}, token=alice.access_token)
    assert [item["schedule_id"] for item in only["items"]] == [schedule_id]
    page = await hub.call("schedules.list", {"limit": 1}, token=alice.access_token)
    rest = await hub.call("schedules.list", {"limit": 1, "cursor": page["next_cursor"]}, token=alice.access_token)
    assert rest["items"] == [created] and rest["next_cursor"] is None

    hourly = await hub.call("schedules.update", {"schedule_id": schedule_id, "cron": "0 * * * *", "timezone": "UTC"},
                            token=alice.access_token)
    assert hourly["input"] == {"n": 1}  # left out: kept
    assert [fire.minute for fire in times(hourly)] == [0, 0, 0]
    assert times(hourly)[1] - times(hourly)[0] == timedelta(hours=1)
    disabled = await hub.call("schedules.update", {"schedule_id": schedule_id, "enabled": False, "input": {"n": 2}},
                              token=alice.access_token)
    assert (disabled["enabled"], disabled["next_fire_times"], disabled["input"]) == (False, [], {"n": 2})
    enabled = await hub.call("schedules.update", {"schedule_id": schedule_id, "enabled": True},
                             token=alice.access_token)
    assert times(enabled) == times(hourly)

    assert await hub.call("schedules.delete", {"schedule_id": schedule_id}, token=alice.access_token) == \
        {"schedule_id": schedule_id, "deleted": True}
    with raises_code("not_found"):
        await hub.call("schedules.get", {"schedule_id": schedule_id}, token=alice.access_token)
    await hub.call("workflows.delete", {"workflow_id": other}, token=alice.access_token)
    assert (await hub.call("schedules.list", {}, token=alice.access_token))["items"] == []  # gone with it


@pytest.mark.parametrize(("params", "field"), [
    ({"cron": "61 * * * *"}, "cron"),
    ({"cron": "* * *"}, "cron"),
    ({"cron": "*/5 * * * * *"}, "cron"),  # seconds: a schedule fires at most once a minute
    ({"cron": "0 0 30 2 *"}, "cron"),  # never
    ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
    ({"timezone": "../../etc/passwd"}, "timezone"),
    ({"enabled": "yes"}, "enabled"),
])
async def test_a_bad_cron_or_time_zone_is_refused_naming_the_field(hub: HubClient, alice: Agent,
                                                                   params: dict[str, Any], field: str) -> None:
    workflow_id = await workflow(hub, alice)
    with raises_code("invalid_request") as caught:
        await hub.call("schedules.create", {"workflow_id": workflow_id, "cron": "0 * * * *", **params},
                       token=alice.access_token)
    assert caught.value.error["data"]["details"]["errors"][0]["field"] == field
    assert field in caught.value.error["message"]
    assert (await hub.call("schedules.list", {}, token=alice.access_token))["items"] == []

    schedule = await hub.call("schedules.create", {"workflow_id": workflow_id, "cron": "0 * * * *"},
                              token=alice.access_token)
    with raises_code("invalid_request") as caught:
        await hub.call("schedules.update", {"schedule_id": schedule["schedule_id"], **params}, token=alice.access_token)
    assert caught.value.error["data"]["details"]["errors"][0]["field"] == field
    assert await hub.call("schedules.get", {"schedule_id": schedule["schedule_id"]},
                          token=alice.access_token) == schedule


async def test_an_input_the_workflow_would_refuse_is_refused_when_saved(hub: HubClient, alice: Agent) -> None:
    """Not at the first fire time, silently: the input is checked against the workflow's input_schema on
    create and on update, as `workflows.run` checks it, and nothing is saved."""
    workflow_id = await workflow(hub, alice, input_schema={"type": "object", "required": ["question"]})
    with raises_code("invalid_request") as caught:
        await hub.call("schedules.create", {"workflow_id": workflow_id, "cron": "0 * * * *",
                                            "input": {"report": "daily"}}, token=alice.access_token)
    assert "input_schema" in caught.value.error["message"]
    assert caught.value.error["data"]["details"]["errors"][0]["field"] == "input"
    assert (await hub.call("schedules.list", {}, token=alice.access_token))["items"] == []

    schedule = await hub.call("schedules.create", {"workflow_id": workflow_id, "cron": "0 * * * *",
                                                   "input": {"question": "how many?"}}, token=alice.access_token)
    with raises_code("invalid_request"):
        await hub.call("schedules.update", {"schedule_id": schedule["schedule_id"], "input": None},
                       token=alice.access_token)
    assert await hub.call("schedules.get", {"schedule_id": schedule["schedule_id"]},
                          token=alice.access_token) == schedule


async def test_a_null_cron_is_refused_on_update(hub: HubClient, alice: Agent) -> None:
    schedule = await hub.call("schedules.create", {"workflow_id": await workflow(hub, alice), "cron": "0 * * * *"},
                              token=alice.access_token)
    with raises_code("invalid_request") as caught:
        await hub.call("schedules.update", {"schedule_id": schedule["schedule_id"], "cron": None},
                       token=alice.access_token)
    assert caught.value.error["data"]["details"]["errors"][0]["field"] == "cron"


async def test_another_agent_learns_nothing_of_a_schedule(hub: HubClient, alice: Agent, bob: Agent) -> None:
    workflow_id = await workflow(hub, alice)
    schedule = await hub.call("schedules.create", {"workflow_id": workflow_id, "cron": "0 * * * *"},
                              token=alice.access_token)
    ref = {"schedule_id": schedule["schedule_id"]}
    for name, params in (("schedules.get", ref), ("schedules.update", {**ref, "enabled": False}),
                         ("schedules.delete", ref), ("schedules.run_now", ref),
                         ("schedules.create", {"workflow_id": workflow_id, "cron": "0 * * * *"})):
        with raises_code("not_found"):
            await hub.call(name, params, token=bob.access_token)
    assert (await hub.call("schedules.list", {}, token=bob.access_token))["items"] == []
    assert await hub.call("schedules.get", ref, token=alice.access_token) == schedule


async def test_managing_needs_workflows_write_and_running_workflows_run(hub: HubClient, alice: Agent) -> None:
    workflow_id = await workflow(hub, alice)
    schedule = await hub.call("schedules.create", {"workflow_id": workflow_id, "cron": "0 * * * *"},
                              token=alice.access_token)
    reader = await hub.api_key(alice, scopes=["workflows:read", "workflows:run"])
    writer = await hub.api_key(alice, scopes=["workflows:read", "workflows:write"])
    with raises_code("forbidden"):
        await hub.call("schedules.create", {"workflow_id": workflow_id, "cron": "0 * * * *"}, token=reader)
    with raises_code("forbidden"):
        await hub.call("schedules.delete", {"schedule_id": schedule["schedule_id"]}, token=reader)
    with raises_code("forbidden"):
        await hub.call("schedules.run_now", {"schedule_id": schedule["schedule_id"]}, token=writer)
    assert (await hub.call("schedules.get", {"schedule_id": schedule["schedule_id"]}, token=reader)) == schedule
    await hub.call("schedules.run_now", {"schedule_id": schedule["schedule_id"]}, token=reader)


async def test_run_now_starts_a_run_with_the_schedules_input_and_leaves_its_times(hub: HubClient,
                                                                                  alice: Agent) -> None:
    workflow_id = await workflow(hub, alice)
    schedule = await hub.call("schedules.create", {"workflow_id": workflow_id, "cron": "0 3 * * *",
                                                   "input": {"report": "daily"}}, token=alice.access_token)
    started = await hub.call("schedules.run_now", {"schedule_id": schedule["schedule_id"]}, token=alice.access_token)
    assert started["workflow_id"] == workflow_id
    with anyio.fail_after(WAIT):
        while (execution := await hub.call("executions.get", {"execution_id": started["execution_id"],
                                                              "wait_seconds": 5}, token=alice.access_token)
               )["status"] != "completed":
            assert execution["status"] in ("pending", "running"), execution
    assert (execution["trigger"], execution["input"], execution["output"]) == \
        ("schedule", {"report": "daily"}, {"report": "daily"})
    after = await hub.call("schedules.get", {"schedule_id": schedule["schedule_id"]}, token=alice.access_token)
    assert after["next_fire_times"] == schedule["next_fire_times"]


# -- firing, on a clock the test moves ----------------------------------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def local(tmp_path: Path, store_kind: str, clock: ManualClock) -> AsyncIterator[LocalHub]:
    async with local_hub(tmp_path, store_kind, clock, embeddings="off", job_poll_seconds=POLL) as hub:
        yield hub


async def owner(local: LocalHub) -> tuple[LocalAgent, str]:
    """An agent and an API key of it (access tokens expire as the clock moves)."""
    agent = await local.agent("owner")
    key, _ = await local.api_key(agent)
    return agent, key


def move_to(clock: ManualClock, moment: datetime) -> None:
    clock.advance((moment - clock.now()).total_seconds())


def early_in_a_minute(clock: ManualClock, minutes: int = 1) -> None:
    """Move the clock to 5 s past the next boundary of `minutes`: far from the next fire time as the test
    runs (the clock moves on by itself too)."""
    now = clock.now()
    boundary = now.replace(minute=now.minute - now.minute % minutes, second=0, microsecond=0)
    move_to(clock, boundary + timedelta(minutes=minutes, seconds=5))


@asynccontextmanager
async def database(store_kind: str) -> AsyncIterator[str]:
    """A database to keep across hub restarts (PostgreSQL's URL; empty for SQLite in the data directory)."""
    database_url = create_postgres_database() if store_kind == "postgres" else ""
    try:
        yield database_url
    finally:
        if database_url:
            drop_postgres_database(database_url)


def settings(data_dir: Path, database_url: str, **more: Any) -> Settings:
    return Settings(data_dir=data_dir, database_url=database_url, embeddings="off", job_poll_seconds=POLL,
                    **{**FAST_TEST_SETTINGS, **more})


async def scheduled_runs(local: LocalHub, key: str, count: int, workflow_id: str | None = None) -> list[dict[str, Any]]:
    """The runs schedules started, once there are `count` (and a little longer: no more may come)."""
    params = {"trigger": "schedule", "limit": 200, **({"workflow_id": workflow_id} if workflow_id else {})}
    with anyio.fail_after(WAIT):
        while len(runs := (await local.call(key, "executions.list", params))["items"]) < count:
            await anyio.sleep(POLL)
    await anyio.sleep(10 * POLL)
    runs = (await local.call(key, "executions.list", params))["items"]
    assert len(runs) == count, runs
    return runs


async def test_a_schedule_fires_on_time_and_once_per_fire_time(local: LocalHub, clock: ManualClock) -> None:
    _, key = await owner(local)
    workflow_id = (await local.call(key, "workflows.create", TRANSFORM))["workflow_id"]
    early_in_a_minute(clock)
    schedule = await local.call(key, "schedules.create", {"workflow_id": workflow_id, "cron": "* * * * *",
                                                          "input": {"tick": True}})
    first, second, _ = times(schedule)
    await anyio.sleep(10 * POLL)
    assert (await local.call(key, "executions.list", {"trigger": "schedule"}))["items"] == []  # not yet due
    move_to(clock, first + timedelta(seconds=1))
    [run] = await scheduled_runs(local, key, 1)
    fired = await local.call(key, "schedules.get", {"schedule_id": schedule["schedule_id"]})
    assert fired["last_fire"] == {"fire_time": first.isoformat().replace("+00:00", "Z"),
                                  "execution_id": run["execution_id"], "error": None}
    assert times(fired)[0] == second
    execution = await local.call(key, "executions.get", {"execution_id": run["execution_id"], "wait_seconds": 5})
    assert (execution["input"], execution["output"]) == ({"tick": True}, {"tick": True})
    move_to(clock, second + timedelta(seconds=1))
    await scheduled_runs(local, key, 2)


async def test_a_fire_the_workflow_refuses_is_kept_with_its_error(local: LocalHub, clock: ManualClock) -> None:
    _, key = await owner(local)
    workflow_id = (await local.call(key, "workflows.create", TRANSFORM))["workflow_id"]
    early_in_a_minute(clock)
    schedule = await local.call(key, "schedules.create", {"workflow_id": workflow_id, "cron": "* * * * *"})
    # The workflow changes after: the schedule's input no longer matches.
    await local.call(key, "workflows.update", {"workflow_id": workflow_id, **TRANSFORM,
                                                "input_schema": {"type": "object", "required": ["name"]}})
    move_to(clock, times(schedule)[0] + timedelta(seconds=1))
    with anyio.fail_after(WAIT):
        while (fired := await local.call(key, "schedules.get", {"schedule_id": schedule["schedule_id"]})
               )["last_fire"] is None:
            await anyio.sleep(POLL)
    assert fired["last_fire"]["execution_id"] is None
    assert fired["last_fire"]["error"]["code"] == "invalid_request"
    assert times(fired)[0] == times(schedule)[1]  # and it goes on
    assert (await local.call(key, "executions.list", {}))["items"] == []


async def test_scheduled_runs_count_against_the_daily_limit_of_runs(tmp_path: Path, store_kind: str) -> None:
    clock = ManualClock()
    async with local_hub(tmp_path, store_kind, clock, embeddings="off", job_poll_seconds=POLL,
                         executions_per_day=1) as local:
        _, key = await owner(local)
        workflow_id = (await local.call(key, "workflows.create", TRANSFORM))["workflow_id"]
        # Noon: both fire times on one UTC day (a new day starts a new count).
        move_to(clock, (clock.now() + timedelta(days=1)).replace(hour=12, minute=0, second=5))
        schedule = await local.call(key, "schedules.create", {"workflow_id": workflow_id, "cron": "* * * * *"})
        first, second, _ = times(schedule)
        move_to(clock, first + timedelta(seconds=1))
        await scheduled_runs(local, key, 1)
        move_to(clock, second + timedelta(seconds=1))
        with anyio.fail_after(WAIT):
            while at((fired := await local.call(key, "schedules.get", {"schedule_id": schedule["schedule_id"]})
                      )["last_fire"]["fire_time"]) != second:
                await anyio.sleep(POLL)
        assert fired["last_fire"]["execution_id"] is None
        assert fired["last_fire"]["error"]["code"] == "quota_exceeded"
        await scheduled_runs(local, key, 1)


async def test_a_daily_0230_fires_once_on_both_transition_days_on_the_hubs_clock(local: LocalHub,
                                                                                clock: ManualClock) -> None:
    _, key = await owner(local)
    workflow_id = (await local.call(key, "workflows.create", TRANSFORM))["workflow_id"]
    move_to(clock, at("2027-03-27T12:00Z"))
    schedule = await local.call(key, "schedules.create", {"workflow_id": workflow_id, "cron": "30 2 * * *",
                                                          "timezone": "Europe/Berlin"})
    # Spring forward (02:00 CET -> 03:00 CEST): 02:30 does not exist and fires once, at 03:00 CEST.
    assert times(schedule) == [at("2027-03-28T01:00Z"), at("2027-03-29T00:30Z"), at("2027-03-30T00:30Z")]
    for moment in ("2027-03-28T00:59:50Z", "2027-03-28T01:00:10Z", "2027-03-28T01:30:10Z", "2027-03-28T03:00Z"):
        move_to(clock, at(moment))
        await anyio.sleep(5 * POLL)
    await scheduled_runs(local, key, 1)
    # Fall back (03:00 CEST -> 02:00 CET): 02:30 happens twice and fires once, at the first.
    move_to(clock, at("2027-10-30T12:00Z"))
    await scheduled_runs(local, key, 1 + 1)  # the 30th's, which came due on the way
    for moment in ("2027-10-31T00:30:10Z", "2027-10-31T01:00:10Z", "2027-10-31T01:30:10Z", "2027-10-31T02:00:10Z"):
        move_to(clock, at(moment))
        await anyio.sleep(5 * POLL)
    await scheduled_runs(local, key, 3)
    fired = await local.call(key, "schedules.get", {"schedule_id": schedule["schedule_id"]})
    assert at(fired["last_fire"]["fire_time"]) == at("2027-10-31T00:30Z")
    assert times(fired)[0] == at("2027-11-01T01:30Z")


async def test_the_fire_record_is_unique_per_fire_time(local: LocalHub) -> None:
    agent, key = await owner(local)
    workflow_id = (await local.call(key, "workflows.create", TRANSFORM))["workflow_id"]
    schedule_id = (await local.call(key, "schedules.create", {"workflow_id": workflow_id,
                                                              "cron": "30 2 * * *"}))["schedule_id"]
    fire_time, now = at("2027-10-31T00:30Z"), datetime.now(UTC)
    recorded = [await local.hub.store.write(lambda conn: schedule_queries.record_fire(
        conn, schedule_id, fire_time, now)) for _ in range(2)]
    assert recorded == [True, False]
    rows = await local.hub.store.read(lambda conn: schedule_queries.fires_of(conn, schedule_id))
    assert [row["fire_time"] for row in rows] == [fire_time]


@pytest.mark.parametrize(("catch_up", "runs"), [("once", 1), ("skip", 0)])
async def test_after_downtime_missed_fire_times_run_once_or_not_at_all(tmp_path: Path, store_kind: str,
                                                                       catch_up: str, runs: int) -> None:
    clock = ManualClock()
    async with database(store_kind) as database_url:
        async with running_hub(settings(tmp_path, database_url), clock) as hub:
            local = LocalHub(hub)
            _, key = await owner(local)
            workflow_id = (await local.call(key, "workflows.create", TRANSFORM))["workflow_id"]
            early_in_a_minute(clock, 5)
            schedule = await local.call(key, "schedules.create", {"workflow_id": workflow_id,
                                                                  "cron": "*/5 * * * *"})
        # Down for two hours: 24 fire times missed.
        clock.advance(2 * 3600)
        async with running_hub(settings(tmp_path, database_url, schedule_catch_up=catch_up), clock) as hub:
            await after_downtime(LocalHub(hub), clock, key, schedule, runs)


async def after_downtime(local: LocalHub, clock: ManualClock, key: str, schedule: dict[str, Any], runs: int) -> None:
    """The restarted hub made `runs` of the missed fire times, and goes on on time."""
    await scheduled_runs(local, key, runs)
    fired = await local.call(key, "schedules.get", {"schedule_id": schedule["schedule_id"]})
    assert times(fired)[0] > clock.now() and times(fired)[0] - clock.now() <= timedelta(minutes=5)
    if runs:
        assert at(fired["last_fire"]["fire_time"]) == times(schedule)[0]  # fired as the first it missed
    else:
        assert fired["last_fire"] is None
    move_to(clock, times(fired)[0] + timedelta(seconds=1))
    await scheduled_runs(local, key, runs + 1)  # on time again


async def test_schedules_per_agent_are_limited(tmp_path: Path, store_kind: str) -> None:
    async with local_hub(tmp_path, store_kind, embeddings="off", max_schedules=2) as local:
        _, key = await owner(local)
        workflow_id = (await local.call(key, "workflows.create", TRANSFORM))["workflow_id"]
        made = [await local.call(key, "schedules.create", {"workflow_id": workflow_id, "cron": "0 * * * *"})
                for _ in range(2)]
        with pytest.raises(HubError) as refused:
            await local.call(key, "schedules.create", {"workflow_id": workflow_id, "cron": "0 * * * *"})
        assert refused.value.code == "quota_exceeded" and refused.value.details["limit"] == 2
        await local.call(key, "schedules.delete", {"schedule_id": made[0]["schedule_id"]})
        await local.call(key, "schedules.create", {"workflow_id": workflow_id, "cron": "0 * * * *"})


# -- two nodes ----------------------------------------------------------------------------------------------


@asynccontextmanager
async def two_nodes(tmp_path: Path, store_kind: str, clock: ManualClock) -> AsyncIterator[tuple[Hub, Hub]]:
    """Two hubs in this process on one database server and one clock, each with its scheduler."""
    async with database(store_kind) as database_url, AsyncExitStack() as stack:
        # One data directory: the nodes share their server keys, as a deployment's nodes do.
        nodes = [await stack.enter_async_context(running_hub(settings(tmp_path, database_url), clock))
                 for _ in range(2)]
        yield nodes[0], nodes[1]


@postgres_only
async def test_each_fire_time_runs_once_across_two_nodes(tmp_path: Path, store_kind: str, clock: ManualClock) -> None:
    async with two_nodes(tmp_path, store_kind, clock) as (a, b):
        on_a, on_b = LocalHub(a), LocalHub(b)
        _, key = await owner(on_a)
        workflow_id = (await on_a.call(key, "workflows.create", TRANSFORM))["workflow_id"]
        early_in_a_minute(clock)
        schedules = [await (on_a if index % 2 else on_b).call(key, "schedules.create", {
            "workflow_id": workflow_id, "cron": "* * * * *", "input": {"index": index}}) for index in range(20)]
        first = times(schedules[0])[0]
        for tick in range(3):
            move_to(clock, first + timedelta(minutes=tick, seconds=1))
            # Both schedulers race, and so do these, on both nodes at once.
            async with anyio.create_task_group() as tg:
                for node in (a, b, a, b):
                    tg.start_soon(node.services.schedules.fire_due)
            await scheduled_runs(on_a, key, 20 * (tick + 1))
        for schedule in schedules:
            rows = await a.store.read(lambda conn: schedule_queries.fires_of(conn, schedule["schedule_id"]))
            assert [row["fire_time"] for row in rows] == [first + timedelta(minutes=tick) for tick in range(3)]
        runs = (await on_b.call(key, "executions.list", {"trigger": "schedule", "limit": 200}))["items"]
        assert len({run["execution_id"] for run in runs}) == 60


@postgres_only
async def test_two_nodes_firing_the_same_time_at_once_start_one_run(tmp_path: Path, store_kind: str,
                                                                    clock: ManualClock) -> None:
    async with two_nodes(tmp_path, store_kind, clock) as (a, b):
        on_a = LocalHub(a)
        _, key = await owner(on_a)
        workflow_id = (await on_a.call(key, "workflows.create", TRANSFORM))["workflow_id"]
        early_in_a_minute(clock)
        schedule = await on_a.call(key, "schedules.create", {"workflow_id": workflow_id, "cron": "0 0 1 1 *",
                                                             "enabled": False})
        # Both nodes read the schedule as due, then fire it at once, each in its own transaction.
        fire_time, now = times(await on_a.call(key, "schedules.update", {
            "schedule_id": schedule["schedule_id"], "enabled": True}))[0], clock.now()
        [row] = [dict(row) for row in await a.store.read(lambda conn: schedule_queries.due(conn, fire_time, 10))]
        started: list[bool] = []

        async def fire(node: Hub) -> None:
            reservation = await node.services.workflows.reserve_run(row["owner_id"])
            started.append(await node.store.write(lambda conn: node.services.schedules.fire(conn, row, now,
                                                                                             reservation)))

        async with anyio.create_task_group() as tg:
            for node in (a, b, a, b):
                tg.start_soon(fire, node)
        assert sorted(started) == [False, False, False, True]
        [run] = await scheduled_runs(on_a, key, 1)
        rows = await b.store.read(lambda conn: schedule_queries.fires_of(conn, schedule["schedule_id"]))
        assert [(row["fire_time"], row["execution_id"]) for row in rows] == [(fire_time, run["execution_id"])]
