"""The domain: services, authorization, rate limits, the operation table and the one dispatch path.

Imports `protocol` and `storage`, never a transport.
"""
