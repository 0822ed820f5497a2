"""The Carewatch domain: device catalog, envelope parser, alert rules, simulator.

Pure code: standard library and orjson only — no asyncio, database or MQTT libraries (a test
checks this), so that all of it is testable without services and usable from any edge.
"""
