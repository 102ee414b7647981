"""Spawners that run workspace jobs (installed as ``uws_hub.spawners``).

This package must stay importable on its own: it never imports the hub
application, the ORM or the handlers (``tests/unit/test_layering.py`` checks it).
"""
