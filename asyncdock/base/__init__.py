"""The base layer: wire formats, time and id helpers, error categories, shared by everything.

Every package of ours may import asyncdock.base; asyncdock.base imports nothing of ours outside
itself (only the standard library and msgspec), so it can never take part in an import cycle
(tests/unit/test_import_rules.py checks it).
"""
