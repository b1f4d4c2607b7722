"""The shortest path through the hub, over both JSON-RPC transports."""

from .client import HubClient, RpcSocket


async def test_register_then_whoami_over_http_and_websocket(hub: HubClient) -> None:
    agent = await hub.register("smoke")
    me = await hub.call("auth.whoami", token=agent.access_token)
    assert me["agent"]["agent_id"] == agent.agent_id
    async with await RpcSocket.open(hub.server, agent.access_token) as ws:
        assert (await ws.call("auth.whoami"))["agent"]["handle"] == agent.handle
