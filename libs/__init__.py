"""Code every service shares.

Contracts, the Kafka bus, storage routing, settings, logging, lifecycle; nothing else.
"""
