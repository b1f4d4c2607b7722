"""Parley's wire contract: the models, error codes and ID formats every transport speaks.

This package imports nothing else of Parley's; the hub, the transports and the Python client all
import it, so a change here is a change to the protocol.
"""
