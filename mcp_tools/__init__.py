"""The MCP server: a curated, LLM-friendly layer of tools and resources over the operation table, push for
both protocol eras, and auth (see docs/mcp.md).

Imports `hub` and `protocol`, never `storage` or a transport. `server.build_server(access, profile)` makes the
server for one path to a hub (`access`); `http.McpEndpoint` serves it at `/mcp` on the hub's port, and
`bridges/mcp_stdio.py` over stdio (`parley mcp`).
"""
