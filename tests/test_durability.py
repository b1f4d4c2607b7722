"""Durability under crashes (issue 6): the hub is SIGKILLed under send load, restarted, and checked.

Several senders pipeline `messages.send` (each with a unique `client_msg_id`) into one group and
into direct conversations, each over its own `ParleyClient` WebSocket. A send counts as acknowledged
only when the hub answered it; a send whose connection died first is retried with the same
`client_msg_id` until it is answered. Three subscribers follow their events the three ways an agent
can (the `ParleyClient` iterator, a raw WebSocket `events.subscribe` that the test resumes by hand
from its last cursor, and `events.list` long polling), each resuming from the cursor it had.

Meanwhile the hub is killed with SIGKILL a few times, at random moments while sends are in flight,
and relaunched on the same port and data. Afterwards:

- every acknowledged message is stored exactly once, with the id and seq it was acknowledged with,
  and no `client_msg_id` of a sender appears twice in a conversation (retries made no duplicates);
- each conversation's `seq` runs 1..N without a gap, and `last_seq` is N;
- each subscriber's event feed in the store has strictly increasing cursors and exactly one
  `message.created` event for every message it can see;
- every subscriber received exactly that feed: each event once, in cursor order, nothing missing;
  and a fresh subscription from a cursor in the middle replays exactly the rest.

The kill schedule comes from a seeded random generator; the seed is printed (and shown on failure)
and `PARLEY_DURABILITY_SEED=<seed>` replays the same schedule.
"""

import itertools
import json
import os
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import anyio
import httpx
import pytest

from bridges.client._websocket import ConnectionClosed
from bridges.client.agent import ConnectionLost, ParleyClient
from protocol.events import Event
from protocol.messages import Message

from .client import Agent, HubClient, RpcError, RpcSocket
from .conftest import ServerFactory, diagonal
from .messaging import all_events, group, timeline
from .servers import HubServer

SENDERS: Final = 4
LANES: Final = 4
"""Sends each sender keeps in flight at once, pipelined over its one WebSocket."""
DIRECT_EVERY: Final = 4
"""Every DIRECT_EVERY-th message of a sender goes to a subscriber's direct conversation (by handle)."""
KILLS: Final = (3, 5)
KILL_DELAY: Final = (0.05, 1.5)
"""Seconds of load on a (re)started hub, once it has acknowledged ACKS_BEFORE_KILL sends, before the kill."""
ACKS_BEFORE_KILL: Final = 25
WAIT: Final = 60.0
"""Upper bound for any single wait (a restart, a retried send, subscribers catching up)."""
RUN_BOUND: Final = 80.0
"""Upper bound for the load phase with all its kills and restarts."""
CATCH_UP: Final = 20.0
"""How long subscribers get to receive the last events once the load has stopped."""
ABNORMAL_CLOSE: Final = 1006


class Gauge:
    """An integer that tasks can wait on to reach a value."""

    def __init__(self, value: int = 0) -> None:
        self.value = value
        self._changed = anyio.Event()

    def set(self, value: int) -> None:
        self.value = value
        self._changed.set()
        self._changed = anyio.Event()

    async def reach(self, target: int) -> None:
        while self.value < target:
            await self._changed.wait()


@dataclass
class Sender:
    agent: Agent
    key: str
    sent: dict[str, dict[str, Any]] = field(default_factory=dict)
    """client_msg_id -> the send's params, from its first attempt on."""
    acked: dict[str, Message] = field(default_factory=dict)
    """client_msg_id -> the message the hub answered with."""
    retries: int = 0
    committed_before_loss: int = 0
    """Retried sends the hub had already committed before the connection died (the retry returned them)."""


@dataclass
class Subscriber:
    agent: Agent
    key: str
    how: str
    received: list[dict[str, Any]] = field(default_factory=list)
    position: Gauge = field(default_factory=Gauge)
    """The cursor of the last event received: where it resumes from."""
    resumes: int = 0
    refused: str | None = None
    """Why the hub refused to resume this subscriber (it stops following then)."""

    def take(self, event: dict[str, Any]) -> None:
        self.received.append(normalized(event))
        self.position.set(max(self.position.value, int(event["cursor"])))


def normalized(event: dict[str, Any]) -> dict[str, Any]:
    return Event.model_validate(event).model_dump(mode="json")


# -- the load ----------------------------------------------------------------------------------------


async def send_load(server: HubServer, sender: Sender, peers: list[Agent], group_id: str, stop: anyio.Event,
                    acks: Gauge) -> None:
    """Send until `stop`; every send started is retried (same client_msg_id) until acknowledged."""
    numbers = itertools.count()

    async def lane(client: ParleyClient) -> None:
        while not stop.is_set():
            n = next(numbers)
            client_msg_id = f"{sender.agent.handle}-{n}"
            if n % DIRECT_EVERY == DIRECT_EVERY - 1:
                target: dict[str, str] = {"to": peers[n // DIRECT_EVERY % len(peers)].handle}
            else:
                target = {"conversation_id": group_id}
            params = {**target, "body": f"body of {client_msg_id}", "client_msg_id": client_msg_id}
            sender.sent[client_msg_id] = params
            lost_at: datetime | None = None
            while True:
                try:
                    message = await client.call("messages.send", params)
                except ConnectionLost:  # the hub may or may not have committed it: send it again
                    sender.retries += 1
                    lost_at = lost_at or datetime.now(UTC)
                    continue
                break
            if lost_at is not None and message.created_at < lost_at:
                sender.committed_before_loss += 1
            sender.acked[client_msg_id] = message
            acks.set(acks.value + 1)

    async with ParleyClient(server.url, sender.key, call_timeout=WAIT, max_backoff=0.25) as client:
        async with anyio.create_task_group() as lanes:
            for _ in range(LANES):
                lanes.start_soon(lane, client)


async def crash_repeatedly(server: HubServer, delays: list[float], acks: Gauge, incarnation: Gauge,
                           log: list[str]) -> None:
    """For each delay: wait for sends acknowledged by this hub, let the load run `delay` s, SIGKILL, relaunch."""
    for number, delay in enumerate(delays, 1):
        with anyio.fail_after(WAIT):
            await acks.reach(acks.value + ACKS_BEFORE_KILL)
        await anyio.sleep(delay)
        acked_before = acks.value
        await anyio.to_thread.run_sync(server.kill)
        down = time.monotonic()
        await anyio.to_thread.run_sync(server.launch)
        incarnation.set(incarnation.value + 1)
        log.append(f"kill {number}: after {delay:.3f}s of load, {acked_before} sends acknowledged; "
                   f"back up in {time.monotonic() - down:.2f}s")
    with anyio.fail_after(WAIT):  # the last hub carries load too
        await acks.reach(acks.value + ACKS_BEFORE_KILL)


# -- the subscribers ---------------------------------------------------------------------------------


async def follow_with_client(server: HubServer, subscriber: Subscriber, incarnation: Gauge) -> None:
    """The ParleyClient iterator, which reconnects and resumes from its own cursor.

    It skips any event at or below the cursor it handed out last, so a duplicate pushed by the hub
    would not show here; the other two subscribers see exactly what the hub sends."""
    async with ParleyClient(server.url, subscriber.key, call_timeout=WAIT, max_backoff=0.25) as client:
        async for event in client.events(after=0):
            subscriber.take(event.model_dump(mode="json"))
            subscriber.resumes = client.connections - 1


async def follow_over_websocket(server: HubServer, subscriber: Subscriber, incarnation: Gauge) -> None:
    """`events.subscribe` over a raw WebSocket; after any drop, subscribe again after the last cursor."""
    while True:
        running = incarnation.value
        try:
            async with await RpcSocket.open(server, subscriber.agent.access_token) as ws:
                after = subscriber.position.value
                try:
                    started = await ws.call("events.subscribe", {"after": after})
                except RpcError as error:  # e.g. a cursor the restarted hub never committed
                    subscriber.refused = f"events.subscribe after {after}: {error.error}"
                    return
                assert started["after"] == after, started
                while True:
                    for frame in ws.notifications:
                        if frame["method"] == "event":
                            subscriber.take(frame["params"])
                    ws.notifications.clear()
                    frame = json.loads(await ws.connection.receive())
                    if isinstance(frame, dict) and frame.get("method") == "event":
                        subscriber.take(frame["params"])
        except ConnectionClosed as closed:
            subscriber.resumes += 1
            if closed.code != ABNORMAL_CLOSE:
                continue  # the hub closed it on purpose (e.g. the subscriber lagged): resume at once
        except OSError:
            subscriber.resumes += 1
        with anyio.fail_after(WAIT):  # the connection died with the hub: resume on the next one
            await incarnation.reach(running + 1)


async def follow_by_polling(server: HubServer, subscriber: Subscriber, incarnation: Gauge) -> None:
    """`events.list` long polling over HTTP JSON-RPC, after the last cursor."""
    async with HubClient(server) as hub:
        while True:
            running = incarnation.value
            try:
                page = await hub.call("events.list", {"after": subscriber.position.value, "limit": 200, "timeout": 5},
                                      token=subscriber.agent.access_token)
            except httpx.TransportError:
                subscriber.resumes += 1
                with anyio.fail_after(WAIT):
                    await incarnation.reach(running + 1)
                continue
            except RpcError as error:
                subscriber.refused = f"events.list after {subscriber.position.value}: {error.error}"
                return
            for event in page["items"]:
                subscriber.take(event)


FOLLOW: Final[dict[str, Callable[[HubServer, Subscriber, Gauge], Awaitable[None]]]] = {
    "client": follow_with_client,
    "websocket": follow_over_websocket,
    "polling": follow_by_polling,
}


async def fresh_replay(server: HubServer, agent: Agent, after: int, count: int) -> list[dict[str, Any]]:
    """The first `count` events a new WebSocket subscription from `after` pushes."""
    events: list[dict[str, Any]] = []
    with anyio.fail_after(WAIT):
        async with await RpcSocket.open(server, agent.access_token) as ws:
            await ws.call("events.subscribe", {"after": after})
            while len(events) < count:
                while ws.notifications and len(events) < count:
                    frame = ws.notifications.pop(0)
                    if frame["method"] == "event":
                        events.append(normalized(frame["params"]))
                if len(events) < count:
                    frame = json.loads(await ws.connection.receive())
                    if isinstance(frame, dict) and frame.get("method") == "event":
                        events.append(normalized(frame["params"]))
    return events


# -- the checks --------------------------------------------------------------------------------------


def first_difference(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> str:
    got_cursors = [e["cursor"] for e in got]
    expected_cursors = [e["cursor"] for e in expected]
    duplicates = sorted(c for c, n in Counter(got_cursors).items() if n > 1)
    missing = sorted(set(expected_cursors) - set(got_cursors))
    extra = sorted(set(got_cursors) - set(expected_cursors))
    index = next((i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
                 min(len(got), len(expected)))
    received = got[index] if index < len(got) else None
    stored = expected[index] if index < len(expected) else None
    return (f"received {len(got)} events, the store has {len(expected)}; duplicates {duplicates[:10]}, "
            f"missing {missing[:10]}, not in the store {extra[:10]}; first difference at index {index}: "
            f"received {received}, stored {stored}")


async def check_conversation(hub: HubClient, reader: Agent, conversation_id: str,
                             acked: dict[tuple[str, str], Message]) -> list[dict[str, Any]]:
    """Seq gapless, last_seq right, each acknowledged message exactly once; the agents' messages."""
    items = await timeline(hub, reader, conversation_id)
    seqs = [m["seq"] for m in items]
    assert seqs == list(range(1, len(items) + 1)), f"{conversation_id}: seq has gaps or repeats: {seqs}"
    detail = await hub.call("conversations.get", {"conversation_id": conversation_id}, token=reader.access_token)
    assert detail["last_seq"] == len(items), (conversation_id, detail["last_seq"], len(items))
    messages = [m for m in items if m["kind"] == "message"]
    sent = Counter((m["sender_id"], m["client_msg_id"]) for m in messages)
    duplicated = [key for key, n in sent.items() if n > 1]
    assert not duplicated, f"{conversation_id}: sends stored more than once: {duplicated[:10]}"
    stored = {(m["sender_id"], m["client_msg_id"]): m for m in messages}
    expected = {key: message for key, message in acked.items() if message.conversation_id == conversation_id}
    assert stored.keys() == expected.keys(), (
        f"{conversation_id}: acknowledged but not stored {sorted(expected.keys() - stored.keys())[:10]}, "
        f"stored but never sent {sorted(stored.keys() - expected.keys())[:10]}"
    )
    for key, message in expected.items():
        row = stored[key]
        assert (row["message_id"], row["seq"], row["body"]) == (message.message_id, message.seq, message.body), (
            f"{key} was acknowledged as {message} but is stored as {row}"
        )
    return messages


@diagonal
@pytest.mark.long
async def test_acknowledged_messages_and_events_survive_repeated_sigkill(start_hub: ServerFactory) -> None:
    seed = int(os.environ.get("PARLEY_DURABILITY_SEED") or random.SystemRandom().randrange(2**32))
    rng = random.Random(seed)
    delays = [round(rng.uniform(*KILL_DELAY), 3) for _ in range(rng.randint(*KILLS))]
    print(f"durability seed {seed} (replay with PARLEY_DURABILITY_SEED={seed}): kill delays {delays}")
    began = time.monotonic()
    server = start_hub()

    async with HubClient(server) as hub:
        senders = []
        for i in range(SENDERS):
            agent = await hub.register(f"sender{i}")
            senders.append(Sender(agent, await hub.api_key(agent)))
        subscribers = []
        for how in FOLLOW:
            agent = await hub.register(f"sub-{how}")
            subscribers.append(Subscriber(agent, await hub.api_key(agent), how))
        owner = subscribers[0].agent
        group_id = await group(hub, owner, *(s.agent for s in senders), *(s.agent for s in subscribers[1:]),
                               title="crash test")

    acks, incarnation, stop = Gauge(), Gauge(1), anyio.Event()
    log: list[str] = []
    peers = [s.agent for s in subscribers]
    async with anyio.create_task_group() as followers:
        for subscriber in subscribers:
            followers.start_soon(FOLLOW[subscriber.how], server, subscriber, incarnation)
        with anyio.fail_after(RUN_BOUND):
            async with anyio.create_task_group() as load:
                for sender in senders:
                    load.start_soon(send_load, server, sender, peers, group_id, stop, acks)
                await crash_repeatedly(server, delays, acks, incarnation, log)
                stop.set()  # no new sends; the ones in flight finish (the task group waits for them)
        loaded = time.monotonic()
        async with HubClient(server) as hub:
            feeds = {s.agent.agent_id: [normalized(e) for e in await all_events(hub, s.agent)] for s in subscribers}
        with anyio.move_on_after(CATCH_UP):  # one that missed an event may never get there: the checks say why
            for subscriber in subscribers:
                feed = feeds[subscriber.agent.agent_id]
                await subscriber.position.reach(feed[-1]["cursor"] if feed else 0)
        followers.cancel_scope.cancel()

    print("\n".join(log))
    sent = sum(len(s.sent) for s in senders)
    print(f"{sent} messages sent by {SENDERS} senders x {LANES} lanes, {sum(s.retries for s in senders)} retried "
          f"after a lost connection ({sum(s.committed_before_loss for s in senders)} of them had been committed "
          f"before it was lost); subscribers resumed {[s.resumes for s in subscribers]} times; "
          f"load with {len(delays)} kills took {loaded - began:.1f}s")

    # Every send was acknowledged in the end (a lane only moves on once its send is answered).
    for sender in senders:
        assert sender.sent.keys() == sender.acked.keys(), sorted(sender.sent.keys() - sender.acked.keys())
    acked = {(s.agent.agent_id, cmid): m for s in senders for cmid, m in s.acked.items()}

    async with HubClient(server) as hub:
        # A direct pair has one conversation, however often its get-or-create was cut off and retried.
        directs: dict[tuple[str, str], set[str]] = {}
        for sender in senders:
            for cmid, params in sender.sent.items():
                if "to" in params:
                    directs.setdefault((sender.agent.handle, params["to"]), set()).add(
                        sender.acked[cmid].conversation_id)
        assert all(len(ids) == 1 for ids in directs.values()), directs
        readers = {group_id: owner}
        for (_, peer_handle), (conversation_id,) in directs.items():
            readers[conversation_id] = next(a for a in peers if a.handle == peer_handle)

        visible: dict[str, set[str]] = {a.agent_id: set() for a in peers}
        for conversation_id, reader in readers.items():
            messages = await check_conversation(hub, reader, conversation_id, acked)
            ids = {m["message_id"] for m in messages}
            for agent in peers if conversation_id == group_id else [reader]:
                visible[agent.agent_id] |= ids
        assert len(acked) == sent

        for subscriber in subscribers:
            agent_id = subscriber.agent.agent_id
            feed = feeds[agent_id]
            cursors = [e["cursor"] for e in feed]
            assert cursors == sorted(set(cursors)), f"{subscriber.how}: the store's feed repeats or reorders events"
            created = Counter(e["message"]["message_id"] for e in feed
                              if e["type"] == "message.created" and e["message"]["kind"] == "message")
            missing, unexpected = visible[agent_id] - set(created), set(created) - visible[agent_id]
            assert not missing and not unexpected and set(created.values()) <= {1}, (
                f"{subscriber.how}: message.created events do not match the messages: missing {sorted(missing)[:10]}, "
                f"unexpected {sorted(unexpected)[:10]}, repeated {[k for k, n in created.items() if n > 1][:10]}"
            )
            assert subscriber.received == feed, (
                f"{subscriber.how}: " + first_difference(subscriber.received, feed)
                + (f"; the hub refused to resume it: {subscriber.refused}" if subscriber.refused else "")
            )

        # A new subscriber resuming from a cursor in the middle gets exactly the rest.
        feed = feeds[subscribers[1].agent.agent_id]
        middle = rng.randrange(len(feed))
        rest = feed[middle + 1:]
        replayed = await fresh_replay(server, subscribers[1].agent, feed[middle]["cursor"], len(rest))
        assert replayed == rest, "fresh subscription: " + first_difference(replayed, rest)
    print(f"whole test: {time.monotonic() - began:.1f}s")
