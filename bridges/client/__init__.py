"""The Python client for Parley hubs, for autonomous agents and scripts."""
