"""Authenticators for uws-hub (installed as ``uws_hub.authenticators``).

Like :mod:`uws_hub.spawners`, this package never imports the hub
application, the ORM or the handlers.
"""
