"""The MCP server: tools and resources built from the operation table (issue #4)."""
